"""Sessions over UDP: punch success and setup time per NAT pair (the NAT lab, root), and
session throughput over QUIC vs TCP in the same run (loopback).

Sections ``punch_matrix`` (needs root; says why not otherwise) and ``udp_throughput`` of
``scripts/bench``; alone: ``PYTHONPATH=src python -m bench.udp [--quick] [--skip-lab]``
prints the two sections.
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

from btchat.discovery.rendezvous import FixedDirectory
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
                        v = "relay" if v.startswith("relay") else v  # one row per kind
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
            contacts=FixedDirectory([other]),
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


def run_punch(quick: bool = False) -> dict[str, Any]:
    rounds = 5 if quick else 20
    return {"rounds": rounds, "pairs": punch_matrix(rounds)}


def run_throughput(quick: bool = False) -> dict[str, Any]:
    """Session throughput over QUIC and over TCP, alternating, in one process."""
    megabytes = 20 if quick else 50
    runs: dict[str, list[float]] = {"tcp": [], "udp": []}
    for _ in range(2):
        for via in ("tcp", "udp"):
            runs[via].append(asyncio.run(_throughput(via, megabytes)))
    return {"megabytes": megabytes, "mb_per_s": runs}


PUNCH_TITLE = "## Sessions across NATs: punch success and setup time per pair"
THROUGHPUT_TITLE = "## Session throughput over QUIC vs TCP (loopback, same run)"


def _punch_section(pm: dict[str, Any], title: str) -> list[str]:
    out: list[str] = []
    out += [
        title,
        "",
        "The NAT lab (`tests/natlab/`, root): a sandbox DHT of 16 nodes on the lab's "
        "internet, one node per placement (a public host, two homes of each RFC 4787 "
        "type), every pair of placements a pair of contacts, all 14 pairs at once in "
        f"one process; {pm['rounds']} rounds, each with fresh identities and nodes. A "
        "try succeeds when both sides have the session and a message went each way. "
        "Setup is from starting the peerings (DHT already joined) to the session on "
        "both sides: rendezvous announce and lookup, punching and the handshakes.",
        "",
        "| pair | NAT theory | sessions / tries | setup median | setup max | carried by |",
        "|---|---|---|---|---|---|",
    ]
    for row in pm["pairs"]:
        s = row["setup"]
        med = f"{statistics.median(s):.1f} s" if s else "-"
        top = f"{max(s):.1f} s" if s else "-"
        via = ", ".join(f"{k} {v}" for k, v in sorted(row["via"].items())) or "-"
        theory = "direct" if row["theory"] else "needs a relay"
        tally = f"{row['ok']}/{row['tries']}"
        out.append(f"| {row['pair']} | {theory} | {tally} | {med} | {top} | {via} |")
    out.append("")
    return out


def _throughput_section(tp: dict[str, Any], title: str) -> list[str]:
    out: list[str] = []
    runs = tp["mb_per_s"]
    out += [
        title,
        "",
        f"{tp['megabytes']} MB of 16 KiB DATA frames through one session between two "
        "peerings on 127.0.0.1, the sender awaiting `drain()`; TCP and QUIC runs "
        "alternate. QUIC is aioquic in pure Python (1200-byte datagrams, one per "
        "system call), so the UDP path is CPU-bound far below TCP: ample for chat, "
        "the place to work on before file transfer goes over it.",
        "",
        "| carrier | MB/s (each run) |",
        "|---|---|",
        *(f"| {via} | {', '.join(f'{v:.1f}' for v in runs[via])} |" for via in runs),
        "",
    ]
    return out
    return out


def render(results: dict[str, Any]) -> list[str]:
    out: list[str] = []
    for key, title, section in (
        ("punch_matrix", PUNCH_TITLE, _punch_section),
        ("udp_throughput", THROUGHPUT_TITLE, _throughput_section),
    ):
        figures = results.get(key)
        if not figures:
            continue
        out += [title, "", figures["error"], ""] if "error" in figures else section(figures, title)
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--skip-lab", action="store_true")
    args = parser.parse_args()
    results: dict[str, Any] = {"udp_throughput": run_throughput(args.quick)}
    if not args.skip_lab:
        results["punch_matrix"] = run_punch(args.quick)
    print("\n".join(render(results)))


if __name__ == "__main__":
    main()
