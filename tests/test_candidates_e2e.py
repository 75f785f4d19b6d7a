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
from collections.abc import Iterator
from pathlib import Path

import pytest
from test_messenger_e2e import Person, base_env, befriend, run_sandbox, wait_for

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
