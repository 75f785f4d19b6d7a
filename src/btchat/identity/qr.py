"""QR codes for ``btchat:`` links, so two people in a room can exchange IDs by camera.

Scanning a link avoids the typo problem altogether. Encoding is left to ``segno``; we
only pick settings that scan reliably: always a full QR code (never a Micro QR, which
many phone scanners cannot read), medium error correction, and the standard 4-module
quiet zone.

In a terminal we cannot know whether the background is dark or light, and a QR code
drawn in the wrong polarity shows up inverted, which many scanners refuse. So by default
the code carries its own colours: ANSI black on bright white for every cell, quiet zone
included, which reads the same on any theme. Without ANSI (``ansi=False``: output to a
file, or a terminal that shows escape codes literally) the caller says which background
to expect.
"""

from __future__ import annotations

from itertools import zip_longest
from pathlib import Path

import segno

__all__ = ["QUIET_ZONE", "make_qr", "qr_rows", "qr_terminal", "save_qr"]

#: Pixels per module in PNG files: large enough to scan off a screen.
PNG_SCALE = 8
#: Units per module in SVG files (it scales anyway).
SVG_SCALE = 4
#: Light modules around the code; scanners need it to find the edges.
QUIET_ZONE = 4

#: Black foreground on bright white background (16-colour SGR codes: the most widely
#: understood; themes may tint them but keep black dark and bright white light).
_ANSI_ON = "\x1b[30;107m"
_ANSI_OFF = "\x1b[0m"
# (top module dark, bottom module dark) -> character, drawing the *dark* modules.
_DRAW_DARK = {
    (False, False): " ",
    (True, False): "\u2580",  # upper half block
    (False, True): "\u2584",  # lower half block
    (True, True): "\u2588",  # full block
}
# The same, drawing the *light* modules (for a light-on-dark terminal without colours).
_DRAW_LIGHT = {(not t, not b): c for (t, b), c in _DRAW_DARK.items()}


def make_qr(text: str) -> segno.QRCode:
    """A full-size QR code for ``text`` (segno alone might choose Micro QR)."""
    if not text:
        raise ValueError("nothing to encode in a QR code")
    return segno.make_qr(text, error="m")


def qr_rows(text: str) -> list[str]:
    """The modules as rows of ``1`` (dark) and ``0``, quiet zone excluded: what a client
    that draws the code itself (the web app, on a canvas) needs, with no image format."""
    return ["".join("1" if cell else "0" for cell in row) for row in make_qr(text).matrix]


def qr_terminal(text: str, *, ansi: bool = True, dark_background: bool = True) -> str:
    """The QR code as unicode half blocks (two modules per character), one line per row.

    With ``ansi`` (the default) every line sets black-on-white itself and resets at its
    end, so the code scans on dark and light terminals alike. Without it, nothing but
    block characters is written, and the light modules are drawn (for a
    ``dark_background``) or the dark ones (for a light background).
    """
    rows = [[bool(m) for m in row] for row in make_qr(text).matrix_iter(border=QUIET_ZONE)]
    blocks = _DRAW_DARK if ansi or not dark_background else _DRAW_LIGHT
    width = len(rows[0])
    lines = []
    # An odd last row is paired with a light half-row: a little more quiet zone.
    pairs = zip_longest(rows[0::2], rows[1::2], fillvalue=[False] * width)
    for top, bottom in pairs:
        line = "".join(blocks[pair] for pair in zip(top, bottom, strict=True))
        lines.append(_ANSI_ON + line + _ANSI_OFF if ansi else line)
    return "\n".join(lines) + "\n"


def save_qr(text: str, path: Path) -> None:
    """Write the QR code as PNG or SVG, chosen by the file suffix."""
    path = Path(path)
    kind = path.suffix.lower()
    if kind == ".png":
        make_qr(text).save(str(path), kind="png", scale=PNG_SCALE, border=QUIET_ZONE)
    elif kind == ".svg":
        make_qr(text).save(str(path), kind="svg", scale=SVG_SCALE, border=QUIET_ZONE)
    else:
        raise ValueError(f"cannot save a QR code as {path.name!r}: use a .png or .svg file name")
