"""Joining the DHT: a failed first bootstrap is retried quickly, then backed off."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from btchat.net.dht_service import DhtError
from btchat.node.join import CHECK_EVERY, EARLY_RETRIES, MAX_RETRY, join_loop, retry_delay


class _FlakyDht:
    """Bootstrap fails ``failures`` times (a busy start), then the table fills."""

    def __init__(self, failures: int) -> None:
        self.failures = failures
        self.attempts: list[float] = []
        self.node = type("Node", (), {"routing": [], "families": (4,)})()

    async def bootstrap(self, addrs: list[tuple[str, int]]) -> list[Any]:
        self.attempts.append(time.monotonic())
        if len(self.attempts) <= self.failures:
            raise DhtError("no DHT node answered")
        self.node.routing.append("a node")
        return []


async def test_a_busy_start_joins_within_seconds_not_half_a_minute() -> None:
    # Regression: the retries used to wait 2, 4, 8 s (14 s before the 4th try, 30 s
    # before the 5th), so a start whose first bootstraps failed missed its first 30 s.
    dht = _FlakyDht(failures=3)
    joined, events = asyncio.Event(), []
    started = time.monotonic()
    task = asyncio.create_task(
        join_loop(dht, [("127.0.0.1", 1)], joined, events.append, lambda: None)  # type: ignore[arg-type]
    )
    try:
        async with asyncio.timeout(8):
            await joined.wait()
    finally:
        task.cancel()
    took = time.monotonic() - started
    assert len(dht.attempts) == 4 and took < sum(EARLY_RETRIES[:3]) + 1.0, took
    assert events[-1] == {"type": "dht", "joined": True, "nodes": 1}
    assert [e["joined"] for e in events] == [False] * 3 + [True]


def test_retries_are_quick_at_first_then_bounded() -> None:
    delays = [retry_delay(n) for n in range(1, 40)]
    assert delays[0] <= 0.5 and all(d > 0 for d in delays)
    # At least eight tries in the first 30 s of trying ...
    assert sum(delays[:8]) < 30
    # ... then a back-off that stops at MAX_RETRY (an offline machine is not flooded).
    assert delays == sorted(delays) and max(delays) == MAX_RETRY
    assert delays[-1] == MAX_RETRY and MAX_RETRY > CHECK_EVERY
