"""One worker thread that checks received pieces against their hashes and writes them.

Why: verifying a piece (SHA-256 over 16 KiB leaves) and writing it cost as much CPU as
decrypting it, and an fsync waits for the disk; on the event loop they stall every
session. hashlib and ``os.pwrite``/``os.fsync`` release the GIL, so on a thread they
overlap the loop's decryption. Jobs run one at a time in the order they were given, so
a bitmap save queued after some writes runs after them: its fsync covers them, and the
record it then writes never claims a piece not on disk. Results come back on the loop.

The caller keeps the invariants the thread cannot see: it hands over only pieces it
asked for, applies a result only if the transfer still exists, and calls
:meth:`PieceWriter.settle` before it closes a file a job may still use.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections import deque
from collections.abc import Callable, Hashable
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

from btchat.files import write_atomic
from btchat.transfer.tree import piece_hash

__all__ = ["PieceWriter", "Written"]

log = logging.getLogger(__name__)

#: ``written(digest, error)``: the piece's hash, and the OSError that stopped its write
#: (None: written, or not written because ``digest`` is not the one expected).
Written = Callable[[bytes, OSError | None], None]
Then = Callable[[Any], None]


class PieceWriter:
    """Verify-and-write and fsync-and-record jobs, in order, on one thread."""

    def __init__(self) -> None:
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="btchat-pieces")
        # Per transfer: its jobs whose results were not applied yet, oldest first.
        self._jobs: dict[Hashable, deque[tuple[Future[Any], Then | None]]] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._idle: asyncio.Future[None] | None = None

    def write(
        self,
        key: Hashable,
        fd: int,
        offset: int,
        data: bytes,
        expected: bytes,
        shape: tuple[int, int],
        written: Written,
    ) -> None:
        """Hash ``data`` as a piece of a file of ``shape`` = (pieces, piece size); if it
        is ``expected``, write it at ``offset``; then ``written`` runs on the loop."""
        pieces, piece_size = shape

        def job() -> tuple[bytes, OSError | None]:
            digest = piece_hash(data, pieces, piece_size)
            if digest != expected:
                return digest, None
            try:
                view = memoryview(data)
                at = offset
                while view:
                    n = os.pwrite(fd, view, at)
                    view, at = view[n:], at + n
            except OSError as exc:
                return digest, exc
            return digest, None

        self._submit(key, job, lambda result: written(*result))

    def save(self, key: Hashable, fd: int | None, path: Path, record: bytes) -> None:
        """fsync ``fd`` (every write queued before this one), then put ``record`` at
        ``path``: a record that says a piece is held is written only once it is on disk.
        Without ``fd`` only the record is written (a sender's progress)."""

        def job() -> None:
            try:
                if fd is not None:
                    os.fsync(fd)
                write_atomic(path, record)
            except OSError as exc:  # the next save (or the stop) tries again
                log.warning("saving %s failed: %s", path.name, exc)

        self._submit(key, job, None)

    def sync(self, key: Hashable, fd: int, then: Then) -> None:
        """fsync ``fd`` after the writes queued before; then ``then(None)`` on the loop
        (an error is logged and the caller's own fsync after it says so)."""

        def job() -> None:
            try:
                os.fsync(fd)
            except OSError as exc:
                log.warning("fsync failed: %s", exc)

        self._submit(key, job, then)

    def settle(self, key: Hashable) -> None:
        """Block until every job of ``key`` has run, and apply their results now, in
        order (before its file is closed, or a decision that needs them all)."""
        jobs = self._jobs.get(key)
        while jobs:
            future, then = jobs.popleft()
            self._apply(key, future, then)

    async def drained(self) -> bool:
        """Wait until every job ran and its result was applied; True if any was due."""
        waited = False
        while self._jobs:
            waited = True
            self._idle = asyncio.get_running_loop().create_future()
            await self._idle
        return waited

    def close(self) -> None:
        """Run what is queued, then stop the thread."""
        for key in list(self._jobs):
            self.settle(key)
        self._pool.shutdown(wait=True)

    def _submit(self, key: Hashable, job: Callable[[], Any], then: Then | None) -> None:
        loop = self._loop = self._loop or asyncio.get_running_loop()
        future = self._pool.submit(job)
        self._jobs.setdefault(key, deque()).append((future, then))
        future.add_done_callback(lambda _: _call_soon(loop, self._deliver, key))

    def _deliver(self, key: Hashable) -> None:
        """On the loop: apply the results of ``key``'s jobs that are done, in order."""
        jobs = self._jobs.get(key)
        while jobs and jobs[0][0].done():
            future, then = jobs.popleft()
            self._apply(key, future, then)

    def _apply(self, key: Hashable, future: Future[Any], then: Then | None) -> None:
        try:
            exc = future.exception()  # waits for a job still running (settle)
            if exc is not None:  # a bug, not the disk: say so
                log.error("piece job failed", exc_info=exc)
            elif then is not None:
                then(future.result())
        finally:
            if not self._jobs.get(key, True):
                del self._jobs[key]
            if not self._jobs and self._idle is not None and not self._idle.done():
                self._idle.set_result(None)


def _call_soon(loop: asyncio.AbstractEventLoop, fn: Callable[..., None], *args: object) -> None:
    with contextlib.suppress(RuntimeError):  # the loop closed first: nobody waits
        loop.call_soon_threadsafe(fn, *args)
