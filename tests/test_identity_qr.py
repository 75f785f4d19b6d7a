"""QR codes for btchat: links."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from btchat.identity.idtext import format_uri
from btchat.identity.keys import Identity
from btchat.identity.qr import QUIET_ZONE, make_qr, qr_terminal, save_qr

URI = format_uri(Identity.from_seed(b"\x05" * 32).public_key, "Ann")
ANSI = re.compile(r"\x1b\[[0-9;]*m")
# character -> (top module drawn, bottom module drawn)
HALVES = {
    " ": (False, False),
    "\u2580": (True, False),
    "\u2584": (False, True),
    "\u2588": (True, True),
}


def drawn_modules(text: str) -> list[list[bool]]:
    """Undo the half-block rendering: which modules were drawn, row by row."""
    rows: list[list[bool]] = []
    for line in ANSI.sub("", text).splitlines():
        pairs = [HALVES[c] for c in line]
        rows.append([t for t, _ in pairs])
        rows.append([b for _, b in pairs])
    return rows


def expected_dark(text: str) -> list[list[bool]]:
    return [[bool(m) for m in row] for row in make_qr(text).matrix_iter(border=QUIET_ZONE)]


def check_shape(text: str) -> list[str]:
    assert text.endswith("\n")
    lines = text.splitlines()
    assert len(lines) > 10
    assert len({len(line) for line in lines}) == 1  # rectangular, escapes included
    assert len({len(ANSI.sub("", line)) for line in lines}) == 1
    return lines


def test_terminal_default_is_self_coloured() -> None:
    """Every line sets black on white and resets: same look on dark and light themes."""
    text = qr_terminal(URI)
    lines = check_shape(text)
    for line in lines:
        assert line.startswith("\x1b[30;107m") and line.endswith("\x1b[0m")
    assert set(ANSI.sub("", text)) <= set(HALVES) | {"\n"}
    dark = expected_dark(URI)
    drawn = drawn_modules(text)
    assert drawn[: len(dark)] == dark  # dark modules drawn in black
    padding = drawn[len(dark) :]  # an odd row count is padded with a light half-row
    assert len(padding) <= 1 and not any(any(row) for row in padding)
    # Quiet zone: the first line is blank (white background shows through).
    assert set(ANSI.sub("", lines[0])) == {" "}


@pytest.mark.parametrize("dark_background", [True, False])
def test_terminal_plain(dark_background: bool) -> None:
    text = qr_terminal(URI, ansi=False, dark_background=dark_background)
    check_shape(text)
    assert "\x1b" not in text
    dark = expected_dark(URI)
    drawn = drawn_modules(text)[: len(dark)]
    if dark_background:  # the foreground is light: draw the light modules
        assert drawn == [[not m for m in row] for row in dark]
    else:
        assert drawn == dark


def test_never_micro_qr() -> None:
    assert not make_qr("a").is_micro


def test_empty_text_refused() -> None:
    with pytest.raises(ValueError, match="nothing to encode"):
        qr_terminal("")


def test_save_png(tmp_path: Path) -> None:
    path = tmp_path / "id.png"
    save_qr(URI, path)
    assert path.read_bytes().startswith(b"\x89PNG\r\n\x1a\n")


def test_save_svg(tmp_path: Path) -> None:
    path = tmp_path / "id.SVG"
    save_qr(URI, path)
    assert b"<svg" in path.read_bytes()


def test_unknown_suffix(tmp_path: Path) -> None:
    for name in ("id.jpg", "id"):
        with pytest.raises(ValueError, match=r"\.png or \.svg"):
            save_qr(URI, tmp_path / name)
        assert not (tmp_path / name).exists()
