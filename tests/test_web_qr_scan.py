"""Adding a contact from a QR code in the web app (issue 12): a picture of it, or the
camera (Chromium's fake camera playing a video of the code); the daemon reads it
(``identity/qr_scan.py``) and the page fills the ID in. Not a picture, a picture with
no code, and an oversized one are said, not acted on."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import pytest
import segno
from test_messenger_e2e import Person, sandbox  # noqa: F401
from web_harness import Tab, browser, launched, people  # noqa: F401

from btchat.identity.qr_scan import MAX_PIXELS, QrImageError, read_qr

pytestmark = pytest.mark.slow


def qr_png(text: str) -> bytes:
    out = io.BytesIO()
    segno.make_qr(text, error="m").save(out, kind="png", scale=6)
    return out.getvalue()


def qr_video(text: str, path: Path, size: int = 320) -> Path:
    """A two-frame Y4M video of the code on white, for ``--use-file-for-fake-video-capture``."""
    matrix = [list(row) for row in segno.make_qr(text, error="m").matrix]
    scale = (size - 40) // (len(matrix) + 8)
    luma = bytearray([255]) * (size * size)
    offset = (size - scale * len(matrix)) // 2
    for y, row in enumerate(matrix):
        for x, dark in enumerate(row):
            if dark:
                for dy in range(scale):
                    start = (offset + y * scale + dy) * size + offset + x * scale
                    luma[start : start + scale] = bytes(scale)
    chroma = bytes([128]) * (size * size // 4)
    frame = b"FRAME\n" + bytes(luma) + chroma + chroma
    path.write_bytes(f"YUV4MPEG2 W{size} H{size} F10:1 Ip A1:1 C420jpeg\n".encode() + frame * 2)
    return path


def test_read_qr_finds_the_text_and_refuses_what_is_not_a_picture() -> None:
    assert read_qr(qr_png("btchat:hello")) == ["btchat:hello"]
    assert read_qr(qr_png("a") + b"") == ["a"]
    with pytest.raises(QrImageError, match="not a picture"):
        read_qr(b"<html>not a picture</html>")
    from PIL import Image

    huge = io.BytesIO()
    Image.new("1", (5000, 5000)).save(huge, format="PNG")  # small file, many pixels
    with pytest.raises(QrImageError, match=f"over {MAX_PIXELS:,} pixels"):
        read_qr(huge.getvalue())
    blank = io.BytesIO()
    Image.new("L", (200, 200), 255).save(blank, format="PNG")
    assert read_qr(blank.getvalue()) == []


def add_screen(tab: Tab) -> None:
    tab.open()
    tab.page.get_by_role("button", name="Add a contact").click()
    tab.page.wait_for_selector("#add-ref")


def test_add_a_contact_from_a_picture_of_their_code(
    browser: Any,  # noqa: F811
    people: dict[str, Person],  # noqa: F811
) -> None:
    alice_p, bob = people["alice"], people["bob"]
    alice = Tab(browser, alice_p)
    add_screen(alice)
    field = alice.page.get_by_label("A picture of their QR code")
    field.set_input_files({"name": "x.txt", "mimeType": "text/plain", "buffer": b"hello"})
    alice.page.wait_for_selector("form .notice.error >> text=not a picture")
    field.set_input_files({"name": "bob.png", "mimeType": "image/png", "buffer": qr_png(bob.id)})
    alice.page.wait_for_selector("text=Read from the QR code")
    assert alice.page.input_value("#add-ref") == bob.id
    alice.page.fill("#add-name", "bob")
    alice.page.get_by_role("button", name="Add contact").click()
    alice.page.wait_for_selector("h2 >> text=bob")
    assert [c["name"] for c in alice_p.cli("contacts")["contacts"]] == ["bob"]
    alice.own_origin_only()
    assert alice.errors == [], alice.errors
    alice.context.close()
