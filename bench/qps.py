"""Queries answered per second by one DHT node on one core.

The node runs in its own process pinned to CPU 0, behind the real asyncio UDP shell,
with a routing table of a few hundred contacts and the default rate limits switched on.
A load generator in a second process (pinned to CPU 1) keeps a window of ping,
find_node and get_peers queries in flight from 256 loopback sockets (so no single
source exceeds the per-source limit) and counts answers. We report answers per second
and answers per CPU-second of the node process (its capacity per core).

The same run measures a trivial responder (the same socket setup and loop, answering
each datagram with one fixed reply) under the same load: the node's answers per
CPU-second as a fraction of it say what the protocol work costs over bare asyncio UDP.
Both are measured on the stdlib loop and, when it is installed, on uvloop.
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
#: Seconds each responder is measured on each loop, in ROUNDS interleaved slices.
DURATION = float(os.environ.get("BENCH_QPS_SECONDS", "9"))
ROUNDS = 3
#: What the trivial responder sends back: a ping answer of a real node's size.
FIXED_REPLY = encode(
    {b"ip": bytes(6), b"r": {b"id": bytes(20)}, b"t": b"00", b"v": b"BC\x00\x01", b"y": b"r"}
)


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


class _FixedReply(asyncio.DatagramProtocol):
    """The trivial responder: every datagram is answered with :data:`FIXED_REPLY`."""

    transport: asyncio.DatagramTransport

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: tuple[Any, ...]) -> None:
        self.transport.sendto(FIXED_REPLY, addr)


async def _serve_trivial() -> None:
    # The socket made as DhtService.start makes it, handed to the loop the same way.
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setblocking(False)
    sock.bind(("127.0.0.1", 0))
    loop = asyncio.get_running_loop()
    transport, _ = await loop.create_datagram_endpoint(_FixedReply, sock=sock)
    print(sock.getsockname()[1], 0, flush=True)
    await loop.run_in_executor(None, sys.stdin.read)
    print({}, flush=True)
    transport.close()


def serve(responder: str, loop: str) -> None:
    from btchat.net import eventloop

    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {0})
    main = _serve_trivial if responder == "trivial" else _serve
    setting = "1" if loop == "uvloop" else "0"
    if os.environ.get("BENCH_PROFILE"):
        import cProfile

        cProfile.runctx(
            "eventloop.run(main(), setting=setting)",
            globals(),
            locals(),
            os.environ["BENCH_PROFILE"],
        )
    else:
        eventloop.run(main(), setting=setting)


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


def uvloop_installed() -> bool:
    try:
        import uvloop  # noqa: F401
    except ImportError:
        return False
    return True


def run() -> dict[str, Any]:
    """The node and the trivial responder on each loop, side by side in one run.

    Each of the four is measured in ROUNDS slices, interleaved, and the slices summed:
    load from elsewhere on a shared machine then weighs on all four alike.
    """
    loops = ["asyncio", "uvloop"] if uvloop_installed() else ["asyncio"]
    slices: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for _ in range(ROUNDS):
        for loop in loops:
            for responder in ("trivial", "node"):
                part = measure(responder, loop, DURATION / ROUNDS)
                slices.setdefault((loop, responder), []).append(part)
    out: dict[str, Any] = {}
    for loop in loops:
        node = _combine(slices[loop, "node"])
        trivial = _combine(slices[loop, "trivial"])
        out[loop] = {
            "node": node,
            "trivial": trivial,
            "ratio_per_cpu_s": _ratio(node["answered_per_cpu_s"], trivial["answered_per_cpu_s"]),
            "ratio_per_s": _ratio(node["answered_per_s"], trivial["answered_per_s"]),
            "ratio_per_cpu_s_by_round": [
                _ratio(n["answered_per_cpu_s"], t["answered_per_cpu_s"])
                for n, t in zip(slices[loop, "node"], slices[loop, "trivial"], strict=True)
            ],
        }
    if "uvloop" not in out:
        out["uvloop"] = {"error": "not run: uvloop is not installed (the fast extra)"}
    out["load_average"] = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    # The headline figures (docs/BENCHMARKS.md's table): the node on the stdlib loop.
    out.update(out["asyncio"]["node"])
    return out


def _ratio(a: float, b: float) -> float:
    return a / b if b else 0.0


def _combine(parts: list[dict[str, Any]]) -> dict[str, Any]:
    """Slices of one measurement as one: counts and seconds summed, rates recomputed."""
    total = {k: sum(p[k] for p in parts) for k in ("answered", "errors", "sent", "seconds")}
    cpu = sum(p["node_cpu_s"] for p in parts)
    return {
        "answered_per_s": total["answered"] / total["seconds"],
        "answered_per_cpu_s": total["answered"] / cpu if cpu else 0.0,
        "node_cpu_utilisation": cpu / total["seconds"],
        **total,
        "node_cpu_s": cpu,
        "routing_table": parts[-1]["routing_table"],
        "node_stats": parts[-1]["node_stats"],
    }


def measure(responder: str, loop: str, duration: float = DURATION) -> dict[str, Any]:
    """One responder ("node" or "trivial") on one loop ("asyncio" or "uvloop")."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "bench.qps", "--serve", responder, loop],
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
    while (now := time.perf_counter()) - t0 < duration:
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
        "node_cpu_s": cpu,
        "answered": answered,
        "errors": errors,
        "sent": sent,
        "routing_table": int(table_size),
        "node_stats": stats,
        "seconds": elapsed,
    }


if __name__ == "__main__":
    if "--serve" in sys.argv:
        at = sys.argv.index("--serve")
        serve(sys.argv[at + 1], sys.argv[at + 2])
    else:
        import json

        print(json.dumps(run(), indent=2))
