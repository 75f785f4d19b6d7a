"""The output scheduler for substream data: strict priority between classes, round-robin within.

Why: bulk data (a file) must never delay chat or control frames, and one big transfer
must not starve a small one of the same class. Control frames and the default stream
never pass through here (the core writes them at once); this only decides which ready
substream sends the next chunk.
"""

from __future__ import annotations

from collections import deque

__all__ = ["PRIORITY_LEVELS", "Scheduler"]

#: Substream priority classes: 0 is the most urgent, ``PRIORITY_LEVELS - 1`` the least.
PRIORITY_LEVELS = 8


class Scheduler:
    """The ids of substreams that have something to send, by priority class."""

    def __init__(self) -> None:
        self._classes: list[deque[int]] = [deque() for _ in range(PRIORITY_LEVELS)]
        self._priority: dict[int, int] = {}

    def __len__(self) -> int:
        return len(self._priority)

    def __contains__(self, stream_id: int) -> bool:
        return stream_id in self._priority

    def add(self, stream_id: int, priority: int) -> None:
        """Mark a stream ready (idempotent); it joins the back of its class."""
        if stream_id not in self._priority:
            self._priority[stream_id] = priority
            self._classes[priority].append(stream_id)

    def remove(self, stream_id: int) -> None:
        priority = self._priority.pop(stream_id, None)
        if priority is not None:
            self._classes[priority].remove(stream_id)

    def peek(self) -> int | None:
        """The stream that sends next: the head of the most urgent non-empty class."""
        for ready in self._classes:
            if ready:
                return ready[0]
        return None

    def rotate(self, stream_id: int) -> None:
        """``stream_id`` just sent a chunk: it goes behind the others of its class."""
        ready = self._classes[self._priority[stream_id]]
        if ready and ready[0] == stream_id:
            ready.rotate(-1)
