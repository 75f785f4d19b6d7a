"""How the command line shows things: messages, events, rows and decoded DHT values."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from btchat.cli.base import emit
from btchat.cli.terminal import indent_lines

__all__ = [
    "Names",
    "channel_file_line",
    "channel_line",
    "channel_message_line",
    "contact_line",
    "describe_event",
    "emit_rows",
    "human_size",
    "member_line",
    "request_line",
    "show_message",
    "show_value",
    "transfer_line",
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
    path = ", ".join(c.get("path") or [])
    rtt = f" {c['rtt_ms']:.0f} ms" if c.get("rtt_ms") is not None else ""
    via = f"via {path}{rtt} " if path else ""
    return (
        f"{'*' if c['online'] else ' '} {c['name']:<20} {c['presence']:<8} {via}"
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


def member_line(m: dict[str, Any], names: dict[str, str] | None = None) -> str:
    """A member: the petname first when they are a contact, always the ID."""
    role = f"  ({m['role']})" if m.get("role") else ""
    name = (names or {}).get(m.get("public_key", ""))
    shown = f"{name}  {m['id']}" if name else m["id"]
    return f"{'*' if m['online'] else ' '} {shown}{role}{'  (you)' if m['me'] else ''}"


def channel_message_line(m: dict[str, Any], names: dict[str, str] | None = None) -> str:
    private = " (private)" if m["private"] else ""
    who = _who(m["author"], names or {})
    if m.get("file"):
        f = m["file"]
        return f"{when(m['ts'])} {who}{private}: [file] {f['name']} ({human_size(f['size'])})"
    return f"{when(m['ts'])} {who}{private}: {indent_lines(m['text'])}"


def channel_file_line(f: dict[str, Any], names: dict[str, str]) -> str:
    """One channel file: whose, what, how far; the name is the poster's text."""
    who = "you" if f["mine"] else names.get(f["author"], f["author"][:12])
    pct = f"{100 * f['progress']:.0f}%"
    extra = f" ({f['error']})" if f.get("error") else ""
    where = f" -> {f['path']}" if f.get("path") and not f["mine"] else ""
    served = f", served {f['served']} piece(s)" if f.get("served") else ""
    return (
        f"{f['id'][:12]} from {who}: {f['name']} ({human_size(f['size'])}) "
        f"{f['state']} {pct}{served}{extra}{where}"
    )


def _who(pk: str, names: dict[str, str]) -> str:
    """A petname, or for someone not in the contact book the start of their key."""
    return names.get(pk, pk[:12])


def human_size(n: int) -> str:
    """Bytes as people read them: 812 B, 2.9 MiB."""
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{n} B" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    raise AssertionError("unreachable")


def transfer_line(t: dict[str, Any], names: dict[str, str]) -> str:
    """One transfer: who (by petname), what, how far; the name is the sender's text."""
    arrow = "to" if t["direction"] == "out" else "from"
    who = names.get(t["contact"], t["contact"][:12])
    pct = f"{100 * t['progress']:.0f}%"
    extra = f" ({t['error']})" if t.get("error") else ""
    where = f" -> {t['path']}" if t.get("path") and t["direction"] == "in" else ""
    return (
        f"{t['id'][:12]} {arrow} {who}: {t['name']} ({human_size(t['size'])}) "
        f"{t['state']} {pct}{extra}{where}"
    )


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


@dataclass
class Names:
    """What a watcher calls people and channels: petnames by hex key, channel names by
    id; anyone else by the start of their key."""

    contacts: dict[str, str] = field(default_factory=dict)
    channels: dict[str, str] = field(default_factory=dict)

    def who(self, pk: str) -> str:
        return _who(pk, self.contacts)

    def channel(self, cid: str) -> str:
        return self.channels.get(cid, cid[:8])


def _channel_message(e: dict[str, Any], n: Names) -> str:
    m = e["message"]
    return f"#{n.channel(e['channel'])} {n.who(m['author'])}: {indent_lines(m['text'])}"


def _channel_file(e: dict[str, Any], n: Names) -> str:
    f = e["file"]
    line = f"#{n.channel(f['channel'])} {channel_file_line(f, n.contacts)}"
    if e["type"] == "channel_file_offer" and f["state"] == "offered":
        line += f"  (btchat channel accept-file {n.channel(f['channel'])} {f['id'][:12]})"
    return line


def _session(e: dict[str, Any], n: Names) -> str:
    return f"{e['contact']['name']} {'connected' if e['state'] == 'up' else 'disconnected'}"


def _file(e: dict[str, Any], n: Names) -> str:
    t = e["transfer"]
    line = transfer_line(t, n.contacts)
    if e["type"] == "file_offer" and t["direction"] == "in" and t["state"] == "offered":
        line += f"  (btchat accept-file {t['id'][:12]})"
    return line


_EVENT_LINES: dict[str, Callable[[dict[str, Any], Names], str]] = {
    "message": lambda e, n: show_message(e["message"], n.contacts),
    "receipt": lambda e, n: f"{len(e['ids'])} message(s) {e['state']} by {n.who(e['contact'])}",
    "read": lambda e, n: f"{len(e['ids'])} message(s) from {n.who(e['contact'])} marked read",
    "presence": lambda e, n: f"{n.who(e['contact'])} is {e['status']}",
    "typing": lambda e, n: f"{n.who(e['contact'])} {'is typing…' if e['on'] else 'stopped typing'}",
    "session": _session,
    "channel_message": _channel_message,
    "channel_joined": lambda e, n: f"joined #{e['name']}, as on another of your devices",
    "expired": lambda e, n: (
        f"{len(e['ids'])} message(s) to {n.who(e['contact'])} not delivered, expired"
    ),
    "undecryptable": lambda e, n: f"{n.who(e['contact'])}: {e['notice']}",
    "file_offer": _file,
    "file_progress": _file,
    "file_done": _file,
    "channel_file_offer": _channel_file,
    "channel_file_progress": _channel_file,
    "channel_file_done": _channel_file,
    "device_link_waiting": lambda e, n: f"link offer open: btchat device join {e['code']}",
    "device_linked": lambda e, n: f"a new device linked: {e['device_id'][:8]}",
    "device_link_failed": lambda e, n: f"no device linked: {e['reason']}",
    "profile": lambda e, n: (
        "your profile is now: "
        + (", ".join(f"{k} {v!r}" for k, v in e["profile"].items() if v) or "empty")
    ),
}


def describe_event(e: dict[str, Any], names: Names | None = None) -> str:
    """One line for a person; kinds without a line are shown as their JSON."""
    line = _EVENT_LINES.get(e.get("type"))  # type: ignore[arg-type]
    return line(e, names or Names()) if line is not None else json.dumps(e)
