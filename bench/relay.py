"""Relayed sessions on loopback: throughput and round-trip time through a relay, side by
side with a direct session in the same run, and the relay's own CPU use.

Alice and Bob run in this process; Carol, the relay, runs in a child process so that
her CPU time is hers alone (``time.process_time`` around each transfer). Alice's dialler
refuses Bob's address for the relayed runs, so the session goes through Carol; the
direct runs dial Bob straight. ``python -m bench --quick --only relay``.
"""

from __future__ import annotations

import asyncio
import multiprocessing as mp
import statistics
import time
from multiprocessing.connection import Connection
from typing import Any

from btchat.discovery.rendezvous import Candidate, FixedDirectory
from btchat.identity.keys import DeviceKey, Identity
from btchat.net.relay_core import RelayLimits
from btchat.net.transport import Address, ByteStream, TcpDialer
from btchat.node.peering import Peering, PeeringConfig

#: The bench lifts the per-circuit rate limit (default 8 MiB/s) to measure the relay.
UNLIMITED = RelayLimits(rate=1e12, burst=1 << 30)
#: Then capped at 50 MiB/s per circuit: what that costs the relay in CPU.
CAPPED = 50 * 1024 * 1024
PATHS = ("relay", "relay_capped", "direct")


async def until_gone(peering: Peering, contact: bytes) -> None:
    for _ in range(100):
        if not peering.is_online(contact):
            return
        await asyncio.sleep(0.05)
    raise RuntimeError("the session did not end")


def _peering(me: Identity, device: DeviceKey, contacts: list[bytes], **kw: Any) -> Peering:
    return Peering(
        me,
        device,
        me.certify(device, int(time.time())),
        None,
        PeeringConfig(host="127.0.0.1", round_interval=3600.0, relay=UNLIMITED),
        contacts=FixedDirectory(contacts),
        on_established=lambda pk: None,
        on_closed=lambda pk, reason: None,
        on_data=kw.get("on_data", lambda pk, dev, payload: None),
        dialer=kw.get("dialer"),
    )


def _carol(seed: bytes, contacts: list[bytes], pipe: Connection) -> None:
    """The relay, in its own process: reports its port, then CPU time on request."""

    async def main() -> None:
        me = Identity.from_seed(seed)
        device = DeviceKey.generate()
        peering = _peering(me, device, contacts)
        await peering.start()
        pipe.send((peering.port, peering.certificate))
        loop = asyncio.get_running_loop()
        while True:
            msg = await loop.run_in_executor(None, pipe.recv)
            if msg == "stop":
                break
            if isinstance(msg, tuple):  # ("rate", bytes/s): for circuits made from now on
                peering.relay.core.limits = RelayLimits(rate=msg[1], burst=1 << 20)
            pipe.send(time.process_time())
        await peering.stop()

    asyncio.run(main())


class _Blocking:
    def __init__(self, blocked: set[Address]) -> None:
        self.blocked = blocked
        self.tcp = TcpDialer()

    async def dial(self, address: Address) -> ByteStream:
        if address in self.blocked:
            raise ConnectionRefusedError("blocked: this pair can only be relayed")
        return await self.tcp.dial(address)


async def _measure(megabytes: int, rounds: int) -> dict[str, Any]:
    a_id, b_id, c_id = Identity.generate(), Identity.generate(), Identity.from_seed(bytes(32))
    ctx = mp.get_context("spawn")
    parent, child = ctx.Pipe()
    proc = ctx.Process(target=_carol, args=(bytes(32), [a_id.public_key, b_id.public_key], child))
    proc.start()
    loop = asyncio.get_running_loop()
    c_port, c_cert = await loop.run_in_executor(None, parent.recv)
    c_addr = ("127.0.0.1", c_port)
    received: list[int] = [0]
    done = asyncio.Event()
    target = [0]
    echo: list[Peering] = []

    def at_bob(pk: bytes, dev: bytes, payload: bytes) -> None:
        if payload.startswith(b"ping"):
            echo[0].send(pk, b"pong" + payload[4:])
            return
        received[0] += len(payload)
        if received[0] >= target[0]:
            done.set()

    pongs: asyncio.Queue[bytes] = asyncio.Queue()
    blocked: set[Address] = set()
    a_dev, b_dev = DeviceKey.generate(), DeviceKey.generate()
    alice = _peering(
        a_id,
        a_dev,
        [b_id.public_key, c_id.public_key],
        on_data=lambda pk, dev, p: pongs.put_nowait(p),
        dialer=_Blocking(blocked),
    )
    bob = _peering(b_id, b_dev, [a_id.public_key, c_id.public_key], on_data=at_bob)
    echo.append(bob)
    await alice.start()
    await bob.start()
    b_addr = ("127.0.0.1", bob.port)
    out: dict[str, Any] = {"megabytes": megabytes}
    try:
        assert await alice.dial(c_id.public_key, c_cert, c_addr)
        assert await bob.dial(c_id.public_key, c_cert, c_addr)
        await asyncio.sleep(0.2)  # both sessions to Carol announce their capabilities
        for path in PATHS:
            t_setup = time.perf_counter()
            if path.startswith("relay"):
                if path == "relay_capped":
                    parent.send(("rate", CAPPED))
                    await loop.run_in_executor(None, parent.recv)
                    for live in list(alice.sessions.values()):
                        if live.contact == b_id.public_key:
                            live.conn.close("next path")
                    await until_gone(alice, b_id.public_key)
                    t_setup = time.perf_counter()
                blocked.add(b_addr)
                assert await alice.reach([Candidate(b_id.public_key, bob.certificate, b_addr)])
            else:
                blocked.clear()
                for live in list(alice.sessions.values()):
                    if live.contact == b_id.public_key:
                        live.conn.close("next path")
                await asyncio.sleep(0.3)
                t_setup = time.perf_counter()
                assert await alice.dial(b_id.public_key, bob.certificate, b_addr)
            setup = time.perf_counter() - t_setup
            live = next(v for v in alice.sessions.values() if v.contact == b_id.public_key)
            assert (live.relay is not None) == path.startswith("relay"), live.via
            rtts = []
            for i in range(rounds):
                t0 = time.perf_counter()
                alice.send(b_id.public_key, b"ping" + i.to_bytes(4, "big"))
                await asyncio.wait_for(pongs.get(), 10)
                rtts.append((time.perf_counter() - t0) * 1000)
            chunk = b"x" * ((64 << 10) - 1024)
            received[0] = 0
            target[0] = megabytes << 20
            done.clear()
            parent.send("cpu")
            c0 = await loop.run_in_executor(None, parent.recv)
            t0 = time.perf_counter()
            sent = 0
            while sent < target[0]:
                live.conn.send(chunk)
                sent += len(chunk)
                await live.conn.drain()
            await asyncio.wait_for(done.wait(), 120)
            wall = time.perf_counter() - t0
            parent.send("cpu")
            c1 = await loop.run_in_executor(None, parent.recv)
            out[path] = {
                "setup_s": round(setup, 4),
                "rtt_ms_median": round(statistics.median(rtts), 3),
                "rtt_ms_p95": round(sorted(rtts)[int(0.95 * len(rtts)) - 1], 3),
                "mb_per_s": round(megabytes / wall, 1),
                "relay_cpu_cores": round((c1 - c0) / wall, 3),
            }
    finally:
        await alice.stop()
        await bob.stop()
        parent.send("stop")
        await loop.run_in_executor(None, proc.join, 10)
    return out


def run(quick: bool = False) -> dict[str, Any]:
    """Relayed then direct, twice, in one run."""
    megabytes, rounds = (50, 100) if quick else (200, 300)
    runs = [asyncio.run(_measure(megabytes, rounds)) for _ in range(2)]
    return {"megabytes": megabytes, "rounds": rounds, "runs": runs}


TITLE = "## Relayed sessions: throughput, latency and relay CPU (loopback, same run)"


def render(figures: dict[str, Any]) -> list[str]:
    if "error" in figures:
        return [TITLE, "", figures["error"], ""]
    out = [
        TITLE,
        "",
        f"Alice and Bob in one process, Carol (the relay) in another; {figures['megabytes']} MB "
        "of 64 KiB DATA frames, the sender awaiting `drain()`, then "
        f"{figures['rounds']} ping/echo round trips, first through Carol, then direct. "
        "Relay CPU is Carol's process time over the transfer's wall time (target: a relay "
        ">= 50 MB/s at < 1 core). `relay_capped`: Carol's per-circuit token bucket at "
        "50 MiB/s (the default is 8 MiB/s; the other relay rows lift it).",
        "",
        "| run | path | MB/s | relay CPU (cores) | RTT median | RTT p95 | setup |",
        "|---|---|---|---|---|---|---|",
    ]
    for i, run_ in enumerate(figures["runs"], 1):
        for path in PATHS:
            r = run_[path]
            out.append(
                f"| {i} | {path} | {r['mb_per_s']:.1f} | {r['relay_cpu_cores']:.2f} | "
                f"{r['rtt_ms_median']:.2f} ms | {r['rtt_ms_p95']:.2f} ms | "
                f"{r['setup_s'] * 1000:.0f} ms |"
            )
    out.append("")
    return out


if __name__ == "__main__":
    import json

    print(json.dumps(run(quick=True), indent=2))
