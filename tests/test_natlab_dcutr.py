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

import statistics
from collections.abc import Iterator

import pytest
from natlab.lab import Lab, NatType, lab_or_skip
from natlab.punch import time_upgrade

pytestmark = pytest.mark.slow

PR = NatType.PORT_RESTRICTED
#: Tries with the upgrade (each a fresh swarm and fresh nodes).
TRIES = 3


@pytest.fixture(scope="module")
def lab() -> Iterator[Lab]:
    with lab_or_skip(nats=(PR,), seconds=(PR,)) as built:
        yield built


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


async def test_the_upgrade_is_faster_than_waiting_for_the_rendezvous(lab: Lab) -> None:
    """Once relayed the rendezvous is healed (the silent side announces again): without
    the upgrade the next lookup round finds the path; with it, the relayed session did."""
    rounds, upgrades = [], []
    for seed in range(TRIES):
        old = await time_upgrade(lab, PR, (PR, 2), upgrade=False, heal=True, seed=20 + seed)
        new = await time_upgrade(lab, PR, (PR, 2), upgrade=True, heal=True, seed=30 + seed)
        print(f"rendezvous only: {old}\nwith the upgrade: {new}")
        assert old.upgrade_time is not None and new.upgrade_time is not None
        assert old.via == new.via == ["udp"] and old.stats == {}
        rounds.append(old.upgrade_time)
        upgrades.append(new.upgrade_time)
    print(
        f"relayed -> direct, {TRIES} tries each (lab rendezvous: rounds 3 s, retries"
        f" <= 2 s): rendezvous only median {statistics.median(rounds):.2f} s"
        f" {[round(t, 2) for t in rounds]}; upgrade median {statistics.median(upgrades):.2f} s"
        f" {[round(t, 2) for t in upgrades]}"
    )
    assert statistics.median(upgrades) < statistics.median(rounds)
