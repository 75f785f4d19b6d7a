"""Discovery sources: the DHT, BitTorrent trackers and BEP 14 on the LAN, each a loop
that looks up a set of rotating infohashes and reports every address it finds.

How this works. Whoever wants peers (a channel today) hands a source its
:class:`Targets` (which infohashes to announce on and which to look up, as of ``now``:
they rotate), the port it listens on, and one :data:`~btchat.discovery.found.OnFound`
callback; it then runs the source's :meth:`run` under its own task owner and cancels it
to stop. A source never dials: it reports ``Found(infohash, addr, source)`` and the
asker decides. One round that fails (the DHT not joined yet, a tracker down) is logged
and the next round tries again; ``interval()`` is asked before every sleep, so the asker
can look more often while it has no peers yet.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from btchat.discovery.found import Found, OnFound
from btchat.discovery.lsd_service import LsdService, multicast_interfaces
from btchat.discovery.trackers import TrackerError, announce
from btchat.net.dht_service import DhtError, DhtService

__all__ = ["LSD_RESYNC", "TRACKER_TIMEOUT", "DhtSource", "LsdSource", "Targets", "TrackerSource"]

log = logging.getLogger(__name__)

#: How long one tracker announce may take.
TRACKER_TIMEOUT = 15.0
#: How often the LAN announcer's infohash set follows the rotating targets.
LSD_RESYNC = 60.0


class Targets(Protocol):
    """The infohashes to be found on and to look up; they may change with time."""

    def announce_targets(self, now: float) -> Iterable[bytes]: ...

    def lookup_targets(self, now: float) -> Iterable[bytes]: ...


@dataclass(kw_only=True)
class _Source:
    """What every source is given: what to find, our port, whom to tell, how often."""

    targets: Targets
    port: int
    on_found: OnFound
    interval: Callable[[], float]
    found: int = field(default=0, init=False)  # addresses reported, for stats


@dataclass(kw_only=True)
class DhtSource(_Source):
    """Announce our port on the DHT and look up who else did (BEP 5 ``get_peers``)."""

    dht: DhtService

    async def run(self) -> None:
        while True:
            try:
                await self._round(time.time())
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # keep discovering whatever one round hit
                log.warning("DHT discovery round failed: %s", exc)
            await asyncio.sleep(self.interval())

    async def _round(self, now: float) -> None:
        for infohash in self.targets.announce_targets(now):
            with contextlib.suppress(DhtError):
                await self.dht.announce(infohash, self.port)
        for infohash in self.targets.lookup_targets(now):
            with contextlib.suppress(DhtError):
                result = await self.dht.get_peers(infohash)
                for addr in result.peers:
                    self.found += 1
                    self.on_found(Found(infohash, (str(addr[0]), int(addr[1])), "dht"))


@dataclass(kw_only=True)
class TrackerSource(_Source):
    """Announce on each tracker (HTTP or UDP); its answer lists the other peers."""

    urls: Sequence[str]
    peer_id: bytes

    async def run(self) -> None:
        while True:
            wait = self.interval()
            now = time.time()
            for url in self.urls:
                for infohash in self.targets.announce_targets(now):
                    try:
                        result = await announce(
                            url, infohash, self.peer_id, self.port, timeout=TRACKER_TIMEOUT
                        )
                    except TrackerError as exc:
                        log.info("tracker %s: %s", url, exc)
                        continue
                    for addr in result.peers:
                        self.found += 1
                        self.on_found(Found(infohash, addr, "tracker"))
            await asyncio.sleep(wait)


@dataclass(kw_only=True)
class LsdSource(_Source):
    """BEP 14 multicast on the LAN: the socket is opened by :meth:`start` (which may
    fail, e.g. with no multicast route) and kept in step with the targets by :meth:`run`."""

    interval: Callable[[], float] = lambda: LSD_RESYNC
    options: dict[str, Any] = field(default_factory=dict)  # LsdService.start keywords
    service: LsdService | None = field(default=None, init=False)  # the first of services
    services: list[LsdService] = field(default_factory=list, init=False)  # per interface

    async def start(self) -> bool:
        """Open the multicast socket(s); False (logged) if this host cannot. With no
        interface given, one per LAN interface (BEP 14): a LAN with no internet often
        has no default route for the kernel to choose one by."""
        interfaces = [self.options.get("interface", "0.0.0.0")]
        if interfaces == ["0.0.0.0"]:
            interfaces = multicast_interfaces() or interfaces
        for interface in interfaces:
            try:
                options = {**self.options, "interface": interface}
                self.services.append(await LsdService.start(self.port, self._heard, **options))
            except OSError as exc:
                log.warning("LAN discovery unavailable on %s: %s", interface, exc)
        self.service = self.services[0] if self.services else None
        return bool(self.services)

    def _heard(self, infohash: bytes, addr: tuple[str, int]) -> None:
        self.found += 1
        self.on_found(Found(infohash, addr, "lsd"))

    async def run(self) -> None:
        assert self.services, "start() first"
        current: set[bytes] = set()
        while True:
            now = time.time()
            wanted = set(self.targets.announce_targets(now)) | set(self.targets.lookup_targets(now))
            for service in self.services:
                for infohash in wanted - current:
                    service.add(infohash)
                for infohash in current - wanted:
                    service.remove(infohash)
            current = wanted
            await asyncio.sleep(self.interval())

    def close(self) -> None:
        for service in self.services:
            service.close()
