"""The offline-delivery tables of the message database, and their transactions.

Every change that must not be half-made is one transaction here: a packet is queued
together with the ratchet state that encrypted it and the counter it used; a packet is
received together with the ratchet state that decrypted it and the counter marked as
received. So a crash can never leave a ratchet ahead of what was stored (which would
make a message undecryptable) or a counter used twice.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from btchat.codec.bencode import DecodeError, decode, encode
from btchat.messaging.store import Store
from btchat.storage import Connection, register_migrations, sql_step

__all__ = ["HeldPacket", "MailboxState", "OutPacket", "PeerState", "RatchetPickles"]

#: Most counters remembered above the contiguous mark (out-of-order arrivals).
MAX_RECEIVED_ABOVE = 4096


@dataclass(frozen=True)
class PeerState:
    peer: bytes
    next_out: int
    received: int  # every counter <= this one was received (or skipped as expired)
    received_above: frozenset[int]
    ack_changed_ms: int
    their_ack: int
    retention_s: int | None
    olm_key: bytes | None
    prekey: bytes | None
    given_prekey: bytes | None

    def has_received(self, n: int) -> bool:
        return n <= self.received or n in self.received_above


@dataclass(frozen=True)
class OutPacket:
    peer: bytes
    n: int
    msg_id: bytes
    packet: bytes
    expires_ms: int


@dataclass(frozen=True)
class HeldPacket:
    recipient: bytes
    sender: bytes
    n: int
    packet: bytes
    expires_ms: int


@dataclass(frozen=True)
class RatchetPickles:
    """Ratchet state to write with the change that produced it."""

    account: str | None = None
    sessions: tuple[tuple[str, str], ...] = ()  # (session id, pickle)
    #: Sessions kept under a key of their own (a v2 sender's, per recipient device:
    #: contact key || device id): (session key, session id, pickle).
    keyed: tuple[tuple[bytes, str, str], ...] = ()


_PEER_COLUMNS = (
    "peer, next_out, received, received_above, ack_changed_ms, their_ack, retention_s,"
    " olm_key, prekey, given_prekey"
)


def _above(blob: bytes) -> frozenset[int]:
    if not blob:
        return frozenset()
    try:
        values = decode(blob)
    except DecodeError:
        return frozenset()
    return frozenset(v for v in values if type(v) is int) if type(values) is list else frozenset()


def _advance(received: int, above: set[int]) -> tuple[int, bytes]:
    while received + 1 in above:
        received += 1
        above.discard(received)
    kept = sorted(v for v in above if v > received)[:MAX_RECEIVED_ABOVE]
    return received, encode(kept) if kept else b""


# --------------------------------------------------------------------------- schema

_SCHEMA = (
    # Double Ratchet (Olm) sessions per contact, pickled under a key from the identity
    # (a v2 sender's per contact device: ``peer`` is then contact key || device id).
    """CREATE TABLE olm_sessions (
        peer BLOB NOT NULL,
        session_id TEXT NOT NULL,
        pickle TEXT NOT NULL,
        used_ms INTEGER NOT NULL,
        PRIMARY KEY (peer, session_id)
    ) WITHOUT ROWID""",
    # Offline mailbox bookkeeping per contact (see MailboxState).
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


#: Ordered steps of the offline tables; append only, never edit a released one.
MIGRATIONS = (
    sql_step(_SCHEMA),  # 1: ratchet sessions, DHT mailbox, friend-held backup
)
register_migrations("offline", MIGRATIONS)


class MailboxState:
    ACCOUNT_KEY = "olm.account"
    FALLBACK_KEY = "olm.fallback"

    def __init__(self, store: Store) -> None:
        self.store = store
        store.migrate()  # the offline tables, if this file predates them

    # ------------------------------------------------------------------ peers

    def peer(self, peer: bytes) -> PeerState:
        rows = self.store.query(
            f"SELECT {_PEER_COLUMNS} FROM mailbox_peers WHERE peer = ?", (peer,)
        )
        if not rows:
            return PeerState(peer, 0, -1, frozenset(), 0, -1, None, None, None, None)
        r = rows[0]
        return PeerState(r[0], r[1], r[2], _above(r[3]), r[4], r[5], r[6], r[7], r[8], r[9])

    @staticmethod
    def _ensure(conn: Connection, peer: bytes) -> None:
        conn.execute("INSERT OR IGNORE INTO mailbox_peers (peer) VALUES (?)", (peer,))

    def _set(self, peer: bytes, column: str, value: object) -> None:
        with self.store.transaction() as conn:
            self._ensure(conn, peer)
            conn.execute(f"UPDATE mailbox_peers SET {column} = ? WHERE peer = ?", (value, peer))

    def set_retention(self, peer: bytes, seconds: int | None) -> None:
        self._set(peer, "retention_s", seconds)

    def set_prekey(self, peer: bytes, olm_key: bytes, prekey: bytes) -> None:
        with self.store.transaction() as conn:
            self._ensure(conn, peer)
            conn.execute(
                "UPDATE mailbox_peers SET olm_key = ?, prekey = ? WHERE peer = ?",
                (olm_key, prekey, peer),
            )

    def set_given_prekey(self, peer: bytes, prekey: bytes | None) -> None:
        self._set(peer, "given_prekey", prekey)

    def set_their_ack(self, peer: bytes, ack: int) -> None:
        with self.store.transaction() as conn:
            self._ensure(conn, peer)
            conn.execute(
                "UPDATE mailbox_peers SET their_ack = max(their_ack, ?) WHERE peer = ?",
                (ack, peer),
            )

    def received_counters(self) -> list[tuple[bytes, int]]:
        """(contact, contiguous mark) for each contact we received a packet of."""
        return [
            (bytes(r[0]), int(r[1]))
            for r in self.store.query(
                "SELECT peer, received FROM mailbox_peers WHERE received >= 0 ORDER BY peer"
            )
        ]

    def skip_below(self, peer: bytes, lo: int, now_ms: int) -> bool:
        """The sender's head says nothing below ``lo`` is pending any more (delivered or
        expired): count it as received so the contiguous mark can move on. True when it
        moved (our acknowledgement changed)."""
        state = self.peer(peer)
        if lo - 1 <= state.received:
            return False
        above = set(state.received_above)
        received, blob = _advance(lo - 1, above)
        with self.store.transaction() as conn:
            self._ensure(conn, peer)
            moved = conn.execute(
                "UPDATE mailbox_peers SET received = ?, received_above = ?, ack_changed_ms = ?"
                " WHERE peer = ? AND received < ?",
                (received, blob, now_ms, peer, received),
            ).rowcount
        return moved == 1

    # --------------------------------------------------------------- ratchet

    def account_pickle(self) -> str | None:
        value = self.store.kv_get(self.ACCOUNT_KEY)
        return value.decode() if value is not None else None

    def session_pickles(self, peer: bytes) -> list[tuple[str, str]]:
        """(session id, pickle), most recently used first."""
        return [
            (r[0], r[1])
            for r in self.store.query(
                "SELECT session_id, pickle FROM olm_sessions WHERE peer = ?"
                " ORDER BY used_ms DESC, session_id",
                (peer,),
            )
        ]

    def _write_pickles(
        self, conn: Connection, peer: bytes, pickles: RatchetPickles, now_ms: int
    ) -> None:
        if pickles.account is not None:
            conn.execute(
                "INSERT OR REPLACE INTO kv (key, value) VALUES (?, ?)",
                (self.ACCOUNT_KEY, pickles.account.encode()),
            )
        for key, session_id, pickle in [(peer, i, p) for i, p in pickles.sessions] + list(
            pickles.keyed
        ):
            conn.execute(
                "INSERT OR REPLACE INTO olm_sessions (peer, session_id, pickle, used_ms)"
                " VALUES (?, ?, ?, ?)",
                (key, session_id, pickle, now_ms),
            )

    def save_account(self, pickle: str) -> None:
        self.store.kv_set(self.ACCOUNT_KEY, pickle.encode())

    def fallback(self) -> tuple[bytes, int] | None:
        """(the fallback key our bundle carries, when it became current in ms)."""
        value = self.store.kv_get(self.FALLBACK_KEY)
        if value is None or len(value) != 40:
            return None
        return value[8:], int.from_bytes(value[:8], "big")

    def save_fallback(self, key: bytes, since_ms: int, account_pickle: str) -> None:
        """A new current fallback key, with the account that now counts it published."""
        with self.store.transaction() as conn:
            for k, v in (
                (self.ACCOUNT_KEY, account_pickle.encode()),
                (self.FALLBACK_KEY, since_ms.to_bytes(8, "big") + key),
            ):
                conn.execute("INSERT OR REPLACE INTO kv (key, value) VALUES (?, ?)", (k, v))

    def drop_sessions(self, peer: bytes) -> None:
        """Forget the ratchet with ``peer`` (a reset): the next packet starts a new one."""
        with self.store.transaction() as conn:
            # The v2 sessions with each of its devices too (keys: peer || device id).
            conn.execute("DELETE FROM olm_sessions WHERE substr(peer, 1, 32) = ?", (peer,))
            conn.execute("UPDATE mailbox_peers SET prekey = NULL WHERE peer = ?", (peer,))

    # --------------------------------------------------------------- outgoing

    def queue_packet(
        self,
        peer: bytes,
        n: int,
        msg_id: bytes,
        packet: bytes,
        expires_ms: int,
        pickles: RatchetPickles,
        now_ms: int,
    ) -> OutPacket:
        """Store packet ``n`` and the ratchet state that made it; ``n`` must not be below
        next_out (counters only grow; :func:`~btchat.offline.mailbox.next_counter` may
        skip ahead)."""
        with self.store.transaction() as conn:
            self._ensure(conn, peer)
            updated = conn.execute(
                "UPDATE mailbox_peers SET next_out = ? WHERE peer = ? AND next_out <= ?",
                (n + 1, peer, n),
            ).rowcount
            if updated != 1:
                raise RuntimeError("mailbox counter moved under us")
            conn.execute(
                "INSERT INTO mailbox_out (peer, n, msg_id, packet, expires_ms)"
                " VALUES (?, ?, ?, ?, ?)",
                (peer, n, msg_id, packet, expires_ms),
            )
            self._write_pickles(conn, peer, pickles, now_ms)
        return OutPacket(peer, n, msg_id, packet, expires_ms)

    def pending(self, peer: bytes | None = None) -> list[OutPacket]:
        sql = "SELECT peer, n, msg_id, packet, expires_ms FROM mailbox_out"
        rows = (
            self.store.query(sql + " WHERE peer = ? ORDER BY n", (peer,))
            if peer is not None
            else self.store.query(sql + " ORDER BY peer, n")
        )
        return [OutPacket(*r) for r in rows]

    def is_pending(self, msg_id: bytes) -> bool:
        """Whether a packet for this message is queued (uses the msg_id index)."""
        return bool(self.store.query("SELECT 1 FROM mailbox_out WHERE msg_id = ?", (msg_id,)))

    def pending_peers(self) -> list[bytes]:
        return [r[0] for r in self.store.query("SELECT DISTINCT peer FROM mailbox_out")]

    def remove_out(self, peer: bytes, ns: Iterable[int]) -> list[OutPacket]:
        removed = []
        with self.store.transaction() as conn:
            for n in ns:
                row = conn.execute(
                    "DELETE FROM mailbox_out WHERE peer = ? AND n = ?"
                    " RETURNING peer, n, msg_id, packet, expires_ms",
                    (peer, n),
                ).fetchone()
                if row is not None:
                    removed.append(OutPacket(*row))
        return removed

    def remove_out_by_ids(self, msg_ids: Iterable[bytes]) -> list[OutPacket]:
        removed = []
        with self.store.transaction() as conn:
            for msg_id in msg_ids:
                removed.extend(
                    OutPacket(*row)
                    for row in conn.execute(
                        "DELETE FROM mailbox_out WHERE msg_id = ?"
                        " RETURNING peer, n, msg_id, packet, expires_ms",
                        (msg_id,),
                    ).fetchall()
                )
        return removed

    # --------------------------------------------------------------- incoming

    def receive(
        self, peer: bytes, n: int, plaintext: bytes, pickles: RatchetPickles, now_ms: int
    ) -> bool:
        """Record packet ``n`` as received with its plaintext and ratchet state, at once.

        False (nothing written) if it was received before: a duplicate path.
        """
        with self.store.transaction() as conn:
            self._ensure(conn, peer)
            row = conn.execute(
                "SELECT received, received_above FROM mailbox_peers WHERE peer = ?", (peer,)
            ).fetchone()
            received, above = row[0], set(_above(row[1]))
            if n <= received or n in above:
                return False
            above.add(n)
            received, blob = _advance(received, above)
            conn.execute(
                "UPDATE mailbox_peers SET received = ?, received_above = ?, ack_changed_ms = ?"
                " WHERE peer = ?",
                (received, blob, now_ms, peer),
            )
            conn.execute(
                "INSERT OR REPLACE INTO mailbox_in (peer, n, plaintext) VALUES (?, ?, ?)",
                (peer, n, plaintext),
            )
            self._write_pickles(conn, peer, pickles, now_ms)
        return True

    def inbox(self) -> list[tuple[bytes, int, bytes]]:
        return [
            (r[0], r[1], r[2])
            for r in self.store.query("SELECT peer, n, plaintext FROM mailbox_in ORDER BY peer, n")
        ]

    def inbox_done(self, peer: bytes, n: int) -> None:
        with self.store.transaction() as conn:
            conn.execute("DELETE FROM mailbox_in WHERE peer = ? AND n = ?", (peer, n))

    # ------------------------------------------------------------------ held

    def hold(self, packet: HeldPacket, *, per_sender: int, total: int) -> bool:
        """Keep a friend's packet for its recipient, within the quotas."""
        with self.store.transaction() as conn:
            count_sender = conn.execute(
                "SELECT count(*) FROM held WHERE sender = ?", (packet.sender,)
            ).fetchone()[0]
            count_all = conn.execute("SELECT count(*) FROM held").fetchone()[0]
            exists = conn.execute(
                "SELECT 1 FROM held WHERE recipient = ? AND sender = ? AND n = ?",
                (packet.recipient, packet.sender, packet.n),
            ).fetchone()
            if exists:
                return True
            if count_sender >= per_sender or count_all >= total:
                return False
            conn.execute(
                "INSERT INTO held (recipient, sender, n, packet, expires_ms)"
                " VALUES (?, ?, ?, ?, ?)",
                (packet.recipient, packet.sender, packet.n, packet.packet, packet.expires_ms),
            )
        return True

    def held_for(self, recipient: bytes) -> list[HeldPacket]:
        return [
            HeldPacket(*r)
            for r in self.store.query(
                "SELECT recipient, sender, n, packet, expires_ms FROM held"
                " WHERE recipient = ? ORDER BY sender, n",
                (recipient,),
            )
        ]

    def release_held(self, recipient: bytes, items: Iterable[tuple[bytes, int]]) -> int:
        count = 0
        with self.store.transaction() as conn:
            for sender, n in items:
                count += conn.execute(
                    "DELETE FROM held WHERE recipient = ? AND sender = ? AND n = ?",
                    (recipient, sender, n),
                ).rowcount
        return count

    def held_count(self) -> int:
        return int(self.store.query("SELECT count(*) FROM held")[0][0])

    def prune_held(self, now_ms: int) -> int:
        with self.store.transaction() as conn:
            return int(conn.execute("DELETE FROM held WHERE expires_ms < ?", (now_ms,)).rowcount)
