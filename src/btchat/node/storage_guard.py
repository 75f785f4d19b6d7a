"""What the daemon does when the disk fills up (or fails, or turns read-only).

How this works: the session callbacks that store what a contact sends (a message, its
presence, the reconciliation on a reconnect) run through :meth:`StorageGuard.shield`.
A :class:`~btchat.errors.StorageFault` there is not a crash of the session (which made
both ends redial at once, about 42 times a second): the payload is dropped *without a
receipt*, so the sender keeps it in its outbox, and the contact is remembered. The
condition goes to :class:`~btchat.storage.health.StorageHealth` (one log line, a
status). :meth:`run` probes with a small write on the health's growing schedule; when
one succeeds, the sessions of the contacts whose payloads were dropped are closed with
a clear reason, and the reconnect's reconciliation (the sender's outbox offer) delivers
what was refused, exactly once, since ids are stored once.

While the condition holds nothing is acknowledged that was not stored: persist, then act.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections.abc import Callable
from typing import Any, Protocol, TypeVar

from btchat.errors import StorageFault
from btchat.storage.health import FaultLogFilter, StorageHealth

__all__ = ["PROBE_BYTES", "RECOVERED", "StorageGuard", "probe_store"]

log = logging.getLogger(__name__)

#: The close reason a contact's session gets once storage works again: reconnect and
#: reconcile, which resends what we could not store.
RECOVERED = "storage recovered: reconnect to resend"
#: Contacts remembered as owed a resend; they are our contacts (only they reach the
#: session callbacks), so this is a bound against a bug, not against a stranger.
MAX_AFFECTED = 10_000
#: How often a fault seen only by the log filter (a background loop's) is noticed.
IDLE_CHECK = 5.0

#: The probe writes this much (a channel message's maximum) and takes it back, so a
#: disk with room for a few bytes but not for a message is not taken for recovered.
PROBE_BYTES = 64 * 1024

F = TypeVar("F", bound=Callable[..., None])


class _KvStore(Protocol):
    def kv_set(self, key: str, value: bytes) -> None: ...


def probe_store(store: _KvStore) -> Callable[[float], None]:
    """A probe for :class:`StorageGuard`: one write of :data:`PROBE_BYTES`, then undone."""

    def probe(now: float) -> None:
        store.kv_set("storage_probe", os.urandom(PROBE_BYTES))
        store.kv_set("storage_probe", str(now).encode())

    return probe


class StorageGuard:
    """Shields the message path from storage faults and recovers when they clear."""

    def __init__(
        self,
        health: StorageHealth | None = None,
        *,
        probe: Callable[[float], None],
        reconnect: Callable[[bytes, str], None],
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.health = health if health is not None else StorageHealth()
        self._probe = probe
        self._reconnect = reconnect
        self._clock = clock
        #: Contacts whose payload (or reconnect) was dropped for want of storage.
        self.affected: set[bytes] = set()
        self._filter = FaultLogFilter(health, clock)
        self._wake = asyncio.Event()

    def shield(self, where: str, fn: F) -> F:
        """``fn(contact, ...)`` that, on a storage fault, drops the work unacknowledged."""

        def shielded(contact: bytes, *args: Any) -> None:
            try:
                fn(contact, *args)
            except StorageFault as exc:
                self.report(exc, where, contact)

        return shielded  # type: ignore[return-value]

    def report(self, exc: StorageFault, where: str, contact: bytes | None = None) -> None:
        self.health.stats["not_acknowledged"] += 1
        if contact is not None and len(self.affected) < MAX_AFFECTED:
            self.affected.add(contact)
        self.health.fault(exc, where, self._clock())
        self._wake.set()

    def install(self) -> None:
        """Route storage-fault tracebacks from any logger to the health record."""
        for handler in logging.getLogger().handlers:
            handler.addFilter(self._filter)

    def uninstall(self) -> None:
        for handler in logging.getLogger().handlers:
            handler.removeFilter(self._filter)

    def check(self) -> bool:
        """Probe now if a retry is due; True if storage works (again)."""
        now = self._clock()
        if not self.health.faulted:
            return True
        if not self.health.due(now):
            return False
        try:
            self._probe(now)
        except StorageFault as exc:
            self.health.fault(exc, "probe", now)
            return False
        self.health.ok(now)
        affected, self.affected = sorted(self.affected), set()
        for contact in affected:
            self._reconnect(contact, RECOVERED)
        return True

    async def run(self) -> None:
        """Probe on the health's schedule while a condition holds (owned by the daemon)."""
        while True:
            if not self.health.faulted:
                # Faults the log filter reports do not set the event: look now and then.
                self._wake.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), IDLE_CHECK)
                continue
            retry_at = self.health.retry_at or self._clock()
            await asyncio.sleep(max(0.05, retry_at - self._clock()))
            self.check()
