"""UDP tracker announces (BEP 15) over one asyncio datagram socket per announce.

BEP 15 is connect-then-announce: a connection id proves to the tracker that we own our
source address, and we may reuse it for a minute, so :class:`UdpTrackerClient` keeps a
small cache of them per tracker address. UDP loses packets, so requests are resent after
``base_timeout * 2**n`` seconds, ``n`` counting every resend (connects and announces
alike) as in BEP 15 "Time outs", at most ``max_tries`` sends in all. BEP 15's values
(15 s, doubling) suit a background announce; tests and interactive callers pass smaller.

Each announce uses its own socket connected to the tracker, so the kernel drops
datagrams from any other address; an answer with another transaction id is ignored and
counted (a late or spoofed packet), never taken as the tracker's word.
"""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import Callable

from btchat.discovery.trackers.protocol import (
    CONNECTION_ID_LIFETIME,
    AnnounceRequest,
    AnnounceResult,
    TrackerError,
    TransactionIdMismatch,
    build_udp_announce,
    build_udp_connect,
    new_transaction_id,
    parse_tracker_url,
    parse_udp_announce_response,
    parse_udp_connect_response,
)

__all__ = ["BEP15_BASE_TIMEOUT", "BEP15_MAX_EXPONENT", "UdpTrackerClient"]

#: BEP 15: "If a response is not received after 15 * 2 ^ n seconds, ... retransmit".
BEP15_BASE_TIMEOUT = 15.0
#: BEP 15: n "is increased up to 8 (3840 seconds)".
BEP15_MAX_EXPONENT = 8
#: Trackers whose connection ids we remember at once.
MAX_CACHED_CONNECTIONS = 1024
#: Datagrams queued for one announce before further ones are dropped.
_QUEUE_SIZE = 64

_Addr = tuple[str, int]


class _Receiver(asyncio.DatagramProtocol):
    """Queues what arrives on the announce's socket; an ICMP error is queued too."""

    def __init__(self) -> None:
        self.queue: asyncio.Queue[bytes | OSError] = asyncio.Queue(_QUEUE_SIZE)

    def datagram_received(self, data: bytes, addr: tuple[str | object, ...]) -> None:
        if not self.queue.full():
            self.queue.put_nowait(data)

    def error_received(self, exc: Exception) -> None:
        if isinstance(exc, OSError) and not self.queue.full():
            self.queue.put_nowait(exc)


class UdpTrackerClient:
    """Announces to ``udp://`` trackers, remembering connection ids for a minute.

    One client may serve many concurrent announces; it holds no socket and no event loop
    between calls, only the connection-id cache. ``clock`` (seconds, monotonic) is for
    tests of the cache's expiry.
    """

    def __init__(
        self,
        *,
        base_timeout: float = BEP15_BASE_TIMEOUT,
        max_tries: int = 4,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if base_timeout <= 0:
            raise ValueError("base_timeout must be positive")
        if max_tries < 1:
            raise ValueError("max_tries must be at least 1")
        self.base_timeout = base_timeout
        self.max_tries = max_tries
        self._clock = clock
        self._connections: dict[_Addr, tuple[int, float]] = {}

    # -- connection-id cache -------------------------------------------------------

    def connection_id(self, addr: _Addr) -> int | None:
        """The cached connection id for a tracker address, if younger than a minute."""
        entry = self._connections.get(addr)
        if entry is None:
            return None
        connection_id, obtained = entry
        if self._clock() - obtained >= CONNECTION_ID_LIFETIME:
            del self._connections[addr]
            return None
        return connection_id

    def forget(self, addr: _Addr) -> None:
        """Drop a tracker's connection id (after it refused an announce)."""
        self._connections.pop(addr, None)

    def _remember(self, addr: _Addr, connection_id: int) -> None:
        now = self._clock()
        self._connections.pop(addr, None)
        if len(self._connections) >= MAX_CACHED_CONNECTIONS:
            for key, (_, obtained) in list(self._connections.items()):
                if now - obtained >= CONNECTION_ID_LIFETIME:
                    del self._connections[key]
            while len(self._connections) >= MAX_CACHED_CONNECTIONS:
                del self._connections[next(iter(self._connections))]  # oldest first
        self._connections[addr] = (connection_id, now)

    # -- announce ------------------------------------------------------------------

    async def announce(
        self, url: str, request: AnnounceRequest, *, timeout: float | None = None
    ) -> AnnounceResult:
        """Announce to a ``udp://host:port`` tracker and return its answer.

        ``timeout`` bounds the whole announce (resends included); without it the
        resend schedule alone ends it. Every failure raises :class:`TrackerError`.
        """
        target = parse_tracker_url(url)
        if target.scheme != "udp":
            raise TrackerError(f"{url!r} is not a UDP tracker URL")
        try:
            async with asyncio.timeout(timeout):
                return await self._announce(url, target.host, target.port, request)
        except TimeoutError:
            raise TrackerError(f"no answer from tracker {url} within {timeout:g} s") from None

    async def _announce(
        self, url: str, host: str, port: int, request: AnnounceRequest
    ) -> AnnounceResult:
        loop = asyncio.get_running_loop()
        try:
            transport, receiver = await loop.create_datagram_endpoint(
                _Receiver, remote_addr=(host, port)
            )
        except OSError as exc:  # includes socket.gaierror: the name does not resolve
            raise TrackerError(f"cannot reach tracker {url}: {exc}") from None
        try:
            peer = transport.get_extra_info("peername")
            sock = transport.get_extra_info("socket")
            ipv6 = sock is not None and sock.family == socket.AF_INET6
            addr: _Addr = (str(peer[0]), int(peer[1]))
            return await self._exchange(url, addr, ipv6, transport, receiver, request)
        finally:
            transport.close()

    async def _exchange(
        self,
        url: str,
        addr: _Addr,
        ipv6: bool,
        transport: asyncio.DatagramTransport,
        receiver: _Receiver,
        request: AnnounceRequest,
    ) -> AnnounceResult:
        loop = asyncio.get_running_loop()
        connect_tid = new_transaction_id()
        announce_tid = new_transaction_id()
        ignored = 0
        last_ignored = ""
        n = 0  # unanswered sends so far: BEP 15's n
        while n < self.max_tries:
            connection_id = self.connection_id(addr)
            connecting = connection_id is None
            if connection_id is None:
                packet = build_udp_connect(connect_tid)
            else:
                packet = build_udp_announce(connection_id, announce_tid, request)
            try:
                transport.sendto(packet)
            except OSError as exc:
                raise TrackerError(f"cannot send to tracker {url}: {exc}") from None
            deadline = loop.time() + self.base_timeout * 2 ** min(n, BEP15_MAX_EXPONENT)
            answered = False
            while (remaining := deadline - loop.time()) > 0:
                try:
                    data = await asyncio.wait_for(receiver.queue.get(), remaining)
                except TimeoutError:
                    break
                if isinstance(data, OSError):
                    raise TrackerError(f"cannot reach tracker {url}: {data}")
                try:
                    if connecting:
                        self._remember(addr, parse_udp_connect_response(data, connect_tid))
                        answered = True  # announce at once, with the same n
                        break
                    return parse_udp_announce_response(data, announce_tid, ipv6=ipv6)
                except TransactionIdMismatch as exc:
                    ignored += 1
                    last_ignored = str(exc)
                except TrackerError as exc:
                    if not connecting:
                        self.forget(addr)
                    raise TrackerError(f"{exc} (tracker {url})") from None
            if not answered:
                n += 1
        message = f"no answer from tracker {url} after {n} tries"
        if ignored:
            message += f"; ignored {ignored} packet(s) not for us (last: {last_ignored})"
        raise TrackerError(message)
