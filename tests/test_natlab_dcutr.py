"""Relayed -> direct across the NAT lab, coordinated over the relayed session itself.

Two port-restricted homes (NAT theory lets them punch) and the public host, their mutual
contact. One home announces nothing in the rendezvous, so the other never finds it: the
rendezvous punch only goes one way, the first home's NAT drops it, and the pair ends up
relayed by the public host. Without the upgrade it stays relayed (the rendezvous never
makes the silent side's peer punch back); with it, the two swap addresses over the relay,
punch at once and the direct session replaces the relayed one, whose circuit the relay
releases. Root, iproute2 and nftables, as tests/test_natlab.py.
"""

from __future__ import annotations

import socket
import statistics
from collections.abc import Iterator

import pytest
from natlab.lab import HOME_IP, Lab, NatType, lab_or_skip
from natlab.punch import PUBLIC, time_upgrade

from btchat.node.peering import route_source

pytestmark = pytest.mark.slow

PR = NatType.PORT_RESTRICTED
#: Tries with the upgrade (each a fresh swarm and fresh nodes).
TRIES = 3


@pytest.fixture(scope="module")
def lab() -> Iterator[Lab]:
    with lab_or_skip(nats=(PR,), seconds=(PR,)) as built:
        yield built


def test_a_node_bound_to_any_address_knows_its_host_address(lab: Lab) -> None:
    """What a daemon (DHT on 0.0.0.0) offers as its host candidate: the address its
    default route sends from, found without sending a packet."""
    with lab.inside(lab.homes[PR].ns):
        assert route_source(socket.AF_INET) == HOME_IP
        assert route_source(socket.AF_INET6) is None  # no IPv6 route in the lab
    with lab.inside(lab.ns("host")):  # the lab's public host has no default route
        assert route_source(socket.AF_INET) is None


async def test_a_relayed_pair_goes_direct_only_through_the_upgrade(lab: Lab) -> None:
    before = await time_upgrade(lab, PR, (PR, 2), upgrade=False, seed=1, wait=15.0)
    print(f"without the upgrade: {before}")
    assert before.relayed is not None and before.delivered
    assert before.direct is None and all(v.startswith("relay via") for v in before.via)

    times = []
    for seed in range(TRIES):
        after = await time_upgrade(lab, PR, (PR, 2), upgrade=True, seed=10 + seed)
        print(f"with the upgrade: {after}")
        assert after.relayed is not None and after.upgrade_time is not None, after
        assert after.via == ["udp"] and after.delivered
        assert after.circuits_left == 0  # the relay let the circuit go
        assert after.stats["punches"] >= 2  # both sides punched
        times.append(after.upgrade_time)
    print(
        f"relayed -> direct with the upgrade, {TRIES} tries: median"
        f" {statistics.median(times):.2f} s, all {[round(t, 2) for t in times]}"
    )


async def test_a_punch_to_an_address_that_is_not_the_contacts_makes_no_session(
    lab: Lab,
) -> None:
    """The relayed peer claims the public host's address as its own: we punch and dial
    it expecting the peer's device key, the public host cannot read that handshake, no
    session comes up, and we stay relayed."""

    def public_host(nodes):  # type: ignore[no-untyped-def]
        assert nodes[PUBLIC].dht is not None
        return [nodes[PUBLIC].dht.addr]

    lied = await time_upgrade(
        lab, PR, (PR, 2), upgrade=True, b_claims=public_host, seed=40, wait=8.0
    )
    print(f"a lying peer: {lied}")
    assert lied.relayed is not None and lied.direct is None and lied.delivered
    assert all(v.startswith("relay via") for v in lied.via)
    assert lied.stats["punches"] >= 2 and lied.public_sessions == 2  # a's and b's, no more
    assert lied.public_admitted >= 1  # the dials meant for b got there, and no further
