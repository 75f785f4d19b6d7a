"""Sessions across the NAT lab over punched UDP: every pair of placements, both ways.

Two homes of each NAT type, a public host and a sandbox DHT on the lab's internet. Each
pair that NAT theory lets punch (``natlab.punch.expected``) must get a session and
deliver a message each way; the two pairs that need a relay (symmetric with
port-restricted or symmetric) get one relayed by the public host, their mutual contact,
and deliver both ways through it. Root, iproute2 and nftables, as
tests/test_natlab.py; skipped without them, failing under CI. Last, the whole daemon:
two ``btchat up`` processes in port-restricted homes chat.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Iterator
from pathlib import Path

import pytest
from natlab.lab import PUBLIC_ADDRS, Lab, NatType, kill_all, lab_or_skip
from natlab.punch import PUBLIC, expected, matrix_pairs, run_pairs

from btchat.sandbox import start_swarm

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


async def test_every_pair_delivers_punched_or_relayed(lab: Lab) -> None:
    outcomes = await run_pairs(lab, matrix_pairs(), timeout=60.0)
    for o in outcomes:
        print(f"{o.label}: setup {o.setup} s via {o.via}, delivered {o.delivered}")
    for o in outcomes:
        if expected(o.a, o.b):
            assert o.setup is not None and o.delivered, o.label
            if PUBLIC not in (o.a, o.b):
                assert o.via == ["udp"], o.label  # homes take no unasked TCP: punched
        else:
            # No direct path: the public host, a contact of both, relays the session.
            assert o.setup is not None and o.delivered, o.label
            assert o.via and all(v.startswith("relay via ") for v in o.via), o.label


async def test_two_daemons_behind_port_restricted_nats_chat(lab: Lab, tmp_path: Path) -> None:
    """The whole daemon (``btchat up`` processes in two port-restricted homes), a sandbox
    DHT on the lab's internet: they find each other and chat over a punched session."""
    from test_messenger_e2e import Person, base_env, cli, online, texts, until_true

    with lab.inside(lab.ns("pub")):
        swarm = await start_swarm(16, seed=7, hosts=PUBLIC_ADDRS[:2])
    env = base_env(tmp_path)
    bootstrap = "{}:{}".format(*swarm.services[0].addr)
    homes = {
        "alice": lab.homes[NatType.PORT_RESTRICTED],
        "bob": lab.seconds[NatType.PORT_RESTRICTED],
    }
    people: dict[str, Person] = {}

    try:
        for name, home in homes.items():
            wrap = ["ip", "netns", "exec", home.ns]
            people[name] = await asyncio.to_thread(Person, name, tmp_path, env, bootstrap, wrap)
            await asyncio.to_thread(people[name].up, "--host", home.ip)
        alice, bob = people["alice"], people["bob"]
        await cli(alice, "contact", "add", bob.id, "bob")
        await cli(bob, "contact", "add", alice.id, "alice")
        # A home takes no unasked TCP: a session between them can only be punched UDP.
        await until_true(lambda: online(alice, "bob"), 90, "alice sees bob online")
        await until_true(lambda: online(bob, "alice"), 30, "bob sees alice online")
        await cli(alice, "send", "bob", "hello through two NATs")
        await until_true(
            lambda: _eq(texts(bob, "alice"), ["hello through two NATs"]), 30, "bob receives"
        )
        await cli(bob, "send", "alice", "and back")
        await until_true(
            lambda: _eq(texts(alice, "bob"), ["hello through two NATs", "and back"]),
            30,
            "alice receives",
        )
    finally:
        await kill_all(p.proc for p in people.values())
        swarm.close()


async def _eq(got: Awaitable[list[str]], want: list[str]) -> bool:
    return await got == want
