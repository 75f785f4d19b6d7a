"""The offline mailbox, sans I/O: what to put in and get from the DHT, and when.

The daemon and the simulator drive the same :class:`Mailbox` through the one sans-I/O
shape (:mod:`btchat.sansio`): they call its methods with the current time, call
``handle_timer(now)`` at ``get_timer()``, and take ``next_event()`` until it returns
None: :class:`Get`/:class:`Put` requests to carry out (against a real DHT or a
simulated swarm, feeding the answers back through ``on_get``/``on_put``) and outcomes
to act on. Nothing here sleeps, opens a socket or reads a clock.

Per direction A->B the sender keeps a counter ``n``; packet ``n`` lives in chunk slots
derived from the pair's secret (see :mod:`btchat.offline.packet`), and a daily *head*
says which counters may be pending and what the sender has received the other way. The
sender republishes head and chunks every ``republish_interval`` (public DHT nodes keep
items about two hours) until the recipient's head acknowledges them or the retention
period ends (then the user is told: not delivered, expired). The recipient polls each
contact's head, fetches what it has not received, decrypts, and its own head carries the
acknowledgement back. Online contacts also hold each other's pending packets (friend
backup) and hand them over when the recipient shows up.

Several devices (1.6): a packet for a contact whose every device publishes its own
bundle is a v2 packet, its key wrapped for each device (``devices_of``), so any of them
reads it. Our devices other than the mailbox device run a *reader* mailbox: it never
deposits, skips v1 packets (they are for the mailbox device's account), and writes our
head only after reading it, keeping its ``lo``/``hi`` and raising ``a`` to what it has
received, so it never undoes the mailbox device's head.
"""

from __future__ import annotations

import itertools
import logging
from collections import Counter, deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from btchat.dht import bep44
from btchat.identity.keys import Identity
from btchat.identity.rendezvous import pairwise_secret
from btchat.offline import packet as pk
from btchat.offline.packet import Head, OfflinePacket, PacketError
from btchat.offline.ratchet import (
    PREKEY_SALT,
    Bundle,
    Ratchet,
    RatchetError,
    device_prekey_salt,
    session_key,
)
from btchat.offline.state import HeldPacket, MailboxState, PeerState, RatchetPickles

__all__ = [
    "ACK_MARGIN_MS",
    "DEFAULT_RETENTION",
    "MAX_RETENTION",
    "MIN_RETENTION",
    "Acked",
    "Expired",
    "Get",
    "Mailbox",
    "MailboxConfig",
    "Outcome",
    "Put",
    "Received",
    "Undecryptable",
]

log = logging.getLogger(__name__)

MIN_RETENTION = 86400
DEFAULT_RETENTION = 2 * 86400
MAX_RETENTION = 14 * 86400
#: A packet past its expiry is still accepted this long (clock skew between contacts).
EXPIRY_GRACE_MS = 10 * 60 * 1000
#: A packet is reported expired only once a look at its recipient's head that began this
#: long after the recipient stopped accepting it (expiry + grace) found no acknowledgement:
#: else a sender back after the expiry, or one polling just before the recipient took it
#: in the grace, says "expired" of a message that was delivered. The acknowledging head
#: is put as soon as the packet is taken, so a few minutes cover it.
ACK_MARGIN_MS = 5 * 60 * 1000
#: If no such look completes (no DHT, or a contact with a live session is not polled),
#: the packet is reported expired this long after that point, or after this mailbox
#: started (a sender back after the expiry looks first), whichever is later.
EXPIRY_WAIT_MS = 2 * 3600 * 1000
#: Yesterday's head is looked for this long into a day (items live about two hours).
YESTERDAY_WINDOW = 3 * 3600
#: Most packets handed over in one backup message.
MAX_BACKUP_BATCH = 50
#: Most (contact, counter) pairs a reader remembers as not for it (v1, or no wrap).
MAX_NOT_OURS = 10_000
#: A device's bundle is asked for, and not there: this contact gets v1 packets.
_NO_BUNDLE = None


@dataclass(frozen=True)
class MailboxConfig:
    republish_interval: float = 3600.0
    poll_interval: float = 900.0
    #: Extra looks this long after the first one: just after start the routing table is
    #: thin (a lookup may miss the storing nodes), and a sender who came back at the same
    #: time may not have published yet. Waiting a whole poll_interval for that was the
    #: common case of a message shown 15 minutes late.
    start_polls: tuple[float, ...] = (20.0, 60.0, 180.0)
    retention: int = DEFAULT_RETENTION
    #: A head is kept alive this long after our acknowledgement last changed, so the
    #: sender learns of it even if it was offline for the longest retention.
    ack_lifetime: float = MAX_RETENTION
    backup_per_sender: int = 200
    backup_total: int = 2000


@dataclass(frozen=True)
class Get:
    token: int
    public_key: bytes
    salt: bytes = b""


@dataclass(frozen=True)
class Put:
    token: int
    item: bep44.MutableItem


@dataclass(frozen=True)
class Received:
    """Packet ``n`` from ``peer`` was decrypted and committed to the inbox."""

    peer: bytes
    n: int
    plaintext: bytes


@dataclass(frozen=True)
class Acked:
    peer: bytes
    msg_ids: tuple[bytes, ...]


@dataclass(frozen=True)
class Expired:
    peer: bytes
    msg_ids: tuple[bytes, ...]


@dataclass(frozen=True)
class Undecryptable:
    peer: bytes
    n: int
    reason: str


Outcome = Received | Acked | Expired | Undecryptable
#: What :meth:`Mailbox.next_event` returns: DHT requests to carry out, and outcomes.
Event = Get | Put | Outcome


@dataclass
class _Fetch:
    """One packet being assembled from its chunks."""

    peer: bytes
    n: int
    count: int | None = None
    parts: dict[int, dict[bytes, Any]] = field(default_factory=dict)


def day_of(now: float) -> int:
    return int(now // pk.DAY_SECONDS)


def next_counter(peer_state: PeerState, now: float) -> int:
    """The counter of our next packet to ``peer_state.peer``.

    A direction starts at the Unix time in ms of its first packet, not at 0: a sender
    that lost its database (and with it the counters it used) then starts above every
    counter it used before, unless it sent more than one packet per millisecond or its
    clock went back; so the recipient never takes a new packet for a copy of an old one.
    Never below what the recipient has acknowledged from us either (a clock that went
    back): a counter it already counts as received would be lost.
    """
    n = peer_state.next_out if peer_state.next_out > 0 else int(now * 1000)
    return max(n, peer_state.their_ack + 1)


class Mailbox:
    def __init__(
        self,
        identity: Identity,
        state: MailboxState,
        ratchet: Ratchet,
        config: MailboxConfig | None = None,
        *,
        device_id: bytes | None = None,
        reader: bool = False,
    ) -> None:
        self.identity = identity
        self.me = identity.public_key
        self.state = state
        self.ratchet = ratchet
        self.config = config or MailboxConfig()
        #: This device (whose wrap of a v2 packet we open), None: v1 only.
        self.device_id = device_id
        #: Not our mailbox device: read v2 packets, never deposit (module docstring).
        self.reader = reader
        #: The listed, non-revoked devices of a contact (set by the shell): a contact
        #: with some gets v2 packets when each publishes its own bundle.
        self.devices_of: Callable[[bytes], list[bytes]] = lambda peer: []
        self._device_bundles: dict[tuple[bytes, bytes], Bundle | None] = {}
        self._asking: set[tuple[bytes, bytes]] = set()  # device bundles being fetched
        self._not_ours: set[tuple[bytes, int]] = set()
        self.stats: Counter[str] = Counter()
        self._tokens = itertools.count(1)
        self._events: deque[Event] = deque()
        self._now = 0.0  # the latest time a caller gave us (for the deferred heads)
        #: The contacts whose heads we keep alive and poll: set by the shell, usually
        #: those without a live session.
        self.contacts: list[bytes] = []
        self._pending_gets: dict[int, tuple[str, Any]] = {}
        self._secrets: dict[bytes, bytes] = {}
        self._bundles: dict[bytes, Bundle] = {}
        self._waiting: dict[bytes, dict[bytes, bytes]] = {}  # peer -> msg id -> envelope
        self._fetching: dict[tuple[bytes, int], _Fetch] = {}
        self._polling: set[bytes] = set()
        self._poll_started: dict[bytes, int] = {}  # peer -> when the running look began (ms)
        self._head_looked: dict[bytes, int] = {}  # peer -> when the last finished look began
        self._since_ms: int | None = None  # the first handle_timer of this mailbox
        self._next_republish = 0.0
        self._next_poll = 0.0
        self._first_poll: float | None = None
        self._published_day: int | None = None
        self._ack_dirty: set[bytes] = set()
        self._handed: set[tuple[bytes, bytes, int]] = set()  # (friend, recipient, n)
        self._head_seq: dict[bytes, int] = {}  # peer -> seq of our last head put

    # --------------------------------------------------------------- plumbing

    # --------------------------------------------------------- driving interface

    def set_contacts(self, contacts: Iterable[bytes]) -> None:
        self.contacts = list(contacts)

    def get_timer(self) -> float | None:
        """When :meth:`handle_timer` next has work: a republish, a poll, or a new UTC day."""
        next_day = ((self._published_day or 0) + 1) * pk.DAY_SECONDS
        return min(self._next_republish, self._next_poll, next_day)

    def next_event(self) -> Event | None:
        # One head per peer however many packets were deposited or received since the
        # shell last drained us; an acknowledgement waits until the packets being
        # fetched from that peer are in.
        if self._ack_dirty:
            fetching = {peer for peer, _ in self._fetching}
            for peer in [p for p in self._ack_dirty if p not in fetching]:
                self._publish_head(peer, self._now)
                self._ack_dirty.discard(peer)
        return self._events.popleft() if self._events else None

    def _clock(self, now: float) -> None:
        self._now = max(self._now, now)

    def _secret(self, peer: bytes) -> bytes:
        secret = self._secrets.get(peer)
        if secret is None:
            secret = self._secrets[peer] = pairwise_secret(self.identity, peer)
        return secret

    def _get(self, public_key: bytes, salt: bytes, kind: str, context: Any) -> None:
        token = next(self._tokens)
        self._pending_gets[token] = (kind, context)
        self._events.append(Get(token, public_key, salt))

    def _put(self, item: bep44.MutableItem) -> None:
        self.stats["puts"] += 1
        self._events.append(Put(next(self._tokens), item))

    def _put_sealed(self, slot: pk.Slot, payload: dict[bytes, Any], seq: int) -> None:
        v = pk.seal_item(slot, payload)
        self._put(bep44.sign_mutable(slot.private_key, v, seq))

    # ---------------------------------------------------------------- sending

    def retention_of(self, peer: bytes) -> int:
        return self.state.peer(peer).retention_s or self.config.retention

    def deposit(self, peer: bytes, msg_id: bytes, envelope: bytes, now: float) -> bool:
        """Queue a signed envelope for ``peer`` through the mailbox.

        True if it was encrypted and queued now; False if it waits for the contact's
        prekeys (fetched from the DHT; the caller keeps it in its outbox meanwhile).
        """
        self._clock(now)
        if self.reader:
            return False  # our mailbox device deposits (the only writer of our packets)
        if self.state.is_pending(msg_id):
            return True
        targets = self._v2_targets(peer)
        if targets == "wait":
            self._waiting.setdefault(peer, {})[msg_id] = envelope
            return False
        if targets:
            return self._deposit_v2(peer, msg_id, envelope, now, targets)
        peer_state = self.state.peer(peer)
        olm_key, prekey = peer_state.olm_key, peer_state.prekey
        if not self.ratchet.has_session(peer) and prekey is None:
            bundle = self._bundles.get(peer)
            if bundle is None:
                waiting = self._waiting.setdefault(peer, {})
                if not waiting:  # one fetch of the prekeys for all that wait on them
                    self._get(peer, PREKEY_SALT, "bundle", peer)
                waiting[msg_id] = envelope
                return False
            olm_key, prekey = bundle.olm_key, bundle.pick()
        expires_ms = int((now + self.retention_of(peer)) * 1000)
        try:
            message_type, body, pickles = self.ratchet.encrypt(
                peer, envelope, olm_key=olm_key, prekey=prekey
            )
        except RatchetError as exc:
            log.warning("cannot encrypt for the mailbox: %s", exc)
            self._waiting.setdefault(peer, {})[msg_id] = envelope
            return False
        n = next_counter(peer_state, now)
        packet = OfflinePacket.create(
            self.identity, peer, n, expires_ms, self.ratchet.olm_key, message_type, body
        )
        queued = self.state.queue_packet(
            peer, n, msg_id, packet.encode(), expires_ms, pickles, int(now * 1000)
        )
        self.stats["deposited"] += 1
        self._publish_packet(peer, queued.n, queued.packet)
        self._ack_dirty.add(peer)  # the head, written once for a burst of deposits
        return True

    def _v2_targets(self, peer: bytes) -> list[tuple[bytes, Bundle | None]] | str:
        """The devices a v2 packet to ``peer`` wraps its key for, each with the bundle to
        start a session from (None: we have one); [] for a v1 packet (no device known,
        or one without its own bundle: a 1.5 device), "wait" while bundles are fetched."""
        devices = list(dict.fromkeys(self.devices_of(peer)))[: pk.MAX_WRAPS]
        targets: list[tuple[bytes, Bundle | None]] = []
        missing = []
        for device in devices:
            known = (peer, device) in self._device_bundles
            bundle = self._device_bundles.get((peer, device))
            if known and bundle is _NO_BUNDLE:
                return []
            if self.ratchet.has_session(session_key(peer, device)):
                targets.append((device, None))
            elif known:
                targets.append((device, bundle))
            else:
                missing.append(device)
        if missing:
            for device in missing:
                if (peer, device) not in self._asking:
                    self._asking.add((peer, device))
                    self._get(peer, device_prekey_salt(device), "device_bundle", (peer, device))
            return "wait"
        return targets

    def _deposit_v2(
        self,
        peer: bytes,
        msg_id: bytes,
        envelope: bytes,
        now: float,
        targets: list[tuple[bytes, Bundle | None]],
    ) -> bool:
        key, ciphertext = pk.seal_envelope(envelope)
        wraps: list[pk.Wrap] = []
        keyed: list[tuple[bytes, str, str]] = []
        for device, bundle in targets:
            where = session_key(peer, device)
            try:
                olm_key, prekey = (bundle.olm_key, bundle.pick()) if bundle else (None, None)
                message_type, body, pickles = self.ratchet.encrypt(
                    where, key, olm_key=olm_key, prekey=prekey
                )
            except RatchetError as exc:
                log.warning("cannot wrap a packet key for a device: %s", exc)
                self._device_bundles[(peer, device)] = _NO_BUNDLE  # v1 until the republish
                return self.deposit(peer, msg_id, envelope, now)
            wraps.append((device, message_type, body))
            keyed.extend((where, sid, pickle) for sid, pickle in pickles.sessions)
        peer_state = self.state.peer(peer)
        expires_ms = int((now + self.retention_of(peer)) * 1000)
        n = next_counter(peer_state, now)
        packet = OfflinePacket.create_v2(
            self.identity, peer, n, expires_ms, self.ratchet.olm_key, wraps, ciphertext
        )
        queued = self.state.queue_packet(
            peer,
            n,
            msg_id,
            packet.encode(),
            expires_ms,
            RatchetPickles(keyed=tuple(keyed)),
            int(now * 1000),
        )
        self.stats["deposited"] += 1
        self.stats["deposited_v2"] += 1
        self._publish_packet(peer, queued.n, queued.packet)
        self._ack_dirty.add(peer)
        return True

    def _publish_packet(self, peer: bytes, n: int, data: bytes) -> None:
        secret = self._secret(peer)
        for i, chunk in enumerate(pk.split_chunks(data)):
            self._put_sealed(pk.chunk_slot(secret, self.me, peer, n, i), chunk, 1)

    def _head(self, peer: bytes) -> Head:
        peer_state = self.state.peer(peer)
        pending = self.state.pending(peer)
        lo = pending[0].n if pending else peer_state.next_out
        return Head(lo, peer_state.next_out, peer_state.received)

    def _publish_head(self, peer: bytes, now: float) -> None:
        if self.reader:  # the mailbox device's head, read first and only acknowledged
            day = day_of(now)
            slot = pk.head_slot(self._secret(peer), self.me, peer, day)
            self._get(slot.public_key, b"", "own_head", (peer, day, slot, True))
            return
        self._write_head(peer, self._head(peer), now)

    def _write_head(self, peer: bytes, head: Head, now: float) -> None:
        slot = pk.head_slot(self._secret(peer), self.me, peer, day_of(now))
        # Storing nodes keep the stored item on an equal seq (BEP 44), so a second head
        # in the same millisecond (two deposits, two packets received) needs a higher one.
        seq = max(int(now * 1000), self._head_seq.get(peer, 0) + 1)
        self._head_seq[peer] = seq
        self._put_sealed(slot, head.payload(), seq)

    def _on_own_head(self, context: Any, value: object | None, now: float) -> None:
        """A reader writes our head as the mailbox device left it (``lo``, ``hi``: its
        packets), with ``a`` the higher of the one there and what this device has."""
        peer, day, slot, first = context
        if value is None and first:  # the mailbox device may be down since yesterday
            prev = pk.head_slot(self._secret(peer), self.me, peer, day - 1)
            self._get(prev.public_key, b"", "own_head", (peer, day - 1, prev, False))
            return
        found = Head(0, 0, -1)
        if value is not None:
            try:
                found = Head.from_payload(pk.open_item(slot, value))
            except PacketError as exc:
                self.stats["bad_items"] += 1
                log.warning("our mailbox head for %s refused: %s", peer.hex()[:16], exc)
        ack = max(found.ack, self.state.peer(peer).received)
        self._write_head(peer, Head(found.lo, found.hi, ack), now)

    def acknowledged(self, msg_ids: list[bytes]) -> None:
        """The recipient confirmed these over a live session: stop republishing them."""
        removed = self.state.remove_out_by_ids(msg_ids)
        for p in removed:
            self._waiting.get(p.peer, {}).pop(p.msg_id, None)
        for msg_id in msg_ids:
            for waiting in self._waiting.values():
                waiting.pop(msg_id, None)

    def is_queued(self, msg_id: bytes) -> bool:
        return self.state.is_pending(msg_id) or any(msg_id in w for w in self._waiting.values())

    # ------------------------------------------------------------------ timers

    def handle_timer(self, now: float) -> None:
        """Expire, republish, poll: call at ``get_timer()`` and whenever convenient."""
        self._clock(now)
        now_ms = int(now * 1000)
        if self._since_ms is None:
            self._since_ms = now_ms
        self._expire(now_ms)
        self.state.prune_held(now_ms)
        day = day_of(now)
        if now >= self._next_republish or day != self._published_day:
            self._published_day = day
            self._next_republish = now + self.config.republish_interval
            self._republish(now, self.contacts)
        if now >= self._next_poll:
            if self._first_poll is None:
                self._first_poll = now
            first = self._first_poll
            later = [first + t for t in self.config.start_polls if first + t > now]
            self._next_poll = min([now + self.config.poll_interval, *later])
            self.poll(now)

    def _expire(self, now_ms: int) -> None:
        expired: dict[bytes, list[int]] = {}
        for p in self.state.pending():
            closed = p.expires_ms + EXPIRY_GRACE_MS + ACK_MARGIN_MS
            looked = self._head_looked.get(p.peer, -1) >= closed
            waited = now_ms > max(closed, self._since_ms or 0) + EXPIRY_WAIT_MS
            if p.expires_ms < now_ms and (looked or waited):
                expired.setdefault(p.peer, []).append(p.n)
        for peer, ns in expired.items():
            gone = self.state.remove_out(peer, ns)
            if gone:
                self.stats["expired"] += len(gone)
                self._events.append(Expired(peer, tuple(p.msg_id for p in gone)))

    def _republish(self, now: float, contacts: list[bytes]) -> None:
        pending_peers = set(self.state.pending_peers())
        horizon_ms = (now - self.config.ack_lifetime) * 1000
        for peer in contacts:
            changed = self.state.peer(peer).ack_changed_ms
            if peer in pending_peers or (changed and changed > horizon_ms):
                self._publish_head(peer, now)
        for p in self.state.pending():
            self._publish_packet(p.peer, p.n, p.packet)
        # Bundles rotate: a device's is read again (and one that was missing looked for).
        self._device_bundles.clear()
        for peer in list(self._waiting):
            self._get(peer, PREKEY_SALT, "bundle", peer)

    # ----------------------------------------------------------------- polling

    def poll(self, now: float) -> None:
        """Look for what each contact left for us (today's head, else yesterday's)."""
        self._clock(now)
        for peer in self.contacts:
            if peer in self._polling:
                continue
            self._polling.add(peer)
            self._poll_started[peer] = int(now * 1000)
            day = day_of(now)
            slot = pk.head_slot(self._secret(peer), peer, self.me, day)
            self._get(slot.public_key, b"", "head", (peer, day, slot, True))

    def on_get(self, token: int, value: object | None, now: float) -> None:
        """The answer to a :class:`Get`: the item's decoded ``v``, or None if not found."""
        self._clock(now)
        entry = self._pending_gets.pop(token, None)
        if entry is None:
            return
        kind, context = entry
        if kind == "head":
            self._on_head(context, value, now)
        elif kind == "chunk":
            self._on_chunk(context, value, now)
        elif kind == "bundle":
            self._on_bundle(context, value, now)
        elif kind == "device_bundle":
            self._on_device_bundle(context, value, now)
        elif kind == "own_head":
            self._on_own_head(context, value, now)

    def on_put(self, token: int, ok: bool) -> None:
        self.stats["puts_ok" if ok else "puts_failed"] += 1

    def _on_head(self, context: Any, value: object | None, now: float) -> None:
        peer, day, slot, first = context
        if value is None:
            if first and now - day * pk.DAY_SECONDS < YESTERDAY_WINDOW:
                # Early in a day the sender may not have written today's head yet.
                prev = pk.head_slot(self._secret(peer), peer, self.me, day - 1)
                self._get(prev.public_key, b"", "head", (peer, day - 1, prev, False))
            else:
                self._poll_done(peer)
            return
        self._poll_done(peer)
        try:
            head = Head.from_payload(pk.open_item(slot, value))
        except PacketError as exc:
            self.stats["bad_items"] += 1
            log.warning("mailbox head from %s refused: %s", peer.hex()[:16], exc)
            return
        self.stats["heads"] += 1
        self._take_ack(peer, head.ack)
        if self.state.skip_below(peer, head.lo, int(now * 1000)):
            self._ack_dirty.add(peer)  # e.g. a packet that came by a friend is now contiguous
        peer_state = self.state.peer(peer)
        for n in range(max(head.lo, peer_state.received + 1), min(head.hi, head.lo + 1000)):
            if (peer, n) in self._not_ours:
                continue
            if not peer_state.has_received(n) and (peer, n) not in self._fetching:
                self._fetching[(peer, n)] = _Fetch(peer, n)
                slot0 = pk.chunk_slot(self._secret(peer), peer, self.me, n, 0)
                self._get(slot0.public_key, b"", "chunk", (peer, n, 0, slot0))

    def learn_received(self, peer: bytes, received: int, now: float) -> bool:
        """Another of our devices received every packet of ``peer`` up to ``received``
        (and stored or synced it): none is fetched here again, and our head, when the
        mailbox device writes it next, acknowledges at least that. True if it moved."""
        self._clock(now)
        moved = self.state.skip_below(peer, received + 1, int(now * 1000))
        if moved:
            self.stats["received_elsewhere"] += 1
            if not self.reader:
                self._ack_dirty.add(peer)
        return moved

    def _poll_done(self, peer: bytes) -> None:
        self._polling.discard(peer)
        self._head_looked[peer] = self._poll_started.pop(peer, -1)

    def _take_ack(self, peer: bytes, ack: int) -> None:
        if ack < 0:
            return
        self.state.set_their_ack(peer, ack)
        done = [p.n for p in self.state.pending(peer) if p.n <= ack]
        removed = self.state.remove_out(peer, done)
        if removed:
            self.stats["acked"] += len(removed)
            self._events.append(Acked(peer, tuple(p.msg_id for p in removed)))

    def _on_chunk(self, context: Any, value: object | None, now: float) -> None:
        peer, n, part, slot = context
        fetch = self._fetching.get((peer, n))
        if fetch is None:
            return
        if value is None:
            self.stats["chunks_missing"] += 1
            del self._fetching[(peer, n)]  # tried again at the next poll
            return
        try:
            payload = pk.open_item(slot, value)
            count = pk.chunk_count(payload, part)
            if fetch.count is not None and count != fetch.count:
                raise PacketError("chunk count differs between chunks")
        except PacketError as exc:
            self.stats["bad_items"] += 1
            log.warning("mailbox chunk from %s refused: %s", peer.hex()[:16], exc)
            del self._fetching[(peer, n)]
            return
        fetch.parts[part] = payload
        if fetch.count is None:
            fetch.count = count
            secret = self._secret(peer)
            for i in range(1, count):
                s = pk.chunk_slot(secret, peer, self.me, n, i)
                self._get(s.public_key, b"", "chunk", (peer, n, i, s))
        if len(fetch.parts) == fetch.count:
            del self._fetching[(peer, n)]
            data = pk.join_chunks([fetch.parts[i] for i in range(count)])
            self.offer_packet(peer, data, now)

    def _on_bundle(self, peer: bytes, value: object | None, now: float) -> None:
        if value is None:
            return  # asked again at the next republish
        try:
            bundle = Bundle.decode(value)
        except RatchetError as exc:
            self.stats["bad_items"] += 1
            log.warning("prekey bundle of %s refused: %s", peer.hex()[:16], exc)
            return
        self._bundles[peer] = bundle
        self._redeposit(peer, now)

    def _redeposit(self, peer: bytes, now: float) -> None:
        for msg_id, envelope in list(self._waiting.pop(peer, {}).items()):
            self.deposit(peer, msg_id, envelope, now)

    def _on_device_bundle(self, context: Any, value: object | None, now: float) -> None:
        peer, device = context
        self._asking.discard((peer, device))
        bundle: Bundle | None = _NO_BUNDLE
        if value is not None:
            try:
                bundle = Bundle.decode(value)
            except RatchetError as exc:
                self.stats["bad_items"] += 1
                log.warning("device prekey bundle of %s refused: %s", peer.hex()[:16], exc)
        self._device_bundles[(peer, device)] = bundle
        if not any(p == peer for p, _ in self._asking):
            self._redeposit(peer, now)

    # ----------------------------------------------------------------- receiving

    def offer_packet(self, peer: bytes, data: bytes, now: float) -> bool:
        """A packet from the DHT or a friend's backup; True if it was new and decrypted."""
        self._clock(now)
        packet = self._verified("offline", data, peer, self.me)
        if packet is None:
            return False
        now_ms = int(now * 1000)
        if packet.expires_ms + EXPIRY_GRACE_MS < now_ms:
            self.stats["expired_refused"] += 1
            return False
        if self.state.peer(peer).has_received(packet.n):
            self.stats["duplicates"] += 1
            return False
        if packet.wraps:
            wrap = packet.wrap_for(self.device_id) if self.device_id is not None else None
            if wrap is None:  # listed after it was made, or revoked: it cannot read it
                return self._not_for_us(peer, packet.n, "not_wrapped")
            olm_type, olm_body = wrap[1], wrap[2]
        elif self.reader:  # a v1 packet is for our mailbox device's Olm account
            return self._not_for_us(peer, packet.n, "v1_skipped")
        else:
            olm_type, olm_body = packet.olm_type, packet.olm_body
        try:
            plaintext, pickles = self.ratchet.decrypt(peer, packet.olm_key, olm_type, olm_body)
            if packet.wraps:  # what it decrypted is the packet key
                plaintext = pk.open_envelope(plaintext, packet.olm_body)
        except (RatchetError, PacketError) as exc:
            self.stats["undecryptable"] += 1
            log.warning("offline packet %d from %s: %s", packet.n, peer.hex()[:16], exc)
            self._events.append(Undecryptable(peer, packet.n, str(exc)))
            return False
        if not self.state.receive(peer, packet.n, plaintext, pickles, now_ms):
            self.stats["duplicates"] += 1
            return False
        self.stats["received"] += 1
        self._ack_dirty.add(peer)
        self._events.append(Received(peer, packet.n, plaintext))
        return True

    def _not_for_us(self, peer: bytes, n: int, why: str) -> bool:
        self.stats[why] += 1
        if len(self._not_ours) >= MAX_NOT_OURS:
            self._not_ours.clear()
        self._not_ours.add((peer, n))
        return False

    def _verified(
        self, what: str, data: bytes, sender: bytes, recipient: bytes | None
    ) -> OfflinePacket | None:
        """``data`` parsed, with ``sender``'s signature for ``recipient`` (None: whom the
        packet names) checked; a bad packet is counted and logged, never raised."""
        try:
            packet = OfflinePacket.parse(data)
            packet.verify(sender, packet.recipient if recipient is None else recipient)
        except PacketError as exc:
            self.stats["bad_packets"] += 1
            log.warning("%s packet from %s refused: %s", what, sender.hex()[:16], exc)
            return None
        return packet

    # -------------------------------------------------------------- friend backup

    def backup_for(self, friend: bytes, now: float) -> list[bytes]:
        """Pending packets for others that ``friend`` (online now) has not been given."""
        out = []
        now_ms = int(now * 1000)
        for p in self.state.pending():
            key = (friend, p.peer, p.n)
            if p.peer == friend or key in self._handed or p.expires_ms < now_ms:
                continue
            self._handed.add(key)
            out.append(p.packet)
            if len(out) >= MAX_BACKUP_BATCH:
                break
        return out

    def accept_hold(
        self, friend: bytes, packets: list[bytes], contacts: set[bytes], now: float
    ) -> int:
        """Hold a friend's packets for recipients that are our contacts too."""
        held = 0
        now_ms = int(now * 1000)
        for data in packets[:MAX_BACKUP_BATCH]:
            packet = self._verified("backup", data, friend, None)
            if packet is None:
                continue
            if packet.recipient not in contacts or packet.recipient == self.me:
                continue
            expires = min(packet.expires_ms, now_ms + MAX_RETENTION * 1000)
            if expires < now_ms:
                continue
            if self.state.hold(
                HeldPacket(packet.recipient, friend, packet.n, data, expires),
                per_sender=self.config.backup_per_sender,
                total=self.config.backup_total,
            ):
                held += 1
            else:
                self.stats["backup_quota"] += 1
        self.stats["held"] += held
        return held

    def held_for(self, recipient: bytes) -> list[bytes]:
        return [h.packet for h in self.state.held_for(recipient)][:MAX_BACKUP_BATCH]

    def take_held(self, friend: bytes, packets: list[bytes], now: float) -> list[tuple[bytes, int]]:
        """Packets a friend held for us: offer each; returns (sender, n) to release."""
        release = []
        for data in packets[:MAX_BACKUP_BATCH]:
            try:
                packet = OfflinePacket.parse(data)
            except PacketError:
                self.stats["bad_packets"] += 1
                continue
            self.offer_packet(packet.sender, data, now)
            if self.state.peer(packet.sender).has_received(packet.n):
                release.append((packet.sender, packet.n))
        return release

    def release_held(self, recipient: bytes, items: list[tuple[bytes, int]]) -> int:
        return self.state.release_held(recipient, items)

    # ---------------------------------------------------------------- prekeys

    def bundle_item(self, now: float) -> bep44.MutableItem:
        """Our prekey bundle as a BEP 44 item under the identity key."""
        value = self.ratchet.bundle(int(now * 1000)).encode()
        return bep44.sign_mutable(self.identity.private_key, value, int(now * 1000), PREKEY_SALT)

    def bundle_items(self, now: float) -> list[bep44.MutableItem]:
        """What to publish: this device's own bundle (1.6) and, on the mailbox device,
        the identity's bundle that 1.5 senders read (the same keys)."""
        items = [] if self.reader else [self.bundle_item(now)]
        if self.device_id is not None:
            value = self.ratchet.bundle(int(now * 1000)).encode()
            salt = device_prekey_salt(self.device_id)
            items.append(
                bep44.sign_mutable(self.identity.private_key, value, int(now * 1000), salt)
            )
        return items
