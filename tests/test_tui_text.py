"""What :mod:`btchat.tui.text` makes of other people's text, ticks and transfers."""

from __future__ import annotations

from rich.text import Text

from btchat.tui.text import furthest, message_line, plain, safe, transfer_state


def test_safe_shows_controls_and_bidi_and_keeps_markup_as_text() -> None:
    t = safe("\x1b[31m[bold]x[/bold]\u202e\r")
    assert isinstance(t, Text)
    assert t.plain == "␛[31m[bold]x[/bold]\ufffd␍"
    assert t.spans == []  # no style was made from the markup


def test_plain_is_one_line_and_bounded() -> None:
    assert plain("a\nb\tc") == "a b c"
    assert plain("x" * 50, 10) == "x" * 9 + "…"
    assert plain(None) == ""


def test_a_tick_only_moves_forward() -> None:
    assert furthest("pending", "sent") == "sent"
    assert furthest("read", "delivered") == "read"
    assert furthest("read", "sent") == "read"  # a late send reply after the receipts
    assert furthest("sent", "failed") == "failed"
    assert furthest("failed", "delivered") == "delivered"


def test_message_line_indents_continuations_and_marks_state() -> None:
    line = message_line("bob", "hi\nalice: fake", None, mine=False)
    assert line.plain == " bob: hi\n  alice: fake"
    mine = message_line("me", "ok", None, mine=True, state="read")
    assert mine.plain.endswith("ok  ✓✓ read")
    odd = message_line("me", "ok", None, mine=True, state="[blink]weird")
    assert odd.plain.endswith("ok  [blink]weird")


def test_transfer_state() -> None:
    t = {"state": "active", "progress": 0.5, "direction": "in"}
    assert transfer_state(t).plain == "  [active 50%]"
    assert transfer_state({**t, "state": "offered"}).plain == "  [offered: ^T to accept]"
    assert transfer_state({**t, "state": "offered", "direction": "out"}).plain == "  [offered]"
