"""Two daemons whose only common family is IPv6 get a session over ::1 (BEP 32 rendezvous).

The sandbox swarm is dual-stack (127.0.0.1 and ::1). Alice is dual-stack too; Bob runs
``--no-ipv4``: his DHT node takes part in the IPv6 DHT only, so he announces (and looks
up) nothing over IPv4. Alice therefore finds Bob only at his IPv6 address, and Bob finds
Alice only at hers: the session can only come up over IPv6, and ``contacts`` says so.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from test_messenger_e2e import Person, base_env, befriend, run_sandbox, wait_for

from btchat.net.dht_service import has_ipv6

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not has_ipv6(), reason="this host has no IPv6 loopback"),
]


@pytest.fixture
def dual_sandbox(tmp_path: Path) -> Iterator[tuple[str, str, dict[str, str]]]:
    env = base_env(tmp_path)
    with run_sandbox(env, "--ipv6") as started:
        assert started["bootstrap6"].startswith("[::1]:")
        yield started["bootstrap"], started["bootstrap6"], env


def test_ipv6_only_contact_gets_a_session_over_ipv6(
    dual_sandbox: tuple[str, str, dict[str, str]], tmp_path: Path
) -> None:
    bootstrap, bootstrap6, env = dual_sandbox
    alice = Person("alice", tmp_path, env, bootstrap)
    bob = Person("bob", tmp_path, env, bootstrap)
    try:
        alice.up("--bootstrap", bootstrap6)
        bob.up("--bootstrap", bootstrap6, "--no-ipv4")
        status = bob.cli("status")["dht"]
        assert status["addr"].startswith("::1:") and status["addr6"].startswith("[::1]:")
        assert alice.cli("status")["dht"]["addr6"].startswith("[::1]:")
        befriend(alice, bob)
        alice.cli("send", "bob", "hello over six")
        wait_for(lambda: bob.texts("alice") == ["hello over six"], 60, "bob to receive")
        bob.cli("send", "alice", "six back")
        wait_for(lambda: alice.texts("bob") == ["hello over six", "six back"], 30, "alice")
        for me, other in ((alice, "bob"), (bob, "alice")):
            row = {c["name"]: c for c in me.cli("contacts")["contacts"]}[other]
            assert row["online"] and row["path"], row
            assert all(p.endswith("over IPv6") for p in row["path"]), row["path"]
        assert bob.cli("status")["dht"]["nodes6"] > 0
    finally:
        alice.kill()
        bob.kill()
