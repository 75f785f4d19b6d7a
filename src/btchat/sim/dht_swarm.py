"""A swarm of real :class:`DhtNode` cores on the simulated network, in virtual time.

The same node code that serves UDP sockets runs here; only the wire and the clock are
simulated. Tests use it for churn and loss at scale, benchmarks for 5,000-node lookups.
"""

from __future__ import annotations

import dataclasses
import itertools
import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from ipaddress import IPv6Address
from typing import Any

from btchat.dht.ids import Addr
from btchat.dht.node import DhtNode, NodeConfig, OperationDone, OperationFailed
from btchat.sim.network import SimNetwork

__all__ = ["STACKS", "LookupStats", "SimDht", "SimSwarm"]

#: What a simulated node speaks (BEP 32): IPv4 only, IPv6 only, or both.
STACKS = ("4", "6", "46")


class SimDht:
    """Adapts a DhtNode to the simulator and keeps each operation's outcome."""

    def __init__(self, node: DhtNode) -> None:
        self.node = node
        self.outcomes: dict[int, OperationDone | OperationFailed] = {}
        self.started: dict[int, float] = {}
        self.finished: dict[int, float] = {}
        self._now = 0.0

    def _collect(self) -> None:
        while (event := self.node.next_event()) is not None:
            if isinstance(event, OperationDone | OperationFailed):
                self.outcomes[event.op_id] = event
                self.finished[event.op_id] = self._now

    def receive_datagram(self, data: bytes, addr: Addr, now: float) -> None:
        self._now = now
        self.node.receive_datagram(data, addr, now)
        self._collect()

    def datagrams_to_send(self) -> list[tuple[bytes, Addr]]:
        return self.node.datagrams_to_send()

    def get_timer(self) -> float | None:
        return self.node.get_timer()

    def handle_timer(self, now: float) -> None:
        self._now = now
        self.node.handle_timer(now)
        self._collect()

    def start(self, op_id: int, now: float) -> int:
        self._now = now
        self.started[op_id] = now
        self._collect()
        return op_id


@dataclass
class LookupStats:
    ok: list[bool] = field(default_factory=list)
    queries: list[int] = field(default_factory=list)
    seconds: list[float] = field(default_factory=list)


class SimSwarm:
    """N nodes joined one after another through random earlier nodes."""

    def __init__(
        self,
        n: int,
        *,
        seed: int = 1,
        loss: float = 0.0,
        latency: tuple[float, float] = (0.01, 0.1),
        config: NodeConfig | None = None,
        stacks: Sequence[str] = ("4",),
        batch: int = 50,
    ) -> None:
        if not stacks or any(x not in STACKS for x in stacks):
            raise ValueError(f"stacks must be taken from {STACKS}")
        self.rng = random.Random(seed)
        self.net: SimNetwork[SimDht] = SimNetwork(seed, latency=latency)
        self.config = config or NodeConfig()
        self.members: list[Addr] = []
        #: Node i speaks ``stacks[i % len(stacks)]``; the default is the IPv4 DHT only.
        self.stacks = tuple(stacks)
        #: Every member's addresses per family ("4", "6"); ``members`` holds the first.
        self.addrs: dict[Addr, dict[str, Addr]] = {}
        # Canonical text (as inet_ntop writes it), so replies match the queries' addresses.
        self._v6_hosts = (str(IPv6Address(0xFD00 << 112 | n)) for n in itertools.count(1))
        self.add_nodes(n, batch=batch)
        # Join with a lossless network, then switch on the loss being studied.
        self.net.run_for(30.0)
        self.net.loss = loss

    def add_nodes(self, count: int, *, batch: int = 50) -> list[Addr]:
        """Join ``count`` new nodes, ``batch`` at a time, each through 3 earlier nodes."""
        added: list[Addr] = []
        while len(added) < count:
            online = self.online()
            wave = []
            for _ in range(min(batch, count - len(added))):
                stack = self.stacks[(len(self.members) + len(wave)) % len(self.stacks)]
                config = dataclasses.replace(self.config, ipv4="4" in stack, ipv6="6" in stack)
                node = DhtNode(
                    config, rng=random.Random(self.rng.getrandbits(64)), now=self.net.now
                )
                addr = self._attach(SimDht(node), stack)
                wave.append(addr)
                # Seeds that share a family with the newcomer, by the addresses it speaks.
                peers = [a for a in online if set(self.addrs[a]) & set(stack)]
                if peers:
                    chosen = self.rng.sample(peers, min(3, len(peers)))
                    seeds = [x for a in chosen for f, x in self.addrs[a].items() if f in stack]
                    wrapper = self.net.endpoint(addr)
                    wrapper.start(node.bootstrap(seeds, self.net.now), self.net.now)
                    self.net.poke(addr)
            self.members.extend(wave)
            added.extend(wave)
            # Let this wave's joins finish before the next arrives, as in a growing network.
            self.net.run_for(3.0)
        return added

    def _attach(self, endpoint: SimDht, stack: str) -> Addr:
        v6 = (next(self._v6_hosts), 6881) if "6" in stack else None
        if stack == "6":
            assert v6 is not None
            addr = self.net.attach(endpoint, v6)
            self.addrs[addr] = {"6": v6}
        else:
            addr = self.net.attach(endpoint, addr6=v6)
            self.addrs[addr] = {"4": addr} | ({"6": v6} if v6 else {})
        return addr

    def online(self) -> list[Addr]:
        return [a for a in self.members if self.net.is_online(a)]

    def churn(self, fraction: float) -> None:
        """Replace ``fraction`` of the online nodes: they vanish, newcomers join."""
        online = self.online()
        gone = self.rng.sample(online, int(len(online) * fraction))
        for addr in gone:
            self.net.detach(addr)
        self.add_nodes(len(gone))

    def run_op(self, addr: Addr, start: Any, timeout: float = 120.0) -> tuple[Any, float, int]:
        """Start ``start(node, now) -> op_id`` on one node; run to its end.

        Returns (outcome, virtual seconds taken, queries sent by the operation).
        """
        return self.run_ops([(addr, start)], timeout)[0]

    def run_ops(
        self, ops: list[tuple[Addr, Any]], timeout: float = 120.0
    ) -> list[tuple[Any, float, int]]:
        """Start several operations at once and run until all have ended."""
        started = []
        for addr, start in ops:
            wrapper = self.net.endpoint(addr)
            started.append(
                (wrapper, wrapper.start(start(wrapper.node, self.net.now), self.net.now))
            )
            self.net.poke(addr)
        self.net.run_until_condition(
            lambda: all(op_id in w.outcomes for w, op_id in started), timeout, poll_interval=0.05
        )
        results = []
        for wrapper, op_id in started:
            outcome = wrapper.outcomes.get(op_id)
            taken = wrapper.finished.get(op_id, self.net.now) - wrapper.started[op_id]
            queries = getattr(getattr(outcome, "result", None), "queries", 0)
            results.append((outcome, taken, queries))
        return results
