"""Asyncio glue around the sans-I/O :class:`~btchat.offline.mailbox.Mailbox`.

Carries out the mailbox's DHT requests on the daemon's :class:`DhtService` (bounded
concurrency), feeds the answers back, wakes it at its deadlines, and turns its events
into stored messages and API events through callbacks of the daemon. Session-borne
parts of offline delivery (prekeys handed to a contact, friend backup) are envelopes
whose bodies :class:`~btchat.offline.courier.Courier` builds and reads; the daemon
only routes them.

On our devices other than the mailbox device the same class runs as a *reader*
(``reader=True``): it publishes this device's prekey bundle and, while it has no session
with our mailbox device (``polling``), reads the contacts' heads and the v2 packets
wrapped for it; it deposits nothing, hands no backups and no prekeys over sessions.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from typing import Any

from btchat.dht.node import GetItemResult
from btchat.errors import StorageFault
from btchat.identity.keys import Identity
from btchat.messaging.envelope import Envelope, EnvelopeError, parse_envelope
from btchat.messaging.store import Store
from btchat.net.dht_service import DhtError, DhtService
from btchat.node.tasks import TaskOwner
from btchat.offline.courier import BACKUP_TYPES, HELD, HELD_ACK, HOLD, PREKEY, Courier, Message
from btchat.offline.inbox import apply_outcome, drain_inbox
from btchat.offline.mailbox import (
    Acked,
    Expired,
    Get,
    Mailbox,
    MailboxConfig,
    Outcome,
    Put,
    Received,
    Undecryptable,
)
from btchat.offline.ratchet import Ratchet
from btchat.offline.state import MailboxState
from btchat.sansio import drain_events

__all__ = ["BACKUP_TYPES", "HELD", "HELD_ACK", "HOLD", "PREKEY", "OfflineDelivery"]

log = logging.getLogger(__name__)

#: DHT operations in flight at once for the mailbox.
MAX_IN_FLIGHT = 16
#: Our prekey bundle is republished this often (DHT items live about two hours).
BUNDLE_REPUBLISH = 1800.0
#: After a storage fault (a full disk) the mailbox loop tries again this much later.
STORAGE_RETRY = 30.0

Send = Callable[[bytes, bytes, dict[bytes, Any]], bool]  # (peer, type, body) -> sent


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
        device_id: bytes | None = None,
        devices_of: Callable[[bytes], list[bytes]] | None = None,
        reader: bool = False,
        polling: Callable[[], bool] = lambda: True,
    ) -> None:
        self.identity = identity
        self.store = store
        self.dht = dht
        self.state = MailboxState(store)
        self.ratchet = Ratchet(identity, self.state)
        self.mailbox = Mailbox(
            identity, self.state, self.ratchet, config, device_id=device_id, reader=reader
        )
        if devices_of is not None:
            self.mailbox.devices_of = devices_of
        self.reader = reader
        self._polling = polling
        #: Told (contact, contiguous mark) when a packet came in: our other devices learn.
        self.on_received: Callable[[bytes, int], None] = lambda peer, n: None
        self.courier = Courier(self.mailbox)
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

    def _watched(self) -> list[bytes]:
        """The contacts whose heads we read and keep alive: a reader none while our
        mailbox device is reachable (it brings what it reads by sync)."""
        return self._offline_contacts() if self._polling() else []

    async def _loop(self, joined: asyncio.Event) -> None:
        while True:
            await joined.wait()
            now = time.time()
            try:
                self._deliver_inbox()  # what a storage fault left in the inbox last time
                if not self.reader:
                    self.requeue_outbox(now)
                self.mailbox.set_contacts(self._watched())
                self.mailbox.handle_timer(now)
                self.pump()
                if not self.reader:
                    self.hand_backups()  # also deposits that waited for the contact's prekeys
                deadline = self.mailbox.get_timer()
            except StorageFault as exc:
                # A full disk must not end offline delivery for good: try again later
                # (the daemon's log filter makes this one line for the whole condition).
                log.warning("offline delivery paused: %s", exc, exc_info=exc)
                deadline = now + STORAGE_RETRY
            self._wake.clear()
            delay = 60.0 if deadline is None else max(0.05, deadline - time.time())
            # asyncio.timeout, not wait_for: on 3.11 wait_for can swallow a cancellation
            # that arrives as the wake-up fires, and then stop() would wait forever.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(min(delay, 60.0)):
                    await self._wake.wait()

    async def _bundle_loop(self, joined: asyncio.Event) -> None:
        while True:
            await joined.wait()
            wait = BUNDLE_REPUBLISH
            for item in self.mailbox.bundle_items(time.time()):
                try:
                    await self.dht.put_mutable(item)
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

    def learn_received(self, counters: list[tuple[bytes, int]]) -> None:
        """What another of our devices received (its ``received`` note)."""
        now = time.time()
        contacts = set(self._contacts())
        for peer, n in counters:
            if peer in contacts:
                self.mailbox.learn_received(peer, n, now)
        self.pump()

    def poll_now(self) -> None:
        """Read the contacts' heads now (a reader whose mailbox device just went away)."""
        self.mailbox.set_contacts(self._watched())
        self.mailbox.poll(time.time())
        self.pump()

    def pump(self) -> None:
        """Start the mailbox's new DHT requests and handle its new events."""
        for event in drain_events(self.mailbox):
            if isinstance(event, Get | Put):
                self._tasks.spawn(self._run(event))
            else:
                self._handle(event)

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
                try:  # storing what the slot held: nothing is acknowledged unless stored
                    self.mailbox.on_get(request.token, value, time.time())
                except StorageFault as exc:
                    log.warning("mailbox item not stored: %s", exc, exc_info=exc)
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
        self._send_all(friend, self.courier.backups_for(friend, now))

    def _send_all(self, peer: bytes, messages: list[Message]) -> None:
        for kind, body in messages:
            self._send(peer, kind, body)

    def requeue_outbox(self, now: float) -> None:
        """Outbox messages to offline contacts that are not in the mailbox yet: a crash
        between saving and depositing, or a deposit that waited for prekeys."""
        for peer in self._offline_contacts():
            for blob in self.store.pending_outbox(peer):
                try:
                    envelope = parse_envelope(blob)
                except EnvelopeError:
                    continue
                stored = envelope.type in (b"text", b"file")  # messages of the history
                if stored and not self.mailbox.is_queued(envelope.id):
                    self.mailbox.deposit(peer, envelope.id, blob, now)

    def acknowledged(self, ids: list[bytes]) -> None:
        self.mailbox.acknowledged(ids)

    # ---------------------------------------------------------------- events

    def _handle(self, event: Outcome) -> None:
        if isinstance(event, Received):
            try:
                self._deliver_inbox()
            except StorageFault as exc:
                # Left in the inbox (decrypted, not acknowledged): stored on a later turn.
                log.warning("offline message not stored yet: %s", exc, exc_info=exc)
                return
            self.on_received(event.peer, self.state.peer(event.peer).received)
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
            self._emit({"type": "receipt", "contact": event.peer.hex(), "state": state, "ids": ids})
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
        self._send_all(peer, self.courier.session_up(peer, time.time()))

    def on_envelope(self, peer: bytes, envelope: Envelope) -> None:
        """A verified session envelope of one of BACKUP_TYPES from ``peer``."""
        replies = self.courier.on_envelope(
            peer, envelope.type, envelope.body, set(self._contacts()), time.time()
        )
        self.pump()  # what a friend held for us is stored before we release it
        self._send_all(peer, replies)
