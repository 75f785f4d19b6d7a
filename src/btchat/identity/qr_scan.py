"""Reading the QR code in a picture: someone's ID or link, photographed or shown on
their screen (``identity/qr.py`` draws ours).

The picture comes from the user (a file, the web app's camera) but may be anything, so
its size is checked from the header before a pixel is decoded: at most
:data:`MAX_IMAGE_BYTES` and :data:`MAX_PIXELS`. Pillow decodes it (PNG, JPEG, WebP,
GIF, BMP) and zxing-cpp, a maintained C++ reader, finds the codes.
"""

from __future__ import annotations

import io

__all__ = ["MAX_IMAGE_BYTES", "MAX_PIXELS", "QrImageError", "read_qr"]

#: Largest picture read, in bytes and in pixels (a 12-megapixel photo fits).
MAX_IMAGE_BYTES = 16 * 1024 * 1024
MAX_PIXELS = 16_000_000
#: At most this many texts are returned from one picture.
MAX_CODES = 8
#: Longest text kept from one code.
MAX_TEXT = 4096


class QrImageError(ValueError):
    """Not a picture we read, or too large: said to the user as is."""


def read_qr(data: bytes) -> list[str]:
    """The texts of the QR codes in the picture ``data`` (none found: empty)."""
    if len(data) > MAX_IMAGE_BYTES:
        raise QrImageError(f"the picture is over {MAX_IMAGE_BYTES // (1024 * 1024)} MiB")
    import zxingcpp
    from PIL import Image, UnidentifiedImageError  # loaded only when a picture comes

    try:
        with Image.open(io.BytesIO(data)) as img:
            width, height = img.size  # from the header: nothing decoded yet
            if width * height > MAX_PIXELS:
                raise QrImageError(f"the picture is {width}x{height}: over {MAX_PIXELS:,} pixels")
            gray = img.convert("L")
    except (UnidentifiedImageError, OSError, Image.DecompressionBombError) as exc:
        raise QrImageError(f"not a picture that can be read: {exc}") from None
    found = zxingcpp.read_barcodes(gray, formats=zxingcpp.BarcodeFormat.QRCode)
    texts = [r.text for r in found if r.text and len(r.text) <= MAX_TEXT]
    return list(dict.fromkeys(texts))[:MAX_CODES]
