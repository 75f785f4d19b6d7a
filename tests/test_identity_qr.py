"""QR codes for btchat: links."""

from __future__ import annotations

from pathlib import Path

import pytest

from btchat.identity.idtext import format_uri
from btchat.identity.keys import Identity
from btchat.identity.qr import make_qr, qr_terminal, save_qr

URI = format_uri(Identity.from_seed(b"\x05" * 32).public_key, "Ann")


def test_terminal() -> None:
    text = qr_terminal(URI)
    lines = text.splitlines()
    assert len(lines) > 10
    assert len({len(line) for line in lines}) == 1
    assert set(text) <= set("\u2580\u2584\u2588 \n")
    # Quiet zone: with light modules drawn, the first line is all full blocks.
    assert set(lines[0]) == {"\u2588"}


def test_never_micro_qr() -> None:
    assert not make_qr("a").is_micro


def test_save_png(tmp_path: Path) -> None:
    path = tmp_path / "id.png"
    save_qr(URI, path)
    assert path.read_bytes().startswith(b"\x89PNG\r\n\x1a\n")


def test_save_svg(tmp_path: Path) -> None:
    path = tmp_path / "id.SVG"
    save_qr(URI, path)
    assert b"<svg" in path.read_bytes()


def test_unknown_suffix(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"\.png or \.svg"):
        save_qr(URI, tmp_path / "id.jpg")
    assert not (tmp_path / "id.jpg").exists()
