"""Sessions over UDP: punch success and setup time per NAT pair (the NAT lab, root), and
session throughput over QUIC vs TCP in the same run (loopback).

``PYTHONPATH=src:tests python -m bench.udp [--rounds N] [--mb M] [--skip-lab]``. Not part
of ``scripts/bench`` yet: the lab needs root. Prints markdown tables.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from btchat.identity.keys import DeviceKey, Identity
from btchat.net.dht_service import DhtService
from btchat.node.peering import Peering, PeeringConfig


def punch_matrix(rounds: int) -> list[dict[str, Any]]:
    """Every pair of placements, ``rounds`` times, each round with fresh nodes."""
    from natlab.lab import NatType, build_lab, unavailable
    from natlab.punch import expected, matrix_pairs, run_pairs

    if (why := unavailable()) is not None:
        raise RuntimeError(why)
    table: dict[str, dict[str, Any]] = {}
    with build_lab(seconds=tuple(NatType)) as lab:
        for r in range(rounds):
            outcomes = asyncio.run(run_pairs(lab, matrix_pairs(), timeout=60.0, seed=r))
            for o in outcomes:
                row = table.setdefault(
                    o.label,
                    {
                        "pair": o.label,
                        "theory": expected(o.a, o.b),
                        "ok": 0,
                        "setup": [],
                        "via": {},
                    },
                )
                if o.setup is not None and o.delivered:
                    row["ok"] += 1
                    row["setup"].append(o.setup)
                    for v in o.via:
                        row["via"][v] = row["via"].get(v, 0) + 1
            print(f"round {r + 1}/{rounds} done", file=sys.stderr)
    for row in table.values():
        row["tries"] = rounds
    return list(table.values())


async def _throughput(via: str, megabytes: int) -> float:
    """MB/s of 16 KiB DATA frames through one session carried by ``via`` on loopback."""
    got: list[int] = [0]
    done = asyncio.Event()
    total = megabytes << 20
    ids = [Identity.generate(), Identity.generate()]
    peers: list[Peering] = []
    dhts: list[DhtService] = []

    def on_data(pk: bytes, dev: bytes, payload: bytes) -> None:
        got[0] += len(payload)
        if got[0] >= total:
            done.set()

    for i, me in enumerate(ids):
        other = ids[1 - i].public_key
        dht = await DhtService.start(host="127.0.0.1")
        device = DeviceKey.generate()
        peering = Peering(
            me,
            device,
            me.certify(device, int(time.time())),
            dht,
            PeeringConfig(host="127.0.0.1", round_interval=3600.0),
            contacts=lambda other=other: [other],  # type: ignore[misc]
            certs_of=lambda pk: [],
            save_certs=lambda pk, certs: None,
            on_established=lambda pk: None,
            on_closed=lambda pk, reason: None,
            on_data=on_data,
        )
        await peering.start()
        dhts.append(dht)
        peers.append(peering)
    try:
        a, b = peers
        bob = ids[1].public_key
        dialer = a._quic_dialer if via == "udp" else a.dialer
        assert dialer is not None
        assert await a.dial(bob, b.certificate, dhts[1].addr, dialer)
        live = next(iter(a.sessions.values()))
        assert live.via == via
        chunk = b"x" * (16 << 10)
        t0 = time.perf_counter()
        sent = 0
        while sent < total:
            live.conn.send(chunk)
            sent += len(chunk)
            await live.conn.drain()
        await asyncio.wait_for(done.wait(), 120)
        return megabytes / (time.perf_counter() - t0)
    finally:
        for p in peers:
            await p.stop()
        for d in dhts:
            d.close()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--mb", type=int, default=50)
    parser.add_argument("--skip-lab", action="store_true")
    args = parser.parse_args()
    if not args.skip_lab:
        rows = punch_matrix(args.rounds)
        print("| pair | theory | sessions / tries | setup median (s) | max (s) | carried by |")
        print("|---|---|---|---|---|---|")
        for row in rows:
            s = row["setup"]
            med = f"{statistics.median(s):.1f}" if s else "-"
            top = f"{max(s):.1f}" if s else "-"
            via = ", ".join(f"{k} {v}" for k, v in sorted(row["via"].items())) or "-"
            theory = "direct" if row["theory"] else "relay"
            print(
                f"| {row['pair']} | {theory} | {row['ok']}/{row['tries']} | {med} | {top} | {via} |"
            )
    runs: dict[str, list[float]] = {"tcp": [], "udp": []}
    for _ in range(2):
        for via in ("tcp", "udp"):
            runs[via].append(asyncio.run(_throughput(via, args.mb)))
    print(
        f"\n{args.mb} MB of 16 KiB DATA frames through one session on loopback (MB/s, 2 runs each):"
    )
    for via, values in runs.items():
        print(f"- {via}: " + ", ".join(f"{v:.1f}" for v in values))


if __name__ == "__main__":
    main()
