"""Joining the DHT and staying joined: bootstrap until the routing table fills, say so plainly."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

from btchat.net.dht_service import DhtError, DhtService, resolve_addrs

__all__ = ["join_loop"]

log = logging.getLogger(__name__)

#: How often a joined node checks it still knows someone.
CHECK_EVERY = 30.0
#: Retry delays after a failed bootstrap: doubled from the first up to the last.
FIRST_RETRY, MAX_RETRY = 2.0, 120.0


async def join_loop(
    dht: DhtService,
    bootstrap: list[tuple[str, int]],
    joined: asyncio.Event,
    emit: Callable[[dict[str, Any]], None],
    on_joined: Callable[[], None],
) -> None:
    """Keep ``joined`` set while the routing table is not empty; offline, keep trying.

    Host names in ``bootstrap`` are resolved again at every attempt: DNS may come back."""
    delay = FIRST_RETRY
    while True:
        if len(dht.node.routing) > 0:
            if not joined.is_set():
                joined.set()
                emit({"type": "dht", "joined": True, "nodes": len(dht.node.routing)})
                log.warning("joined the DHT (%d nodes known)", len(dht.node.routing))
                on_joined()
            await asyncio.sleep(CHECK_EVERY)
            continue
        joined.clear()
        try:
            addrs = await resolve_addrs(bootstrap)
            if addrs:
                await dht.bootstrap(addrs)
                continue
        except DhtError:
            pass
        log.warning("no DHT node answers (offline?); retrying in %.0f s", delay)
        emit({"type": "dht", "joined": False})
        await asyncio.sleep(delay)
        delay = min(delay * 2, MAX_RETRY)
