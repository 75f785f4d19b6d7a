"""Storage health: one record of "the disk is full since ...", for the log, status and back-off.

How this works: whatever hits a :class:`~btchat.errors.StorageFault` (the message
path, a background loop, a file write) reports it with :meth:`StorageHealth.fault`,
giving ``now``. The first report of a condition logs one warning and starts a retry
schedule (:data:`FIRST_RETRY`, doubling to :data:`MAX_RETRY`); later reports of the
same condition are only counted, so a full disk costs one log line, not a traceback
per attempt. The owner (the daemon) probes with a small write once :meth:`due`, and
calls :meth:`ok` when a write succeeds again: one line says the condition cleared, and
the owner then reconnects what it stopped acknowledging meanwhile. A failed probe is
one more :meth:`fault`, and the delay grows.

:class:`FaultLogFilter` routes log records that carry a storage fault (a background
loop's ``log.exception``, asyncio's "Task exception was never retrieved") here instead
of the log. :func:`os_fault` classifies the :class:`OSError` of a plain file write
(``files.write_atomic``: api.json, ``.chat`` files, the key file, DHT state).

No clock is read here: every entry point takes ``now`` (wall-clock seconds).
"""

from __future__ import annotations

import errno
import logging
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from btchat.errors import DiskFull, ReadOnlyStorage, StorageFault, StorageIOError

__all__ = ["FIRST_RETRY", "MAX_RETRY", "FaultLogFilter", "StorageHealth", "os_fault"]

log = logging.getLogger(__name__)

#: The first retry after a fault, then doubling up to MAX_RETRY: a full disk is not
#: freed in a millisecond, and each attempt is a reconnect (a handshake) for a peer.
FIRST_RETRY = 1.0
MAX_RETRY = 60.0

_OS_FAULTS: dict[int, type[StorageFault]] = {
    errno.ENOSPC: DiskFull,
    errno.EDQUOT: DiskFull,
    errno.EIO: StorageIOError,
    errno.EROFS: ReadOnlyStorage,
}


def os_fault(exc: BaseException) -> StorageFault | None:
    """The storage fault an :class:`OSError` stands for (ENOSPC, EDQUOT, EIO, EROFS), or None."""
    if isinstance(exc, StorageFault):
        return exc
    if isinstance(exc, OSError) and exc.errno in _OS_FAULTS:
        return _OS_FAULTS[exc.errno](str(exc))
    return None


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class StorageHealth:
    """The one current storage condition (or none), its retry schedule and counters."""

    def __init__(self, *, first_retry: float = FIRST_RETRY, max_retry: float = MAX_RETRY) -> None:
        self.first_retry = first_retry
        self.max_retry = max_retry
        self.condition: str | None = None
        self.since: float | None = None
        self.where = ""
        self.detail = ""
        self.retry_at: float | None = None
        self._delay = first_retry
        self._cleared_at: float | None = None
        self._cleared_delay = first_retry
        #: faults (every report), conditions (logged), cleared, not_acknowledged.
        self.stats: Counter[str] = Counter()

    @property
    def faulted(self) -> bool:
        return self.condition is not None

    def fault(self, exc: StorageFault, where: str, now: float) -> bool:
        """Record a fault at ``where``; True (and one log line) if the condition is new."""
        self.stats["faults"] += 1
        new = exc.condition != self.condition
        if new:
            self.condition = exc.condition
            self.since = now if self.since is None else self.since
            self.where, self.detail = where, str(exc)
            self._delay = self.first_retry
            if self._cleared_at is not None and now - self._cleared_at < self.max_retry:
                # Back soon after it cleared (a probe fitted where a message did not):
                # keep backing off, so a flapping disk cannot make a storm either.
                self._delay = min(self._cleared_delay * 2, self.max_retry)
                self.stats["relapses"] += 1
            self.stats["conditions"] += 1
            log.warning(
                "storage: %s (%s: %s); not acknowledging what needs storing, retrying in %.0f s",
                exc.condition,
                where,
                exc,
                self._delay,
            )
        elif self.retry_at is not None and now >= self.retry_at:
            self._delay = min(self._delay * 2, self.max_retry)  # a retry failed: wait longer
        if new or self.retry_at is None or now >= self.retry_at:
            self.retry_at = now + self._delay
        return new

    def ok(self, now: float) -> bool:
        """A write succeeded: True (and one log line) if that clears a condition."""
        if self.condition is None:
            return False
        since = self.since if self.since is not None else now
        log.warning(
            "storage: %s cleared after %.0f s (%d failed writes)",
            self.condition,
            now - since,
            self.stats["faults"],
        )
        self.stats["cleared"] += 1
        self.condition = self.since = self.retry_at = None
        self.where = self.detail = ""
        self._cleared_at, self._cleared_delay = now, self._delay
        self._delay = self.first_retry
        return True

    def due(self, now: float) -> bool:
        """A condition holds and its retry time has come: probe now."""
        return self.retry_at is not None and now >= self.retry_at

    def state(self) -> str:
        """``"ok"`` or e.g. ``"disk full since 2026-12-02T19:58:21Z"``: for ``status``."""
        if self.condition is None or self.since is None:
            return "ok"
        return f"{self.condition} since {_iso(self.since)}"

    def status(self, now: float) -> dict[str, Any]:
        out: dict[str, Any] = {"state": self.state(), **self.stats}
        if self.condition is not None:
            out["where"] = self.where
            out["detail"] = self.detail
            out["retry_in"] = max(0.0, (self.retry_at or now) - now)
        return out


class FaultLogFilter(logging.Filter):
    """Keeps records that carry a storage fault out of the log, reporting them instead.

    Installed on the log handlers by the daemon, so a loop that logs a traceback per
    failed attempt (or asyncio, for a task that died of one) cannot write megabytes of
    the same full disk: :class:`StorageHealth` logs it once.
    """

    def __init__(self, health: StorageHealth, clock: Callable[[], float]) -> None:
        super().__init__()
        self.health = health
        self.clock = clock

    def filter(self, record: logging.LogRecord) -> bool:
        if record.name == log.name or not record.exc_info:
            return True
        fault = os_fault(record.exc_info[1]) if record.exc_info[1] is not None else None
        if fault is None:
            return True
        self.health.fault(fault, record.name, self.clock())
        return False
