"""Reading a QR code from a picture, for front ends that hold the picture (the web
app's "Add a contact": a photo of someone's QR code, or a frame from the camera).
The daemon decodes it (``identity/qr_scan.py``), bounded in bytes and pixels.
"""

from __future__ import annotations

import asyncio

from aiohttp import web

from btchat.api.facade import ApiError
from btchat.api.routes import RouteTable, ok

__all__ = ["ROUTES"]

ROUTES = RouteTable()
qr = ROUTES.section("contacts")

#: Bytes read from the body per step.
CHUNK = 256 * 1024


@qr(
    "POST /v1/qr/scan",
    "scanQr",
    "The texts of the QR codes in a picture (PNG, JPEG, WebP, GIF, BMP)",
    {"200": ("QrScan", "The texts found; none: an empty list."), "400": "BadRequest",
     "413": "Error"},
    raw_body="application/octet-stream",
    description="The picture is the request body (at most 16 MiB and 16 megapixels). "
    "What it says is not acted on: give a text found to `POST /v1/contacts`.",
)  # fmt: skip
async def scan_qr(request: web.Request) -> web.Response:
    from btchat.identity.qr_scan import MAX_IMAGE_BYTES, QrImageError, read_qr

    if (request.content_length or 0) > MAX_IMAGE_BYTES:
        raise ApiError(413, "too_large", f"a picture is at most {MAX_IMAGE_BYTES} bytes")
    data = bytearray()
    async for chunk in request.content.iter_chunked(CHUNK):
        data += chunk
        if len(data) > MAX_IMAGE_BYTES:
            raise ApiError(413, "too_large", f"a picture is at most {MAX_IMAGE_BYTES} bytes")
    try:
        texts = await asyncio.to_thread(read_qr, bytes(data))
    except QrImageError as exc:
        raise ApiError(400, "bad_image", str(exc)) from None
    return ok({"texts": texts})
