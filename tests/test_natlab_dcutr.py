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
        f"relayed -> direct over {TRIES} tries: median {statistics.median(times):.2f} s,"
        f" all {[round(t, 2) for t in times]}"
    )
