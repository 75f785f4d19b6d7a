"""The asyncio shell of the 1:1 conversation core (:mod:`btchat.messaging.conversation`).

It drains the core's events after every call and carries them out: bytes go to the
live session through ``send``, messages without a session to the offline mailbox,
notices to API subscribers as JSON events; and it keeps the core's one timer armed on
the event loop. Offline delivery is optional (``offline`` is set once it runs).

Group commit: payloads from sessions (:meth:`Chat.receive`) and texts from the API
(:meth:`Chat.send_text`) are not handled one by one but collected until the end of the
current turn of the event loop, when :meth:`Chat.flush` runs them all as one batch of
the core: one store transaction, one fsync, then the sends and receipts it caused. The
pump hands over every frame of one read in one turn, so "one commit per read" comes for
free, and concurrent API calls share a commit too. Nothing is acknowledged or reported
sent before the commit returned; a batch that fails to commit is dropped whole (its
senders still hold the messages in their outboxes) and the API callers get the error.
A batch holds at most :data:`MAX_BATCH` items: more are flushed at once.

Full-text indexing is not part of a batch: a stored message is only marked pending,
and :meth:`Chat.index_loop` (a background task of the daemon) indexes pending rows in
batches of :data:`INDEX_BATCH` once no batch has been committed for :data:`INDEX_IDLE`
seconds (or, under a steady stream that never pauses, every :data:`INDEX_MAX_WAIT`
seconds), so indexing waits for idle time instead of delaying receipts. Search indexes
whatever is still pending first (:meth:`~btchat.messaging.messages.Messages.search`).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

from btchat.errors import StorageFault
from btchat.messaging import conversation as conv
from btchat.messaging.conversation import Conversations
from btchat.messaging.envelope import FILE, Envelope
from btchat.messaging.messages import MessageRow
from btchat.messaging.store import Store, StoreError
from btchat.net.timer import CoreTimer
from btchat.node.files import Files
from btchat.node.offline import BACKUP_TYPES, OfflineDelivery

__all__ = ["INDEX_BATCH", "INDEX_IDLE", "INDEX_MAX_WAIT", "MAX_BATCH", "Chat"]

log = logging.getLogger(__name__)

#: Payloads and texts per batch (one transaction). A read brings at most a few hundred
#: frames (``READ_SIZE`` / the smallest envelope); this caps a turn with many sessions.
MAX_BATCH = 1000

#: Pending rows indexed per idle step (one transaction of a few milliseconds).
INDEX_BATCH = 500
#: Quiet time (no batch committed) before the indexer runs.
INDEX_IDLE = 0.05
#: Longest the indexer defers to a stream of batches that never pauses.
INDEX_MAX_WAIT = 5.0
#: How long the indexer waits after the disk refused its write (the guard probes).
INDEX_FAULT_WAIT = 30.0


class Chat:
    def __init__(
        self,
        core: Conversations,
        store: Store,
        *,
        send: Callable[[bytes, bytes], bool],
        emit: Callable[[dict[str, Any]], None],
    ) -> None:
        self.core = core
        self.store = store
        self.offline: OfflineDelivery | None = None
        #: Told when a contact says its device list changed (``devices`` envelope).
        self.devices_changed: Callable[[bytes], None] | None = None
        self.files: Files | None = None
        self._send = send
        self._emit = emit
        #: Batches committed and failed, and the items they held.
        self.stats: Counter[str] = Counter()
        #: Told of a batch the disk refused (full, failing, read-only) and of the peers
        #: whose payloads went unacknowledged; the daemon's storage guard keeps the one
        #: log line and the status, and has those peers resend once storage works.
        self.on_fault: Callable[[StorageFault, list[bytes]], None] | None = None
        self._inbox: list[tuple[bytes, bytes, bytes]] = []  # peer, device, payload
        self._outgoing: list[tuple[bytes, str, asyncio.Future[Envelope]]] = []
        self._flush_handle: asyncio.Handle | None = None
        #: Set when a batch stored something (and at start: rows left pending by a
        #: crash); the indexer sleeps on it. ``_last_commit`` is monotonic time.
        self._to_index = asyncio.Event()
        self._to_index.set()
        self._last_commit = 0.0
        self._timer = CoreTimer(None, core.get_timer, self._on_timer, clock=time.time)
        self._handlers: dict[type, Callable[[Any], None]] = {
            conv.Transmit: lambda e: self._send(e.peer, e.data),
            conv.Deposit: self._on_deposit,
            conv.MessageStored: self._on_stored,
            conv.ReceiptReceived: self._on_receipt,
            conv.PresenceChanged: lambda e: self._emit(
                {
                    "type": "presence",
                    "contact": e.peer.hex(),
                    "status": e.status,
                    "note": e.note,
                    "last_seen": e.last_seen_ms,
                }
            ),
            conv.MarkedRead: lambda e: self._emit(
                {"type": "read", "contact": e.peer.hex(), "ids": [i.hex() for i in e.ids]}
            ),
            conv.Typing: lambda e: self._emit(
                {"type": "typing", "contact": e.peer.hex(), "on": e.on}
            ),
            conv.Refused: lambda e: self._emit(
                {"type": "refused", "contact": e.peer.hex(), "reason": e.reason}
            ),
            conv.FileOffered: lambda e: self.files and self.files.on_offer(e.peer, e.envelope),
            conv.Unhandled: self._on_unhandled,
        }

    def drive(self) -> None:
        """Carry out what the core asks, and re-arm its one timer."""
        while (event := self.core.next_event()) is not None:
            self._handlers[type(event)](event)
        self._timer.rearm()

    def close(self) -> None:
        """Commit what is pending (the store is still open), stop the timer."""
        self.flush()
        self._timer.cancel()

    # ------------------------------------------------------------- group commit

    def receive(self, peer: bytes, device: bytes, payload: bytes) -> None:
        """A payload from ``peer``'s session: handled with the others of this loop turn."""
        self._inbox.append((peer, device, payload))
        self._pending()

    def send_text(self, to: bytes, text: str) -> asyncio.Future[Envelope]:
        """Queue a text; the future is its envelope once committed (queued for sending)."""
        future: asyncio.Future[Envelope] = asyncio.get_running_loop().create_future()
        self._outgoing.append((to, text, future))
        self._pending()
        return future

    def _pending(self) -> None:
        if len(self._inbox) + len(self._outgoing) >= MAX_BATCH:
            self.flush()
        elif self._flush_handle is None:
            self._flush_handle = asyncio.get_running_loop().call_soon(self.flush)

    def flush(self) -> None:
        """One batch of the core for everything pending, then carry out its events.

        Called at the end of the loop turn, and at once before anything that must see
        the payloads already handled (a session going down, shutting down)."""
        if self._flush_handle is not None:
            self._flush_handle.cancel()
            self._flush_handle = None
        inbox, self._inbox = self._inbox, []
        outgoing, self._outgoing = self._outgoing, []
        if not inbox and not outgoing:
            return
        now = time.time()
        sent: list[Envelope] = []
        try:
            with self.core.batch(now):
                for peer, device, payload in inbox:
                    self.core.receive(peer, device, payload, now)
                for to, text, _ in outgoing:
                    sent.append(self.core.send_text(to, text, now))
        except Exception as exc:
            # Nothing of the batch was acknowledged: the peers resend on their next
            # session (their outboxes), the API callers see the error.
            for _, _, future in outgoing:
                if not future.done():
                    future.set_exception(exc)
            if not isinstance(exc, StoreError):
                raise  # a bug: let it show
            if isinstance(exc, StorageFault) and self.on_fault is not None:
                self.on_fault(exc, sorted({peer for peer, _, _ in inbox}))
            else:
                log.warning("a batch of %d payloads was not stored: %s", len(inbox), exc)
            self.stats["batches_failed"] += 1
            self.stats["payloads_dropped"] += len(inbox)
            self._timer.rearm()
            return
        self.stats["batches"] += 1
        self.stats["batched"] += len(inbox) + len(outgoing)
        self._last_commit = time.monotonic()
        self._to_index.set()
        self.drive()
        for (_, _, future), envelope in zip(outgoing, sent, strict=True):
            if not future.done():
                future.set_result(envelope)

    # ------------------------------------------------------------- indexing

    def index_step(self) -> int:
        """One bounded indexing transaction (what the loop runs); returns rows indexed."""
        indexed = self.store.index_pending(INDEX_BATCH)
        self.stats["indexed"] += indexed
        return indexed

    async def index_loop(self, on_fault: Callable[[StorageFault], None] | None = None) -> None:
        """Index pending rows in idle time, forever (a low-priority background task).

        Runs a step only when no batch is waiting and none was committed in the last
        :data:`INDEX_IDLE` seconds (or :data:`INDEX_MAX_WAIT` went by without a step);
        a storage fault is reported to ``on_fault`` (the daemon's guard; another store
        error is logged) and retried after :data:`INDEX_FAULT_WAIT`: the rows stay
        pending, the messages are stored.
        """
        last_step = time.monotonic()
        while True:
            await self._to_index.wait()
            await asyncio.sleep(INDEX_IDLE)
            now = time.monotonic()
            busy = self._inbox or self._outgoing or now - self._last_commit < INDEX_IDLE
            if busy and now - last_step < INDEX_MAX_WAIT:
                continue
            self._to_index.clear()  # a batch committed during the step sets it again
            try:
                indexed = self.index_step()
            except StoreError as exc:  # the rows stay pending; search indexes them too
                self._to_index.set()
                if isinstance(exc, StorageFault) and on_fault is not None:
                    on_fault(exc)
                else:
                    log.warning("full-text indexing postponed: %s", exc)
                await asyncio.sleep(INDEX_FAULT_WAIT)
                continue
            last_step = time.monotonic()
            if indexed >= INDEX_BATCH:
                self._to_index.set()  # more to do: next step after the same idle check

    def _on_timer(self) -> None:
        self.core.handle_timer(time.time())
        self.drive()

    def send_body(self, to: bytes, kind: bytes, body: dict[bytes, Any]) -> bool:
        """A transient envelope over the live session (offline delivery's bodies)."""
        sent = self.core.send_body(to, kind, body, time.time())
        self.drive()
        return sent

    def emit_message(self, envelope: Envelope) -> None:
        row = self.store.get_message(envelope.id)
        if row is not None:
            self._emit({"type": "message", "message": row.to_json()})
            if envelope.type == FILE and row.direction == "in" and self.files is not None:
                self.files.on_offer(envelope.sender, envelope)  # e.g. from the mailbox

    def _on_stored(self, event: conv.MessageStored) -> None:
        """The row as stored, built from the event: no read per message on the hot path."""
        direction = "out" if event.envelope.sender == self.core.me else "in"
        row = MessageRow.of(event.envelope, direction, event.state, int(time.time() * 1000))
        self._emit({"type": "message", "message": row.to_json()})

    def _on_deposit(self, event: conv.Deposit) -> None:
        if self.offline is not None:  # not reachable now: leave it in the DHT mailbox
            self.offline.deposit(event.peer, event.envelope, event.data)

    def _on_receipt(self, event: conv.ReceiptReceived) -> None:
        if self.offline is not None:
            self.offline.acknowledged(list(event.ids))
        self._emit(
            {
                "type": "receipt",
                "contact": event.peer.hex(),
                "state": event.state,
                "ids": [i.hex() for i in event.ids],
            }
        )

    def _on_unhandled(self, event: conv.Unhandled) -> None:
        if event.envelope.type in BACKUP_TYPES and self.offline is not None:
            self.offline.on_envelope(event.peer, event.envelope)
        elif event.envelope.type == conv.DEVICES_CHANGED and self.devices_changed is not None:
            self.devices_changed(event.peer)
        else:
            log.info("ignoring envelope of unknown type %r", event.envelope.type)
