"""Run every benchmark and rewrite docs/BENCHMARKS.md: ``scripts/bench`` (or
``python -m bench [--quick] [--only NAME ...]``)."""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import subprocess
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
DOC = ROOT / "docs" / "BENCHMARKS.md"


def machine() -> str:
    cpu = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return (
        f"{cpu}, {os.cpu_count()} cores, {mem:.0f} GiB RAM, {platform.system()} "
        f"{platform.release()}, Python {platform.python_version()}"
    )


def guarded(fn: Any) -> Any:
    """A benchmark that fails reports why in its section instead of ending the run."""

    def run() -> dict[str, Any]:
        try:
            return fn()
        except Exception as exc:
            return {"error": f"not run: {type(exc).__name__}: {exc}"}

    return run


def run_all(quick: bool, only: list[str] | None) -> dict[str, Any]:
    from bench import lookups, qps

    plan: dict[str, Any] = {
        "qps": qps.run,
        "sim_1000": lambda: lookups.simulated(1000, 100 if quick else 200),
        "sim_5000": lambda: lookups.simulated(5000, 100 if quick else 200),
        "loopback_1000": lambda: lookups.loopback(1000, 50 if quick else 100),
    }
    from bench import messenger

    plan["first_message"] = guarded(lambda: messenger.first_message(quick=quick))
    plan["session_throughput"] = guarded(lambda: messenger.session_throughput(quick=quick))
    plan["bulk_ratio"] = guarded(lambda: messenger.bulk_ratio(quick=quick))
    # Last: libtorrent sessions keep threads busy after they are closed, which would
    # slow every benchmark measured after them in this process.
    try:
        from bench import vs_libtorrent

        plan["vs_libtorrent"] = lambda: vs_libtorrent.run(quick=quick)
    except ImportError as exc:  # libtorrent missing: said so in the report, not hidden
        reason = f"not run: {exc}"
        plan["vs_libtorrent"] = lambda: {"error": reason}
    results: dict[str, Any] = {}
    for name, fn in plan.items():
        if only and name not in only:
            continue
        print(f"running {name} ...", file=sys.stderr, flush=True)
        results[name] = fn()
        print(f"  {json.dumps(results[name], default=str)[:400]}", file=sys.stderr, flush=True)
    return results


def fmt(x: Any, unit: str = "", digits: int = 2) -> str:
    if isinstance(x, float):
        return f"{x:.{digits}f}{unit}"
    return f"{x}{unit}"


def render(results: dict[str, Any], meta: dict[str, str]) -> str:
    out = [
        "# Benchmarks",
        "",
        f"Measured {meta['date']} on {meta['machine']} (`{meta['commit']}`).",
        "",
        f"Command: `{meta['command']}` (writes this file; raw figures in "
        "`bench/results/latest.json`, not committed).",
        "",
        "Targets come from issue 2 (DHT) and issue 3 (messenger). Every figure is a "
        "measurement from the run above; misses are reported as misses.",
        "",
    ]
    q = results.get("qps")
    if q:
        hit = "met" if q["answered_per_cpu_s"] >= 10_000 else "MISSED"
        out += [
            f"## Queries answered per second, one node, one core (target >= 10,000: {hit})",
            "",
            "The node runs behind the real asyncio UDP shell in its own process pinned to "
            "one core, default rate limits on; a load generator on the other core keeps "
            "ping/find_node/get_peers queries in flight from 256 loopback sockets.",
            "",
            "| answered/s (wall) | answered per node CPU-second | node CPU use | errors |",
            "|---|---|---|---|",
            f"| {q['answered_per_s']:.0f} | {q['answered_per_cpu_s']:.0f} | "
            f"{q['node_cpu_utilisation']:.0%} | {q['errors']} |",
            "",
            "Answers per CPU-second is the node's capacity per core; answers per wall "
            "second is lower when the Python load generator, not the node, is the "
            "bottleneck (node CPU use below 100%).",
            "",
        ]
    sims = [(k, v) for k, v in results.items() if k.startswith("sim_")]
    if sims:
        out += [
            "## get_peers lookups on the simulator (target: success >= 99% with 20% churn "
            "and 10% loss)",
            "",
            "Real node cores on the simulated network (`btchat.sim`), latency 10-100 ms per "
            "hop, seeded. Each infohash is announced, then 20% of the nodes are replaced "
            "by newcomers, then 10% of packets are dropped, then each infohash is looked "
            "up from a random node. Time is virtual (what a user would wait with those "
            "latencies), RPCs are the queries the lookup sent.",
            "",
            "| nodes | lookups | success | RPCs median | RPCs p95 | time median | time p95 "
            "| memory per node |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for _, r in sims:
            out.append(
                f"| {r['nodes']} | {r['lookups']} | {r['success']:.1%} | "
                f"{r['rpcs']['median']:.0f} | {r['rpcs']['p95']:.0f} | "
                f"{r['virtual_seconds']['median']:.2f} s | {r['virtual_seconds']['p95']:.2f} s "
                f"| {r['rss_bytes_per_node'] / 1024:.0f} KiB |"
            )
        out += [
            "",
            "Memory per node is the process RSS growth while building the swarm divided by "
            "the node count; it includes the simulator's own per-node bookkeeping, so it is "
            "an upper bound for the node itself.",
            "",
        ]
    lb = results.get("loopback_1000")
    if lb:
        out += [
            "## get_peers lookups on a real loopback sandbox",
            "",
            f"{lb['nodes']} real nodes (`btchat sandbox` machinery), one UDP socket each, all "
            "in one Python process on one core; 20% of them shut down after the announces. "
            "Lookups run one at a time; time is wall-clock.",
            "",
            "| nodes | lookups | success | RPCs median | RPCs p95 | time median | time p95 "
            "| swarm start | memory per node |",
            "|---|---|---|---|---|---|---|---|---|",
            f"| {lb['nodes']} | {lb['lookups']} | {lb['success']:.1%} | "
            f"{lb['rpcs']['median']:.0f} | {lb['rpcs']['p95']:.0f} | "
            f"{lb['wall_seconds']['median'] * 1000:.0f} ms | "
            f"{lb['wall_seconds']['p95'] * 1000:.0f} ms | {lb['build_wall_s']:.1f} s | "
            f"{lb['rss_bytes_per_node'] / 1024:.0f} KiB |",
            "",
        ]
    vs = results.get("vs_libtorrent")
    if vs:
        out += ["## Side by side with libtorrent", ""]
        if "error" in vs:
            out += [vs["error"], ""]
        else:
            out += [*vs["markdown"].splitlines(), ""]
    out += render_messenger(results)
    return "\n".join(out).rstrip() + "\n"


def _ms(x: float) -> str:
    return f"{x * 1000:.0f} ms"


def _verdict(ok: bool) -> str:
    return "met" if ok else "MISSED"


def render_messenger(results: dict[str, Any]) -> list[str]:
    out: list[str] = []
    fm = results.get("first_message")
    if fm:
        if "error" in fm:
            out += ["## First message between two contacts", "", fm["error"], ""]
        else:
            out += [
                "## First message between two contacts on a 1,000-node sandbox "
                f"(target median <= 1 s: {_verdict(fm['target_met'])})",
                "",
                f"A `btchat sandbox` swarm of {fm['nodes']} real nodes on 127.0.0.1 (started "
                f"in {fm['sandbox_start_s']:.1f} s), and one `btchat up` process per person. "
                "For each pair, both daemons are started at the same instant t0; A sends "
                "(`POST /v1/contacts/b/messages`) as soon as its API answers. *Stored at B* is "
                "when B's event stream shows the message (B has saved it), *receipt at A* "
                'when A\'s shows the signed "delivered" receipt. The breakdown comes from '
                "the daemons' own logs and stdout; times are from t0 and include Python "
                "start-up. A run is *warm* when the two have talked before (certificates "
                "cached, DHT state kept; this is the target case); *cold* is the very first "
                "start of two new identities, whose device lists must first be published "
                "and found in the DHT.",
                "",
                "| case | runs | delivered | stored at B median | p95 | receipt at A median "
                "| p95 | both APIs up | both joined the DHT | session up |",
                "|---|---|---|---|---|---|---|---|---|---|",
            ]
            for case in ("warm", "cold"):
                r = fm[case]
                out.append(
                    f"| {case} | {r['runs']} | {r['delivered_runs']} | "
                    f"{_ms(r['received_s']['median'])} | {_ms(r['received_s']['p95'])} | "
                    f"{_ms(r['delivered_receipt_s']['median'])} | "
                    f"{_ms(r['delivered_receipt_s']['p95'])} | "
                    f"{_ms(r['api_up_s']['median'])} | {_ms(r['dht_joined_s']['median'])} | "
                    f"{_ms(r['session_up_s']['median'])} |"
                )
            out.append("")
            misses = fm["cold"]["device_list_misses"]
            if misses:
                out += [
                    f"In the cold runs a daemon found its contact's address but not yet its "
                    f"device list {misses} times: the wait is for the device list, which the "
                    "daemon publishes again only on a timer after its first attempt (before "
                    "it had joined the DHT) failed.",
                    "",
                ]
    st = results.get("session_throughput")
    if st:
        if "error" in st:
            out += ["## Small messages through one session", "", st["error"], ""]
        else:
            un, pe = st["unpersisted"], st["persisted"]
            hit_un = _verdict(un["complete"] and un["msgs_per_s"] >= st["target_unpersisted"])
            hit_pe = _verdict(pe["complete"] and pe["msgs_per_s"] >= st["target_persisted"])
            out += [
                "## Small messages through one session (targets: >= 20,000/s unpersisted: "
                f"{hit_un}; >= 5,000/s persisted: {hit_pe})",
                "",
                f"{st['text_bytes']}-byte texts in signed envelopes ({st['envelope_bytes']} bytes "
                "on the wire) from A to B through one Noise session over loopback TCP; both "
                "ends run in this one process on one event loop, so one core does the work "
                "of both sides. *Unpersisted*: A creates and signs, B parses and verifies. "
                "*Persisted*: A `save_outgoing` before sending; B verifies, `save_incoming`, "
                'and only then sends a signed "delivered" receipt; A verifies it and '
                "applies it (`mark_state`, `ack_outbox`). Store: "
                f"{st['store']}, {st['commits_per_message']} commits per message; nothing is "
                "batched, so every message is on disk before it is acknowledged. Latency is "
                "from A starting to create a message to B having verified (and, persisted, "
                "stored) it, on the same clock, with A paced at the given rate.",
                "",
                "| path | msgs/s | target | paced at | achieved | latency p50 | p99 | max |",
                "|---|---|---|---|---|---|---|---|",
            ]
            rows = (
                ("unpersisted", un, st["paced_unpersisted"], st["target_unpersisted"]),
                ("persisted", pe, st["paced_persisted"], st["target_persisted"]),
                ("persisted, light load", None, st["paced_persisted_100"], None),
            )
            for label, full, paced, target in rows:
                lat = paced["latency_ms"]
                rate = f"{full['msgs_per_s']:,.0f}" if full else ""
                out.append(
                    f"| {label} | {rate} | {f'{target:,}' if target else ''} | "
                    f"{paced['rate']:,.0f}/s | "
                    f"{paced['achieved_send_rate']:,.0f}/s | {lat['p50']:.1f} ms | "
                    f"{lat['p99']:.1f} ms | {lat['max']:.1f} ms |"
                )
            sg = st["stages_us"]
            per = pe.get("store_us_per_msg", {})
            out += [
                "",
                "Where the time goes, CPU microseconds per message on this machine: "
                f"create and sign {sg['create_and_sign']:.0f}, encode {sg['encode']:.0f}, "
                f"parse {sg['parse']:.0f}, verify {sg['verify']:.0f} (of which Ed25519 "
                f"verification alone {sg['ed25519_verify_only']:.0f}; signing alone "
                f"{sg['ed25519_sign_only']:.0f}), session framing and AEAD both ways "
                f"{sg['session_frame']:.0f}. Persisted, per message: "
                + ", ".join(f"`{k}` {v:.0f}" for k, v in per.items())
                + " (each its own fsynced transaction). A rate the sender cannot sustain "
                "shows as an achieved rate below the paced one; its latencies then include "
                "queueing.",
                "",
            ]
    br = results.get("bulk_ratio")
    if br:
        if "error" in br:
            out += ["## Bulk transfer through a session", "", br["error"], ""]
        else:
            one, two = br["one_process"], br["two_processes"]
            oks = (br["target_met_one_process"], br["target_met_two_processes"])
            hit = "met" if all(oks) else "MISSED" if not any(oks) else "met with two processes only"
            out += [
                f"## Bulk transfer through a session vs raw TCP (target >= 50% of raw: {hit})",
                "",
                f"{br['payload_bytes']:,}-byte DATA frames (the largest a Noise message "
                "carries; 64 KiB does not fit) through a session over loopback TCP, against "
                "the same payloads written to a plain asyncio stream, read 64 KiB at a time "
                "as the session pump does. Interleaved rounds of "
                f"{br['seconds_per_round']:g} s, median of {br['rounds']}; MB = 10^6 bytes. "
                "*One process*: both ends on one event loop (one core does both sides). "
                "*Two processes*: the receiver in a child process, as a real peer is.",
                "",
                "| setup | raw TCP MB/s | session MB/s | session / raw |",
                "|---|---|---|---|",
                f"| one process | {one['raw_mb_per_s']:.0f} | {one['session_mb_per_s']:.0f} | "
                f"{one['ratio']:.0%} |",
                f"| two processes | {two['raw_mb_per_s']:.0f} | {two['session_mb_per_s']:.0f} | "
                f"{two['ratio']:.0%} |",
                "",
            ]
    return out


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench")
    parser.add_argument("--quick", action="store_true", help="fewer lookups")
    parser.add_argument(
        "--only", nargs="*", help="qps sim_1000 sim_5000 loopback_1000 first_message ..."
    )
    parser.add_argument("--no-doc", action="store_true", help="do not rewrite BENCHMARKS.md")
    args = parser.parse_args()
    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=ROOT
    ).stdout.strip()
    meta = {
        "date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": machine(),
        "commit": commit or "uncommitted",
        "command": "scripts/bench" + (" --quick" if args.quick else ""),
    }
    results = run_all(args.quick, args.only)
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "latest.json").write_text(json.dumps({"meta": meta, **results}, indent=2))
    if not args.no_doc:
        DOC.parent.mkdir(parents=True, exist_ok=True)
        DOC.write_text(render(results, meta))
        print(f"wrote {DOC}", file=sys.stderr)


if __name__ == "__main__":
    main()
