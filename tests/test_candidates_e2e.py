"""Two daemons on the sandbox swarm: the announce alone cannot reach Alice, her record can.

Alice's session port is not her DHT port (``--port``), and she has no QUIC: a proxy
turns UDP sessions off (a dead one: her own dials all fail, so only Bob's dial can make
the session). No LAN discovery and no IPv6 (whose socket TCP would also listen on). So
the address Bob finds on the rendezvous, her DHT socket, answers neither TCP nor QUIC;
only the TCP candidate in her candidate record leads to her. With records turned off
(``BTCHAT_CANDIDATES=0``) Bob finds her announce again and again and never reaches her:
the control that shows the record is what works.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from harness import until
from test_messenger_e2e import Person, base_env, befriend, run_sandbox, wait_for
from test_net_onion import tor_control  # noqa: F401
from test_net_proxy import Dante, dante, start  # noqa: F401
from test_tor_dht_e2e import _joined, introduce

from btchat.discovery import candidates as cand
from btchat.identity.idtext import format_id
from btchat.identity.rendezvous import epoch_of
from btchat.node.boot import RunningNode
from btchat.sandbox import start_swarm

pytestmark = pytest.mark.slow


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def pair(tmp_path: Path) -> Iterator[tuple[Person, Person]]:
    env = base_env(tmp_path)
    with run_sandbox(env) as started:
        alice = Person("alice", tmp_path, dict(env), started["bootstrap"])
        bob = Person("bob", tmp_path, dict(env), started["bootstrap"])
        try:
            yield alice, bob
        finally:
            alice.kill()
            bob.kill()


def _rendezvous(p: Person) -> dict[str, int]:
    return p.cli("status")["rendezvous"]


def _online(p: Person, name: str) -> list[str] | None:
    for c in p.cli("contacts")["contacts"]:
        if c["name"] == name and c["online"]:
            return list(c["path"])
    return None


def test_the_record_reaches_a_session_port_the_announce_does_not(
    pair: tuple[Person, Person],
) -> None:
    alice, bob = pair
    dead_proxy = f"socks5://127.0.0.1:{_free_port()}"
    alice_args = ["--port", str(_free_port()), "--proxy", dead_proxy, "--no-lan", "--no-ipv6"]
    alice.env["BTCHAT_CANDIDATES"] = "0"  # the control: the announce only
    alice.up(*alice_args)
    bob.up("--no-lan", "--no-ipv6")
    befriend(alice, bob)
    wait_for(lambda: _rendezvous(bob)["found"] >= 3, 120, "bob to find alice's announce")
    assert _online(bob, "alice") is None  # found three times, reached never
    assert _rendezvous(bob)["records_read"] == 0
    alice.down()

    del alice.env["BTCHAT_CANDIDATES"]
    alice.up(*alice_args)
    path = wait_for(lambda: _online(bob, "alice"), 90, "bob to reach alice by her record")
    assert path == ["tcp"]
    seen = _rendezvous(bob)
    assert seen["records_read"] >= 1 and seen["records_dropped"] == 0
    assert _rendezvous(alice)["records_put"] >= 1

    bob.cli("send", "alice", "found you by your record")
    wait_for(lambda: alice.texts("bob") == ["found you by your record"], 30, "alice to receive")
    alice.cli("send", "bob", "over the session you dialled")
    both = ["found you by your record", "over the session you dialled"]
    wait_for(lambda: bob.texts("alice") == both, 30, "bob to receive")
    assert _online(alice, "bob") == ["tcp"]


# ------------------------------------------------- Tor mode: the onion in the record


async def test_a_tor_mode_node_publishes_its_onion_through_a_contacts_dht(
    tmp_path: Path,
    dante: Dante,  # noqa: F811
    tor_control: tuple[str, int],  # noqa: F811
) -> None:
    """A Tor-mode node announces nothing (its IP must not be stored anywhere), so before
    records its contacts could not find it at all. Now its record, put through the
    contact that serves it the DHT, names its onion service and nothing else; a contact
    with Tor would dial it, one without refuses it (never dials an onion unproxied)."""
    swarm = await start_swarm(12, seed=13)
    nodes: list[RunningNode] = []
    try:
        b = await start(tmp_path, "b", bootstrap=[swarm.bootstrap_addr])
        c = await start(tmp_path, "c", bootstrap=[swarm.bootstrap_addr])
        nodes += [b, c]
        a = await start(tmp_path, "a", tor=True, proxy=dante.url, tor_control=tor_control)
        nodes.append(a)
        await _joined(b, c)
        assert a.daemon.onion is not None, a.daemon.onion_error
        introduce(a, b, "b")
        await a.daemon.add_contact(format_id(c.daemon.me), "c")
        await c.daemon.add_contact(format_id(a.daemon.me), "a")
        assert a.daemon.peering and b.daemon.peering and c.daemon.peering
        ours = a.daemon.peering.own_candidates()
        host, _, port = a.daemon.onion.address.rpartition(":")
        assert ours == [cand.Addr("onion", "tcp", host, int(port))]  # nothing of our network

        assert (await a.daemon.dial_contact("b", f"127.0.0.1:{b.daemon.peering.port}"))["online"]
        rendezvous = a.daemon.peering.rendezvous
        assert rendezvous is not None
        await until(lambda: rendezvous.stats["records_put"] >= 2, 60, "A's records put via B")
        assert (await b.daemon.status())["dht_serving"]["served"] > 0

        # C reads A's record for C from the DHT, as its lookups do.
        seeker = c.daemon.peering.rendezvous
        assert seeker is not None
        secret = seeker._secret(a.daemon.me)
        epoch = epoch_of(time.time())
        found = await seeker._read_record(a.daemon.me, secret, a.daemon.keys.certificate, epoch)
        assert [(f.kind, f.transport, f.addr) for f in found] == [("onion", "tcp", (host, 6881))]
        assert c.daemon.peering._dialable(found) == []  # C has no Tor: never dialled
        assert c.daemon.peering.stats["candidates_refused"] == 1
        assert a.daemon.peering._dialable(found) == found  # through Tor's SOCKS port it is
    finally:
        for node in reversed(nodes):
            await node.stop()
        swarm.close()
