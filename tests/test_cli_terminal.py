"""Other people's text cannot drive the terminal: escapes, carriage returns, C1 and
bidi controls are shown, not obeyed; emoji and scripts are kept; a multi-line message
cannot fake a line of its own."""

from __future__ import annotations

import argparse

import pytest

from btchat.cli.base import emit
from btchat.cli.render import channel_message_line, describe_event, request_line, show_message
from btchat.cli.terminal import terminal_safe

HOSTILE = [
    "\x1b[2J\x1b[Hcleared",  # erase the screen
    "\x1b]0;pwned\x07",  # set the window title
    "real\rfake",  # overwrite the line
    "\x9b31mC1 CSI",  # the 8-bit CSI
    "abc\u202edlrow",  # bidi override
    "x\u2028y",  # a line separator
    "\x00\x7f",
]


@pytest.mark.parametrize("text", HOSTILE)
def test_nothing_a_terminal_obeys_survives(text: str) -> None:
    out = terminal_safe(text)
    assert not any(ord(c) < 0x20 and c not in "\n\t" for c in out)
    assert not any(0x7F <= ord(c) <= 0x9F for c in out)
    assert "\u202e" not in out and "\u2028" not in out


def test_escape_is_shown_as_a_picture() -> None:
    assert terminal_safe("\x1b[31mred") == "\u241b[31mred"


@pytest.mark.parametrize(
    "text",
    ["héllo wörld", "こんにちは", "مرحبا", "👨\u200d👩\u200d👧 family", "❤\ufe0f", "tab\there"],
)
def test_ordinary_text_is_untouched(text: str) -> None:
    assert terminal_safe(text) == text


def test_a_message_cannot_fake_a_line_of_its_own() -> None:
    m = {"direction": "in", "peer": "ab" * 32, "state": "delivered", "ts": 0, "text": "hi\nbob: ok"}
    line = show_message(m, {"ab" * 32: "alice"})
    assert line.splitlines()[1].startswith("    bob: ok")


def test_every_renderer_goes_through_emit_safely(capsys: pytest.CaptureFixture[str]) -> None:
    args = argparse.Namespace(json=False)
    rows = [
        show_message(
            {"direction": "in", "peer": "a" * 64, "state": "x", "ts": 0, "text": "\x1b[2J"},
            {},
        ),
        request_line(
            {
                "id": "1",
                "direction": "in",
                "state": "pending",
                "name": "\x1b]0;t\x07",
                "contact_id": "bt",
                "note": "\r",
            }
        ),
        channel_message_line({"ts": 0, "author": "c" * 64, "private": False, "text": "\x9bx"}),
        describe_event({"type": "undecryptable", "contact": "d" * 64, "notice": "\x1b[H"}),
        describe_event({"type": "channel_joined", "channel": "e" * 64, "name": "\x1b[2Jx"}),
    ]
    emit(args, {}, "\n".join(rows))
    out = capsys.readouterr().out
    assert "\x1b" not in out and "\r" not in out and "\x9b" not in out and "\x07" not in out


def test_json_output_escapes_by_itself(capsys: pytest.CaptureFixture[str]) -> None:
    emit(argparse.Namespace(json=True), {"text": "\x1b[2J"}, "")
    assert "\x1b" not in capsys.readouterr().out


def test_a_reader_that_goes_away_is_not_a_traceback(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """`btchat id | head -1`: the pipe closes before we write; we exit quietly."""
    import os
    import subprocess
    import sys

    env = {**os.environ, "BTCHAT_DATA_DIR": str(tmp_path)}
    subprocess.run(
        [sys.executable, "-m", "btchat.cli", "init", "--no-passphrase"],
        env=env,
        check=True,
        capture_output=True,
    )
    child = subprocess.Popen(
        [sys.executable, "-m", "btchat.cli", "id"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert child.stdout is not None and child.stderr is not None
    child.stdout.close()  # before the child has written anything
    err = child.stderr.read().decode()
    assert child.wait(30) == 0 and "Traceback" not in err, err
