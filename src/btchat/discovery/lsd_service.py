"""The asyncio side of BEP 14: one multicast socket and one timer per LAN interface
around the sans-I/O :class:`~btchat.discovery.lsd.LsdAnnouncer`."""

from __future__ import annotations

import array
import asyncio
import contextlib
import ipaddress
import logging
import socket
import sys
from collections import Counter
from collections.abc import Callable
from typing import Any, cast

from btchat.discovery.found import Found
from btchat.discovery.lsd import (
    ANNOUNCE_INTERVAL,
    DEFAULT_TTL,
    LSD_GROUP_V4,
    LSD_PORT,
    MIN_ANNOUNCE_INTERVAL,
    LsdAnnouncer,
)
from btchat.net.timer import CoreTimer

__all__ = ["LsdService", "multicast_interfaces", "multicast_socket"]

log = logging.getLogger(__name__)

#: Linux: deliver only groups this socket joined, on the interface it joined them on.
_IP_MULTICAST_ALL = getattr(socket, "IP_MULTICAST_ALL", 49)


class LsdService(asyncio.DatagramProtocol):
    """One multicast socket on one interface plus one timer around an :class:`LsdAnnouncer`.

    Run one per LAN interface (BEP 14 announces on each interface we listen on).
    ``on_peer(infohash, (source_ip, advertised_port))`` is called for every announced
    infohash we hold; the address is the UDP source, as BEP 14 says, never a header.
    """

    def __init__(
        self,
        core: LsdAnnouncer,
        on_peer: Callable[[bytes, tuple[str, int]], None],
        group: str,
        lsd_port: int,
    ) -> None:
        self.core = core
        self.on_peer = on_peer
        self.group = group
        self.lsd_port = lsd_port
        self.loop = asyncio.get_running_loop()
        self.transport: asyncio.DatagramTransport | None = None
        self._timer = CoreTimer(self.loop, core.get_timer, self._on_timer)
        self.closed = False

    @classmethod
    async def start(
        cls,
        port: int,
        on_peer: Callable[[bytes, tuple[str, int]], None],
        *,
        group: str = LSD_GROUP_V4,
        lsd_port: int = LSD_PORT,
        interface: str = "0.0.0.0",
        interval: float = ANNOUNCE_INTERVAL,
        loopback: bool = False,
        min_interval: float = MIN_ANNOUNCE_INTERVAL,
        ttl: int = DEFAULT_TTL,
        cookie: str | None = None,
    ) -> LsdService:
        """Join ``group`` on the interface whose IPv4 address is ``interface``.

        ``port`` is the port we accept chat connections on (what we announce);
        ``loopback`` lets other processes on this host hear us; ``0.0.0.0`` leaves the
        choice of interface to the routing table.
        """
        if not ipaddress.IPv4Address(group).is_multicast:
            raise ValueError(f"{group} is not an IPv4 multicast group")
        ipaddress.IPv4Address(interface)
        if not 1 <= lsd_port <= 65535 or not 0 <= ttl <= 255:
            raise ValueError("lsd_port must be 1..65535 and ttl 0..255")
        core = LsdAnnouncer(
            port,
            cookie=cookie,
            host=f"{group}:{lsd_port}",
            interval=interval,
            min_interval=min_interval,
            dest=(group, lsd_port),
        )
        sock = multicast_socket(group, lsd_port, interface, ttl, loopback)
        service = cls(core, on_peer, group, lsd_port)
        try:
            await service.loop.create_datagram_endpoint(lambda: service, sock=sock)
        except BaseException:
            sock.close()
            raise
        return service

    @property
    def stats(self) -> Counter[str]:
        return self.core.stats

    @property
    def cookie(self) -> str:
        return self.core.cookie

    @property
    def infohashes(self) -> frozenset[bytes]:
        return self.core.infohashes

    def add(self, infohash: bytes) -> None:
        """Announce ``infohash`` (at once the first time) and report its peers.

        Peers heard lately are reported too, from the loop, not from inside this call.
        """
        self.core.add(infohash, self.loop.time())
        self.loop.call_soon(self._pump)

    def remove(self, infohash: bytes) -> None:
        self.core.remove(infohash)
        self._arm()

    def announce_now(self) -> None:
        """Announce everything as soon as the rate limit allows (e.g. a new network)."""
        self.core.announce_now(self.loop.time())
        self._arm()

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        self._timer.cancel()
        if self.transport is not None:
            self.transport.close()

    # --------------------------------------------------------------------- I/O

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # The selector loop's UDP transport does not subclass DatagramTransport.
        self.transport = cast(asyncio.DatagramTransport, transport)
        self._arm()

    def datagram_received(self, data: bytes, addr: tuple[Any, ...]) -> None:
        self.core.receive_datagram(data, (str(addr[0]), int(addr[1])), self.loop.time())
        self._pump()

    def _pump(self) -> None:
        """Send what the core queued, report what it found, re-arm the one timer."""
        if self.closed:
            return
        if self.transport is not None:
            for data, dest in self.core.datagrams_to_send():
                self.transport.sendto(data, dest)
                self.stats["tx"] += 1
        while (found := self.core.next_event()) is not None:
            self._report(found)
        self._arm()

    def _report(self, found: Found) -> None:
        if found.infohash not in self.core.infohashes:
            return  # removed since the core queued it
        try:
            self.on_peer(found.infohash, found.addr)
        except Exception:
            # A bug in the caller must not stop discovery for everyone else.
            self.stats["on_peer_errors"] += 1
            log.exception("LSD on_peer callback failed")

    def error_received(self, exc: Exception) -> None:
        # A failed send (no route, interface down) surfaces here; the next one retries.
        self.stats["os_errors"] += 1
        log.debug("LSD socket error: %s", exc)

    def _on_timer(self) -> None:
        if self.closed or self.transport is None:
            return
        self.core.handle_timer(self.loop.time())
        self._pump()

    def _arm(self) -> None:
        if not self.closed and self.transport is not None:
            self._timer.rearm()


def multicast_socket(
    group: str, lsd_port: int, interface: str, ttl: int, loopback: bool
) -> socket.socket:
    """A UDP socket bound to group:lsd_port, joined on one interface, sending through it.

    Shared by every listener on the BEP 14 group (channel LSD, the LAN rendezvous): on
    Linux each such socket gets its own copy of every group datagram."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM, socket.IPPROTO_UDP)
    try:
        # Several processes on one host (another btchat, a BitTorrent client) share 6771.
        # On Linux SO_REUSEADDR is enough for UDP, and SO_REUSEPORT is harmful: a group
        # datagram that matches one socket of a reuseport group is handed to a member
        # picked by hash, which may be the socket joined on another interface (seen on
        # 6.x kernels; tests/test_lsd.py's veth test catches it). BSD and macOS need it.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        linux = sys.platform.startswith("linux")
        if hasattr(socket, "SO_REUSEPORT") and not linux:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        if linux:
            sock.setsockopt(socket.IPPROTO_IP, _IP_MULTICAST_ALL, 0)
        # Binding to the group (not INADDR_ANY) keeps unicast to port 6771 out; Windows
        # does not allow it.
        sock.bind(("" if sys.platform == "win32" else group, lsd_port))
        iface = socket.inet_aton(interface)
        sock.setsockopt(
            socket.IPPROTO_IP, socket.IP_ADD_MEMBERSHIP, socket.inet_aton(group) + iface
        )
        sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_IF, iface)
        sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_TTL, ttl)
        sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_LOOP, 1 if loopback else 0)
        sock.setblocking(False)
    except BaseException:
        sock.close()
        raise
    return sock


_SIOCGIFFLAGS, _SIOCGIFADDR = 0x8913, 0x8915
_IFF_UP, _IFF_LOOPBACK, _IFF_MULTICAST = 0x1, 0x8, 0x1000


def multicast_interfaces() -> list[str]:
    """The IPv4 address of every interface that is up, not loopback and multicast-capable
    (Linux; elsewhere none): where "any interface" announces on a LAN that has no default
    route, hence no route the kernel could pick for the group."""
    if not sys.platform.startswith("linux"):
        return []
    import fcntl  # POSIX only

    out: list[str] = []
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        for _, name in socket.if_nameindex():
            req = array.array("B", name.encode()[:15].ljust(40, b"\0"))
            try:
                fcntl.ioctl(probe.fileno(), _SIOCGIFFLAGS, req)
                flags = int.from_bytes(req[16:18].tobytes(), sys.byteorder)
                if flags & (_IFF_UP | _IFF_LOOPBACK | _IFF_MULTICAST) != _IFF_UP | _IFF_MULTICAST:
                    continue
                req = array.array("B", name.encode()[:15].ljust(40, b"\0"))
                fcntl.ioctl(probe.fileno(), _SIOCGIFADDR, req)  # the primary address
            except OSError:
                continue  # no IPv4 address on it
            out.append(socket.inet_ntoa(req[20:24].tobytes()))
    return out
