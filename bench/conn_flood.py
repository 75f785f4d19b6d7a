"""A contact reconnecting while strangers flood the session port with idle connections.

The flood of issue 14 item 1: about 13 idle TCP connections a second filled the 64
pending-handshake slots and kept a real contact out for a minute. Here the flood is far
heavier (``rate`` connections a second from 60 addresses, half of them sending one byte
and stalling, none ever closing), and a contact cuts and re-opens its session again and
again; the same reconnects are timed with no flood, side by side in one run. Loopback
addresses stand in for the internet (their usual exemption from per-source shares is
turned off).
"""

from __future__ import annotations

import asyncio
import statistics
import time
from typing import Any

from btchat.discovery.rendezvous import FixedDirectory
from btchat.identity.keys import DeviceKey, Identity
from btchat.net.admission import AdmissionConfig
from btchat.net.dht_service import DhtError
from btchat.node.peering import Peering, PeeringConfig


class _NoDht:
    """Every DHT operation fails as an unreachable DHT does: we dial by hand."""

    async def announce(self, *args: Any, **kwargs: Any) -> None:
        raise DhtError("no DHT in this benchmark")

    get_peers = put_mutable = get_mutable = announce


def _peering(contacts: list[bytes], ident: Identity) -> Peering:
    device = DeviceKey.generate()
    return Peering(
        ident,
        device,
        ident.certify(device, int(time.time())),
        _NoDht(),  # type: ignore[arg-type]
        PeeringConfig(
            host="127.0.0.1",
            round_interval=3600.0,
            admission=AdmissionConfig(loopback_unlimited=False),
        ),
        contacts=FixedDirectory(contacts),
        on_established=lambda pk: None,
        on_closed=lambda pk, reason: None,
        on_data=lambda pk, device, payload: None,
    )


async def _flood(port: int, rate: float, stop: asyncio.Event, held: list[Any]) -> None:
    i = 0
    started = time.monotonic()
    while not stop.is_set():
        due = started + i / rate
        await asyncio.sleep(max(0.0, due - time.monotonic()))
        try:
            _, writer = await asyncio.open_connection(
                "127.0.0.1", port, local_addr=(f"127.0.0.{2 + i % 60}", 0)
            )
        except OSError:
            i += 1
            continue
        if i % 2:
            writer.write(b"\x00")
        held.append(writer)
        i += 1


async def _reconnects(alice: Peering, bob: Peering, n: int) -> list[float]:
    times = []
    for _ in range(n):
        started = time.monotonic()
        ok = await alice.dial(bob.me, bob.certificate, ("127.0.0.1", bob.port))
        times.append(time.monotonic() - started if ok else float("inf"))
        alice.drop(bob.me, "benchmark cut")
        for _ in range(200):
            if not alice.connected(bob.me) and not bob.connected(alice.me):
                break
            await asyncio.sleep(0.01)
    return times


async def _run(quick: bool) -> dict[str, Any]:
    rate = 100.0
    n = 8 if quick else 20
    alice_id, bob_id = Identity.generate(), Identity.generate()
    alice = _peering([bob_id.public_key], alice_id)
    bob = _peering([alice_id.public_key], bob_id)
    await alice.start()
    await bob.start()
    held: list[Any] = []
    try:
        quiet = await _reconnects(alice, bob, n)
        stop = asyncio.Event()
        flood = asyncio.create_task(_flood(bob.port, rate, stop, held))
        await asyncio.sleep(5.0)  # the pool is full well before this
        pending_at_start = bob.admission.pending
        flooded = await _reconnects(alice, bob, n)
        stop.set()
        await flood
        stats = dict(bob.admission.stats)
    finally:
        for w in held:
            w.close()
        await alice.stop()
        await bob.stop()
    return {
        "rate": rate,
        "reconnects": n,
        "quiet_ms": [t * 1000 for t in quiet],
        "flooded_ms": [t * 1000 for t in flooded],
        "pool_pending": pending_at_start,
        "flood_connections": len(held),
        "admission": stats,
    }


def run(quick: bool = False) -> dict[str, Any]:
    return asyncio.run(_run(quick))


def _median(xs: list[float]) -> float:
    return statistics.median(xs)


def render(results: dict[str, Any]) -> list[str]:
    r = results.get("connection_flood")
    if not r:
        return []
    title = "## A contact reconnecting during a connection flood"
    if "error" in r:
        return [title, "", r["error"], ""]
    worst = max(r["flooded_ms"])
    ok = worst <= 1000
    return [
        f"{title} (target: reconnects within 1 s: {'met' if ok else 'MISSED'})",
        "",
        f"Strangers open {r['rate']:.0f} TCP connections a second to the session port from 60 "
        "addresses (half send one byte and stall; none closes), "
        f"{r['flood_connections']} in all; the pool of 64 pending handshakes was full "
        f"({r['pool_pending']}) when the contact began. The contact cuts and re-dials its "
        f"session {r['reconnects']} times, and the same reconnects are timed with no flood "
        "first. Before the admission core (issue 14 item 1) 13 idle connections a second kept "
        "a contact out for 63.8 s.",
        "",
        "| | reconnect median | max |",
        "|---|---|---|",
        f"| no flood | {_median(r['quiet_ms']):.1f} ms | {max(r['quiet_ms']):.1f} ms |",
        f"| during the flood | {_median(r['flooded_ms']):.1f} ms | {worst:.1f} ms |",
        "",
        f"Admission during the run: {r['admission']}.",
        "",
    ]
