"""The local database: contacts, message history, outbox, replay ids, requests, settings.

With a key the database is SQLCipher (encrypted and authenticated at rest, including the
WAL and the full-text index); without one it is plain SQLite, for users who chose not to
protect their identity with a passphrase. Either way:

* ``synchronous=FULL`` in WAL mode: a method that returned has its data on disk, so the
  daemon may acknowledge a message (or report it queued) right after saving it;
* every multi-row change is one ``BEGIN IMMEDIATE`` transaction, so a crash leaves either
  all of it or none (a message is never saved without its replay id or outbox row);
* the schema is migrated forward with ``PRAGMA user_version`` and an ordered list of
  migration functions, each in its own transaction.

Message order within a conversation is ``(lamport, sender, id)``: both participants hold
the same envelopes, so both show the same order whatever the arrival order.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from btchat.codec.bencode import DecodeError, decode, encode
from btchat.identity.keys import CertificateError, DeviceCertificate
from btchat.messaging.envelope import (
    MAX_INT,
    PRESENCE_STATES,
    TEXT,
    Envelope,
    EnvelopeError,
    decode_text,
    encode_envelope,
)

__all__ = [
    "MESSAGE_STATES",
    "MIGRATIONS",
    "REQUEST_STATES",
    "ContactRow",
    "MessageRow",
    "RequestRow",
    "Store",
    "StoreError",
]

#: Delivery states of a message, in the order they may advance; ``failed`` is a side
#: state reachable only from ``pending``/``sent``.
MESSAGE_STATES = ("pending", "sent", "delivered", "read", "failed")
_RANK = {"pending": 0, "sent": 1, "delivered": 2, "read": 3}
REQUEST_STATES = ("pending", "accepted", "declined", "cancelled")
#: Most device certificates kept per contact: bounds what a peer can make us store.
MAX_CERTS = 32
#: Most rows one history/search call returns.
MAX_LIMIT = 1000
#: Most words of a search query used; the rest are ignored.
MAX_SEARCH_TERMS = 16
#: How long a writer waits for another connection's lock before failing.
BUSY_TIMEOUT_MS = 5000
#: Ids per ``IN (...)`` list, far below SQLite's bound-parameter limit.
_CHUNK = 500

WRONG_KEY = "cannot open the message database: wrong key or corrupt file"

#: A sqlite3 or sqlcipher3 connection; the two modules share the DB-API but no classes.
Connection = Any


class StoreError(Exception):
    """The database cannot be opened or a change was refused; the message says why."""


# --------------------------------------------------------------------------- rows


@dataclass(frozen=True)
class ContactRow:
    pk: bytes
    name: str
    added_ms: int
    verified: bool
    blocked: bool
    certs: tuple[DeviceCertificate, ...]
    presence: str
    last_seen_ms: int | None


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


@dataclass(frozen=True)
class RequestRow:
    """A contact request, sent (``out``) or received (``in``)."""

    id: bytes
    pk: bytes
    direction: str
    name: str | None
    note: str | None
    state: str
    created_ms: int
    updated_ms: int
    payload: bytes | None

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id.hex(),
            "public_key": self.pk.hex(),
            "direction": self.direction,
            "name": self.name,
            "note": self.note,
            "state": self.state,
            "created": self.created_ms,
            "updated": self.updated_ms,
        }


# --------------------------------------------------------------------------- schema

_SCHEMA_V1 = (
    """CREATE TABLE contacts (
        pk BLOB PRIMARY KEY CHECK (length(pk) = 32),
        name TEXT NOT NULL,
        added_ms INTEGER NOT NULL,
        verified INTEGER NOT NULL DEFAULT 0 CHECK (verified IN (0, 1)),
        blocked INTEGER NOT NULL DEFAULT 0 CHECK (blocked IN (0, 1)),
        certs BLOB,
        presence TEXT NOT NULL DEFAULT 'offline',
        last_seen_ms INTEGER
    ) WITHOUT ROWID""",
    # seq is the FTS rowid; ids are random, so they make a poor clustered key.
    """CREATE TABLE messages (
        seq INTEGER PRIMARY KEY,
        id BLOB NOT NULL UNIQUE CHECK (length(id) = 16),
        peer BLOB NOT NULL CHECK (length(peer) = 32),
        sender BLOB NOT NULL CHECK (length(sender) = 32),
        direction TEXT NOT NULL CHECK (direction IN ('in', 'out')),
        ts_ms INTEGER NOT NULL,
        lamport INTEGER NOT NULL,
        type TEXT NOT NULL,
        text TEXT,
        state TEXT NOT NULL
            CHECK (state IN ('pending', 'sent', 'delivered', 'read', 'failed')),
        received_ms INTEGER NOT NULL
    )""",
    "CREATE INDEX messages_order ON messages (peer, lamport, sender, id)",
    """CREATE VIRTUAL TABLE messages_fts USING fts5 (
        text, content = 'messages', content_rowid = 'seq',
        tokenize = 'unicode61 remove_diacritics 2'
    )""",
    """CREATE TRIGGER messages_fts_insert AFTER INSERT ON messages
        WHEN new.text IS NOT NULL BEGIN
        INSERT INTO messages_fts (rowid, text) VALUES (new.seq, new.text);
    END""",
    """CREATE TRIGGER messages_fts_delete AFTER DELETE ON messages
        WHEN old.text IS NOT NULL BEGIN
        INSERT INTO messages_fts (messages_fts, rowid, text)
            VALUES ('delete', old.seq, old.text);
    END""",
    """CREATE TRIGGER messages_fts_update_old AFTER UPDATE OF text ON messages
        WHEN old.text IS NOT NULL BEGIN
        INSERT INTO messages_fts (messages_fts, rowid, text)
            VALUES ('delete', old.seq, old.text);
    END""",
    """CREATE TRIGGER messages_fts_update_new AFTER UPDATE OF text ON messages
        WHEN new.text IS NOT NULL BEGIN
        INSERT INTO messages_fts (rowid, text) VALUES (new.seq, new.text);
    END""",
    # Replay protection: ids of every envelope accepted, kept for the envelope age window.
    """CREATE TABLE seen (
        id BLOB PRIMARY KEY,
        seen_ms INTEGER NOT NULL
    ) WITHOUT ROWID""",
    "CREATE INDEX seen_age ON seen (seen_ms)",
    # Signed envelopes not yet acknowledged by the recipient, replayed on every session.
    """CREATE TABLE outbox (
        id BLOB PRIMARY KEY REFERENCES messages (id) ON DELETE CASCADE,
        peer BLOB NOT NULL,
        lamport INTEGER NOT NULL,
        envelope BLOB NOT NULL,
        queued_ms INTEGER NOT NULL
    ) WITHOUT ROWID""",
    "CREATE INDEX outbox_order ON outbox (peer, lamport, id)",
    # Lamport clock per conversation.
    """CREATE TABLE clocks (
        peer BLOB PRIMARY KEY,
        lamport INTEGER NOT NULL
    ) WITHOUT ROWID""",
    """CREATE TABLE contact_requests (
        id BLOB PRIMARY KEY CHECK (length(id) = 16),
        pk BLOB NOT NULL CHECK (length(pk) = 32),
        direction TEXT NOT NULL CHECK (direction IN ('in', 'out')),
        name TEXT,
        note TEXT,
        state TEXT NOT NULL
            CHECK (state IN ('pending', 'accepted', 'declined', 'cancelled')),
        created_ms INTEGER NOT NULL,
        updated_ms INTEGER NOT NULL,
        payload BLOB
    ) WITHOUT ROWID""",
    "CREATE INDEX contact_requests_pk ON contact_requests (pk)",
    """CREATE TABLE kv (
        key TEXT PRIMARY KEY,
        value BLOB NOT NULL
    ) WITHOUT ROWID""",
)


def _migrate_1(conn: Connection) -> None:
    """The initial schema."""
    for statement in _SCHEMA_V1:
        conn.execute(statement)


#: Ordered schema migrations: ``MIGRATIONS[i]`` takes ``user_version`` from i to i + 1.
#: Append only; never edit a released migration.
_SCHEMA_V2 = (
    # Double Ratchet (Olm) sessions per contact, pickled under a key from the identity.
    """CREATE TABLE olm_sessions (
        peer BLOB NOT NULL,
        session_id TEXT NOT NULL,
        pickle TEXT NOT NULL,
        used_ms INTEGER NOT NULL,
        PRIMARY KEY (peer, session_id)
    ) WITHOUT ROWID""",
    # Offline mailbox bookkeeping per contact (see btchat.offline.state).
    """CREATE TABLE mailbox_peers (
        peer BLOB PRIMARY KEY CHECK (length(peer) = 32),
        next_out INTEGER NOT NULL DEFAULT 0,
        received INTEGER NOT NULL DEFAULT -1,
        received_above BLOB NOT NULL DEFAULT x'',
        ack_changed_ms INTEGER NOT NULL DEFAULT 0,
        their_ack INTEGER NOT NULL DEFAULT -1,
        retention_s INTEGER,
        olm_key BLOB,
        prekey BLOB,
        given_prekey BLOB
    ) WITHOUT ROWID""",
    # Packets for a contact that has not acknowledged them: republished until then.
    """CREATE TABLE mailbox_out (
        peer BLOB NOT NULL,
        n INTEGER NOT NULL,
        msg_id BLOB NOT NULL,
        packet BLOB NOT NULL,
        expires_ms INTEGER NOT NULL,
        PRIMARY KEY (peer, n)
    ) WITHOUT ROWID""",
    "CREATE INDEX mailbox_out_msg ON mailbox_out (msg_id)",
    # Decrypted packets not yet handled: saved with the ratchet state in one transaction.
    """CREATE TABLE mailbox_in (
        peer BLOB NOT NULL,
        n INTEGER NOT NULL,
        plaintext BLOB NOT NULL,
        PRIMARY KEY (peer, n)
    ) WITHOUT ROWID""",
    # Friend-held backup: other contacts' packets we hold for their recipients.
    """CREATE TABLE held (
        recipient BLOB NOT NULL,
        sender BLOB NOT NULL,
        n INTEGER NOT NULL,
        packet BLOB NOT NULL,
        expires_ms INTEGER NOT NULL,
        PRIMARY KEY (recipient, sender, n)
    ) WITHOUT ROWID""",
)


def _migrate_2(conn: Connection) -> None:
    """Offline delivery: ratchet sessions, DHT mailbox, friend-held backup."""
    for statement in _SCHEMA_V2:
        conn.execute(statement)


_SCHEMA_V3 = (
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


def _migrate_3(conn: Connection) -> None:
    """Channels: joined channels, their keys, grants and messages."""
    for statement in _SCHEMA_V3:
        conn.execute(statement)


MIGRATIONS: tuple[Callable[[Connection], None], ...] = (_migrate_1, _migrate_2, _migrate_3)

_MESSAGE_COLUMNS = "id, peer, sender, direction, ts_ms, lamport, type, text, state, received_ms"
_CONTACT_COLUMNS = "pk, name, added_ms, verified, blocked, certs, presence, last_seen_ms"
_REQUEST_COLUMNS = "id, pk, direction, name, note, state, created_ms, updated_ms, payload"


def _chunks(ids: Sequence[bytes]) -> Iterator[list[bytes]]:
    items = list(dict.fromkeys(ids))
    for start in range(0, len(items), _CHUNK):
        yield items[start : start + _CHUNK]


def _marks(n: int) -> str:
    return ", ".join("?" * n)


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


def _create_private(path: Path) -> None:
    """Create the file owner-only before SQLite does (the WAL inherits its mode)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with contextlib.suppress(FileExistsError):
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))


def _message(row: Sequence[Any]) -> MessageRow:
    return MessageRow(*row)


def _request(row: Sequence[Any]) -> RequestRow:
    return RequestRow(*row)


# --------------------------------------------------------------------------- store


class Store:
    """One open database. Not thread-safe: use it from the thread that opened it."""

    def __init__(self, conn: Connection, errors: tuple[type[BaseException], ...]) -> None:
        self._conn: Connection | None = conn
        self._errors = errors

    # ------------------------------------------------------------------ opening

    @classmethod
    def open(cls, path: Path, key: bytes | None) -> Store:
        """Open (creating and migrating as needed); ``key`` is 32 bytes or None."""
        path = Path(path)
        if key is not None and (type(key) is not bytes or len(key) != 32):
            raise StoreError("the message database key must be 32 bytes")
        try:
            _create_private(path)
        except OSError as exc:
            raise StoreError(f"cannot create the message database: {exc}") from None
        errors: tuple[type[BaseException], ...]
        cant_open: tuple[type[BaseException], ...]
        if key is None:
            module: Any = sqlite3
            errors, cant_open = (sqlite3.Error,), (sqlite3.OperationalError,)
        else:
            try:
                from sqlcipher3 import dbapi2 as sqlcipher
            except ImportError:  # pragma: no cover - a declared dependency
                raise StoreError("an encrypted database needs the sqlcipher3 package") from None
            module = sqlcipher
            errors = (sqlcipher.Error, sqlite3.Error)
            cant_open = (sqlcipher.OperationalError, sqlite3.OperationalError)
        try:
            conn = module.connect(str(path), isolation_level=None)
        except errors as exc:
            raise StoreError(f"cannot open the message database: {exc}") from None
        try:
            if key is not None:
                # A wrong key is an expected user error, reported below: keep SQLCipher's
                # own logging from writing decryption failures over the terminal.
                conn.execute("PRAGMA cipher_log_level = NONE")
                # A raw key (no KDF): the 32 bytes already come from the key file.
                conn.execute(f"PRAGMA key = \"x'{key.hex()}'\"")
            # The first read decrypts page 1 and checks its HMAC: a wrong key fails here.
            conn.execute("SELECT count(*) FROM sqlite_master").fetchone()
        except cant_open as exc:  # permissions, a directory, a missing volume...
            conn.close()
            raise StoreError(f"cannot open the message database: {exc}") from None
        except errors:  # SQLITE_NOTADB: undecryptable page 1 (wrong key) or not SQLite
            conn.close()
            raise StoreError(WRONG_KEY) from None
        store = cls(conn, errors)
        try:
            store._configure()
            store._migrate()
        except BaseException:
            store.close()
            raise
        return store

    def _configure(self) -> None:
        conn = self._live()
        try:
            conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
            mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
            if str(mode).lower() != "wal":
                raise StoreError(f"cannot use write-ahead logging (journal mode {mode})")
            conn.execute("PRAGMA synchronous = FULL")
            conn.execute("PRAGMA foreign_keys = ON")
            conn.execute("PRAGMA secure_delete = ON")  # deleted messages are overwritten
            conn.execute("PRAGMA temp_store = MEMORY")  # no plaintext temp files
        except self._errors as exc:
            raise StoreError(f"cannot configure the message database: {exc}") from None

    def _migrate(self) -> None:
        """Apply pending migrations, each in its own transaction, re-reading the version
        under the write lock so two processes opening at once cannot both apply one."""
        while True:
            with self._tx() as conn:
                version = conn.execute("PRAGMA user_version").fetchone()[0]
                if version > len(MIGRATIONS):
                    raise StoreError(
                        f"the message database has schema version {version}, newer than "
                        f"this btchat ({len(MIGRATIONS)}); upgrade btchat"
                    )
                if version == len(MIGRATIONS):
                    return
                MIGRATIONS[version](conn)
                conn.execute(f"PRAGMA user_version = {version + 1}")

    @property
    def schema_version(self) -> int:
        return int(self._read("PRAGMA user_version")[0][0])

    def close(self) -> None:
        if self._conn is not None:
            conn, self._conn = self._conn, None
            with contextlib.suppress(*self._errors):
                conn.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------ plumbing

    def _live(self) -> Connection:
        if self._conn is None:
            raise StoreError("the message database is closed")
        return self._conn

    @contextlib.contextmanager
    def _tx(self) -> Iterator[Connection]:
        """One write transaction: committed if the block returns, rolled back otherwise."""
        conn = self._live()
        try:
            conn.execute("BEGIN IMMEDIATE")
            try:
                yield conn
                conn.execute("COMMIT")
            except BaseException:
                if conn.in_transaction:
                    with contextlib.suppress(*self._errors):
                        conn.execute("ROLLBACK")
                raise
        except self._errors as exc:
            raise StoreError(f"message database error: {exc}") from exc

    def transaction(self) -> contextlib.AbstractContextManager[Connection]:
        """One write transaction for modules that keep their own tables here."""
        return self._tx()

    def query(self, sql: str, params: Sequence[Any] = ()) -> list[Any]:
        return self._read(sql, params)

    def _read(self, sql: str, params: Sequence[Any] = ()) -> list[Any]:
        try:
            return list(self._live().execute(sql, tuple(params)).fetchall())
        except self._errors as exc:
            raise StoreError(f"message database error: {exc}") from exc

    def _write(self, sql: str, params: Sequence[Any] = ()) -> int:
        """One statement in its own transaction; returns the number of rows changed."""
        with self._tx() as conn:
            return int(conn.execute(sql, tuple(params)).rowcount)

    def integrity_check(self) -> list[str]:
        """``PRAGMA integrity_check`` rows: ``["ok"]`` for a sound database."""
        return [str(r[0]) for r in self._read("PRAGMA integrity_check")]

    # ------------------------------------------------------------------ contacts

    def add_contact(self, pk: bytes, name: str, now_ms: int) -> None:
        if len(pk) != 32:
            raise StoreError("a contact key is 32 bytes")
        with self._tx() as conn:
            if conn.execute("SELECT 1 FROM contacts WHERE pk = ?", (pk,)).fetchone():
                raise StoreError("already a contact")
            conn.execute(
                "INSERT INTO contacts (pk, name, added_ms) VALUES (?, ?, ?)", (pk, name, now_ms)
            )

    def _contact(self, row: Sequence[Any]) -> ContactRow:
        pk, name, added_ms, verified, blocked, certs_blob, presence, last_seen = row
        return ContactRow(
            pk,
            name,
            added_ms,
            bool(verified),
            bool(blocked),
            self._decode_certs(pk, certs_blob),
            presence,
            last_seen,
        )

    @staticmethod
    def _decode_certs(pk: bytes, blob: bytes | None) -> tuple[DeviceCertificate, ...]:
        """Stored certificates, re-verified: one that fails is dropped, never trusted."""
        if not blob:
            return ()
        try:
            items = decode(blob)
        except DecodeError:
            return ()
        certs = []
        for item in items if isinstance(items, list) else []:
            if not isinstance(item, bytes):
                continue
            try:
                cert = DeviceCertificate.decode(item)
            except CertificateError:
                continue
            if cert.identity == pk:
                certs.append(cert)
        return tuple(certs)

    def get_contact(self, pk: bytes) -> ContactRow | None:
        rows = self._read(f"SELECT {_CONTACT_COLUMNS} FROM contacts WHERE pk = ?", (pk,))
        return self._contact(rows[0]) if rows else None

    def list_contacts(self) -> list[ContactRow]:
        rows = self._read(f"SELECT {_CONTACT_COLUMNS} FROM contacts ORDER BY name, pk")
        return [self._contact(r) for r in rows]

    def rename_contact(self, pk: bytes, name: str) -> bool:
        return self._write("UPDATE contacts SET name = ? WHERE pk = ?", (name, pk)) > 0

    def remove_contact(self, pk: bytes) -> bool:
        """Forget the contact; the conversation history is kept."""
        return self._write("DELETE FROM contacts WHERE pk = ?", (pk,)) > 0

    def set_blocked(self, pk: bytes, blocked: bool) -> bool:
        return self._write("UPDATE contacts SET blocked = ? WHERE pk = ?", (int(blocked), pk)) > 0

    def set_verified(self, pk: bytes, verified: bool) -> bool:
        return self._write("UPDATE contacts SET verified = ? WHERE pk = ?", (int(verified), pk)) > 0

    def set_certs(self, pk: bytes, certs: list[DeviceCertificate]) -> bool:
        """Replace the contact's device certificates; each must be a valid one by ``pk``."""
        if len(certs) > MAX_CERTS:
            raise StoreError(f"at most {MAX_CERTS} device certificates per contact")
        for cert in certs:
            if cert.identity != pk or not cert.verify():
                raise StoreError("a device certificate is not a valid one by this contact")
        blob = encode([c.encode() for c in certs])
        return self._write("UPDATE contacts SET certs = ? WHERE pk = ?", (blob, pk)) > 0

    def set_presence(self, pk: bytes, status: str, last_seen_ms: int) -> bool:
        if status not in PRESENCE_STATES:
            raise StoreError(f"presence must be one of {', '.join(PRESENCE_STATES)}")
        return (
            self._write(
                "UPDATE contacts SET presence = ?, last_seen_ms = ? WHERE pk = ?",
                (status, int(last_seen_ms), pk),
            )
            > 0
        )

    # ------------------------------------------------------------------ messages

    @staticmethod
    def _text_of(env: Envelope) -> str | None:
        if env.type != TEXT:
            return None
        try:
            return decode_text(env)
        except EnvelopeError as exc:
            raise StoreError(f"cannot store a malformed text message: {exc}") from None

    def save_outgoing(self, env: Envelope, now: float) -> None:
        """Record our own message as ``pending`` and queue it, atomically."""
        text = self._text_of(env)
        blob = encode_envelope(env)
        now_ms = int(now * 1000)
        with self._tx() as conn:
            if conn.execute("SELECT 1 FROM messages WHERE id = ?", (env.id,)).fetchone():
                raise StoreError("a message with this id is already stored")
            conn.execute(
                f"INSERT INTO messages ({_MESSAGE_COLUMNS}) VALUES (?, ?, ?, 'out', ?, ?, ?, ?,"
                " 'pending', ?)",
                (
                    env.id,
                    env.recipient,
                    env.sender,
                    env.ts_ms,
                    env.lamport,
                    env.type.decode("ascii"),
                    text,
                    now_ms,
                ),
            )
            conn.execute(
                "INSERT INTO outbox (id, peer, lamport, envelope, queued_ms)"
                " VALUES (?, ?, ?, ?, ?)",
                (env.id, env.recipient, env.lamport, blob, now_ms),
            )

    def save_incoming(self, env: Envelope, now: float) -> bool:
        """Record a verified incoming message and its replay id, atomically.

        Returns False, changing nothing, if the id was seen before (a replay, or a resend
        after our receipt was lost), so the caller can acknowledge without duplicating.
        """
        text = self._text_of(env)
        now_ms = int(now * 1000)
        with self._tx() as conn:
            if (
                conn.execute(
                    "INSERT OR IGNORE INTO seen (id, seen_ms) VALUES (?, ?)", (env.id, now_ms)
                ).rowcount
                == 0
            ):
                return False
            # The id may also be one of ours (a peer echoing it back): never overwrite.
            return (
                conn.execute(
                    f"INSERT OR IGNORE INTO messages ({_MESSAGE_COLUMNS}) VALUES (?, ?, ?, 'in', ?,"
                    " ?, ?, ?, 'delivered', ?)",
                    (
                        env.id,
                        env.sender,
                        env.sender,
                        env.ts_ms,
                        env.lamport,
                        env.type.decode("ascii"),
                        text,
                        now_ms,
                    ),
                ).rowcount
                > 0
            )

    def get_message(self, msg_id: bytes) -> MessageRow | None:
        rows = self._read(f"SELECT {_MESSAGE_COLUMNS} FROM messages WHERE id = ?", (msg_id,))
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
        with self._tx() as conn:
            for chunk in _chunks(ids):
                changed += conn.execute(
                    f"UPDATE messages SET state = ? WHERE id IN ({_marks(len(chunk))})"
                    f" AND state IN ({_marks(len(before))})",
                    (state, *chunk, *before),
                ).rowcount
        return changed

    def pending_outbox(self, peer: bytes) -> list[bytes]:
        """Encoded envelopes not yet acknowledged by ``peer``, in Lamport order."""
        rows = self._read(
            "SELECT envelope FROM outbox WHERE peer = ? ORDER BY lamport, id", (peer,)
        )
        return [bytes(r[0]) for r in rows]

    def replace_outbox(self, env: Envelope) -> bool:
        """Swap a queued envelope for a re-signed copy (same id, recipient and lamport).

        For messages queued longer than the receiver's time window: see
        :func:`btchat.messaging.envelope.resign`. False if the id is no longer queued.
        """
        with self._tx() as conn:
            row = conn.execute(
                "SELECT peer, lamport FROM outbox WHERE id = ?", (env.id,)
            ).fetchone()
            if row is None:
                return False
            if bytes(row[0]) != env.recipient or row[1] != env.lamport:
                raise StoreError("a replacement must keep the recipient and Lamport clock")
            conn.execute(
                "UPDATE outbox SET envelope = ? WHERE id = ?", (encode_envelope(env), env.id)
            )
            return True

    def ack_outbox(self, ids: list[bytes]) -> int:
        changed = 0
        with self._tx() as conn:
            for chunk in _chunks(ids):
                changed += conn.execute(
                    f"DELETE FROM outbox WHERE id IN ({_marks(len(chunk))})", chunk
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
        rows = self._read(
            f"SELECT {_MESSAGE_COLUMNS} FROM messages WHERE {where}"
            " ORDER BY lamport DESC, sender DESC, id DESC LIMIT ?",
            (*params, limit),
        )
        return [_message(r) for r in reversed(rows)]

    def search(self, query: str, peer: bytes | None = None, limit: int = 50) -> list[MessageRow]:
        """Messages containing every word of ``query`` (the last as a prefix), newest first."""
        match = _fts_query(query)
        limit = _clamp_limit(limit)
        if match is None or limit == 0:
            return []
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
        return [_message(r) for r in self._read(sql, params)]

    def next_lamport(self, peer: bytes, seen: int | None) -> int:
        """Tick the conversation's clock past ``seen`` (a received ``lc``) and return it.

        Clamped at 2**53 - 1: a peer inflating its clock can make ties, never overflow.
        """
        with self._tx() as conn:
            row = conn.execute("SELECT lamport FROM clocks WHERE peer = ?", (peer,)).fetchone()
            local = row[0] if row else 0
            observed = min(max(int(seen or 0), 0), MAX_INT)
            value = min(max(local, observed) + 1, MAX_INT)
            conn.execute(
                "INSERT INTO clocks (peer, lamport) VALUES (?, ?)"
                " ON CONFLICT (peer) DO UPDATE SET lamport = excluded.lamport",
                (peer, value),
            )
        return value

    def seen_before(self, msg_id: bytes) -> bool:
        return bool(
            self._read(
                "SELECT 1 FROM seen WHERE id = ? UNION ALL SELECT 1 FROM messages WHERE id = ?",
                (msg_id, msg_id),
            )
        )

    def prune_seen(self, older_than_ms: int) -> int:
        """Forget replay ids seen before ``older_than_ms``.

        Safe once older than the envelope age window (``verify_envelope``'s ``max_age``
        plus skew): such envelopes are refused as too old anyway, and stored messages
        keep their ids unique in ``messages``.
        """
        return self._write("DELETE FROM seen WHERE seen_ms < ?", (int(older_than_ms),))

    # ------------------------------------------------------------------ key-value

    def kv_get(self, key: str) -> bytes | None:
        rows = self._read("SELECT value FROM kv WHERE key = ?", (key,))
        return bytes(rows[0][0]) if rows else None

    def kv_set(self, key: str, value: bytes) -> None:
        self._write(
            "INSERT INTO kv (key, value) VALUES (?, ?)"
            " ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            (key, bytes(value)),
        )

    def kv_delete(self, key: str) -> bool:
        return self._write("DELETE FROM kv WHERE key = ?", (key,)) > 0

    # ------------------------------------------------------------------ requests

    def add_request(
        self,
        req_id: bytes,
        pk: bytes,
        direction: str,
        note: str | None,
        now_ms: int,
        *,
        name: str | None = None,
        payload: bytes | None = None,
    ) -> bool:
        """Record a pending contact request; False if this request id is already known."""
        if direction not in ("in", "out"):
            raise StoreError("a request's direction is 'in' or 'out'")
        if len(req_id) != 16 or len(pk) != 32:
            raise StoreError("a request id is 16 bytes and a key 32")
        return (
            self._write(
                f"INSERT OR IGNORE INTO contact_requests ({_REQUEST_COLUMNS})"
                " VALUES (?, ?, ?, ?, ?, 'pending', ?, ?, ?)",
                (req_id, pk, direction, name, note, now_ms, now_ms, payload),
            )
            > 0
        )

    def get_request(self, req_id: bytes) -> RequestRow | None:
        rows = self._read(
            f"SELECT {_REQUEST_COLUMNS} FROM contact_requests WHERE id = ?", (req_id,)
        )
        return _request(rows[0]) if rows else None

    def list_requests(self) -> list[RequestRow]:
        rows = self._read(
            f"SELECT {_REQUEST_COLUMNS} FROM contact_requests ORDER BY created_ms, id"
        )
        return [_request(r) for r in rows]

    def set_request_state(self, req_id: bytes, state: str, now_ms: int | None = None) -> bool:
        """Answer a request; only a pending request changes state (answers are final)."""
        if state not in REQUEST_STATES:
            raise StoreError(f"unknown request state {state!r}")
        when = int(time.time() * 1000) if now_ms is None else now_ms
        return (
            self._write(
                "UPDATE contact_requests SET state = ?, updated_ms = ?"
                " WHERE id = ? AND state = 'pending'",
                (state, when, req_id),
            )
            > 0
        )
