"""Asyncio glue for the sans-I/O DHT node: a UDP socket per family, one timer, futures.

All protocol decisions live in :class:`btchat.dht.node.DhtNode`; this shell feeds it
datagrams and the loop's monotonic clock, sends what it queues, re-arms a single timer,
and turns finished operations into awaited results. A dual-stack node (BEP 32) has an
IPv4 and an IPv6 socket (``IPV6_V6ONLY``, the same port number when it is free); the
node's datagrams go out on the socket of their address's family.
"""

from __future__ import annotations

import asyncio
import dataclasses
import ipaddress
import json
import logging
import random
import socket
from collections.abc import Callable
from pathlib import Path
from typing import Any, cast

from btchat.dht import bep44
from btchat.dht.ids import V4, V6, Addr, NodeInfo, family_of
from btchat.dht.node import (
    AnnounceResult,
    DhtNode,
    GetItemResult,
    GetPeersResult,
    NodeConfig,
    NodeIdChanged,
    OperationDone,
    OperationFailed,
    PutResult,
)
from btchat.dht.reachability import ReachabilitySummary
from btchat.errors import NetworkError
from btchat.files import write_atomic
from btchat.net.portmap import PortMapState
from btchat.net.timer import CoreTimer

__all__ = ["DEFAULT_BOOTSTRAP", "DhtError", "DhtService", "has_ipv6", "resolve_addrs"]

log = logging.getLogger(__name__)

#: The public routers of the Mainline DHT (defaults only; no test depends on them).
DEFAULT_BOOTSTRAP: list[tuple[str, int]] = [
    ("router.bittorrent.com", 6881),
    ("router.utorrent.com", 6881),
    ("dht.transmissionbt.com", 6881),
    ("dht.libtorrent.org", 25401),
]
STATE_FILE = "dht_state.json"
#: How often the routing table is written to disk while running.
SAVE_INTERVAL = 300.0


#: Takes a datagram from the shared socket: True if it was not KRPC (net/quic.py).
DatagramHandler = Callable[[bytes, Addr], bool]


class DhtError(NetworkError):
    """A DHT operation did not succeed; the message is meant for a user."""


async def resolve_addrs(
    addrs: list[tuple[str, int]],
    timeout: float = 5.0,
    *,
    families: tuple[int, ...] = (V4,),
) -> list[Addr]:
    """Resolve host names to one address per family in ``families`` (IPv4 by default);
    names that do not resolve are skipped."""
    loop = asyncio.get_running_loop()
    out: list[Addr] = []
    for host, port in addrs:
        for fam in families:
            if (":" in host) != (fam == V6) and _is_literal(host):
                continue  # an address literal of the other family
            af = socket.AF_INET6 if fam == V6 else socket.AF_INET
            try:
                infos = await asyncio.wait_for(
                    loop.getaddrinfo(host, port, family=af, type=socket.SOCK_DGRAM), timeout
                )
            except (OSError, TimeoutError) as exc:
                log.info("cannot resolve bootstrap node %s:%d: %s", host, port, exc)
                continue
            for info in infos[:1]:
                out.append((str(info[4][0]), int(info[4][1])))
    return out


def _is_literal(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def has_ipv6() -> bool:
    """True if an IPv6 socket binds here (a host with a loopback or global IPv6 address);
    the default for ``dht.bind6`` follows it."""
    if not socket.has_ipv6:
        return False
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as probe:
            probe.bind(("::1", 0))
    except OSError:
        return False
    return True


def _bind6(host: str, port: int) -> socket.socket:
    """An IPv6-only UDP socket (BEP 32: the IPv6 DHT is its own; IPv4 has its socket)."""
    sock = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
    try:
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        sock.setblocking(False)
        try:
            sock.bind((host, port))
        except OSError:
            if port == 0:
                raise
            sock.bind((host, 0))  # the IPv4 socket's port number is taken on IPv6
    except BaseException:
        sock.close()
        raise
    return sock


class _Socket6(asyncio.DatagramProtocol):
    """The IPv6 socket of a dual-stack service: everything goes to the one service."""

    def __init__(self, service: DhtService) -> None:
        self.service = service

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.service.transport6 = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[Any, ...]) -> None:
        self.service.datagram_received(data, addr)

    def error_received(self, exc: Exception) -> None:
        self.service.error_received(exc)


class DhtService(asyncio.DatagramProtocol):
    def __init__(self, node: DhtNode, state_dir: Path | None = None) -> None:
        self.node = node
        self.state_dir = state_dir
        self.loop = asyncio.get_running_loop()
        #: The primary family's socket (IPv4, unless the node is IPv6-only).
        self.transport: asyncio.DatagramTransport | None = None
        #: A dual-stack node's IPv6 socket.
        self.transport6: asyncio.DatagramTransport | None = None
        self._timer = CoreTimer(self.loop, node.get_timer, self._on_timer)
        self._waiters: dict[int, asyncio.Future[Any]] = {}
        self._save_task: asyncio.Task[None] | None = None
        #: Another protocol on our socket (QUIC, see :meth:`share_socket`).
        self._shared: DatagramHandler | None = None
        self.closed = False
        #: The home gateway's port mapping (``net/upnp.py`` keeps it current), if any.
        self.port_mapping: PortMapState | None = None

    # ----------------------------------------------------------------- lifecycle

    @classmethod
    async def start(
        cls,
        *,
        host: str = "0.0.0.0",
        port: int = 0,
        config: NodeConfig | None = None,
        state_dir: str | Path | None = None,
        node_id: bytes | None = None,
        rng: random.Random | None = None,
        host6: str | None = None,
        ipv4: bool = True,
    ) -> DhtService:
        """Bind ``host:port`` (IPv4) and, with ``host6``, an IPv6 socket too (BEP 32);
        ``ipv4=False`` with ``host6`` makes an IPv6-only node."""
        loop = asyncio.get_running_loop()
        if not ipv4 and host6 is None:
            raise ValueError("a DHT node needs an IPv4 or an IPv6 address to bind")
        state: dict[str, Any] = {}
        sdir = Path(state_dir) if state_dir is not None else None
        if sdir is not None:
            state = _load_state(sdir / STATE_FILE)
            if node_id is None and isinstance(state.get("node_id"), str):
                try:
                    node_id = bytes.fromhex(state["node_id"])
                except ValueError:
                    node_id = None
                if node_id is not None and len(node_id) != 20:
                    node_id = None
        sock4: socket.socket | None = None
        sock6: socket.socket | None = None
        try:
            if ipv4:
                sock4 = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                sock4.setblocking(False)
                sock4.bind((host, port))
                port = sock4.getsockname()[1]
            if host6 is not None:
                try:
                    sock6 = _bind6(host6, port)
                except OSError as exc:
                    if not ipv4:
                        raise
                    log.info("no IPv6 DHT socket on [%s]:%d: %s", host6, port, exc)
        except BaseException:
            for sock in (sock4, sock6):
                if sock is not None:
                    sock.close()
            raise
        config = dataclasses.replace(
            config or NodeConfig(), ipv4=sock4 is not None, ipv6=sock6 is not None
        )

        def routing(key: str) -> dict[str, Any] | None:
            value = state.get(key)
            return value if isinstance(value, dict) else None

        node = DhtNode(
            config,
            node_id=node_id,
            rng=rng,
            now=loop.time(),
            routing_state=routing("routing"),
            routing6_state=routing("routing6"),
        )
        service = cls(node, sdir)
        if sock4 is not None:
            await loop.create_datagram_endpoint(lambda: service, sock=sock4)
            if sock6 is not None:
                await loop.create_datagram_endpoint(lambda: _Socket6(service), sock=sock6)
        elif sock6 is not None:
            await loop.create_datagram_endpoint(lambda: service, sock=sock6)
        if sdir is not None:
            service._save_task = loop.create_task(service._save_loop())
        return service

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # The selector loop's UDP transport does not subclass DatagramTransport.
        self.transport = cast(asyncio.DatagramTransport, transport)
        self._pump()

    @property
    def addr(self) -> Addr:
        """The primary socket's address (IPv4 unless the node is IPv6-only)."""
        assert self.transport is not None
        host, port = self.transport.get_extra_info("sockname")[:2]
        return str(host), int(port)

    @property
    def addr6(self) -> Addr | None:
        """Our IPv6 socket's address, if the node takes part in the IPv6 DHT."""
        transport = self._transport_for(V6)
        if transport is None:
            return None
        host, port = transport.get_extra_info("sockname")[:2]
        return str(host), int(port)

    @property
    def addrs(self) -> list[Addr]:
        """Where the node listens, one address per family (primary first)."""
        return list(dict.fromkeys(a for a in (self.addr, self.addr6) if a is not None))

    def _transport_for(self, family: int) -> asyncio.DatagramTransport | None:
        if family == self.node.families[0]:
            return self.transport
        return self.transport6 if family == V6 else None

    @property
    def node_id(self) -> bytes:
        return self.node.node_id

    @property
    def routing_size(self) -> int:
        """Nodes in the routing table (how thin a put may have been: rendezvous)."""
        return len(self.node.routing)

    @property
    def bucket_size(self) -> int:
        return self.node.config.k

    @property
    def reachability(self) -> ReachabilitySummary:
        """What kind of network we are on (external address, NAT mapping and filtering)."""
        host = self.addr[0]
        if host not in ("0.0.0.0", "::"):
            return self.node.reachability.summary(local_ips={host})
        ip = self.node.reachability.external_ip()
        return self.node.reachability.summary(local_ips={ip} if ip and _is_local_ip(ip) else ())

    def external_addr(self, protocol: str = "UDP") -> Addr | None:
        """Where a peer on the internet reaches our ``protocol`` ("UDP": this node, "TCP":
        the session port): the gateway's mapping if there is one, else (UDP only) what
        DHT nodes report, when our NAT keeps one port for every destination."""
        if (
            self.port_mapping is not None
            and (mapped := self.port_mapping.external(protocol)) is not None
        ):
            return mapped
        if protocol != "UDP":
            return None
        seen = self.reachability
        if seen.external_ip is None or seen.external_port is None:
            return None
        return seen.external_ip, seen.external_port

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        self.save_state()
        if self._save_task is not None:
            self._save_task.cancel()
        self._timer.cancel()
        for transport in (self.transport, self.transport6):
            if transport is not None:
                transport.close()
        for fut in self._waiters.values():
            if not fut.done():
                fut.set_exception(DhtError("the DHT node was shut down"))
        self._waiters.clear()

    def save_state(self) -> None:
        if self.state_dir is None:
            return
        self.state_dir.mkdir(parents=True, exist_ok=True)
        state = json.dumps(self.node.save_state()).encode()
        # A crash leaves the old or the new file, never half of one.
        write_atomic(self.state_dir / STATE_FILE, state, mode=0o644)

    async def _save_loop(self) -> None:
        while True:
            await asyncio.sleep(SAVE_INTERVAL)
            try:
                self.save_state()
            except OSError as exc:  # a full disk: the old state stays; try next time
                log.warning("DHT state not saved: %s", exc, exc_info=exc)

    # --------------------------------------------------------------------- I/O

    def share_socket(self, handler: DatagramHandler | None) -> None:
        """Offer every datagram to ``handler`` first; it returns True for those it took.

        One UDP port for the DHT and sessions means one NAT mapping to keep alive, and
        the address the DHT learns for us is where sessions reach us (net/quic.py).
        """
        self._shared = handler

    def send_datagram(self, data: bytes, addr: Addr) -> None:
        """Send a datagram of the protocol sharing our socket (dropped once closed)."""
        if self.closed:
            return
        self._send(data, addr)

    def _send(self, data: bytes, addr: Addr) -> None:
        """Send on the socket of ``addr``'s family; none of that family: counted, dropped."""
        transport = self._transport_for(family_of(addr))
        if transport is None:
            self.node.stats["tx_no_socket_for_family"] += 1
            return
        try:
            transport.sendto(data, addr)
        except OSError:
            self.node.stats["tx_errors_os"] += 1

    def datagram_received(self, data: bytes, addr: tuple[Any, ...]) -> None:
        if self._shared is not None and self._shared(data, (addr[0], addr[1])):
            return
        self.node.receive_datagram(data, (addr[0], addr[1]), self.loop.time())
        self._pump()

    def error_received(self, exc: Exception) -> None:
        # ICMP errors (port unreachable) surface here; the query simply times out.
        self.node.stats["icmp_errors"] += 1

    def _on_timer(self) -> None:
        self.node.handle_timer(self.loop.time())
        self._pump()

    def _pump(self) -> None:
        if self.closed or self.transport is None:
            return
        node = self.node
        for data, addr in node.datagrams_to_send():
            self._send(data, addr)
        while (event := node.next_event()) is not None:
            if isinstance(event, NodeIdChanged):
                log.info("node id is now %s (BEP 42, ip %s)", event.new_id.hex(), event.external_ip)
                continue
            fut = self._waiters.pop(event.op_id, None)
            if fut is None or fut.done():
                continue
            if isinstance(event, OperationDone):
                fut.set_result(event.result)
            elif isinstance(event, OperationFailed):
                fut.set_exception(DhtError(event.reason))
        self._timer.rearm()

    async def _run(self, op_id: int) -> Any:
        fut: asyncio.Future[Any] = self.loop.create_future()
        self._waiters[op_id] = fut
        self._pump()
        return await fut

    # ------------------------------------------------------------- operations

    async def ping(self, addr: Addr) -> bytes:
        return await self._run(self.node.ping(addr, self.loop.time()))

    async def bootstrap(self, addrs: list[Addr]) -> list[NodeInfo]:
        return await self._run(self.node.bootstrap(addrs, self.loop.time()))

    async def find_node(self, target: bytes) -> list[NodeInfo]:
        return await self._run(self.node.find_node(target, self.loop.time()))

    async def get_peers(self, infohash: bytes) -> GetPeersResult:
        return await self._run(self.node.get_peers(infohash, self.loop.time()))

    async def announce(
        self, infohash: bytes, port: int, *, implied_port: bool = False
    ) -> AnnounceResult:
        now = self.loop.time()
        return await self._run(self.node.announce(infohash, port, now, implied_port=implied_port))

    async def get_immutable(self, target: bytes) -> GetItemResult:
        return await self._run(self.node.get_immutable(target, self.loop.time()))

    async def get_mutable(self, public_key: bytes, salt: bytes = b"") -> GetItemResult:
        return await self._run(self.node.get_mutable(public_key, self.loop.time(), salt=salt))

    async def put_immutable(self, v_bencoded: bytes) -> PutResult:
        return await self._run(self.node.put_immutable(v_bencoded, self.loop.time()))

    async def put_mutable(self, item: bep44.MutableItem, *, cas: int | None = None) -> PutResult:
        return await self._run(self.node.put_mutable(item, self.loop.time(), cas=cas))


def _is_local_ip(ip: str) -> bool:
    """True if ``ip`` is an address of this host (in this network namespace): it binds."""
    family = socket.AF_INET6 if ":" in ip else socket.AF_INET
    try:
        with socket.socket(family, socket.SOCK_DGRAM) as probe:
            probe.bind((ip, 0))
    except OSError:
        return False
    return True


def _load_state(path: Path) -> dict[str, Any]:
    """Read saved state; a missing or corrupt file means starting fresh, never a crash."""
    try:
        state = json.loads(path.read_text())
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as exc:
        log.warning("ignoring unreadable DHT state %s: %s", path, exc)
        return {}
    return state if isinstance(state, dict) else {}
