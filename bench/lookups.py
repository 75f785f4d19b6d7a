"""get_peers lookups: RPCs and time, on the simulator (1,000 / 5,000 nodes, churn, loss)
and on a real loopback sandbox (1,000 nodes, real sockets, wall time)."""

from __future__ import annotations

import asyncio
import random
import resource
import time
from typing import Any

from btchat.dht.node import OperationDone
from btchat.sim.dht_swarm import SimSwarm


def _rss_kib() -> int:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def summary(values: list[float]) -> dict[str, float]:
    ordered = sorted(values)
    if not ordered:
        return {"median": float("nan"), "p95": float("nan")}
    mid = len(ordered) // 2
    median = ordered[mid] if len(ordered) % 2 else (ordered[mid - 1] + ordered[mid]) / 2
    return {"median": median, "p95": ordered[min(len(ordered) - 1, int(len(ordered) * 0.95))]}


def simulated(
    n: int,
    lookups: int = 200,
    churn: float = 0.2,
    loss: float = 0.1,
    stacks: tuple[str, ...] = ("4",),
) -> dict[str, Any]:
    """Announce ``lookups`` infohashes, churn, switch on loss, then look each one up.

    ``stacks`` mixes IPv4-only, dual-stack and IPv6-only nodes (BEP 32, ``SimSwarm``); a
    lookup is then made by a node that shares a family with the announcer."""
    rss0 = _rss_kib()
    t0 = time.perf_counter()
    swarm = SimSwarm(n, seed=n, stacks=stacks)
    build_s = time.perf_counter() - t0
    rss_per_node = (_rss_kib() - rss0) * 1024 / n
    rng = swarm.rng
    announced = [(rng.randbytes(20), 10000 + i) for i in range(lookups)]
    announcers: dict[bytes, set[str]] = {}
    for chunk in range(0, lookups, 50):
        ops = []
        for ih, p in announced[chunk : chunk + 50]:
            who = rng.choice(swarm.online())
            announcers[ih] = set(swarm.addrs[who])
            ops.append((who, lambda nd, now, ih=ih, p=p: nd.announce(ih, p, now)))
        swarm.run_ops(ops)
    swarm.churn(churn)
    swarm.net.loss = loss
    found, queries, seconds = 0, [], []
    t0 = time.perf_counter()
    for chunk in range(0, lookups, 50):
        batch = announced[chunk : chunk + 50]
        ops = [
            (
                rng.choice([a for a in swarm.online() if announcers[ih] & set(swarm.addrs[a])]),
                lambda nd, now, ih=ih: nd.get_peers(ih, now),
            )
            for ih, _ in batch
        ]
        for (out, taken, q), (_, port) in zip(swarm.run_ops(ops), batch, strict=True):
            ok = isinstance(out, OperationDone) and any(p[1] == port for p in out.result.peers)
            found += ok
            queries.append(float(q))
            seconds.append(taken)
    return {
        "nodes": n,
        "stacks": list(stacks),
        "lookups": lookups,
        "churn": churn,
        "loss": loss,
        "success": found / lookups,
        "rpcs": summary(queries),
        "virtual_seconds": summary(seconds),
        "build_wall_s": build_s,
        "lookup_wall_s": time.perf_counter() - t0,
        "rss_bytes_per_node": rss_per_node,
    }


async def _loopback(n: int, lookups: int, churn: float) -> dict[str, Any]:
    from btchat.net.dht_service import DhtError
    from btchat.sandbox import start_swarm

    rss0 = _rss_kib()
    t0 = time.perf_counter()
    swarm = await start_swarm(n, seed=7)
    build_s = time.perf_counter() - t0
    rss_per_node = (_rss_kib() - rss0) * 1024 / n
    rng = random.Random(9)
    try:
        announced = [(rng.randbytes(20), 20000 + i) for i in range(lookups)]
        await asyncio.gather(*(rng.choice(swarm.services).announce(ih, p) for ih, p in announced))
        gone = rng.sample(swarm.services[1:], int(n * churn))
        for service in gone:
            service.close()
        alive = [s for s in swarm.services if not s.closed]
        found, queries, seconds = 0, [], []
        for ih, port in announced:  # one at a time: wall time of a single lookup
            service = rng.choice(alive)
            t = time.perf_counter()
            try:
                res = await service.get_peers(ih)
            except DhtError:  # a failed lookup counts as a miss
                res = None
            seconds.append(time.perf_counter() - t)
            if res is not None:
                queries.append(float(res.queries))
                found += any(p[1] == port for p in res.peers)
        return {
            "nodes": n,
            "lookups": lookups,
            "churn": churn,
            "success": found / lookups,
            "rpcs": summary(queries),
            "wall_seconds": summary(seconds),
            "build_wall_s": build_s,
            "rss_bytes_per_node": rss_per_node,
        }
    finally:
        swarm.close()


def loopback(n: int = 1000, lookups: int = 100, churn: float = 0.2) -> dict[str, Any]:
    return asyncio.run(_loopback(n, lookups, churn))


if __name__ == "__main__":
    print(loopback(200, 20))
    print(simulated(300, 50))
