"""Contacts on a LAN with no internet: time from the second node starting to a session on
both sides, found by LAN announcements only (the lab's ``build_lan``, root).

``PYTHONPATH=src python -m bench.lan [--rounds N]`` prints one JSON object: median and
p95 setup time, successes, and the datagrams each side sent.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from btchat.identity.keys import Identity


async def _round(lab: Any, timeout: float) -> tuple[float | None, int]:
    from natlab.lan import start_lan_node

    alice, bob = Identity.generate(), Identity.generate()
    a = await start_lan_node(lab, 0, alice, [bob.public_key])
    await asyncio.sleep(0.2)  # alice has announced into an empty LAN
    loop = asyncio.get_running_loop()
    start = loop.time()
    b = await start_lan_node(lab, 1, bob, [alice.public_key])
    try:
        while loop.time() < start + timeout:
            if bob.public_key in a.up and alice.public_key in b.up:
                setup = max(a.up[bob.public_key], b.up[alice.public_key]) - start
                sent = sum(n.peering.lan.stats["tx"] for n in (a, b) if n.peering.lan)
                return setup, sent
            await asyncio.sleep(0.005)
        return None, 0
    finally:
        await a.peering.stop()
        await b.peering.stop()


def run(rounds: int = 20, timeout: float = 10.0) -> dict[str, Any]:
    from natlab.lab import build_lan, unavailable

    if (why := unavailable()) is not None:
        raise RuntimeError(why)
    setups: list[float] = []
    sent: list[int] = []
    with build_lan() as lab:
        for _ in range(rounds):
            setup, n = asyncio.run(_round(lab, timeout))
            if setup is not None:
                setups.append(setup)
                sent.append(n)
    ordered = sorted(setups)
    return {
        "rounds": rounds,
        "sessions": len(setups),
        "setup_median_ms": round(statistics.median(ordered) * 1000, 1) if ordered else None,
        "setup_p95_ms": round(ordered[int(0.95 * (len(ordered) - 1))] * 1000, 1)
        if ordered
        else None,
        "datagrams_sent_median": statistics.median(sent) if sent else None,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=20)
    args = parser.parse_args()
    print(json.dumps(run(args.rounds)))


if __name__ == "__main__":
    main()
