"""The asyncio shell of the 1:1 conversation core (:mod:`btchat.messaging.conversation`).

It drains the core's events after every call and carries them out: bytes go to the
live session through ``send``, messages without a session to the offline mailbox,
notices to API subscribers as JSON events; and it keeps the core's one timer armed on
the event loop. Offline delivery is optional (``offline`` is set once it runs).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

from btchat.messaging import conversation as conv
from btchat.messaging.conversation import Conversations
from btchat.messaging.envelope import FILE, Envelope
from btchat.messaging.store import Store
from btchat.net.timer import CoreTimer
from btchat.node.files import Files
from btchat.node.offline import BACKUP_TYPES, OfflineDelivery

__all__ = ["Chat"]

log = logging.getLogger(__name__)


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
        self.files: Files | None = None
        self._send = send
        self._emit = emit
        self._timer = CoreTimer(None, core.get_timer, self._on_timer, clock=time.time)
        self._handlers: dict[type, Callable[[Any], None]] = {
            conv.Transmit: lambda e: self._send(e.peer, e.data),
            conv.Deposit: self._on_deposit,
            conv.MessageStored: lambda e: self.emit_message(e.envelope),
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
        self._timer.cancel()

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
        else:
            log.info("ignoring envelope of unknown type %r", event.envelope.type)
