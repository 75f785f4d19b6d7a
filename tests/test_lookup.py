"""The iterative lookup state machine on its own: no node, no network."""

from __future__ import annotations

import random

from btchat.dht.ids import NodeInfo, distance
from btchat.dht.lookup import MAX_CANDIDATES, MAX_QUERIES, Lookup, State

TARGET = b"\x80" + b"\x00" * 19


def nodes(n: int, seed: int = 1) -> list[NodeInfo]:
    rng = random.Random(seed)
    return [NodeInfo(rng.randbytes(20), ("127.0.0.1", 1000 + i)) for i in range(n)]


def test_alpha_bounds_queries_in_flight() -> None:
    lookup = Lookup(TARGET, nodes(20), k=8, alpha=3)
    first = lookup.next_queries()
    assert len(first) == 3
    assert lookup.next_queries() == []  # still three in flight
    lookup.on_response(first[0].addr, first[0].node_id or b"", [])
    assert len(lookup.next_queries()) == 1


def test_queries_go_to_the_closest_first() -> None:
    seeds = nodes(20)
    lookup = Lookup(TARGET, seeds, k=8, alpha=3)
    asked = {c.node_id for c in lookup.next_queries()}
    closest = sorted(seeds, key=lambda n: distance(n.node_id, TARGET))[:3]
    assert asked == {n.node_id for n in closest}


def test_converges_when_k_closest_answered() -> None:
    world = nodes(50)
    lookup = Lookup(TARGET, world[:3], k=8, alpha=3)
    while not lookup.done:
        batch = lookup.next_queries()
        assert batch, "stalled before converging"
        for cand in batch:
            lookup.on_response(cand.addr, cand.node_id or b"", world)  # everyone knows all
    best = sorted(world, key=lambda n: distance(n.node_id, TARGET))[:8]
    assert [c.node_id for c in lookup.closest_responded()] == [n.node_id for n in best]


def test_slow_node_frees_its_slot_and_late_answer_still_counts() -> None:
    lookup = Lookup(TARGET, nodes(10), k=8, alpha=1)
    [slow] = lookup.next_queries()
    lookup.on_slow(slow.addr)
    [other] = lookup.next_queries()  # the slow one no longer holds the only slot
    assert other.addr != slow.addr
    lookup.on_response(slow.addr, slow.node_id or b"", [])
    assert slow.state is State.RESPONDED


def test_timeouts_leave_the_convergence_set() -> None:
    lookup = Lookup(TARGET, nodes(4), k=8, alpha=3)
    while not lookup.done:
        for cand in lookup.next_queries():
            lookup.on_timeout(cand.addr)
    assert lookup.timeouts == 4 and lookup.closest_responded() == []


def test_bootstrap_addresses_learn_their_id_from_the_answer() -> None:
    lookup = Lookup(TARGET, [], bootstrap=[("127.0.0.1", 6881)], own_id=b"\x00" * 20)
    [boot] = lookup.next_queries()
    assert boot.node_id is None
    lookup.on_response(boot.addr, b"\x81" * 20, nodes(5))
    assert boot.node_id == b"\x81" * 20 and boot.state is State.RESPONDED


def test_answer_with_a_different_id_is_not_trusted() -> None:
    seeds = nodes(3)
    lookup = Lookup(TARGET, seeds, k=8, alpha=3)
    cand = lookup.next_queries()[0]
    lookup.on_response(cand.addr, b"\xee" * 20, nodes(5, seed=2))
    assert cand.state is State.FAILED
    assert len(lookup._by_addr) > 3  # its contacts were still used


def test_a_liar_flooding_contacts_is_bounded() -> None:
    lookup = Lookup(TARGET, nodes(3), k=8, alpha=3)
    cand = lookup.next_queries()[0]
    lookup.on_response(cand.addr, cand.node_id or b"", nodes(5000, seed=9))
    assert len(lookup._sorted) <= MAX_CANDIDATES + 3


def test_query_ceiling_ends_an_endless_walk() -> None:
    rng = random.Random(4)
    lookup = Lookup(TARGET, nodes(8), k=8, alpha=3)
    while not lookup.done:
        batch = lookup.next_queries()
        if not batch:
            break
        for cand in batch:  # every answer names fresh, ever closer fake nodes
            fresh = [
                NodeInfo(TARGET[:1] + rng.randbytes(19), ("10.0.0.1", rng.randrange(1, 65535)))
                for _ in range(8)
            ]
            lookup.on_response(cand.addr, cand.node_id or b"", fresh)
    assert lookup.queries_sent <= MAX_QUERIES + 3


def test_own_id_is_never_a_candidate() -> None:
    me = NodeInfo(b"\x80" * 20, ("127.0.0.1", 1))
    lookup = Lookup(TARGET, [me, *nodes(3)], own_id=me.node_id)
    assert all(c.node_id != me.node_id for c in lookup.next_queries())
