"""Other people's text as Rich :class:`~rich.text.Text`: seen, never obeyed.

Two things could obey it. The terminal: escape sequences, carriage returns and bidi
overrides are made visible by :func:`btchat.cli.terminal.terminal_safe`, the same
function the CLI prints through (ESC shows as ``␛``). And Textual itself: a string handed
to a widget is parsed as Textual markup (``[bold red]x[/]``, ``[@click=...]``), so text
from others only ever enters a widget inside a ``Text`` built with ``append`` (never
``Text.from_markup``, never an f-string into markup). ``overflow="fold"`` breaks a 16 KiB
word across lines instead of pushing the layout sideways.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from rich.text import Text

from btchat.cli.render import STATE_MARKS
from btchat.cli.terminal import indent_lines, terminal_safe

__all__ = ["TICK_STYLES", "clock", "furthest", "message_line", "plain", "safe", "transfer_state"]

#: How the tick of an outgoing message is drawn, by state.
TICK_STYLES = {
    "pending": "dim",
    "sent": "dim",
    "delivered": "green",
    "read": "bold green",
    "failed": "bold red",
}
#: Forward order of outgoing states: a late "sent" never undoes "read".
STATE_ORDER = {"pending": 0, "sent": 1, "delivered": 2, "read": 3}


def safe(text: str | None, style: str = "") -> Text:
    """``text`` from someone else, made visible and inert, as one Text."""
    return Text(terminal_safe(text or ""), style=style, overflow="fold", end="")


def plain(text: str | None, limit: int = 0) -> str:
    """Terminal-safe and on one line (names in lists, titles): breaks become spaces."""
    one = terminal_safe(text or "").replace("\n", " ").replace("\t", " ")
    return one if not limit or len(one) <= limit else one[: limit - 1] + "…"


def clock(ms: int | None) -> str:
    """Local time of a millisecond timestamp: the minute today, else the date too."""
    if not ms:
        return ""
    when = dt.datetime.fromtimestamp(ms / 1000)
    if when.date() == dt.date.today():
        return when.strftime("%H:%M")
    return when.strftime("%Y-%m-%d %H:%M")


def furthest(old: str, new: str) -> str:
    """The state to show after ``new`` arrives for a message shown as ``old``."""
    if new == "failed" or old == "failed":
        return new
    return new if STATE_ORDER.get(new, -1) >= STATE_ORDER.get(old, -1) else old


def message_line(
    who: str,
    text: str,
    ts: int | None,
    *,
    mine: bool,
    state: str | None = None,
    note: str = "",
    after: Text | None = None,
) -> Text:
    """One conversation entry: time, author, the text (continuation lines indented, so a
    message cannot fake a line of its own), ``after`` it (a file's transfer state) and,
    for ours, the delivery tick."""
    line = Text(overflow="fold", end="")
    line.append(clock(ts) + " ", style="dim")
    line.append(plain(who, 40), style="bold cyan" if mine else "bold magenta")
    line.append(": ")
    if note:
        line.append(note, style="italic")
    line.append_text(safe(indent_lines(text, "  ")))
    if after is not None:
        line.append_text(after)
    if mine and state:
        line.append(
            "  " + STATE_MARKS.get(state, plain(state, 20)), style=TICK_STYLES.get(state, "")
        )
    return line


def transfer_state(t: dict[str, Any]) -> Text:
    """A file offer's transfer as it stands, for its line in the conversation."""
    state = str(t.get("state") or "")
    if state in ("active", "paused"):
        label = f"{state} {100 * float(t.get('progress') or 0):.0f}%"
    elif state == "offered" and t.get("direction") == "in":
        label = "offered: ^T to accept"
    else:
        label = plain(state, 20)
    return Text(f"  [{label}]", style="yellow" if state in ("offered", "active") else "dim")
