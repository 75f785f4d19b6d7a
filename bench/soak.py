"""The soak (issue 14): ``python -m bench.soak [--days D] [--nodes N] [--users U] [--seed S]
[--quick] [--tracemalloc]``.

Runs :class:`btchat.sim.soak.Soak` (users with a few contacts each, chatting at random
times with a daily pattern and going away for hours to days, on a swarm of real DHT node
cores where 5% of the nodes are replaced every six simulated hours), checks every
message against its retention, fits a slope to each bounded figure sampled per
simulated day, prints a summary and writes ``bench/results/soak-<nodes>x<users>x<days>d.json``.
Exit status 1 if a message was lost, duplicated or not reported.

"Flat" means: from day 2 on, the least-squares slope of a bounded figure, as a fraction
of its mean, is at most FLAT_REL a day (it would take over 50 days to grow by half).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.__main__ import RESULTS, machine

#: The most a bounded figure may grow per simulated day, relative to its mean.
FLAT_REL = 0.01
#: Figures held to FLAT_REL (the rest are reported: history grows by design, RSS is
#: the allocator's and only ever shrinks late).
FLAT_KEYS = (
    "routing_entries",
    "dht_items",
    "dht_peers",
    "rate_limit_sources",
    "nodes_attached",
    "rows_seen",
    "rows_olm_sessions",
    "traced_bytes",
)


def run(
    days: float, nodes: int, users: int, seed: int, *, tracemalloc: bool = False, **periods: float
) -> dict[str, Any]:
    from btchat.sim.soak import Soak, SoakConfig

    config = SoakConfig(
        nodes=nodes, users=users, days=days, seed=seed, tracemalloc=tracemalloc, **periods
    )
    root = Path(tempfile.mkdtemp(prefix="btchat-soak-"))
    load_before = os.getloadavg()
    t_all = time.perf_counter()
    soak = Soak(config, root, log=lambda line: print(line, file=sys.stderr, flush=True))
    build_s = time.perf_counter() - t_all
    try:
        t_run = time.perf_counter()
        soak.run()
        run_s = time.perf_counter() - t_run
        verdict = soak.judge()
        flat = soak.flatness()
    finally:
        soak.close()
        shutil.rmtree(root, ignore_errors=True)
    flat_ok = {
        k: abs(v["rel"]) <= FLAT_REL for k, v in flat.items() if k in FLAT_KEYS and v["mean"]
    }
    return {
        "config": {"days": days, "nodes": nodes, "users": users, "seed": seed, **periods},
        "machine": machine(),
        "load_before": load_before,
        "load_after": os.getloadavg(),
        "build_wall_s": build_s,
        "run_wall_s": run_s,
        "wall_s_per_sim_day": run_s / days,
        "churns": soak.churns,
        "messages": len(soak.messages),
        "verdict": dict(verdict.counts),
        "problems": verdict.problems,
        "ok": not verdict.problems,
        "flat_rel_limit": FLAT_REL,
        "flat": flat,
        "flat_ok": flat_ok,
        "samples": soak.samples,
        "sim_stats": soak.swarm.net.stats.as_dict(),
    }


def summary(r: dict[str, Any]) -> str:
    c = r["config"]
    v = r["verdict"]
    lines = [
        f"soak {c['nodes']} nodes x {c['users']} users x {c['days']} days, seed {c['seed']}: "
        f"{'OK' if r['ok'] else 'FAILED'}",
        f"  wall {r['run_wall_s']:.0f} s ({r['wall_s_per_sim_day']:.1f} s per simulated day; "
        f"swarm built in {r['build_wall_s']:.0f} s), load {r['load_before'][0]:.1f} -> "
        f"{r['load_after'][0]:.1f}, {r['churns']} churns",
        f"  {r['messages']} messages: {v.get('covered', 0)} covered by retention "
        f"({v.get('covered_delivered', 0)} delivered), {v.get('expired_by_design', 0)} with "
        f"the recipient away throughout ({v.get('expired_by_design_delivered', 0)} delivered), "
        f"{v.get('either', 0)} in between ({v.get('either_delivered', 0)} delivered)",
        "  sender states: "
        + ", ".join(f"{k[7:]} {n}" for k, n in sorted(v.items()) if k.startswith("sender_")),
        f"  delivered after retention (session replay): {v.get('delivered_after_retention', 0)}; "
        f"delivered, sender still pending: {v.get('delivered_sender_still_pending', 0)}",
        f"  problems: {len(r['problems'])}",
        *(f"    {p}" for p in r["problems"][:20]),
        f"  flat (|slope| <= {r['flat_rel_limit']:.0%} of the mean per day from day 2):",
    ]
    for key, f in r["flat"].items():
        mark = {True: "flat", False: "GROWS"}.get(r["flat_ok"].get(key), "")  # type: ignore[call-overload]
        lines.append(
            f"    {key:28} mean {f['mean']:14.0f}  slope/day {f['slope_per_day']:+12.1f}  "
            f"({f['rel']:+.2%}) {mark}"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.soak")
    parser.add_argument("--days", type=float, default=14.0)
    parser.add_argument("--nodes", type=int, default=5000)
    parser.add_argument("--users", type=int, default=200)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--quick", action="store_true", help="300 nodes, 20 users, 3 days")
    parser.add_argument("--tracemalloc", action="store_true", help="trace Python allocations")
    parser.add_argument(
        "--maintenance", type=float, help="DHT maintenance tick, s (default: long-run config)"
    )
    parser.add_argument("--poll", type=float, help="mailbox poll period, s (default: daemon's)")
    args = parser.parse_args()
    if args.quick:
        args.days, args.nodes, args.users = 3.0, 300, 20
    periods = {}
    if args.maintenance:
        periods["maintenance_interval"] = args.maintenance
    if args.poll:
        periods["poll_interval"] = args.poll
    r = run(args.days, args.nodes, args.users, args.seed, tracemalloc=args.tracemalloc, **periods)
    RESULTS.mkdir(parents=True, exist_ok=True)
    name = f"soak-{args.nodes}x{args.users}x{args.days:g}d-seed{args.seed}.json"
    (RESULTS / name).write_text(json.dumps(r, indent=1, default=str))
    print(summary(r))
    print(f"written: {RESULTS / name}")
    sys.exit(0 if r["ok"] else 1)


if __name__ == "__main__":
    main()
