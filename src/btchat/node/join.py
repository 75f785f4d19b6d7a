"""Joining the DHT and staying joined: bootstrap until the routing table fills, say so plainly."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

from btchat.net.dht_service import DhtError, DhtService, resolve_addrs

__all__ = ["join_loop", "retry_delay"]

log = logging.getLogger(__name__)

#: How often a joined node checks it still knows someone.
CHECK_EVERY = 30.0
#: Retry delays after failed bootstraps: quick at first (a busy start, a bootstrap node
#: that drops the first packet: about ten tries in the first 30 s, each itself up to a
#: query timeout), then doubled up to MAX_RETRY for a machine that is offline.
EARLY_RETRIES = (0.5, 1.0, 1.0, 2.0, 2.0, 3.0, 3.0, 5.0)
MAX_RETRY = 120.0


def retry_delay(failures: int) -> float:
    """Seconds to wait after the ``failures``-th failed bootstrap in a row (from 1)."""
    if failures <= len(EARLY_RETRIES):
        return EARLY_RETRIES[max(failures, 1) - 1]
    return min(EARLY_RETRIES[-1] * 2 ** (failures - len(EARLY_RETRIES)), MAX_RETRY)


async def join_loop(
    dht: DhtService,
    bootstrap: list[tuple[str, int]],
    joined: asyncio.Event,
    emit: Callable[[dict[str, Any]], None],
    on_joined: Callable[[], None],
) -> None:
    """Keep ``joined`` set while the routing table is not empty; offline, keep trying.

    Host names in ``bootstrap`` are resolved again at every attempt: DNS may come back."""
    failures = 0
    while True:
        if len(dht.node.routing) > 0:
            failures = 0
            if not joined.is_set():
                joined.set()
                emit({"type": "dht", "joined": True, "nodes": len(dht.node.routing)})
                log.info("joined the DHT (%d nodes known)", len(dht.node.routing))
                on_joined()
            await asyncio.sleep(CHECK_EVERY)
            continue
        joined.clear()
        try:
            addrs = await resolve_addrs(bootstrap, families=dht.node.families)
            if addrs:
                await dht.bootstrap(addrs)
                if len(dht.node.routing) > 0:
                    continue
        except DhtError:
            pass
        failures += 1
        delay = retry_delay(failures)
        log.warning("no DHT node answers (offline?); retrying in %.1f s", delay)
        emit({"type": "dht", "joined": False})
        await asyncio.sleep(delay)
