"""Message history: our and their messages per conversation, delivery states, full-text
search, and each conversation's Lamport clock.

The full-text index is kept off the path that stores a message: a stored row is only
marked pending (``fts_pending``, by a trigger) and :meth:`Messages.index_pending` adds
pending rows to the index in bounded batches, which the node runs in idle time.
:meth:`Messages.search` first indexes everything still pending, so a search always
finds a message stored a moment ago; a row pending when the process died is indexed
after the next start, since ``fts_pending`` is committed with the row it names.

Message order within a conversation is ``(lamport, sender, id)``: both participants hold
the same envelopes, so both show the same order whatever the arrival order.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from btchat.messaging.envelope import (
    FILE,
    MAX_INT,
    TEXT,
    Envelope,
    EnvelopeError,
    decode_file,
    decode_text,
    lamport_tick,
)
from btchat.messaging.outbox import Outbox
from btchat.messaging.replay import ReplayIds
from btchat.storage import Connection, StoreError, Table, id_chunks, placeholders

__all__ = [
    "INDEX_BATCH",
    "MAX_LIMIT",
    "MAX_SEARCH_TERMS",
    "MESSAGE_STATES",
    "MessageRow",
    "Messages",
]

#: Delivery states of a message, in the order they may advance; ``failed`` is a side
#: state reachable only from ``pending``/``sent``.
MESSAGE_STATES = ("pending", "sent", "delivered", "read", "failed")
_RANK = {"pending": 0, "sent": 1, "delivered": 2, "read": 3}
#: Most rows one history/search call returns.
MAX_LIMIT = 1000
#: Most words of a search query used; the rest are ignored.
MAX_SEARCH_TERMS = 16

#: Pending rows one :meth:`Messages.index_pending` transaction indexes when searching.
INDEX_BATCH = 5000

_MESSAGE_COLUMNS = "id, peer, sender, direction, ts_ms, lamport, type, text, state, received_ms"


@dataclass(frozen=True)
class MessageRow:
    id: bytes
    peer: bytes
    sender: bytes
    direction: str
    ts_ms: int
    lamport: int
    type: str
    text: str | None
    state: str
    received_ms: int

    @classmethod
    def of(cls, env: Envelope, direction: str, state: str, received_ms: int) -> MessageRow:
        """The row a save of ``env`` just wrote, without reading it back (for events)."""
        text = Messages._text_of(env)  # as stored: a file offer's name and size, too
        peer = env.recipient if direction == "out" else env.sender
        kind = env.type.decode("ascii")
        return cls(
            env.id,
            peer,
            env.sender,
            direction,
            env.ts_ms,
            env.lamport,
            kind,
            text,
            state,
            received_ms,
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id.hex(),
            "peer": self.peer.hex(),
            "sender": self.sender.hex(),
            "direction": self.direction,
            "text": self.text,
            "state": self.state,
            "ts": self.ts_ms,
            "lamport": self.lamport,
            "type": self.type,
        }


def _fts_query(query: str) -> str | None:
    """Turn user text into a safe FTS5 query: every word must match, the last as a prefix.

    Each word becomes a quoted phrase with ``"`` doubled, so FTS5 operators typed by the
    user (``OR``, ``NEAR``, ``*``, ``^``, ``:``, parentheses) are plain text; words with
    no letter or digit would tokenize to nothing and are dropped. The SQL itself only
    ever receives the result as a bound parameter.
    """
    query = query.encode("utf-8", "replace").decode("utf-8").replace("\x00", " ")
    words = [w for w in query.split() if any(ch.isalnum() for ch in w)]
    if not words:
        return None
    phrases = ['"' + w.replace('"', '""') + '"' for w in words[:MAX_SEARCH_TERMS]]
    phrases[-1] += "*"
    return " ".join(phrases)


def _clamp_limit(limit: int) -> int:
    return max(0, min(int(limit), MAX_LIMIT))


def _insert(
    conn: Connection, env: Envelope, direction: str, state: str, text: str | None, now_ms: int
) -> int:
    """One message row (an existing id is left as it is); returns the rows added."""
    peer = env.recipient if direction == "out" else env.sender
    return int(
        conn.execute(
            f"INSERT OR IGNORE INTO messages ({_MESSAGE_COLUMNS})"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                env.id,
                peer,
                env.sender,
                direction,
                env.ts_ms,
                env.lamport,
                env.type.decode("ascii"),
                text,
                state,
                now_ms,
            ),
        ).rowcount
    )


def _message(row: Sequence[Any]) -> MessageRow:
    return MessageRow(*row)


class Messages(Table):
    #: Called with every new incoming ``file`` envelope inside the transaction that
    #: stores it, before the row (the file shell saves an inline file's bytes here): an
    #: exception it raises (a StorageFault: a full disk) undoes the save, so the message
    #: is not acknowledged and comes again; None: nothing to do.
    on_incoming_file: Callable[[Envelope], None] | None = None

    @staticmethod
    def _text_of(env: Envelope) -> str | None:
        if env.type == FILE:  # a file offer shows (and is found) by its name and size
            try:
                manifest = decode_file(env)
            except EnvelopeError as exc:
                raise StoreError(f"cannot store a malformed file offer: {exc}") from None
            return f"[file] {manifest.name} ({manifest.size} bytes)"
        if env.type != TEXT:
            return None
        try:
            return decode_text(env)
        except EnvelopeError as exc:
            raise StoreError(f"cannot store a malformed text message: {exc}") from None

    def save_outgoing(self, env: Envelope, now: float, *, sent: bool = False) -> None:
        """Record our own message as ``pending`` (``sent`` when the caller sends it once
        the transaction is committed) and queue it, atomically."""
        text = self._text_of(env)
        now_ms = int(now * 1000)
        with self.db.transaction() as conn:
            if not _insert(conn, env, "out", "sent" if sent else "pending", text, now_ms):
                raise StoreError("a message with this id is already stored")
            Outbox.queue(conn, env, now_ms)

    def save_incoming(self, env: Envelope, now: float) -> bool:
        """Record a verified incoming message and its replay id, atomically.

        Returns False, changing nothing, if the id was seen before (a replay, or a resend
        after our receipt was lost), so the caller can acknowledge without duplicating.
        """
        text = self._text_of(env)
        now_ms = int(now * 1000)
        with self.db.transaction() as conn:
            if not ReplayIds.record_seen(conn, env.id, now_ms):
                return False
            if env.type == FILE and self.on_incoming_file is not None:
                self.on_incoming_file(env)  # stored before acknowledged, or raises
            # The id may also be one of ours (a peer echoing it back): never overwrite.
            return _insert(conn, env, "in", "delivered", text, now_ms) > 0

    def rows_after(self, seq: int, limit: int) -> list[tuple[int, MessageRow]]:
        """Messages stored here after local ``seq``, oldest first (own-device sync)."""
        rows = self.db.query(
            f"SELECT seq, {_MESSAGE_COLUMNS} FROM messages WHERE seq > ? ORDER BY seq LIMIT ?",
            (seq, limit),
        )
        return [(int(r[0]), _message(r[1:])) for r in rows]

    def last_seq(self) -> int:
        return int(self.db.query("SELECT coalesce(max(seq), 0) FROM messages")[0][0])

    def save_synced(self, rows: Sequence[MessageRow]) -> list[MessageRow]:
        """Store copies from another of our devices, atomically; returns those new here.
        An incoming one's id is also recorded as seen, so the contact's own delivery of
        it later is acknowledged and not stored twice; clocks move past the copies."""
        added = []
        with self.db.transaction() as conn:
            for row in rows:
                new = conn.execute(
                    f"INSERT OR IGNORE INTO messages ({_MESSAGE_COLUMNS})"
                    " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    dataclasses.astuple(row),
                ).rowcount
                if new:
                    added.append(row)
                    if row.direction == "in":
                        ReplayIds.record_seen(conn, row.id, row.received_ms)
                conn.execute(
                    "INSERT INTO clocks (peer, lamport) VALUES (?, ?) ON CONFLICT (peer)"
                    " DO UPDATE SET lamport = max(lamport, excluded.lamport)",
                    (row.peer, row.lamport),
                )
        return added

    def message_ids(self, ids: Sequence[bytes], peer: bytes, direction: str) -> set[bytes]:
        """Those of ``ids`` that are stored messages of the conversation with ``peer``
        going ``direction`` (one query per 500 ids, for receipts and sync offers)."""
        found: set[bytes] = set()
        for chunk in id_chunks(ids):
            rows = self.db.query(
                f"SELECT id FROM messages WHERE id IN ({placeholders(len(chunk))})"
                " AND peer = ? AND direction = ?",
                (*chunk, peer, direction),
            )
            found.update(bytes(r[0]) for r in rows)
        return found

    def get_message(self, msg_id: bytes) -> MessageRow | None:
        rows = self.db.query(f"SELECT {_MESSAGE_COLUMNS} FROM messages WHERE id = ?", (msg_id,))
        return _message(rows[0]) if rows else None

    def mark_state(self, ids: list[bytes], state: str) -> int:
        """Advance delivery state; never moves backwards. Returns the rows changed.

        ``pending < sent < delivered < read``; ``failed`` only from pending or sent, and a
        failed message may still advance to sent, delivered or read (it did arrive).
        """
        if state not in MESSAGE_STATES:
            raise StoreError(f"unknown message state {state!r}")
        if state == "failed":
            before = ["pending", "sent"]
        else:
            before = [s for s, r in _RANK.items() if r < _RANK[state]]
            if state != "pending":
                before.append("failed")
        if not before:
            return 0
        changed = 0
        with self.db.transaction() as conn:
            for chunk in id_chunks(ids):
                changed += conn.execute(
                    f"UPDATE messages SET state = ? WHERE id IN ({placeholders(len(chunk))})"
                    f" AND state IN ({placeholders(len(before))})",
                    (state, *chunk, *before),
                ).rowcount
        return changed

    def history(
        self, peer: bytes, limit: int = 50, before_lamport: int | None = None
    ) -> list[MessageRow]:
        """The latest ``limit`` messages (before ``before_lamport`` if given), oldest first."""
        limit = _clamp_limit(limit)
        if limit == 0:
            return []
        where, params = "peer = ?", [peer]
        if before_lamport is not None:
            where += " AND lamport < ?"
            params.append(max(-1, min(int(before_lamport), MAX_INT + 1)))
        rows = self.db.query(
            f"SELECT {_MESSAGE_COLUMNS} FROM messages WHERE {where}"
            " ORDER BY lamport DESC, sender DESC, id DESC LIMIT ?",
            (*params, limit),
        )
        return [_message(r) for r in reversed(rows)]

    def index_pending(self, limit: int = INDEX_BATCH) -> int:
        """Add up to ``limit`` pending rows (oldest first) to the full-text index, in one
        transaction; returns how many were indexed (fewer than ``limit``: none is left).

        Raises :class:`StoreError` (a ``StorageFault`` on a full or failing disk); the
        rows then stay pending, and nothing is lost: the messages themselves are stored.
        """
        limit = int(limit)
        if limit <= 0:
            return 0
        with self.db.transaction() as conn:
            last = conn.execute(
                "SELECT max(seq) FROM (SELECT seq FROM fts_pending ORDER BY seq LIMIT ?)",
                (limit,),
            ).fetchone()[0]
            if last is None:
                return 0
            conn.execute(
                "INSERT INTO messages_fts (rowid, text) SELECT m.seq, m.text"
                " FROM fts_pending AS p JOIN messages AS m ON m.seq = p.seq"
                " WHERE p.seq <= ? AND m.text IS NOT NULL ORDER BY p.seq",
                (last,),
            )
            return int(conn.execute("DELETE FROM fts_pending WHERE seq <= ?", (last,)).rowcount)

    def pending_index(self) -> int:
        """Stored rows not yet in the full-text index."""
        return int(self.db.query("SELECT count(*) FROM fts_pending")[0][0])

    def index_all(self) -> int:
        """Index every pending row (batches of :data:`INDEX_BATCH`); returns how many."""
        total = 0
        while (n := self.index_pending(INDEX_BATCH)) > 0:
            total += n
            if n < INDEX_BATCH:
                break
        return total

    def search(self, query: str, peer: bytes | None = None, limit: int = 50) -> list[MessageRow]:
        """Messages containing every word of ``query`` (the last as a prefix), newest first.

        Exact: whatever is still pending is indexed first, however much (the user asked
        for it), so a message stored a moment ago is found."""
        match = _fts_query(query)
        limit = _clamp_limit(limit)
        if match is None or limit == 0:
            return []
        self.index_all()
        columns = ", ".join(f"m.{c.strip()}" for c in _MESSAGE_COLUMNS.split(","))
        sql = (
            f"SELECT {columns} FROM messages_fts JOIN messages AS m ON m.seq = messages_fts.rowid"
            " WHERE messages_fts MATCH ?"
        )
        params: list[Any] = [match]
        if peer is not None:
            sql += " AND m.peer = ?"
            params.append(peer)
        sql += " ORDER BY m.ts_ms DESC, m.lamport DESC, m.id DESC LIMIT ?"
        params.append(limit)
        return [_message(r) for r in self.db.query(sql, params)]

    def next_lamport(self, peer: bytes, seen: int | None) -> int:
        """Tick the conversation's clock past ``seen`` (a received ``lc``) and return it.

        Clamped at 2**53 - 1 (:func:`~btchat.messaging.envelope.lamport_tick`).
        """
        with self.db.transaction():
            value = lamport_tick(self.lamport(peer), seen)
            self.set_lamport(peer, value)
        return value

    def lamport(self, peer: bytes) -> int:
        """The conversation's clock as stored (0 before its first envelope)."""
        rows = self.db.query("SELECT lamport FROM clocks WHERE peer = ?", (peer,))
        return int(rows[0][0]) if rows else 0

    def set_lamport(self, peer: bytes, value: int) -> None:
        """Store the clock a batch advanced in memory (see ``Conversations.batch``)."""
        with self.db.transaction() as conn:
            conn.execute(
                "INSERT INTO clocks (peer, lamport) VALUES (?, ?)"
                " ON CONFLICT (peer) DO UPDATE SET lamport = excluded.lamport",
                (peer, min(max(int(value), 0), MAX_INT)),
            )
