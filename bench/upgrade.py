"""Time from relayed to direct in the NAT lab (root): the upgrade over the relayed session
against the rendezvous alone, in one run.

Two port-restricted homes and the public host, their mutual contact; one home announces
nothing until the pair is relayed (``natlab.punch.time_upgrade`` with ``heal``), then
does, so the rendezvous alone can find the direct path too. Each try alternates the two
ways with fresh swarms and nodes. Alone: ``PYTHONPATH=src python -m bench.upgrade
[--tries N]`` prints a section for docs/BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

TITLE = "## Relayed -> direct: the upgrade over the relay vs the rendezvous alone"


def run(tries: int) -> dict[str, Any]:
    from natlab.lab import NatType, build_lab, unavailable
    from natlab.punch import time_upgrade

    if (why := unavailable()) is not None:
        raise RuntimeError(why)
    pr = NatType.PORT_RESTRICTED
    times: dict[str, list[float]] = {"upgrade": [], "rendezvous": []}
    failed: dict[str, int] = {"upgrade": 0, "rendezvous": 0}
    with build_lab(nats=(pr,), seconds=(pr,)) as lab:
        for t in range(tries):
            for way, upgrade in (("upgrade", True), ("rendezvous", False)):
                got = asyncio.run(
                    time_upgrade(lab, pr, (pr, 2), upgrade=upgrade, heal=True, seed=100 + t)
                )
                if got.upgrade_time is None or not got.delivered:
                    failed[way] += 1
                else:
                    times[way].append(got.upgrade_time)
            print(f"try {t + 1}/{tries} done", file=sys.stderr)
    return {"tries": tries, "seconds": times, "failed": failed}


def _pct(values: list[float], q: float) -> str:
    if not values:
        return "-"
    ordered = sorted(values)
    return f"{ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]:.2f} s"


def render(figures: dict[str, Any]) -> list[str]:
    out = [
        TITLE,
        "",
        "The NAT lab (`tests/natlab/`, root): two port-restricted homes, the public host "
        "relaying; one home announces nothing until the pair is relayed, then does. "
        "Time from the relayed session being up at both ends to a direct one at both. "
        "The lab's rendezvous runs rounds every 3 s and retries within 2 s (defaults: "
        f"20 s and up to 60 s). {figures['tries']} tries each, fresh nodes every try.",
        "",
        "| way | direct / tries | median | p95 | max |",
        "|---|---|---|---|---|",
    ]
    for way, label in (
        ("upgrade", "upgrade over the relay (1.5)"),
        ("rendezvous", "rendezvous only"),
    ):
        s = figures["seconds"][way]
        tally = f"{len(s)}/{figures['tries']}"
        top = f"{max(s):.2f} s" if s else "-"
        med = f"{statistics.median(s):.2f} s" if s else "-"
        out.append(f"| {label} | {tally} | {med} | {_pct(s, 0.95)} | {top} |")
    out.append("")
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--tries", type=int, default=10)
    args = parser.parse_args()
    print("\n".join(render(run(args.tries))))


if __name__ == "__main__":
    main()
