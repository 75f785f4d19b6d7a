"""Asyncio glue around the sans-I/O :class:`~btchat.offline.mailbox.Mailbox`.

Carries out the mailbox's DHT requests on the daemon's :class:`DhtService` (bounded
concurrency), feeds the answers back, wakes it at its deadlines, and turns its events
into stored messages and API events through callbacks of the daemon. Session-borne
parts of offline delivery (prekeys handed to a contact, friend backup) are envelopes:
their bodies are built and read here, the daemon only routes them.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from typing import Any

from btchat.dht.node import GetItemResult
from btchat.identity.keys import Identity
from btchat.messaging.envelope import MAX_ENVELOPE, Envelope, EnvelopeError, parse_envelope
from btchat.messaging.store import Store
from btchat.net.dht_service import DhtError, DhtService
from btchat.node.tasks import TaskOwner
from btchat.offline.inbox import apply_outcome, drain_inbox
from btchat.offline.mailbox import (
    Acked,
    Event,
    Expired,
    Get,
    Mailbox,
    MailboxConfig,
    Put,
    Received,
    Undecryptable,
)
from btchat.offline.packet import OfflinePacket, PacketError
from btchat.offline.ratchet import Ratchet, RatchetError, decode_prekey_body
from btchat.offline.state import MailboxState

__all__ = ["BACKUP_TYPES", "HELD", "HELD_ACK", "HOLD", "PREKEY", "OfflineDelivery"]

log = logging.getLogger(__name__)

PREKEY, HOLD, HELD, HELD_ACK = b"prekey", b"hold", b"held", b"held_ack"
BACKUP_TYPES = (PREKEY, HOLD, HELD, HELD_ACK)
#: DHT operations in flight at once for the mailbox.
MAX_IN_FLIGHT = 16
#: Our prekey bundle is republished this often (DHT items live about two hours).
BUNDLE_REPUBLISH = 1800.0
#: Packet bytes per backup envelope, well inside MAX_ENVELOPE.
BACKUP_BYTES = MAX_ENVELOPE - 8 * 1024

Send = Callable[[bytes, bytes, dict[bytes, Any]], bool]  # (peer, type, body) -> sent


def _packets(body: dict[bytes, Any]) -> list[bytes]:
    packets = body.get(b"p")
    if type(packets) is not list:
        return []
    return [p for p in packets if type(p) is bytes]


def _sender(packet: bytes) -> bytes | None:
    try:
        return OfflinePacket.parse(packet).sender
    except PacketError:
        return None


def _batches(packets: list[bytes]) -> list[list[bytes]]:
    batches: list[list[bytes]] = [[]]
    size = 0
    for packet in packets:
        if batches[-1] and size + len(packet) > BACKUP_BYTES:
            batches.append([])
            size = 0
        batches[-1].append(packet)
        size += len(packet) + 8
    return [b for b in batches if b]


class OfflineDelivery:
    def __init__(
        self,
        identity: Identity,
        store: Store,
        dht: DhtService,
        *,
        contacts: Callable[[], list[bytes]],
        is_online: Callable[[bytes], bool],
        send: Send,
        emit: Callable[[dict[str, Any]], None],
        on_message: Callable[[Envelope], None],
        config: MailboxConfig | None = None,
    ) -> None:
        self.identity = identity
        self.store = store
        self.dht = dht
        self.state = MailboxState(store)
        self.ratchet = Ratchet(identity, self.state)
        self.mailbox = Mailbox(identity, self.state, self.ratchet, config)
        self._contacts = contacts
        self._is_online = is_online
        self._send = send
        self._emit = emit
        self._on_message = on_message
        self._tasks = TaskOwner()
        self._slots = asyncio.Semaphore(MAX_IN_FLIGHT)
        self._wake = asyncio.Event()

    async def start(self, joined: asyncio.Event) -> None:
        self._deliver_inbox()  # anything decrypted before a crash
        self._tasks.spawn(self._loop(joined))
        self._tasks.spawn(self._bundle_loop(joined))

    async def stop(self) -> None:
        await self._tasks.cancel_all()

    # ------------------------------------------------------------------ loops

    def _offline_contacts(self) -> list[bytes]:
        return [pk for pk in self._contacts() if not self._is_online(pk)]

    async def _loop(self, joined: asyncio.Event) -> None:
        while True:
            await joined.wait()
            now = time.time()
            self.requeue_outbox(now)
            self.mailbox.tick(now, self._offline_contacts())
            self.pump()
            self.hand_backups()  # also deposits that waited for the contact's prekeys
            self._wake.clear()
            delay = max(0.05, self.mailbox.next_deadline() - time.time())
            # asyncio.timeout, not wait_for: on 3.11 wait_for can swallow a cancellation
            # that arrives as the wake-up fires, and then stop() would wait forever.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(min(delay, 60.0)):
                    await self._wake.wait()

    async def _bundle_loop(self, joined: asyncio.Event) -> None:
        while True:
            await joined.wait()
            item = self.mailbox.bundle_item(time.time())
            try:
                await self.dht.put_mutable(item)
                wait = BUNDLE_REPUBLISH
            except DhtError as exc:
                log.info("prekey bundle not published yet: %s", exc)
                wait = 30.0
            await asyncio.sleep(wait)

    def summary(self) -> dict[str, Any]:
        """For ``btchat status``: what waits in the DHT for others, what we hold."""
        return {
            "pending": len(self.state.pending()),
            "held_for_others": self.state.held_count(),
            "stats": dict(self.mailbox.stats),
        }

    def wake(self) -> None:
        self._wake.set()

    def pump(self) -> None:
        """Start the mailbox's new DHT requests and handle its new events."""
        for request in self.mailbox.take_requests(time.time()):
            self._tasks.spawn(self._run(request))
        self._handle(self.mailbox.take_events())

    async def _run(self, request: Get | Put) -> None:
        async with self._slots:
            if isinstance(request, Get):
                try:
                    result: GetItemResult | None = await self.dht.get_mutable(
                        request.public_key, request.salt
                    )
                except DhtError:
                    result = None
                value = result.value if result is not None else None
                self.mailbox.on_get(request.token, value, time.time())
            else:
                try:
                    await self.dht.put_mutable(request.item)
                    ok = True
                except DhtError:
                    ok = False
                self.mailbox.on_put(request.token, ok)
        self.pump()

    # ---------------------------------------------------------------- sending

    def deposit(self, peer: bytes, envelope: Envelope, blob: bytes) -> None:
        """Queue a message for a contact with no session (persisted already)."""
        self.mailbox.deposit(peer, envelope.id, blob, time.time())
        self.pump()
        self.hand_backups()

    def hand_backups(self) -> None:
        """Give contacts online now the pending packets for others they have not got."""
        now = time.time()
        for friend in self._contacts():
            if self._is_online(friend):
                self._hand_backup(friend, now)

    def _hand_backup(self, friend: bytes, now: float) -> None:
        for batch in _batches(self.mailbox.backup_for(friend, now)):
            self._send(friend, HOLD, {b"p": batch})

    def requeue_outbox(self, now: float) -> None:
        """Outbox messages to offline contacts that are not in the mailbox yet: a crash
        between saving and depositing, or a deposit that waited for prekeys."""
        for peer in self._offline_contacts():
            for blob in self.store.pending_outbox(peer):
                try:
                    envelope = parse_envelope(blob)
                except EnvelopeError:
                    continue
                if envelope.type == b"text" and not self.mailbox.is_queued(envelope.id):
                    self.mailbox.deposit(peer, envelope.id, blob, now)

    def acknowledged(self, ids: list[bytes]) -> None:
        self.mailbox.acknowledged(ids)

    # ---------------------------------------------------------------- events

    def _handle(self, events: list[Event]) -> None:
        for event in events:
            if isinstance(event, Received):
                self._deliver_inbox()
            elif isinstance(event, Acked | Expired):
                state = apply_outcome(self.store, event)
                ids = [i.hex() for i in event.msg_ids]
                if isinstance(event, Expired):
                    log.warning(
                        "%d message(s) to %s not delivered, expired",
                        len(ids),
                        event.peer.hex()[:16],
                    )
                    self._emit({"type": "expired", "contact": event.peer.hex(), "ids": ids})
                self._emit(
                    {"type": "receipt", "contact": event.peer.hex(), "state": state, "ids": ids}
                )
            elif isinstance(event, Undecryptable):
                self._emit(
                    {
                        "type": "undecryptable",
                        "contact": event.peer.hex(),
                        "reason": event.reason,
                        "notice": "a message from this contact could not be decrypted "
                        "(their or our ratchet state was lost); ask them to send it again",
                    }
                )

    def _deliver_inbox(self) -> None:
        for envelope, fresh in drain_inbox(
            self.state, self.store, self.identity.public_key, time.time()
        ):
            if fresh:
                self._on_message(envelope)

    # ------------------------------------------------------- session-borne parts

    def session_up(self, peer: bytes) -> None:
        """Hand a contact that just came online what it needs from us offline."""
        if not self.ratchet.has_session(peer):
            given = self.state.peer(peer).given_prekey
            if given is not None:  # still unused: hand the same key, do not burn another
                olm_key, one_time = self.ratchet.olm_key, given
            else:
                olm_key, one_time = self.ratchet.one_time_key()
                self.state.set_given_prekey(peer, one_time)
            self._send(peer, PREKEY, {b"k": olm_key, b"o": one_time})
        self._hand_backup(peer, time.time())
        for batch in _batches(self.mailbox.held_for(peer)):
            self._send(peer, HELD, {b"p": batch})

    def on_envelope(self, peer: bytes, envelope: Envelope) -> None:
        """A verified session envelope of one of BACKUP_TYPES from ``peer``."""
        now = time.time()
        body = envelope.body
        if envelope.type == PREKEY:
            try:
                olm_key, one_time = decode_prekey_body(body)
            except RatchetError as exc:
                log.warning("prekey from %s refused: %s", peer.hex()[:16], exc)
                return
            self.state.set_prekey(peer, olm_key, one_time)
        elif envelope.type == HOLD:
            held = self.mailbox.accept_hold(peer, _packets(body), set(self._contacts()), now)
            log.info("holding %d packet(s) from %s for offline contacts", held, peer.hex()[:16])
        elif envelope.type == HELD:
            contacts = set(self._contacts())
            release = self.mailbox.take_held(
                peer, [p for p in _packets(body) if _sender(p) in contacts], now
            )
            self.pump()
            if release:
                self._send(peer, HELD_ACK, {b"a": [[s, n] for s, n in release]})
        elif envelope.type == HELD_ACK:
            items = body.get(b"a")
            if type(items) is list:
                pairs = [
                    (i[0], i[1])
                    for i in items
                    if type(i) is list and len(i) == 2 and type(i[0]) is bytes and type(i[1]) is int
                ]
                self.mailbox.release_held(peer, pairs)
