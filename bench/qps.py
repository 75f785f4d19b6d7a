"""Queries answered per second by one DHT node on one core.

The node runs in its own process pinned to CPU 0, behind the real asyncio UDP shell,
with a routing table of a few hundred contacts and the default rate limits switched on.
A load generator in a second process (pinned to CPU 1) keeps a window of ping,
find_node and get_peers queries in flight from 256 loopback sockets (so no single
source exceeds the per-source limit) and counts answers. We report answers per second
and answers per CPU-second of the node process (its capacity per core).
"""

from __future__ import annotations

import asyncio
import os
import random
import selectors
import socket
import subprocess
import sys
import time
from typing import Any

from btchat.codec.bencode import encode

SOURCES = 256
WINDOW = 4  # queries in flight per source socket
DURATION = 10.0


def _cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as fh:
        fields = fh.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def _serve() -> None:
    from btchat.dht.ids import NodeInfo
    from btchat.net.dht_service import DhtService

    service = await DhtService.start(host="127.0.0.1", port=0, rng=random.Random(1))
    rng = random.Random(2)
    for i in range(2000):
        info = NodeInfo(rng.randbytes(20), ("127.0.0.1", 40000 + i))
        service.node.routing.heard_from(info, service.loop.time(), responded=True)
    print(service.addr[1], len(service.node.routing), flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)
    print(dict(service.node.stats), flush=True)
    service.close()


def serve() -> None:
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {0})
    if os.environ.get("BENCH_PROFILE"):
        import cProfile

        cProfile.runctx("asyncio.run(_serve())", globals(), locals(), os.environ["BENCH_PROFILE"])
    else:
        asyncio.run(_serve())


def _queries(rng: random.Random, node_id: bytes) -> list[bytes]:
    out = []
    for i in range(48):
        method = (b"ping", b"find_node", b"get_peers")[i % 3]
        args: dict[bytes, Any] = {b"id": node_id}
        if method == b"find_node":
            args[b"target"] = rng.randbytes(20)
        elif method == b"get_peers":
            args[b"info_hash"] = rng.randbytes(20)
        out.append(encode({b"t": b"%02d" % i, b"y": b"q", b"q": method, b"a": args}))
    return out


def run() -> dict[str, Any]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "bench.qps", "--serve"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None and proc.stdin is not None
    port_text, table_size = proc.stdout.readline().split()
    target = ("127.0.0.1", int(port_text))
    if hasattr(os, "sched_setaffinity") and (os.cpu_count() or 1) > 1:
        os.sched_setaffinity(0, {1})
    rng = random.Random(3)
    sel = selectors.DefaultSelector()
    socks = []
    for _ in range(SOURCES):
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.bind(("127.0.0.1", 0))
        s.setblocking(False)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
        queries = _queries(rng, rng.randbytes(20))
        socks.append((s, queries))
        sel.register(s, selectors.EVENT_READ, len(socks) - 1)
    answered = errors = sent = 0
    cursor = [0] * SOURCES

    def send(i: int) -> None:
        nonlocal sent
        s, queries = socks[i]
        s.sendto(queries[cursor[i] % len(queries)], target)
        cursor[i] += 1
        sent += 1

    for i in range(SOURCES):
        for _ in range(WINDOW):
            send(i)
    cpu0 = _cpu_seconds(proc.pid)
    t0 = time.perf_counter()
    last_progress = t0
    while (now := time.perf_counter()) - t0 < DURATION:
        events = sel.select(timeout=0.2)
        if not events and now - last_progress > 0.2:
            # Lost datagrams (full socket buffers): refill every window.
            for i in range(SOURCES):
                send(i)
            last_progress = now
        for key, _ in events:
            i = key.data
            s = socks[i][0]
            while True:
                try:
                    data = s.recv(2048)
                except BlockingIOError:
                    break
                if data[:1] == b"d" and b"1:y1:r" in data:
                    answered += 1
                else:
                    errors += 1
                send(i)
                last_progress = now
    elapsed = time.perf_counter() - t0
    cpu = _cpu_seconds(proc.pid) - cpu0
    proc.stdin.close()
    stats = proc.stdout.readline().strip()
    proc.wait(timeout=10)
    for s, _ in socks:
        s.close()
    return {
        "answered_per_s": answered / elapsed,
        "answered_per_cpu_s": answered / cpu if cpu else 0.0,
        "node_cpu_utilisation": cpu / elapsed,
        "answered": answered,
        "errors": errors,
        "sent": sent,
        "routing_table": int(table_size),
        "node_stats": stats,
        "seconds": elapsed,
    }


if __name__ == "__main__":
    if "--serve" in sys.argv:
        serve()
    else:
        print(run())
