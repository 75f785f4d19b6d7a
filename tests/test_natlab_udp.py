"""Sessions across the NAT lab over punched UDP: every pair of placements, both ways.

Two homes of each NAT type, a public host and a sandbox DHT on the lab's internet. Each
pair that NAT theory lets punch (``natlab.punch.expected``) must get a session and
deliver a message each way; the two pairs that need a relay (symmetric with
port-restricted or symmetric) must not get a direct one. Root, iproute2 and nftables, as
tests/test_natlab.py; skipped without them, failing under CI.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from natlab.lab import Lab, NatType, lab_or_skip
from natlab.punch import PUBLIC, expected, matrix_pairs, run_pairs

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def lab() -> Iterator[Lab]:
    with lab_or_skip(seconds=tuple(NatType)) as built:
        yield built


def test_theory_says_which_pairs_punch() -> None:
    s, pr, ar, fc = (
        NatType.SYMMETRIC,
        NatType.PORT_RESTRICTED,
        NatType.ADDRESS_RESTRICTED,
        NatType.FULL_CONE,
    )
    assert not expected(s, pr) and not expected(s, (s, 2)) and not expected(pr, s)
    assert all(expected(s, x) for x in (fc, ar, PUBLIC))
    assert all(expected(pr, x) for x in (fc, ar, (pr, 2), PUBLIC))
    assert len(matrix_pairs()) == 14


async def test_every_pair_theory_allows_gets_a_session_over_udp(lab: Lab) -> None:
    outcomes = await run_pairs(lab, matrix_pairs(), timeout=60.0)
    for o in outcomes:
        print(f"{o.label}: setup {o.setup} s via {o.via}, delivered {o.delivered}")
    for o in outcomes:
        if expected(o.a, o.b):
            assert o.setup is not None and o.delivered, o.label
            if PUBLIC not in (o.a, o.b):
                assert o.via == ["udp"], o.label  # homes take no unasked TCP: punched
        else:
            assert o.setup is None, o.label  # needs a relay: no direct session
