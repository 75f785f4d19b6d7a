"""QR codes for ``btchat:`` links, so two people in a room can exchange IDs by camera.

Scanning a link avoids the typo problem altogether. Rendering is left to ``segno``;
we only pick settings that scan reliably: always a full QR code (never a Micro QR,
which many phone scanners cannot read), medium error correction, and the standard
4-module quiet zone.
"""

from __future__ import annotations

import io
from pathlib import Path

import segno

__all__ = ["make_qr", "qr_terminal", "save_qr"]

#: Pixels per module in PNG files: large enough to scan off a screen.
PNG_SCALE = 8
#: Units per module in SVG files (it scales anyway).
SVG_SCALE = 4
QUIET_ZONE = 4


def make_qr(text: str) -> segno.QRCode:
    """A full-size QR code for ``text`` (segno alone might choose Micro QR)."""
    if not text:
        raise ValueError("nothing to encode in a QR code")
    return segno.make_qr(text, error="m")


def qr_terminal(text: str) -> str:
    """The QR code as unicode half blocks, two modules per character row.

    Light modules are drawn, dark ones left blank, which reads correctly on the usual
    dark-background terminal.
    """
    out = io.StringIO()
    make_qr(text).terminal(out=out, compact=True, border=QUIET_ZONE)
    return out.getvalue()


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
