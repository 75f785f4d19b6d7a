"""The DHT through a contact, end to end: a Tor-mode node with no DHT of its own.

A (Tor mode, every connection through a real Dante SOCKS server) and plain nodes B and
C on a sandbox swarm of real DHT nodes on loopback. A dials B by hand; from then on A's
rendezvous, device lists and offline mailbox run through B's DHT node: A finds C (whose
address it was never given), chats with C through the proxy, and a message A sends
while C is down reaches C from the DHT mailbox A wrote through B, with A gone by then.
Hostile: a contact's request flood is bounded by the serving node's limits, malformed
requests are counted and dropped, and a node with serving off refuses.
"""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path

import pytest
from harness import until
from natlab.lab import Lab
from test_net_proxy import (  # noqa: F401
    DANTE_PORT,
    PEER_IP,
    PROXY_IP,
    Dante,
    _packets,
    dante,
    proxy_lab,
    run_dante,
    start,
)

from btchat.cli.main import main as cli_main
from btchat.identity.idtext import format_id
from btchat.net import dht_proxy_core as dp
from btchat.net.dht_proxy import serves_dht
from btchat.node.boot import RunningNode
from btchat.sandbox import start_swarm

pytestmark = pytest.mark.slow


def texts(node: RunningNode, peer: bytes) -> list[str]:
    return sorted(r.text for r in node.store.history(peer, limit=20) if r.text)


def introduce(a: RunningNode, b: RunningNode, name: str) -> None:
    """``a`` holds ``b`` as ``name`` with its device certificate (as after an earlier
    session: all a Tor-mode node needs to dial by hand); ``b`` knows ``a``."""
    a.store.add_contact(b.daemon.me, name, 0)
    a.store.set_certs(b.daemon.me, [b.daemon.keys.certificate])
    b.store.add_contact(a.daemon.me, "a", 0)


def session_to(node: RunningNode, other: RunningNode):  # type: ignore[no-untyped-def]
    assert node.daemon.peering is not None
    key = (other.daemon.me, other.daemon.keys.device.device_id)
    return node.daemon.peering.sessions[key].conn


async def status_text(node: RunningNode, capsys: pytest.CaptureFixture[str]) -> str:
    """``btchat status`` as the user reads it (the CLI in a thread: its client blocks)."""
    capsys.readouterr()
    argv = ["status", "--data-dir", str(node.data_dir)]
    assert await asyncio.to_thread(cli_main, argv) == 0
    return capsys.readouterr().out


async def _joined(*nodes: RunningNode) -> None:
    for node in nodes:
        await asyncio.wait_for(node.daemon.joined_event.wait(), 30)


async def test_a_tor_mode_node_finds_chats_and_mails_through_a_contacts_dht(
    tmp_path: Path,
    dante: Dante,  # noqa: F811
    capsys: pytest.CaptureFixture[str],
) -> None:
    swarm = await start_swarm(12, seed=11)
    boot = [swarm.bootstrap_addr]
    nodes: list[RunningNode] = []
    try:
        b = await start(tmp_path, "b", bootstrap=boot)
        c = await start(tmp_path, "c", bootstrap=boot)
        d = await start(tmp_path, "d", bootstrap=boot, dht_proxy=False)  # serves nobody
        a = await start(tmp_path, "a", tor=True, proxy=dante.url)
        nodes += [b, c, d, a]
        await _joined(b, c, d)
        assert a.daemon.dht is None and a.daemon.dht_via is not None
        introduce(a, b, "b")
        introduce(a, d, "d")
        # A and C know each other's IDs only: no address, no certificate on A's side.
        await a.daemon.add_contact(format_id(c.daemon.me), "c")
        await c.daemon.add_contact(format_id(a.daemon.me), "a")
        assert (await a.daemon.status())["dht_via"]["name"] is None

        # A contact that does not serve: a session, and still no DHT.
        assert b.daemon.peering and d.daemon.peering and c.daemon.peering
        assert (await a.daemon.dial_contact("d", f"127.0.0.1:{d.daemon.peering.port}"))["online"]
        await asyncio.sleep(0.5)
        assert not serves_dht(session_to(a, d))
        assert (await a.daemon.status())["dht_via"]["name"] is None
        assert "no DHT (no contact serving)" in await status_text(a, capsys)

        # Dialled by hand once: B serves, and A's DHT goes through it.
        dialled = time.monotonic()
        assert (await a.daemon.dial_contact("b", f"127.0.0.1:{b.daemon.peering.port}"))["online"]
        await until(
            lambda: a.daemon.dht_via is not None and a.daemon.dht_via.joined.is_set(),
            10,
            "B serves",
        )
        # A finds C by the rendezvous through B's DHT, and dials it through the proxy.
        await until(lambda: c.daemon.me in a.daemon.peering.online_contacts(), 60, "A reaches C")
        found_after = time.monotonic() - dialled
        status = await a.daemon.status()
        assert status["dht_via"]["name"] == "b", status["dht_via"]
        assert "DHT through b" in await status_text(a, capsys)
        c_addr = ("127.0.0.1", c.daemon.peering.port)
        assert dante.connects_to(c_addr) >= 1, dante.log.read_text()
        served = (await b.daemon.status())["dht_serving"]
        print(f"A reached C {found_after:.2f} s after dialling B; B served {served['served']}")
        assert served["serving"] and served["served"] > 0 and served["malformed"] == 0
        assert (await d.daemon.status())["dht_serving"]["requests"] == 0  # never asked

        await a.daemon.send_message("c", "hello C, from Tor mode")
        await c.daemon.send_message("a", "hello A")
        both = sorted(["hello C, from Tor mode", "hello A"])
        await until(
            lambda: texts(a, c.daemon.me) == both and texts(c, a.daemon.me) == both,
            20,
            "both messages on both sides",
        )

        # C goes down; A writes to C's DHT mailbox, through B, then goes down too.
        await c.stop()
        nodes.remove(c)
        await until(lambda: c.daemon.me not in a.daemon.peering.online_contacts(), 20, "C down")
        await a.daemon.send_message("c", "while you were away")

        def stored() -> bool:
            assert a.daemon.offline is not None
            m = a.daemon.offline.summary()
            return m["pending"] == 1 and m["stats"].get("puts_ok", 0) >= 2

        await until(stored, 60, "A's mailbox items stored through B")
        await a.stop()
        nodes.remove(a)
        c = await start(tmp_path, "c", bootstrap=boot)
        nodes.append(c)
        await until(
            lambda: "while you were away" in texts(c, a.daemon.me),
            90,
            "C to fetch A's message from the DHT mailbox",
        )
        assert c.daemon.offline is not None
        assert c.daemon.offline.summary()["stats"]["received"] == 1
    finally:
        for node in reversed(nodes):
            await node.stop()
        swarm.close()


async def test_a_request_flood_is_bounded_and_serving_off_refuses(tmp_path: Path) -> None:
    swarm = await start_swarm(8, seed=12)
    boot = [swarm.bootstrap_addr]
    nodes: list[RunningNode] = []
    try:
        x = await start(tmp_path, "x", bootstrap=boot)  # serves (the default)
        y = await start(tmp_path, "y", bootstrap=boot, dht_proxy=False)
        z = await start(tmp_path, "z", bootstrap=boot)  # the flooding contact
        nodes += [x, y, z]
        await _joined(x, y, z)
        for name, server in (("x", x), ("y", y)):
            introduce(z, server, name)
            assert server.daemon.peering is not None
            await z.daemon.dial_contact(name, f"127.0.0.1:{server.daemon.peering.port}")
        assert x.daemon.peering and y.daemon.peering
        await asyncio.sleep(0.5)
        to_x, to_y = session_to(z, x), session_to(z, y)
        assert serves_dht(to_x) and not serves_dht(to_y)

        flood, junk = 300, 20
        for i in range(1, flood + 1):
            to_x.send(dp.encode(dp.Request(i, dp.GetPeers(os.urandom(20)))))
        for i in range(junk):
            to_x.send(dp.MAGIC + b"d1:ti%de1:q5:bogus" % (i + 1) + b"e")
        to_y.send(dp.encode(dp.Request(1, dp.GetPeers(os.urandom(20)))))
        served = x.daemon.peering.dht_server

        await until(
            lambda: served.stats["requests"] == flood and served.stats["malformed"] == junk,
            20,
            "every request seen",
        )
        limits = served.limits
        refused = served.stats["refused_busy"] + served.stats["refused_rate"]
        # At most a minute's budget ran (plus what refilled during the test), never more
        # than the in-flight cap at once; the rest were refused at once.
        ran = flood - refused
        assert ran <= limits.per_minute + 20, served.stats
        assert refused >= flood - limits.per_minute - 20
        assert served.core.peak <= limits.in_flight
        await until(lambda: served.core.total == 0, 40, "the admitted lookups to finish")
        y_stats = y.daemon.peering.dht_server.stats
        await until(lambda: y_stats["refused_off"] == 1, 10, "serving off refuses")
        assert y_stats["requests"] == 1 and y_stats["served"] == 0
        # The session lived through it all, and still carries chat.
        assert z.daemon.peering is not None and x.daemon.me in z.daemon.peering.online_contacts()
    finally:
        for node in reversed(nodes):
            await node.stop()
        swarm.close()


async def test_through_a_contacts_dht_nothing_leaves_the_tor_node_but_to_the_proxy(
    proxy_lab: Lab,  # noqa: F811
    tmp_path: Path,
) -> None:
    """The capture check of ``test_net_proxy``, with the DHT in use: the swarm, B and C
    in the peer's namespace, A in its own, whose nftables counters see every packet."""
    lab = proxy_lab
    tor_ns, peer_ns = lab.ns("tor"), lab.ns("peer")
    prefix = ("ip", "netns", "exec", lab.ns("proxy"))
    nodes: list[RunningNode] = []
    with run_dante(tmp_path, PROXY_IP, DANTE_PORT, prefix) as proxy:
        with lab.inside(peer_ns):  # B and C only accept, and the swarm's sockets stay here
            swarm = await start_swarm(10, seed=13, hosts=[PEER_IP])
            boot = [swarm.bootstrap_addr]
            b = await start(tmp_path, "b", host=PEER_IP, bootstrap=boot)
            c = await start(tmp_path, "c", host=PEER_IP, bootstrap=boot)
        nodes += [b, c]
        try:
            await _joined(b, c)
            assert b.daemon.peering is not None and c.daemon.peering is not None
            with lab.inside(tor_ns):
                a = await start(tmp_path, "a", tor=True, proxy=proxy.url)
                try:
                    introduce(a, b, "b")
                    await a.daemon.add_contact(format_id(c.daemon.me), "c")
                    await c.daemon.add_contact(format_id(a.daemon.me), "a")
                    addr = f"{PEER_IP}:{b.daemon.peering.port}"
                    assert (await a.daemon.dial_contact("b", addr))["online"]
                    assert a.daemon.peering is not None
                    await until(
                        lambda: c.daemon.me in a.daemon.peering.online_contacts(),
                        60,
                        "A to find C through B's DHT",
                    )
                    await a.daemon.send_message("c", "through B's DHT and the proxy")
                    await until(
                        lambda: texts(c, a.daemon.me) == ["through B's DHT and the proxy"],
                        20,
                        "the message",
                    )
                finally:
                    await a.stop()
            assert proxy.connects_to((PEER_IP, c.daemon.peering.port)) >= 1
        finally:
            for node in nodes:
                await node.stop()
            swarm.close()
    sent_to_proxy, other = _packets(lab, tor_ns, "to_proxy"), _packets(lab, tor_ns, "other")
    print(f"Tor-mode node: {sent_to_proxy} packets to the proxy, {other} anywhere else")
    assert sent_to_proxy > 0 and other == 0
