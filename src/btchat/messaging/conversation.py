"""The 1:1 conversation core, sans I/O: envelopes in, store calls, sends and events out.

How this works: a shell (the daemon, the simulator, a unit test) tells the core when a
session to a contact comes up or goes down and hands it every payload that arrives,
always with ``now`` (wall-clock seconds: envelopes carry wall time). The core writes to
an injected store synchronously and queues what the shell must do as events, taken
with :meth:`Conversations.next_event`: :class:`Transmit` (bytes for the live session),
:class:`Deposit` (no session: leave it in the offline mailbox), and notices for the
user (:class:`MessageStored`, :class:`ReceiptReceived`, :class:`PresenceChanged`, ...).

Persist, then act: a received message is committed (with its replay id) *before* the
"delivered" receipt is queued, and an outgoing message is committed with an outbox row
*before* it is queued for sending. The outbox is replayed in Lamport order on every new
session until a receipt arrives. A reconnect starts with reconciliation: the sender
offers the ids still unacknowledged (``sync``); the receiver acknowledges those it has
(they may have come through the mailbox) and asks for the rest (``sync_want``), which
are then resent. A peer that never answers the offer (an older client) gets the whole
outbox after :data:`SYNC_TIMEOUT`, the core's one timer.

Group commit: every entry point runs as a *batch* (:meth:`Conversations.batch`), one
store transaction; a shell that has several payloads at once (the frames of one read)
or several texts to send opens one batch around all of them, so they cost one commit
(one fsync) instead of several each. Events a batch causes are held until its
transaction has committed and dropped if it fails, so nothing is sent or acknowledged
that is not on disk; the "delivered" ids of a batch go out as one receipt per peer
(up to :data:`~btchat.messaging.envelope.MAX_RECEIPT_IDS` ids each).

A received envelope is verified (version, signature, sender = the session's
authenticated identity and device, recipient = us, time window), then dispatched
through a type -> handler table. Types the core does not own (the offline backup
bodies) come out as :class:`Unhandled` for the shell to route. Nothing a peer sends
raises: it is refused (:class:`Refused`) and counted.
"""

from __future__ import annotations

import contextlib
import logging
from collections import Counter, deque
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from btchat.identity.keys import Identity
from btchat.messaging import envelope as env_mod
from btchat.messaging.envelope import Envelope, EnvelopeError

__all__ = [
    "DEVICES_CHANGED",
    "PRESENCE_STATES",
    "RESIGN_AFTER",
    "SYNC",
    "SYNC_TIMEOUT",
    "SYNC_WANT",
    "ConversationStore",
    "Conversations",
    "Deposit",
    "Event",
    "FileOffered",
    "MarkedRead",
    "MessageStored",
    "PresenceChanged",
    "ReceiptReceived",
    "Refused",
    "Transmit",
    "Typing",
    "Unhandled",
]

log = logging.getLogger(__name__)

PRESENCE_STATES = env_mod.PRESENCE_STATES
#: Reconciliation on reconnect: the ids offered, and those the peer does not have.
SYNC, SYNC_WANT = b"sync", b"sync_want"
#: "My device list changed (a device linked or revoked): read it again now." Body {}.
DEVICES_CHANGED = b"devices"
#: An offer not answered in this time is followed by a full resend.
SYNC_TIMEOUT = 10.0
#: Queued envelopes older than this are re-signed before a resend, well inside the
#: receivers' 15-day window.
RESIGN_AFTER = 7 * 86400.0
#: Read receipts batched per envelope.
READ_BATCH = 200


class ConversationStore(Protocol):
    """The part of :class:`btchat.messaging.store.Store` the core uses."""

    def next_lamport(self, peer: bytes, seen: int | None) -> int: ...
    def lamport(self, peer: bytes) -> int: ...
    def set_lamport(self, peer: bytes, value: int) -> None: ...
    def save_outgoing(self, env: Envelope, now: float, *, sent: bool = ...) -> None: ...
    def save_incoming(self, env: Envelope, now: float) -> bool: ...
    def get_message(self, msg_id: bytes) -> Any: ...
    def message_ids(self, ids: Sequence[bytes], peer: bytes, direction: str) -> set[bytes]: ...
    def mark_state(self, ids: list[bytes], state: str) -> int: ...
    def pending_outbox(self, peer: bytes) -> list[bytes]: ...
    def replace_outbox(self, env: Envelope) -> bool: ...
    def ack_outbox(self, ids: list[bytes]) -> int: ...
    def history(self, peer: bytes, limit: int = ..., before_lamport: int | None = ...) -> Any: ...
    def set_presence(self, pk: bytes, status: str, last_seen_ms: int) -> bool: ...
    def kv_get(self, key: str) -> bytes | None: ...
    def kv_set(self, key: str, value: bytes) -> None: ...
    def transaction(self) -> contextlib.AbstractContextManager[Any]: ...


@dataclass(frozen=True)
class Transmit:
    """Send ``data`` over the live session to ``peer``."""

    peer: bytes
    data: bytes


@dataclass(frozen=True)
class Deposit:
    """No session to ``peer``: the (committed) message goes to the offline mailbox."""

    peer: bytes
    envelope: Envelope
    data: bytes


@dataclass(frozen=True)
class MessageStored:
    """A message was committed: a new incoming one, or one we sent; ``state`` is the
    delivery state it was stored with (so the shell need not read it back)."""

    peer: bytes
    envelope: Envelope
    state: str = "delivered"


@dataclass(frozen=True)
class ReceiptReceived:
    peer: bytes
    state: str
    ids: tuple[bytes, ...]


@dataclass(frozen=True)
class MarkedRead:
    """Incoming messages of ``peer`` were marked read here (our other devices follow)."""

    peer: bytes
    ids: tuple[bytes, ...]


@dataclass(frozen=True)
class PresenceChanged:
    peer: bytes
    status: str
    last_seen_ms: int
    note: str | None


@dataclass(frozen=True)
class Typing:
    peer: bytes
    on: bool


@dataclass(frozen=True)
class Refused:
    peer: bytes
    reason: str


@dataclass(frozen=True)
class FileOffered:
    """A new file offer was committed (after its :class:`MessageStored`)."""

    peer: bytes
    envelope: Envelope


@dataclass(frozen=True)
class Unhandled:
    """A verified envelope of a type this core does not own (e.g. offline backup)."""

    peer: bytes
    envelope: Envelope


Event = (
    Transmit
    | Deposit
    | MessageStored
    | ReceiptReceived
    | MarkedRead
    | PresenceChanged
    | Typing
    | Refused
    | FileOffered
    | Unhandled
)


def _id_list(body: dict[bytes, Any]) -> list[bytes]:
    ids = body.get(b"ids")
    if type(ids) is not list:
        return []
    return [i for i in ids[: env_mod.MAX_RECEIPT_IDS] if type(i) is bytes and len(i) == 16]


def _chunks(ids: Sequence[bytes], size: int) -> list[list[bytes]]:
    return [list(ids[i : i + size]) for i in range(0, len(ids), size)]


class Conversations:
    """Every 1:1 conversation of one identity (one device), driven as a sans-I/O core."""

    def __init__(self, identity: Identity, device_id: bytes, store: ConversationStore) -> None:
        self.identity = identity
        self.me = identity.public_key
        self.device_id = device_id
        self.store = store
        #: Reconnect reconciliation: ids offered, resent, and copies received twice.
        self.stats: Counter[str] = Counter()
        self._online: set[bytes] = set()
        self._sync_deadline: dict[bytes, float] = {}  # peer -> full resend at
        self._events: deque[Event] = deque()
        #: Inside a batch: its events (released after the commit), and the ids of the
        #: texts it stored or saw again, per peer, to acknowledge in one receipt.
        self._held: list[Event] | None = None
        self._delivered: dict[bytes, list[bytes]] = {}
        #: Inside a batch: each conversation's Lamport clock, read once, ticked here for
        #: every envelope made or received, and written back once at its end.
        self._clocks: dict[bytes, int] = {}
        self._handlers: dict[bytes, Callable[[bytes, Envelope, float], None]] = {
            env_mod.TEXT: self._on_text,
            env_mod.FILE: self._on_text,  # an offer is stored and acknowledged like a text
            env_mod.RECEIPT: self._on_receipt,
            env_mod.PRESENCE: self._on_presence,
            env_mod.TYPING: self._on_typing,
            SYNC: self._on_sync,
            SYNC_WANT: self._on_sync_want,
        }

    # --------------------------------------------------------- driving interface

    def get_timer(self) -> float | None:
        return min(self._sync_deadline.values(), default=None)

    def handle_timer(self, now: float) -> None:
        """A peer that never answered our offer (an older client) gets everything."""
        with self.batch(now):
            for peer in [p for p, t in self._sync_deadline.items() if t <= now]:
                del self._sync_deadline[peer]
                self._replay_outbox(peer, None, now)

    def next_event(self) -> Event | None:
        return self._events.popleft() if self._events else None

    @contextlib.contextmanager
    def batch(self, now: float) -> Iterator[None]:
        """One store transaction around every call inside; their events after it commits.

        If the block or the commit fails, the batch's events are dropped (nothing it
        stored is acknowledged or sent: the sender still has it in its outbox) and the
        error propagates. A batch inside a batch is part of it.
        """
        if self._held is not None:
            yield
            return
        self._held = []
        try:
            with self.store.transaction():
                yield
                self._acknowledge(now)  # signed receipts move the clock: in the batch
                for peer, value in self._clocks.items():
                    self.store.set_lamport(peer, value)
            held = self._held
        finally:
            self._held = None
            self._delivered.clear()
            self._clocks.clear()
        self.stats["batches"] += 1
        self._events.extend(held)

    def _tick(self, peer: bytes, seen: int | None) -> int:
        """The next Lamport value of the conversation with ``peer`` (PROTOCOL.md "Order")."""
        if self._held is None:  # outside a batch: straight to the store
            return self.store.next_lamport(peer, seen)
        local = self._clocks.get(peer)
        value = env_mod.lamport_tick(self.store.lamport(peer) if local is None else local, seen)
        self._clocks[peer] = value
        return value

    def _queue(self, event: Event) -> None:
        if self._held is not None:
            self._held.append(event)
        else:
            self._events.append(event)

    def _acknowledge(self, now: float) -> None:
        """The "delivered" receipts of the batch: one per peer and 500 ids."""
        for peer, ids in self._delivered.items():
            for chunk in _chunks(ids, env_mod.MAX_RECEIPT_IDS):
                receipt = env_mod.receipt_body(chunk, b"delivered")
                self._transmit(peer, self.envelope(peer, env_mod.RECEIPT, receipt, now))

    def is_online(self, peer: bytes) -> bool:
        return peer in self._online

    # ---------------------------------------------------------------- sessions

    def session_up(self, peer: bytes, now: float) -> None:
        """A session to ``peer`` is live: presence, reconciliation, read receipts."""
        with self.batch(now):
            self._session_up(peer, now)

    def _session_up(self, peer: bytes, now: float) -> None:
        self._online.add(peer)
        self.store.set_presence(peer, "online", int(now * 1000))
        self._send_presence(peer, now)
        # Reconcile before resending: offer the ids still unacknowledged (they may have
        # arrived through the DHT mailbox or a friend meanwhile); the peer acknowledges
        # what it has and asks for the rest, which is then replayed in causal order.
        ids = [queued.id for queued, _ in self._outbox(peer)]
        for chunk in _chunks(ids, env_mod.MAX_RECEIPT_IDS):
            self.send_body(peer, SYNC, {b"ids": chunk}, now)
        self.stats["offered"] += len(ids)
        if ids:
            self._sync_deadline[peer] = now + SYNC_TIMEOUT
        self._flush_read_receipts(peer, now)

    def offer(self, peer: bytes, ids: list[bytes], now: float) -> None:
        """Offer queued ``ids`` to ``peer`` while its session is up (messages another of
        our devices wrote): it acknowledges those it has and asks for the others."""
        if peer not in self._online:
            return
        for chunk in _chunks(ids, env_mod.MAX_RECEIPT_IDS):
            self.send_body(peer, SYNC, {b"ids": chunk}, now)
        self.stats["offered"] += len(ids)

    def session_down(self, peer: bytes, now: float) -> None:
        self._online.discard(peer)
        self._sync_deadline.pop(peer, None)
        with self.batch(now):
            self.store.set_presence(peer, "offline", int(now * 1000))

    # ---------------------------------------------------------------- sending

    def envelope(self, to: bytes, kind: bytes, body: dict[bytes, Any], now: float) -> Envelope:
        """A signed envelope to ``to`` with our next Lamport time."""
        return env_mod.create(
            self.identity,
            self.device_id,
            to,
            kind,
            body,
            lamport=self._tick(to, None),
            now=now,
        )

    def send_body(self, to: bytes, kind: bytes, body: dict[bytes, Any], now: float) -> bool:
        """Sign and queue a transient envelope; False (nothing queued) with no session."""
        if to not in self._online:
            return False
        with self.batch(now):
            self._transmit(to, self.envelope(to, kind, body, now))
        return True

    def _transmit(self, to: bytes, envelope: Envelope) -> None:
        self._queue(Transmit(to, env_mod.encode_envelope(envelope)))

    def send_text(self, to: bytes, text: str, now: float) -> Envelope:
        """Commit a text message with its outbox row, then send it or deposit it."""
        return self.send_message(to, env_mod.TEXT, env_mod.text_body(text), now)

    def send_message(self, to: bytes, kind: bytes, body: dict[bytes, Any], now: float) -> Envelope:
        """Commit a message of the history (a text, a file offer), then send or deposit it.

        Marked ``sent`` in the same transaction when a session is up: the send is
        released only after the commit, and a crash in between leaves it in the outbox,
        which is replayed on the next session anyway."""
        with self.batch(now):
            envelope = self.envelope(to, kind, body, now)
            online = to in self._online
            self.store.save_outgoing(envelope, now, sent=online)  # persist, then act
            if online:
                self._transmit(to, envelope)
            else:
                self._queue(Deposit(to, envelope, env_mod.encode_envelope(envelope)))
            self._queue(MessageStored(to, envelope, "sent" if online else "pending"))
        return envelope

    def send_typing(self, to: bytes, on: bool, now: float) -> None:
        self.send_body(to, env_mod.TYPING, env_mod.typing_body(on), now)

    def set_presence(self, status: str, note: str | None, now: float) -> None:
        """Our presence, kept across restarts and told to every contact online."""
        if status not in PRESENCE_STATES:
            raise ValueError(f"presence is one of {', '.join(PRESENCE_STATES)}")
        with self.batch(now):
            self.store.kv_set("presence", status.encode())
            self.store.kv_set("presence_note", (note or "").encode())
            for peer in sorted(self._online):
                self._send_presence(peer, now)

    def _send_presence(self, peer: bytes, now: float) -> None:
        status = (self.store.kv_get("presence") or b"online").decode()
        note = (self.store.kv_get("presence_note") or b"").decode()
        body = env_mod.presence_body(status, int(now * 1000), note or None)
        self.send_body(peer, env_mod.PRESENCE, body, now)

    def mark_read(self, peer: bytes, up_to: str | None, now: float) -> int:
        """Mark incoming messages read (up to the hex id ``up_to``); returns how many.

        The read receipts are committed first and sent when a session is up."""
        with self.batch(now):
            return self._mark_read(peer, up_to, now)

    def _mark_read(self, peer: bytes, up_to: str | None, now: float) -> int:
        unread = [
            r
            for r in self.store.history(peer, limit=500)
            if r.direction == "in" and r.state != "read"
        ]
        if up_to is not None:
            hexes = [r.id.hex() for r in unread]
            if up_to in hexes:
                unread = unread[: hexes.index(up_to) + 1]
        ids = [r.id for r in unread]
        if ids:
            self.store.mark_state(ids, "read")
            key = f"read_receipts:{peer.hex()}"
            self.store.kv_set(key, (self.store.kv_get(key) or b"") + b"".join(ids))
            self._flush_read_receipts(peer, now)
            self._queue(MarkedRead(peer, tuple(ids)))
        return len(ids)

    def _flush_read_receipts(self, peer: bytes, now: float) -> None:
        key = f"read_receipts:{peer.hex()}"
        pending = self.store.kv_get(key) or b""
        if not pending or peer not in self._online:
            return
        ids = [pending[i : i + 16] for i in range(0, len(pending), 16)]
        for chunk in _chunks(ids, READ_BATCH):
            self.send_body(peer, env_mod.RECEIPT, env_mod.receipt_body(chunk, b"read"), now)
        self.store.kv_set(key, b"")

    # ------------------------------------------------------------ outbox replay

    def _outbox(self, peer: bytes) -> list[tuple[Envelope, bytes]]:
        """The outbox to ``peer``: parseable envelopes only, in Lamport order."""
        out = []
        for blob in self.store.pending_outbox(peer):
            try:
                out.append((env_mod.parse_envelope(blob), blob))
            except EnvelopeError:
                continue
        return out

    def _replay_outbox(self, peer: bytes, only: set[bytes] | None, now: float) -> None:
        """Resend unacknowledged messages (all, or those the peer asked for)."""
        if peer not in self._online:
            return
        sent = []
        horizon_ms = (now - RESIGN_AFTER) * 1000
        for queued, blob in self._outbox(peer):
            if only is not None and queued.id not in only:
                continue
            if queued.ts_ms < horizon_ms or queued.device != self.device_id:
                # Queued longer than the receiver's window: same id and order, fresh
                # timestamp and signature (a receiver that has it still drops the copy).
                # Written on another of our devices: signed again as this one, which
                # the session authenticates (its time kept while still in the window).
                when = now if queued.ts_ms < horizon_ms else queued.ts_ms / 1000
                queued = env_mod.resign(self.identity, queued, now=when, device=self.device_id)
                self.store.replace_outbox(queued)
                blob = env_mod.encode_envelope(queued)
            self._queue(Transmit(peer, blob))
            sent.append(queued.id)
        if sent:
            self.store.mark_state(sent, "sent")
        self.stats["resent"] += len(sent)

    # ---------------------------------------------------------------- receiving

    def receive(self, peer: bytes, device: bytes, payload: bytes, now: float) -> None:
        """A payload from ``peer``'s authenticated ``device`` over a live session.

        Several payloads at once (the frames of one read) go in one :meth:`batch`."""
        with self.batch(now):
            self._receive(peer, device, payload, now)

    def _receive(self, peer: bytes, device: bytes, payload: bytes, now: float) -> None:
        try:
            envelope = env_mod.parse_envelope(payload)
            env_mod.verify_envelope(
                envelope, expected_sender=peer, expected_recipient=self.me, now=now
            )
            if envelope.device != device:
                # Signed by the identity, but naming another device than the one whose
                # certified key this session authenticated.
                raise EnvelopeError("wrong_device", "envelope names another device")
        except EnvelopeError as exc:
            log.warning("refused an envelope from %s: %s", peer.hex()[:16], exc)
            self.stats["refused"] += 1
            self._queue(Refused(peer, str(exc)))
            return
        self._tick(peer, envelope.lamport)  # advance our clock past theirs
        handler = self._handlers.get(envelope.type)
        if handler is None:
            self._queue(Unhandled(peer, envelope))
        else:
            handler(peer, envelope, now)

    def _on_text(self, peer: bytes, envelope: Envelope, now: float) -> None:
        fresh = self.store.save_incoming(envelope, now)  # persist, then acknowledge
        # Acknowledged at the end of the batch, with the other texts of the same read.
        self._delivered.setdefault(peer, []).append(envelope.id)
        if fresh:
            self._queue(MessageStored(peer, envelope))
            if envelope.type == env_mod.FILE:
                self._queue(FileOffered(peer, envelope))
        else:
            # A replay, or a resend after a lost receipt: acknowledged again, not stored.
            self.stats["duplicates_received"] += 1

    def _on_receipt(self, peer: bytes, envelope: Envelope, now: float) -> None:
        ids, state = env_mod.decode_receipt(envelope)
        known = self.store.message_ids(ids, peer, "out")
        mine = [i for i in dict.fromkeys(ids) if i in known]
        if mine:
            self.store.mark_state(mine, state.decode())
            self.store.ack_outbox(mine)
            self._queue(ReceiptReceived(peer, state.decode(), tuple(mine)))

    def _on_presence(self, peer: bytes, envelope: Envelope, now: float) -> None:
        status, last_seen, note = env_mod.decode_presence(envelope)
        self.store.set_presence(peer, status, last_seen)
        self._queue(PresenceChanged(peer, status, last_seen, note))

    def _on_typing(self, peer: bytes, envelope: Envelope, now: float) -> None:
        self._queue(Typing(peer, env_mod.decode_typing(envelope)))

    def _on_sync(self, peer: bytes, envelope: Envelope, now: float) -> None:
        ids = _id_list(envelope.body)
        known = self.store.message_ids(ids, peer, "in")
        have = [i for i in ids if i in known]
        for chunk in _chunks(have, env_mod.MAX_RECEIPT_IDS):
            self.send_body(peer, env_mod.RECEIPT, env_mod.receipt_body(chunk, b"delivered"), now)
        self.send_body(peer, SYNC_WANT, {b"ids": [i for i in ids if i not in known]}, now)

    def _on_sync_want(self, peer: bytes, envelope: Envelope, now: float) -> None:
        self._sync_deadline.pop(peer, None)
        self._replay_outbox(peer, set(_id_list(envelope.body)), now)
