"""The asyncio side of the LAN rendezvous: one multicast socket (the BEP 14 group, shared
with channel LSD through :func:`~btchat.discovery.lsd_service.multicast_socket`) and one
timer around the sans-I/O :class:`~btchat.discovery.lan_rendezvous.LanRendezvous`."""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, cast

from btchat.discovery.lan_rendezvous import (
    ANNOUNCE_INTERVAL,
    MIN_ANNOUNCE_INTERVAL,
    LanPeer,
    LanRendezvous,
)
from btchat.discovery.lsd import DEFAULT_TTL, LSD_GROUP_V4, LSD_PORT
from btchat.discovery.lsd_service import multicast_interfaces, multicast_socket
from btchat.discovery.rendezvous import MAX_DEVICES, Candidate, Directory, Reacher
from btchat.identity.keys import DeviceCertificate, Identity
from btchat.net.timer import CoreTimer

__all__ = ["LanConfig", "LanService"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class LanConfig:
    """Where and how often contacts are announced on the LAN (PeeringConfig.lan)."""

    interface: str = "0.0.0.0"  # IPv4 address of the LAN interface; 0.0.0.0: the route's
    group: str = LSD_GROUP_V4
    port: int = LSD_PORT
    interval: float = ANNOUNCE_INTERVAL
    min_interval: float = MIN_ANNOUNCE_INTERVAL
    loopback: bool = False  # hear other processes on this host (tests)
    ttl: int = DEFAULT_TTL


class LanService:
    """Feeds the core, sends what it queues, and hands what it finds to the
    :class:`Reacher` (peering) as the DHT rendezvous does: the certificates heard are
    saved in the :class:`Directory` first, so a later dial (or the DHT-less restart)
    has them. Whom we announce to: the directory's contacts with no live session, asked
    again at every timer and on :meth:`refresh`."""

    def __init__(
        self,
        core: LanRendezvous,
        reacher: Reacher,
        directory: Directory,
        spawn: Callable[[Any], asyncio.Task[Any]],
    ) -> None:
        self.core = core
        self.reacher = reacher
        self.directory = directory
        self.spawn = spawn
        self._reaching: set[bytes] = set()  # contacts being dialled from a LAN candidate
        self.loop = asyncio.get_running_loop()
        self.transports: list[asyncio.DatagramTransport] = []  # one per interface
        # The core runs on wall time: its epochs are hours of the Unix clock.
        self._timer = CoreTimer(self.loop, core.get_timer, self._on_timer, clock=time.time)
        self.closed = False

    @classmethod
    async def start(
        cls,
        identity: Identity,
        certificate: DeviceCertificate,
        port: int,
        config: LanConfig,
        reacher: Reacher,
        directory: Directory,
        spawn: Callable[[Any], asyncio.Task[Any]],
    ) -> LanService:
        """Join the group on ``config.interface``; announce session ``port``."""
        if not ipaddress.IPv4Address(config.group).is_multicast:
            raise ValueError(f"{config.group} is not an IPv4 multicast group")
        core = LanRendezvous(
            identity,
            certificate,
            port,
            dest=(config.group, config.port),
            interval=config.interval,
            min_interval=config.min_interval,
        )
        service = cls(core, reacher, directory, spawn)
        # "Any interface": each LAN interface, as BEP 14 does, since a LAN with no
        # internet often has no default route for the kernel to pick one by.
        interfaces = [config.interface]
        if config.interface == "0.0.0.0":
            interfaces = multicast_interfaces() or interfaces
        errors: list[str] = []
        for interface in interfaces:
            try:
                sock = multicast_socket(
                    config.group, config.port, interface, config.ttl, config.loopback
                )
            except OSError as exc:
                errors.append(f"{interface}: {exc}")
                continue
            try:
                await service.loop.create_datagram_endpoint(lambda: _Socket(service), sock=sock)
            except BaseException:
                sock.close()
                service.close()
                raise
        if not service.transports:
            raise OSError(f"cannot join {config.group} on any interface ({'; '.join(errors)})")
        if errors:
            log.info("LAN rendezvous not on every interface: %s", "; ".join(errors))
        return service

    @property
    def stats(self) -> Counter[str]:
        return self.core.stats

    def contacts(self) -> list[bytes]:
        """Whom to announce to and hear: contacts without a session."""
        return [c for c in self.directory.reachable() if not self.reacher.connected(c)]

    def refresh(self, contact: bytes | None = None, *, announce: bool = False) -> None:
        """The contact list or a session changed: take the list again; with
        ``announce``, announce to ``contact`` (None: everyone) as soon as the minimum
        interval allows (a session just ended, a contact was added, the network is back)."""
        if self.closed:
            return
        now = time.time()
        self.core.set_contacts(self.contacts(), now)
        if announce:
            self.core.announce_now(now, contact)
        self._arm()

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        self._timer.cancel()
        for transport in self.transports:
            transport.close()

    # --------------------------------------------------------------------- I/O

    def _connected(self, transport: asyncio.DatagramTransport) -> None:
        self.transports.append(transport)
        self.refresh()

    def _received(self, data: bytes, addr: tuple[Any, ...]) -> None:
        self.core.receive_datagram(data, (str(addr[0]), int(addr[1])), time.time())
        self._pump()

    def _on_timer(self) -> None:
        if self.closed or not self.transports:
            return
        now = time.time()
        self.core.set_contacts(self.contacts(), now)
        self.core.handle_timer(now)
        self._pump()

    def _pump(self) -> None:
        if self.closed:
            return
        for data, dest in self.core.datagrams_to_send():
            for transport in self.transports:  # each interface's socket sends through it
                transport.sendto(data, dest)
        while (peer := self.core.next_event()) is not None:
            try:
                self._found(peer)
            except Exception:
                self.stats["on_peer_errors"] += 1  # a caller's bug stops no discovery
                log.exception("LAN rendezvous: handling a found contact failed")
        self._arm()

    def _found(self, peer: LanPeer) -> None:
        _save_certs(self.directory, peer.contact, peer.certs)
        if self.reacher.connected(peer.contact) or peer.contact in self._reaching:
            self.stats["found_busy"] += 1
            return
        self.stats["found"] += 1
        self._reaching.add(peer.contact)
        self.spawn(self._reach(peer))

    async def _reach(self, peer: LanPeer) -> None:
        try:
            candidates = [Candidate(peer.contact, c, peer.addr) for c in peer.certs]
            reached = await self.reacher.reach(candidates)
            self.stats["reached" if reached else "unreached"] += 1
        finally:
            self._reaching.discard(peer.contact)

    def _arm(self) -> None:
        if not self.closed and self.transports:
            self._timer.rearm()


class _Socket(asyncio.DatagramProtocol):
    """One interface's multicast socket, feeding the one service."""

    def __init__(self, service: LanService) -> None:
        self.service = service

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # The selector loop's UDP transport does not subclass DatagramTransport.
        self.service._connected(cast(asyncio.DatagramTransport, transport))

    def datagram_received(self, data: bytes, addr: tuple[Any, ...]) -> None:
        self.service._received(data, addr)

    def error_received(self, exc: Exception) -> None:
        self.service.stats["os_errors"] += 1  # no route, interface down: next round retries
        log.debug("LAN rendezvous socket error: %s", exc)


def _save_certs(directory: Directory, contact: bytes, heard: Iterable[DeviceCertificate]) -> None:
    """Merge what was heard into what is known: one certificate per device (the newest),
    at most MAX_DEVICES, the ones just heard first. Written only when it changed."""
    known = directory.certs_of(contact)
    merged: dict[bytes, DeviceCertificate] = {}
    for cert in [*heard, *known]:
        held = merged.get(cert.device_id)
        if held is None or cert.created > held.created:
            merged[cert.device_id] = cert
    certs = list(merged.values())[:MAX_DEVICES]
    if certs != known:
        directory.save_certs(contact, certs)
