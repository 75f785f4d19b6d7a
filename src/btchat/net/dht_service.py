"""Asyncio glue for the sans-I/O DHT node: one UDP socket, one timer, futures for ops.

All protocol decisions live in :class:`btchat.dht.node.DhtNode`; this shell feeds it
datagrams and the loop's monotonic clock, sends what it queues, re-arms a single timer,
and turns finished operations into awaited results.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
import socket
from collections.abc import Callable
from pathlib import Path
from typing import Any, cast

from btchat.dht import bep44
from btchat.dht.ids import Addr, NodeInfo
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

__all__ = ["DEFAULT_BOOTSTRAP", "DhtError", "DhtService", "resolve_addrs"]

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


async def resolve_addrs(addrs: list[tuple[str, int]], timeout: float = 5.0) -> list[Addr]:
    """Resolve host names to IPv4 addresses; names that do not resolve are skipped."""
    loop = asyncio.get_running_loop()
    out: list[Addr] = []
    for host, port in addrs:
        try:
            infos = await asyncio.wait_for(
                loop.getaddrinfo(host, port, family=socket.AF_INET, type=socket.SOCK_DGRAM),
                timeout,
            )
        except (OSError, TimeoutError) as exc:
            log.info("cannot resolve bootstrap node %s:%d: %s", host, port, exc)
            continue
        for info in infos[:1]:
            out.append((str(info[4][0]), int(info[4][1])))
    return out


class DhtService(asyncio.DatagramProtocol):
    def __init__(self, node: DhtNode, state_dir: Path | None = None) -> None:
        self.node = node
        self.state_dir = state_dir
        self.loop = asyncio.get_running_loop()
        self.transport: asyncio.DatagramTransport | None = None
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
    ) -> DhtService:
        loop = asyncio.get_running_loop()
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
        node = DhtNode(
            config,
            node_id=node_id,
            rng=rng,
            now=loop.time(),
            routing_state=state.get("routing") if isinstance(state.get("routing"), dict) else None,
        )
        service = cls(node, sdir)
        await loop.create_datagram_endpoint(lambda: service, local_addr=(host, port))
        if sdir is not None:
            service._save_task = loop.create_task(service._save_loop())
        return service

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # The selector loop's UDP transport does not subclass DatagramTransport.
        self.transport = cast(asyncio.DatagramTransport, transport)
        self._pump()

    @property
    def addr(self) -> Addr:
        assert self.transport is not None
        host, port = self.transport.get_extra_info("sockname")[:2]
        return str(host), int(port)

    @property
    def node_id(self) -> bytes:
        return self.node.node_id

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
        if self.transport is not None:
            self.transport.close()
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
        if self.closed or self.transport is None:
            return
        try:
            self.transport.sendto(data, addr)
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
            try:
                self.transport.sendto(data, addr)
            except OSError:
                node.stats["tx_errors_os"] += 1
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
