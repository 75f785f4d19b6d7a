"""A private swarm of real DHT nodes on loopback, in one process.

Tests, benchmarks and ``btchat sandbox`` share this: N :class:`DhtService` instances,
each with its own UDP socket on 127.0.0.1 (and, dual-stack, one on ::1: BEP 32), joined
through the first node. Nothing here is simulated; every packet crosses the kernel's
loopback interface.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import resource
from collections.abc import Sequence
from dataclasses import dataclass, field

from btchat.dht.ids import Addr
from btchat.dht.node import NodeConfig
from btchat.net.dht_service import DhtError, DhtService

__all__ = ["SANDBOX_CONFIG", "Swarm", "start_swarm"]

#: Loopback answers in microseconds; a shorter timeout keeps lookups quick when one
#: process hosts a thousand nodes. Rate limits stay on: they key on (ip, port) here.
SANDBOX_CONFIG = NodeConfig(short_timeout=0.5, query_timeout=2.0)


@dataclass
class Swarm:
    services: list[DhtService] = field(default_factory=list)

    @property
    def bootstrap_addr(self) -> Addr:
        return self.services[0].addr

    @property
    def bootstrap_addrs(self) -> list[Addr]:
        """The first node's addresses, one per family it speaks."""
        return self.services[0].addrs

    def close(self) -> None:
        for service in self.services:
            service.close()


def _raise_fd_limit(wanted: int) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < wanted:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(wanted, hard), hard))


async def start_swarm(
    n: int,
    *,
    config: NodeConfig | None = None,
    seed: int | None = None,
    batch: int = 64,
    hosts: Sequence[str] = ("127.0.0.1",),
    hosts6: Sequence[str] = (),
) -> Swarm:
    """Start ``n`` nodes and join each to the swarm through earlier nodes.

    Nodes bind to ``hosts`` in turn (the NAT lab spreads a swarm over several addresses);
    with ``hosts6`` (e.g. ``("::1",)``) each is dual-stack, its IPv6 socket on those.
    """
    if n < 1:
        raise ValueError("a swarm needs at least one node")
    _raise_fd_limit(n + 256)
    rng = random.Random(seed)
    config = config or SANDBOX_CONFIG
    swarm = Swarm()
    try:
        for i in range(n):
            swarm.services.append(
                await DhtService.start(
                    host=hosts[i % len(hosts)],
                    host6=hosts6[i % len(hosts6)] if hosts6 else None,
                    config=config,
                    rng=random.Random(rng.getrandbits(64)),
                )
            )
        first = swarm.services[0]

        async def join(service: DhtService) -> None:
            earlier = swarm.services[: max(1, swarm.services.index(service))]
            picked = rng.sample(earlier, min(2, len(earlier)))
            seeds = [*first.addrs, *(a for s in picked for a in s.addrs)]
            # A node that failed to join keeps retrying through its own maintenance.
            with contextlib.suppress(DhtError):
                await service.bootstrap(list(dict.fromkeys(seeds)))

        rest = swarm.services[1:]
        for i in range(0, len(rest), batch):
            await asyncio.gather(*(join(s) for s in rest[i : i + batch]))
        # Let the first nodes, which joined an almost empty swarm, learn the rest.
        await asyncio.gather(*(join(s) for s in swarm.services[: min(n, batch)] if s is not first))
    except BaseException:
        swarm.close()
        raise
    return swarm
