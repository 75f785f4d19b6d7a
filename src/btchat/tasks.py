"""An owner for background tasks, so that every task a component starts is cancelled on stop.

Neutral ground: channels, discovery and the node all use it, and none imports another
for it (``node/tasks.py`` is meant to re-export this one)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Coroutine
from typing import Any

__all__ = ["TaskOwner"]


class TaskOwner:
    """Starts tasks, forgets them when they end, and cancels and awaits the rest on close."""

    def __init__(self) -> None:
        self._tasks: set[asyncio.Task[Any]] = set()

    def spawn(self, coro: Coroutine[Any, Any, Any]) -> asyncio.Task[Any]:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def cancel_all(self) -> None:
        # Cancel again while any survive: on Python 3.11 a cancellation that arrives as an
        # asyncio.wait_for inside a task completes can be lost, and the task runs on.
        while self._tasks:
            tasks = list(self._tasks)
            for task in tasks:
                task.cancel()
            _, pending = await asyncio.wait(tasks, timeout=1.0)
            for task in tasks:
                if task.done() and not task.cancelled():
                    # Its own failure was already logged where it happened; go on.
                    with contextlib.suppress(Exception):
                        task.exception()
            del pending  # survivors (and tasks spawned while stopping) go round again
