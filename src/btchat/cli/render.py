"""How the command line shows things: messages, events, rows and decoded DHT values."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Callable
from typing import Any

from btchat.cli.base import emit
from btchat.cli.terminal import indent_lines

__all__ = [
    "channel_line",
    "channel_message_line",
    "contact_line",
    "describe_event",
    "emit_rows",
    "member_line",
    "request_line",
    "show_message",
    "show_value",
    "when",
]

#: How an outgoing message's state reads in a terminal.
STATE_MARKS = {
    "pending": "…",
    "sent": "✓",
    "delivered": "✓✓",
    "read": "✓✓ read",
    "failed": "! not delivered",
}


def when(ms: int | None) -> str:
    """Local date and minute of a millisecond timestamp ("" when unknown)."""
    if not ms:
        return ""
    return dt.datetime.fromtimestamp(ms / 1000).strftime("%Y-%m-%d %H:%M")


def show_message(m: dict[str, Any], names: dict[str, str]) -> str:
    who = "me" if m["direction"] == "out" else names.get(m["peer"], m["peer"][:12])
    state = f"  [{STATE_MARKS.get(m['state'], m['state'])}]" if m["direction"] == "out" else ""
    return f"{when(m.get('ts'))} {who}: {indent_lines(m['text'])}{state}"


# ------------------------------------------------------------------ one line per row


def contact_line(c: dict[str, Any]) -> str:
    return (
        f"{'*' if c['online'] else ' '} {c['name']:<20} {c['presence']:<8} "
        f"{'verified ' if c['verified'] else ''}{'BLOCKED ' if c['blocked'] else ''}{c['id']}"
    )


def request_line(r: dict[str, Any]) -> str:
    return (
        f"{r['id']}  {r['direction']:<3} {r['state']:<9} {r['name'] or ''}  "
        f"{r['contact_id']}  {r['note'] or ''}"
    )


def channel_line(c: dict[str, Any]) -> str:
    return (
        f"{c['name']}  {c['id'][:12]}  {'invite-only' if c['invite_only'] else 'open'}  "
        f"{c['members_online']}/{c['members']} online"
    )


def member_line(m: dict[str, Any]) -> str:
    role = f"  ({m['role']})" if m.get("role") else ""
    return f"{'*' if m['online'] else ' '} {m['id']}{role}{'  (you)' if m['me'] else ''}"


def channel_message_line(m: dict[str, Any]) -> str:
    private = " (private)" if m["private"] else ""
    return f"{when(m['ts'])} {m['author'][:12]}{private}: {indent_lines(m['text'])}"


def emit_rows(
    args: Any,
    key: str,
    rows: list[dict[str, Any]],
    line: Callable[[dict[str, Any]], str],
    empty: str,
) -> None:
    """A list: ``{key: rows}`` with ``--json``, else one line a row (``empty`` if none)."""
    emit(args, {key: rows}, "\n".join(line(r) for r in rows) or empty)


def show_value(value: Any) -> Any:
    """A JSON- and terminal-friendly view of a decoded bencode value."""
    if isinstance(value, bytes):
        try:
            return value.decode()
        except UnicodeDecodeError:
            return {"hex": value.hex()}
    if isinstance(value, list):
        return [show_value(v) for v in value]
    if isinstance(value, dict):
        return {
            show_value(k) if isinstance(k, bytes) else k: show_value(v) for k, v in value.items()
        }
    return value


def _channel_message(e: dict[str, Any]) -> str:
    m = e["message"]
    return f"#{e['channel'][:8]} {m['author'][:12]}: {indent_lines(m['text'])}"


def _session(e: dict[str, Any]) -> str:
    return f"{e['contact']['name']} {'connected' if e['state'] == 'up' else 'disconnected'}"


_EVENT_LINES: dict[str, Callable[[dict[str, Any]], str]] = {
    "message": lambda e: show_message(e["message"], {}),
    "receipt": lambda e: f"{len(e['ids'])} message(s) {e['state']} by {e['contact'][:12]}",
    "presence": lambda e: f"{e['contact'][:12]} is {e['status']}",
    "session": _session,
    "channel_message": _channel_message,
    "expired": lambda e: (
        f"{len(e['ids'])} message(s) to {e['contact'][:12]} not delivered, expired"
    ),
    "undecryptable": lambda e: f"{e['contact'][:12]}: {e['notice']}",
}


def describe_event(e: dict[str, Any]) -> str:
    """One line for a person; kinds without a line are shown as their JSON."""
    line = _EVENT_LINES.get(e.get("type"))  # type: ignore[arg-type]
    return line(e) if line is not None else json.dumps(e)
