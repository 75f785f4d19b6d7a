"""The channel tables of the message database."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from btchat.codec.bencode import decode, encode
from btchat.messaging.store import Store
from btchat.storage import register_migrations, sql_step
from btchat.transfer.manifest import Manifest, parse_manifest

__all__ = ["ChannelRow", "ChannelStore", "StoredMessage"]


@dataclass(frozen=True)
class ChannelRow:
    id: bytes
    chatfile: bytes
    joined_ms: int
    member_list: bytes | None
    lamport: int


@dataclass(frozen=True)
class StoredMessage:
    channel: bytes
    id: bytes
    author: bytes
    lamport: int
    ts_ms: int
    private: bool
    text: str | None
    recipients: tuple[bytes, ...]
    wire: bytes
    #: A ``file`` message's manifest (its ``text`` is then the file's name).
    file: Manifest | None = None

    def to_json(self) -> dict[str, Any]:
        m = self.file
        return {
            "channel": self.channel.hex(),
            "id": self.id.hex(),
            "author": self.author.hex(),
            "lamport": self.lamport,
            "ts": self.ts_ms,
            "private": self.private,
            "recipients": [r.hex() for r in self.recipients],
            "text": self.text,
            "file": None if m is None else m.to_json(),
        }


_MSG = "channel, id, author, lamport, ts_ms, private, text, recipients, wire, file"


def _file(raw: bytes | None) -> Manifest | None:
    return None if raw is None else parse_manifest(decode(bytes(raw)))


def _msg(row: Any) -> StoredMessage:
    recipients = bytes(row[7] or b"")
    return StoredMessage(
        row[0],
        row[1],
        row[2],
        row[3],
        row[4],
        bool(row[5]),
        row[6],
        tuple(recipients[i : i + 32] for i in range(0, len(recipients), 32)),
        bytes(row[8]),
        _file(row[9]),
    )


_SCHEMA = (
    # Joined channels: the .chat file, the newest verified member list, our clock.
    """CREATE TABLE channels (
        id BLOB PRIMARY KEY CHECK (length(id) = 32),
        chatfile BLOB NOT NULL,
        joined_ms INTEGER NOT NULL,
        member_list BLOB,
        lamport INTEGER NOT NULL DEFAULT 0
    ) WITHOUT ROWID""",
    # Generation secrets of invite-only channels, opened from grants sealed to us.
    """CREATE TABLE channel_keys (
        channel BLOB NOT NULL,
        generation INTEGER NOT NULL,
        key BLOB NOT NULL,
        PRIMARY KEY (channel, generation)
    ) WITHOUT ROWID""",
    # Grants (sealed to one member each) kept to hand to members who missed them.
    """CREATE TABLE channel_grants (
        channel BLOB NOT NULL,
        recipient BLOB NOT NULL,
        generation INTEGER NOT NULL,
        sealed BLOB NOT NULL,
        PRIMARY KEY (channel, recipient, generation)
    ) WITHOUT ROWID""",
    # Every message seen (for relaying and history sync); text only where we can read.
    """CREATE TABLE channel_messages (
        seq INTEGER PRIMARY KEY,
        channel BLOB NOT NULL,
        id BLOB NOT NULL,
        author BLOB NOT NULL,
        lamport INTEGER NOT NULL,
        ts_ms INTEGER NOT NULL,
        private INTEGER NOT NULL,
        text TEXT,
        recipients BLOB,
        wire BLOB NOT NULL,
        received_ms INTEGER NOT NULL,
        UNIQUE (channel, id)
    )""",
    "CREATE INDEX channel_messages_order ON channel_messages (channel, lamport, author, id)",
)


#: Ordered steps of the channel tables; append only, never edit a released one.
MIGRATIONS = (
    sql_step(_SCHEMA),  # 1: joined channels, their keys, grants and messages
    sql_step(  # 2: arrival order per channel and per author, for quotas' eviction
        (
            "CREATE INDEX channel_messages_arrival ON channel_messages (channel, seq)",
            "CREATE INDEX channel_messages_author ON channel_messages (channel, author, seq)",
        )
    ),
    # 3: a file message's manifest (bencoded offer body), beside its name in ``text``
    sql_step(("ALTER TABLE channel_messages ADD COLUMN file BLOB",)),
)
register_migrations("channels", MIGRATIONS)


class ChannelStore:
    def __init__(self, store: Store) -> None:
        self.store = store
        store.migrate()  # the channel tables, if this file predates them

    # ----------------------------------------------------------------- channels

    def add_channel(self, channel: bytes, chatfile: bytes, now_ms: int) -> bool:
        with self.store.transaction() as conn:
            return bool(
                conn.execute(
                    "INSERT OR IGNORE INTO channels (id, chatfile, joined_ms) VALUES (?, ?, ?)",
                    (channel, chatfile, now_ms),
                ).rowcount
            )

    def remove_channel(self, channel: bytes) -> bool:
        with self.store.transaction() as conn:
            for table, column in (
                ("channel_messages", "channel"),
                ("channel_keys", "channel"),
                ("channel_grants", "channel"),
                ("channels", "id"),
            ):
                changed = conn.execute(f"DELETE FROM {table} WHERE {column} = ?", (channel,))
            return bool(changed.rowcount)

    def channels(self) -> list[ChannelRow]:
        return [
            ChannelRow(*r)
            for r in self.store.query(
                "SELECT id, chatfile, joined_ms, member_list, lamport FROM channels"
                " ORDER BY joined_ms"
            )
        ]

    def channel(self, channel: bytes) -> ChannelRow | None:
        rows = self.store.query(
            "SELECT id, chatfile, joined_ms, member_list, lamport FROM channels WHERE id = ?",
            (channel,),
        )
        return ChannelRow(*rows[0]) if rows else None

    def set_member_list(self, channel: bytes, data: bytes) -> None:
        with self.store.transaction() as conn:
            conn.execute("UPDATE channels SET member_list = ? WHERE id = ?", (data, channel))

    def next_lamport(self, channel: bytes, seen: int | None) -> int:
        """Advance past ``seen`` (a received message), or tick for one we send."""
        with self.store.transaction() as conn:
            (current,) = conn.execute(
                "SELECT lamport FROM channels WHERE id = ?", (channel,)
            ).fetchone()
            value = max(current, seen) if seen is not None else current + 1
            conn.execute("UPDATE channels SET lamport = ? WHERE id = ?", (value, channel))
            return int(value)

    # --------------------------------------------------------------------- keys

    def save_key(self, channel: bytes, generation: int, key: bytes) -> None:
        with self.store.transaction() as conn:
            conn.execute(
                "INSERT OR REPLACE INTO channel_keys (channel, generation, key) VALUES (?, ?, ?)",
                (channel, generation, key),
            )

    def keys(self, channel: bytes) -> dict[int, bytes]:
        return {
            r[0]: bytes(r[1])
            for r in self.store.query(
                "SELECT generation, key FROM channel_keys WHERE channel = ?", (channel,)
            )
        }

    def save_grant(self, channel: bytes, recipient: bytes, generation: int, sealed: bytes) -> bool:
        with self.store.transaction() as conn:
            return bool(
                conn.execute(
                    "INSERT OR IGNORE INTO channel_grants (channel, recipient, generation, sealed)"
                    " VALUES (?, ?, ?, ?)",
                    (channel, recipient, generation, sealed),
                ).rowcount
            )

    def grants(self, channel: bytes) -> list[tuple[bytes, int, bytes]]:
        return [
            (r[0], r[1], bytes(r[2]))
            for r in self.store.query(
                "SELECT recipient, generation, sealed FROM channel_grants WHERE channel = ?",
                (channel,),
            )
        ]

    # ----------------------------------------------------------------- messages

    def has_message(self, channel: bytes, msg_id: bytes) -> bool:
        return bool(
            self.store.query(
                "SELECT 1 FROM channel_messages WHERE channel = ? AND id = ?", (channel, msg_id)
            )
        )

    def save_message(self, msg: StoredMessage, now_ms: int) -> bool:
        """Store once; False if this id was stored before (another path got it first)."""
        with self.store.transaction() as conn:
            return bool(
                conn.execute(
                    f"INSERT OR IGNORE INTO channel_messages ({_MSG}, received_ms)"
                    " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (
                        msg.channel,
                        msg.id,
                        msg.author,
                        msg.lamport,
                        msg.ts_ms,
                        int(msg.private),
                        msg.text,
                        b"".join(msg.recipients) or None,
                        msg.wire,
                        None if msg.file is None else encode(msg.file.body()),
                        now_ms,
                    ),
                ).rowcount
            )

    def recent(self, channel: bytes, limit: int) -> list[StoredMessage]:
        """The newest ``limit`` messages, oldest first (history a late joiner is sent)."""
        return self._newest(channel, limit, readable_only=False)

    def history(self, channel: bytes, limit: int) -> list[StoredMessage]:
        """What this member can read, newest ``limit``, oldest first."""
        return self._newest(channel, limit, readable_only=True)

    def _newest(self, channel: bytes, limit: int, *, readable_only: bool) -> list[StoredMessage]:
        """The newest ``limit`` messages (in channel order), returned oldest first."""
        readable = " AND text IS NOT NULL" if readable_only else ""
        rows = self.store.query(
            f"SELECT {_MSG} FROM channel_messages WHERE channel = ?{readable}"
            " ORDER BY lamport DESC, author DESC, id DESC LIMIT ?",
            (channel, limit),
        )
        return [_msg(r) for r in reversed(rows)]

    def unreadable(self, channel: bytes) -> list[StoredMessage]:
        rows = self.store.query(
            f"SELECT {_MSG} FROM channel_messages WHERE channel = ? AND text IS NULL"
            " AND private = 0",
            (channel,),
        )
        return [_msg(r) for r in rows]

    def usage(self, channel: bytes) -> tuple[int, int]:
        """Messages stored for ``channel`` and their wire bytes (read once, at start)."""
        ((count, size),) = self.store.query(
            "SELECT count(*), coalesce(sum(length(wire)), 0) FROM channel_messages"
            " WHERE channel = ?",
            (channel,),
        )
        return int(count), int(size)

    def author_count(self, channel: bytes, author: bytes) -> int:
        ((count,),) = self.store.query(
            "SELECT count(*) FROM channel_messages WHERE channel = ? AND author = ?",
            (channel, author),
        )
        return int(count)

    def evict_oldest(
        self, channel: bytes, *, count: int, size: int = 0, author: bytes | None = None
    ) -> tuple[int, int]:
        """Delete the earliest-arrived messages (of ``author``, if given) until at least
        ``count`` messages and ``size`` bytes are gone; returns what was removed."""
        where = "channel = ?" + (" AND author = ?" if author is not None else "")
        params: tuple[bytes, ...] = (channel,) if author is None else (channel, author)
        removed, freed = 0, 0
        with self.store.transaction() as conn:
            while removed < count or freed < size:
                rows = conn.execute(
                    f"SELECT seq, length(wire) FROM channel_messages WHERE {where}"
                    " ORDER BY seq LIMIT 500",
                    params,
                ).fetchall()
                if not rows:
                    break
                doomed = []
                for seq, length in rows:
                    if removed >= count and freed >= size:
                        break
                    doomed.append(seq)
                    removed += 1
                    freed += int(length)
                conn.execute(
                    f"DELETE FROM channel_messages WHERE seq IN ({', '.join('?' * len(doomed))})",
                    doomed,
                )
        return removed, freed

    def set_text(
        self, channel: bytes, msg_id: bytes, text: str, file: Manifest | None = None
    ) -> None:
        raw = None if file is None else encode(file.body())
        with self.store.transaction() as conn:
            conn.execute(
                "UPDATE channel_messages SET text = ?, file = ? WHERE channel = ? AND id = ?",
                (text, raw, channel, msg_id),
            )
