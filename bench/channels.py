"""Channel benchmarks: delivery latency in a 50-member channel, CPU per message per
member, and the time for a new member to join and see the history.

All members run in this one process on real loopback TCP links (Noise, signatures,
storage: the production path), on one event loop, so one core carries all 50 members:
latency here is an upper bound of what 50 separate machines would see.
"""

from __future__ import annotations

import asyncio
import shutil
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from btchat.channels.chatfile import ChatFile
from btchat.channels.engine import Shown
from btchat.channels.service import ChannelConfig, ChannelService
from btchat.channels.store import ChannelStore
from btchat.identity.keys import Identity
from btchat.messaging.store import Store

MEMBERS = 50
HISTORY = 100


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


class _Bench:
    def __init__(self, root: Path, chat: ChatFile) -> None:
        self.root = root
        self.chat = chat
        self.services: list[ChannelService] = []
        self.arrivals: dict[bytes, list[float]] = {}
        self.shown_count: dict[int, int] = {}

    async def add(self) -> ChannelService:
        index = len(self.services)
        store = ChannelStore(Store.open(self.root / f"{index}.db", None))
        store.add_channel(self.chat.channel_id, self.chat.to_bytes(), 0)
        self.shown_count[index] = 0

        def on_event(_chat: ChatFile, event: Any) -> None:
            if isinstance(event, Shown):
                self.shown_count[index] += 1
                self.arrivals.setdefault(event.message.id, []).append(time.perf_counter())

        config = ChannelConfig(host="127.0.0.1", dht=False, trackers=False, lsd=False)
        service = ChannelService(
            self.chat, Identity.generate(), store, None, config, on_event=on_event
        )
        await service.start()
        self.services.append(service)
        return service

    async def until(self, pred: Any, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if pred():
                return True
            await asyncio.sleep(0.01)
        return False


async def _run(members: int, messages: int, history: int) -> dict[str, Any]:
    root = Path(tempfile.mkdtemp(prefix="btchat-bench-chan-"))
    chat = ChatFile.create("bench", history=history, now=time.time())
    bench = _Bench(root, chat)
    try:
        t0 = time.perf_counter()
        first = await bench.add()
        for _ in range(members - 1):
            service = await bench.add()
            service.dial(("127.0.0.1", first.port))
        meshed = await bench.until(
            lambda: all(len(s.links) == members - 1 for s in bench.services), 120
        )
        mesh_s = time.perf_counter() - t0
        await asyncio.sleep(2.0)  # link sets settle
        latencies: list[float] = []
        incomplete = 0
        cpu0 = time.process_time()
        for i in range(messages):
            author = bench.services[i % members]
            sent = time.perf_counter()
            stored = author.post(f"message {i}")
            done = await bench.until(
                lambda s=stored: len(bench.arrivals.get(s.id, [])) >= members - 1, 10
            )
            arrivals = bench.arrivals.get(stored.id, [])
            if not done:
                incomplete += 1
            latencies.extend(t - sent for t in arrivals)
            await asyncio.sleep(0.02)
        cpu = time.process_time() - cpu0
        # Pad the history so the joiner has a full window to fetch.
        for i in range(max(0, history - messages)):
            bench.services[i % members].post(f"filler {i}")
        await asyncio.sleep(2.0)
        joins = []
        for _ in range(3):
            start = time.perf_counter()
            newcomer = await bench.add()
            index = len(bench.services) - 1
            newcomer.dial(("127.0.0.1", first.port))
            got = await bench.until(lambda i=index: bench.shown_count[i] >= history, 30)
            history_s = time.perf_counter() - start
            meshed_new = await bench.until(lambda n=newcomer: len(n.links) >= members - 1, 60)
            joins.append(
                {
                    "history_s": history_s if got else None,
                    "mesh_s": time.perf_counter() - start if meshed_new else None,
                }
            )
        relayed = sum(s.engine.stats["relayed"] for s in bench.services if s.engine)
        dupes = sum(s.engine.stats["duplicates"] for s in bench.services if s.engine)
        return {
            "members": members,
            "messages": messages,
            "full_mesh": meshed,
            "mesh_formed_s": mesh_s,
            "latency_ms": {
                "median": statistics.median(latencies) * 1000,
                "p99": _pct(latencies, 0.99) * 1000,
                "max": max(latencies) * 1000,
            },
            "deliveries": len(latencies),
            "incomplete_messages": incomplete,
            "cpu_ms_per_message_per_member": cpu / messages / (members - 1) * 1000,
            "relays": relayed,
            "duplicate_copies": dupes,
            "target_p99_ms": 200,
            "target_met": _pct(latencies, 0.99) * 1000 <= 200 and incomplete == 0,
            "join": joins,
            "history_messages": history,
        }
    finally:
        for service in bench.services:
            await service.stop()
        shutil.rmtree(root, ignore_errors=True)


def run(quick: bool = False) -> dict[str, Any]:
    return asyncio.run(_run(MEMBERS, 30 if quick else 100, HISTORY))


if __name__ == "__main__":
    import json

    print(json.dumps(run(quick=True), indent=2))
