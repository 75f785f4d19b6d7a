"""The daemon's event stream: every API subscriber gets each event, a slow one loses the oldest."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

__all__ = ["SUBSCRIBER_QUEUE", "EventHub"]

#: Events a slow subscriber may fall behind before the oldest are dropped.
SUBSCRIBER_QUEUE = 1000


class EventHub:
    """One bounded queue per subscriber; the daemon's and the in-memory fake's stream."""

    def __init__(self) -> None:
        self._subscribers: set[asyncio.Queue[dict[str, Any]]] = set()

    @property
    def subscribers(self) -> int:
        """How many streams are open (closing one unsubscribes it)."""
        return len(self._subscribers)

    def emit(self, event: dict[str, Any]) -> None:
        for queue in list(self._subscribers):
            if queue.full():
                with contextlib.suppress(asyncio.QueueEmpty):
                    queue.get_nowait()
            queue.put_nowait(event)

    async def subscribe(self) -> AsyncIterator[dict[str, Any]]:
        queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue(SUBSCRIBER_QUEUE)
        self._subscribers.add(queue)
        try:
            while True:
                yield await queue.get()
        finally:
            self._subscribers.discard(queue)
