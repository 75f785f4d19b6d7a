"""Tests for the BEP 5 routing table (sans-I/O: explicit ``now``, seeded RNG, no sleeps)."""

from __future__ import annotations

import itertools
import json
import math
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from btchat.dht.ids import ID_BYTES, NodeInfo, distance
from btchat.dht.routing import (
    GOOD_WINDOW,
    ID_BITS,
    MAX_BUCKETS,
    MAX_FAILS,
    PING_BACKOFF,
    REFRESH_INTERVAL,
    K,
    RoutingTable,
)

ZERO = bytes(ID_BYTES)


def rand_id(rng: random.Random) -> bytes:
    return rng.randbytes(ID_BYTES)


def id_with_cpl(own: bytes, cpl: int, rng: random.Random) -> bytes:
    """A random ID sharing exactly ``cpl`` leading bits with ``own``."""
    own_int = int.from_bytes(own, "big")
    free = ID_BITS - cpl - 1
    value = (((own_int >> free) ^ 1) << free) | rng.getrandbits(free)
    return value.to_bytes(ID_BYTES, "big")


def node(node_id: bytes, port: int) -> NodeInfo:
    return NodeInfo(node_id, ("127.0.0.1", port))


def make_table(
    own: bytes = ZERO, *, seed: int = 1, k: int = K, replacement_size: int = K, now: float = 0.0
) -> RoutingTable:
    return RoutingTable(own, random.Random(seed), k=k, replacement_size=replacement_size, now=now)


def fill_far_bucket(table: RoutingTable, rng: random.Random, now: float = 0.0) -> list[NodeInfo]:
    """Fill bucket 0 (IDs differing from own_id in the top bit) with k good nodes.

    A (k+1)-th node then splits the own bucket once, so bucket 0 is full and can no
    longer split; that extra node is returned last.
    """
    nodes = [node(id_with_cpl(table.own_id, 0, rng), 10_000 + i) for i in range(table.k + 1)]
    for n in nodes:
        assert table.heard_from(n, now, responded=True) == []
    assert table.bucket_count == 2
    assert len(table.bucket_nodes(0)) == table.k
    return nodes


def in_bucket(table: RoutingTable, index: int, node_id: bytes) -> bool:
    low, high = table.bucket_range(index)
    return low <= int.from_bytes(node_id, "big") < high


# ---------------------------------------------------------------- insertion / splitting


def test_own_id_and_malformed_ids_are_never_inserted() -> None:
    own = random.Random(5).randbytes(ID_BYTES)
    table = make_table(own)
    assert table.heard_from(node(own, 1), 0.0, responded=True) == []
    assert table.heard_from(node(own[:-1], 2), 0.0, responded=True) == []
    assert table.heard_from(node(own + b"\x00", 3), 0.0, responded=True) == []
    assert table.heard_from(NodeInfo("x" * 20, ("127.0.0.1", 4)), 0.0, responded=True) == []  # type: ignore[arg-type]
    assert len(table) == 0
    assert table.get(own) is None
    assert table.closest(own) == []


def test_constructor_rejects_bad_own_id() -> None:
    with pytest.raises(ValueError):
        RoutingTable(b"short", random.Random(0))


@pytest.mark.parametrize("n", [50, 500, 5000])
def test_many_random_ids_split_correctly(n: int) -> None:
    rng = random.Random(n)
    own = rand_id(rng)
    table = make_table(own)
    for i in range(n):
        table.heard_from(node(rand_id(rng), 1000 + i), 0.0, responded=True)

    sizes = table.bucket_sizes()
    assert all(s <= K for s in sizes)
    assert sum(sizes) == len(table) == len(list(table))
    # Roughly one full bucket per halving of the ID space until fewer than k remain.
    expected = K * math.log2(n / K)
    assert expected - 2 * K <= len(table) <= expected + 3 * K, (len(table), expected)
    # Every entry sits in the bucket whose range covers it, own_id is in the last one.
    for i in range(table.bucket_count):
        for info in table.bucket_nodes(i):
            assert in_bucket(table, i, info.node_id)
    assert in_bucket(table, table.bucket_count - 1, own)
    # The ranges tile the whole 160-bit space.
    ranges = sorted(table.bucket_range(i) for i in range(table.bucket_count))
    assert ranges[0][0] == 0 and ranges[-1][1] == 1 << ID_BITS
    assert all(a[1] == b[0] for a, b in itertools.pairwise(ranges))


def test_only_own_bucket_splits_and_at_most_160_buckets() -> None:
    rng = random.Random(3)
    own = rand_id(rng)
    table = make_table(own, k=1)
    for cpl in range(ID_BITS):
        table.heard_from(node(id_with_cpl(own, cpl, rng), 2000 + cpl), 0.0, responded=True)
    assert table.bucket_count == MAX_BUCKETS
    assert len(table) == ID_BITS
    assert table.bucket_sizes() == [1] * MAX_BUCKETS
    # More nodes at any depth only reach replacement caches; no further splits.
    for cpl in range(ID_BITS):
        table.heard_from(node(id_with_cpl(own, cpl, rng), 3000 + cpl), 0.0, responded=True)
    assert table.bucket_count == MAX_BUCKETS
    assert len(table) == ID_BITS


def test_far_bucket_does_not_split() -> None:
    rng = random.Random(4)
    table = make_table()
    nodes = fill_far_bucket(table, rng)
    # The (k+1)-th far node waits in the replacement cache; the table did not grow.
    assert table.get(nodes[-1].node_id) is None
    assert nodes[-1] in table.replacements()
    for _ in range(20):
        table.heard_from(
            node(id_with_cpl(ZERO, 0, rng), rng.randrange(20_000, 60_000)), 0.0, responded=True
        )
    assert table.bucket_count == 2
    assert table.bucket_sizes() == [K, 0]
    assert len(table.replacements()) == K  # replacement cache is bounded


# ------------------------------------------------------------------------- closest()

_bits = st.integers(min_value=0, max_value=ID_BITS - 1)


@st.composite
def _scenario(draw: st.DrawFn) -> tuple[bytes, list[tuple[bytes, bool]], bytes, int, int]:
    own = draw(st.binary(min_size=ID_BYTES, max_size=ID_BYTES))
    seed = draw(st.integers(min_value=0, max_value=2**32))
    rng = random.Random(seed)
    specs = draw(
        st.lists(st.tuples(st.one_of(st.none(), _bits), st.booleans()), min_size=0, max_size=120)
    )
    ids: list[tuple[bytes, bool]] = []
    for cpl, bad in specs:
        # Mix uniformly random IDs with IDs near own_id so deep buckets get exercised.
        nid = rand_id(rng) if cpl is None else id_with_cpl(own, cpl, rng)
        ids.append((nid, bad))
    target_cpl = draw(st.one_of(st.none(), _bits))
    target = rand_id(rng) if target_cpl is None else id_with_cpl(own, target_cpl, rng)
    if draw(st.booleans()) and ids:
        target = ids[draw(st.integers(0, len(ids) - 1))][0]  # exact hit on an entry
    count = draw(st.integers(min_value=1, max_value=24))
    k = draw(st.sampled_from([1, 2, 8]))
    return own, ids, target, count, k


@settings(max_examples=300, deadline=None)
@given(_scenario())
def test_closest_matches_brute_force(
    scenario: tuple[bytes, list[tuple[bytes, bool]], bytes, int, int],
) -> None:
    own, ids, target, count, k = scenario
    table = make_table(own, k=k)
    for i, (nid, _) in enumerate(ids):
        table.heard_from(node(nid, 1000 + i), 0.0, responded=True)
    for nid, bad in ids:
        if bad:
            for _ in range(MAX_FAILS):
                table.failed(nid, 1.0)

    assert own not in {n.node_id for n in table}
    eligible = [n for n in table if table.status(n.node_id, 1.0) != "bad"]
    expected = sorted(eligible, key=lambda n: distance(n.node_id, target))[:count]
    assert table.closest(target, count) == expected


def test_closest_excludes_bad_and_handles_edge_counts() -> None:
    rng = random.Random(8)
    table = make_table(replacement_size=0)
    nodes = fill_far_bucket(table, rng)
    victim = nodes[0]
    for _ in range(MAX_FAILS):
        table.failed(victim.node_id, 1.0)
    assert table.status(victim.node_id, 1.0) == "bad"
    assert victim not in table.closest(victim.node_id, 100)
    assert len(table.closest(victim.node_id, 100)) == len(table) - 1
    assert table.closest(victim.node_id, 0) == []
    with pytest.raises(ValueError):
        table.closest(b"short")


# ------------------------------------------------------------ good / questionable / bad


def test_responded_versus_queried_only() -> None:
    table = make_table()
    rng = random.Random(9)
    a = node(rand_id(rng), 1001)
    q = node(rand_id(rng), 1002)

    table.heard_from(q, 0.0, responded=False)  # it queried us: inserted, unconfirmed
    assert table.get(q.node_id) == q
    assert table.status(q.node_id, 0.0) == "questionable"
    assert table.questionable(0.0) == [q]
    assert table.good_count(0.0) == 0

    table.heard_from(a, 0.0, responded=True)
    assert table.status(a.node_id, 0.0) == "good"
    assert table.good_count(0.0) == 1

    # More queries from q never make it good: only answering our queries does.
    table.heard_from(q, 10.0, responded=False)
    assert table.status(q.node_id, 10.0) == "questionable"
    table.heard_from(q, 20.0, responded=True)
    assert table.status(q.node_id, 20.0) == "good"

    # After 15 minutes of silence a good node becomes questionable ...
    later = 20.0 + GOOD_WINDOW
    assert table.status(a.node_id, later) == "questionable"
    assert set(table.questionable(later)) == {a, q}
    # ... and a query from a node that has ever responded makes it good again (BEP 5).
    table.heard_from(a, later, responded=False)
    assert table.status(a.node_id, later) == "good"
    assert table.questionable(later) == [q]


def test_single_failure_is_questionable_and_response_clears_it() -> None:
    table = make_table()
    n = node(rand_id(random.Random(10)), 1001)
    table.heard_from(n, 0.0, responded=True)
    table.failed(n.node_id, 1.0)
    assert table.status(n.node_id, 1.0) == "questionable"
    table.heard_from(n, 2.0, responded=True)
    assert table.status(n.node_id, 2.0) == "good"
    table.failed(n.node_id, 3.0)
    table.failed(n.node_id, 4.0)
    assert table.status(n.node_id, 4.0) == "bad"
    table.heard_from(n, 5.0, responded=False)  # a query does not rehabilitate it
    assert table.status(n.node_id, 5.0) == "bad"
    table.heard_from(n, 6.0, responded=True)
    assert table.status(n.node_id, 6.0) == "good"
    table.failed(b"\x01" * ID_BYTES, 7.0)  # unknown: ignored


def test_ping_before_evict_then_replacement_takes_over() -> None:
    rng = random.Random(11)
    table = make_table()
    nodes = fill_far_bucket(table, rng, now=0.0)
    bucket = nodes[:K]
    # Bucket full of good nodes: the newcomer is only cached, nothing to ping.
    assert table.bucket_nodes(0) == bucket

    # 15 minutes later all are questionable; a newcomer asks for them to be pinged,
    # least recently seen first.
    table.heard_from(bucket[3], 1.0, responded=True)  # most recently seen of the bucket
    t = 1.0 + GOOD_WINDOW
    newcomer = node(id_with_cpl(ZERO, 0, rng), 20_001)
    pings = table.heard_from(newcomer, t, responded=True)
    assert set(pings) == set(bucket)
    assert pings[-1] == bucket[3]
    assert table.get(newcomer.node_id) is None
    assert newcomer in table.replacements()

    # While those pings are outstanding another newcomer does not re-trigger them.
    newcomer2 = node(id_with_cpl(ZERO, 0, rng), 20_002)
    assert table.heard_from(newcomer2, t + 1, responded=True) == []

    # Most of them answer and become good again.
    for n in bucket[1:]:
        table.heard_from(n, t + 2, responded=True)
    # The first one times out once: BEP 5 says try once more, so it is not evicted yet
    # and the next newcomer asks for it (and only it) to be pinged again.
    victim = bucket[0]
    table.failed(victim.node_id, t + 3)
    assert table.get(victim.node_id) == victim
    newcomer3 = node(id_with_cpl(ZERO, 0, rng), 20_003)
    assert table.heard_from(newcomer3, t + 4, responded=False) == [victim]
    # Second timeout in a row: bad, replaced by the most recently seen replacement.
    table.failed(victim.node_id, t + 5)
    assert table.get(victim.node_id) is None
    assert table.get(newcomer3.node_id) == newcomer3
    assert newcomer3 not in table.replacements()
    assert len(table.bucket_nodes(0)) == K


def test_ping_backoff_expires() -> None:
    rng = random.Random(12)
    table = make_table()
    fill_far_bucket(table, rng, now=0.0)
    t = float(GOOD_WINDOW)
    assert len(table.heard_from(node(id_with_cpl(ZERO, 0, rng), 20_001), t, responded=True)) == K
    assert table.heard_from(node(id_with_cpl(ZERO, 0, rng), 20_002), t + 1, responded=True) == []
    again = table.heard_from(
        node(id_with_cpl(ZERO, 0, rng), 20_003), t + PING_BACKOFF, responded=True
    )
    assert len(again) == K


def test_bad_node_is_replaced_immediately() -> None:
    rng = random.Random(13)
    table = make_table(replacement_size=0)
    nodes = fill_far_bucket(table, rng, now=0.0)
    victim = nodes[2]
    for _ in range(MAX_FAILS):
        table.failed(victim.node_id, 1.0)
    # No replacement was cached, so the bad node keeps its slot for now.
    assert table.get(victim.node_id) == victim
    newcomer = node(id_with_cpl(ZERO, 0, rng), 20_001)
    assert table.heard_from(newcomer, 2.0, responded=False) == []
    assert table.get(victim.node_id) is None
    assert table.get(newcomer.node_id) == newcomer
    assert len(table.bucket_nodes(0)) == K


def test_remove_promotes_a_replacement() -> None:
    rng = random.Random(14)
    table = make_table()
    nodes = fill_far_bucket(table, rng)
    cached = nodes[-1]
    table.remove(nodes[0].node_id)
    assert table.get(nodes[0].node_id) is None
    assert table.get(cached.node_id) == cached
    assert table.replacements() == []
    table.remove(cached.node_id)
    table.remove(b"\x07" * ID_BYTES)  # unknown: ignored
    assert len(table) == K - 1


# --------------------------------------------------------------------- address changes


def test_same_address_new_id_replaces_entry() -> None:
    rng = random.Random(15)
    table = make_table()
    old = node(rand_id(rng), 4000)
    table.heard_from(old, 0.0, responded=True)
    restarted = node(rand_id(rng), 4000)
    table.heard_from(restarted, 1.0, responded=False)
    assert table.get(old.node_id) is None
    assert table.get(restarted.node_id) == restarted
    assert len(table) == 1


def test_same_address_new_id_replaces_cached_entry() -> None:
    rng = random.Random(16)
    table = make_table()
    nodes = fill_far_bucket(table, rng)
    cached = nodes[-1]
    restarted = node(id_with_cpl(ZERO, 0, rng), cached.addr[1])
    table.heard_from(restarted, 1.0, responded=True)
    assert table.replacements() == [restarted]


def test_same_id_new_address() -> None:
    rng = random.Random(17)
    table = make_table()
    nid = rand_id(rng)
    table.heard_from(node(nid, 5000), 0.0, responded=True)
    # A good entry keeps its address: a query (forgeable source) cannot move it, nor can
    # a response while it is still good.
    table.heard_from(node(nid, 5001), 1.0, responded=False)
    table.heard_from(node(nid, 5001), 1.0, responded=True)
    assert table.get(nid) == node(nid, 5000)
    # Once it is no longer good, a response from the new endpoint moves it.
    table.failed(nid, 2.0)
    table.heard_from(node(nid, 5001), 3.0, responded=True)
    assert table.get(nid) == node(nid, 5001)
    assert table.status(nid, 3.0) == "good"
    # The old endpoint is free again for another ID.
    other = node(rand_id(rng), 5000)
    table.heard_from(other, 4.0, responded=True)
    assert table.get(nid) == node(nid, 5001)
    assert table.get(other.node_id) == other


# ----------------------------------------------------------------------------- refresh


def test_refresh_targets_cover_stale_buckets_once_per_interval() -> None:
    rng = random.Random(18)
    own = rand_id(rng)
    table = make_table(own, seed=99)
    for i in range(300):
        table.heard_from(node(rand_id(rng), 1000 + i), 0.0, responded=True)
    n = table.bucket_count
    assert n > 3

    assert table.refresh_targets(REFRESH_INTERVAL - 1) == []
    table.touch(id_with_cpl(own, 1, rng), REFRESH_INTERVAL - 1)  # a lookup into bucket 1

    targets = table.refresh_targets(float(REFRESH_INTERVAL))
    assert len(targets) == n - 1
    stale = [i for i in range(n) if i != 1]
    for i, tgt in zip(stale, targets, strict=True):
        assert len(tgt) == ID_BYTES
        assert in_bucket(table, i, tgt)

    # Nothing more until another 15 minutes have passed ...
    assert table.refresh_targets(REFRESH_INTERVAL + 1.0) == []
    assert table.refresh_targets(2.0 * REFRESH_INTERVAL - 2) == []
    later = table.refresh_targets(2.0 * REFRESH_INTERVAL - 1)
    assert [i for i in range(n) if any(in_bucket(table, i, t) for t in later)] == [1]
    assert len(table.refresh_targets(2.0 * REFRESH_INTERVAL)) == n - 1


def test_refresh_target_of_empty_table_is_anywhere() -> None:
    table = make_table(b"\xff" * ID_BYTES, now=100.0)
    assert table.refresh_targets(100.0 + REFRESH_INTERVAL - 1) == []
    (target,) = table.refresh_targets(100.0 + REFRESH_INTERVAL)
    assert len(target) == ID_BYTES


def test_response_counts_as_bucket_change() -> None:
    rng = random.Random(19)
    table = make_table()
    n = node(rand_id(rng), 1000)
    table.heard_from(n, 0.0, responded=True)
    table.heard_from(n, 500.0, responded=True)
    assert table.refresh_targets(REFRESH_INTERVAL) == []
    # A mere query from a node already in the bucket is not a change.
    table.heard_from(n, 600.0, responded=False)
    assert len(table.refresh_targets(500.0 + REFRESH_INTERVAL)) == 1


# ------------------------------------------------------------------------- persistence


def test_state_roundtrip_through_json() -> None:
    rng = random.Random(20)
    own = rand_id(rng)
    table = make_table(own)
    for i in range(200):
        table.heard_from(node(rand_id(rng), 1000 + i), 0.0, responded=True)
    table.heard_from(node(rand_id(rng), 999), 0.0, responded=False)

    state = json.loads(json.dumps(table.to_state()))
    restored = RoutingTable.from_state(state, random.Random(0), now=50.0)
    assert restored.own_id == own
    assert set(restored) == set(table)
    # Nothing heard from them in this run: all questionable, none good.
    assert restored.good_count(50.0) == 0
    assert set(restored.questionable(50.0)) == set(table)
    assert restored.closest(own, 16) == table.closest(own, 16)


def test_to_state_leaves_out_bad_nodes() -> None:
    rng = random.Random(22)
    table = make_table(replacement_size=0)
    nodes = fill_far_bucket(table, rng)
    for _ in range(MAX_FAILS):
        table.failed(nodes[0].node_id, 1.0)
    restored = RoutingTable.from_state(table.to_state(), random.Random(0), now=2.0)
    assert set(restored) == set(nodes[1:K])


def test_from_state_tolerates_garbage() -> None:
    own = bytes(range(20))
    good_id = b"\xaa" * ID_BYTES
    state = {
        "own_id": own.hex(),
        "nodes": [
            {"id": good_id.hex(), "addr": ["127.0.0.1", 6881]},
            {"id": (b"\xbb" * ID_BYTES).hex(), "addr": ["::1", 6882]},
            "junk",
            None,
            {"id": "zz" * ID_BYTES, "addr": ["127.0.0.1", 1]},
            {"id": "ab" * 19, "addr": ["127.0.0.1", 2]},
            {"id": 123, "addr": ["127.0.0.1", 3]},
            {"id": ("cc" * ID_BYTES), "addr": ["127.0.0.1", 0]},
            {"id": ("cd" * ID_BYTES), "addr": ["127.0.0.1", 70000]},
            {"id": ("ce" * ID_BYTES), "addr": ["127.0.0.1", True]},
            {"id": ("cf" * ID_BYTES), "addr": ["127.0.0.1", "80"]},
            {"id": ("d0" * ID_BYTES), "addr": ["not an ip", 80]},
            {"id": ("d1" * ID_BYTES), "addr": ["127.0.0.1", 80, 1]},
            {"id": ("d2" * ID_BYTES), "addr": "127.0.0.1:80"},
            {"id": ("d3" * ID_BYTES)},
            {"id": own.hex(), "addr": ["127.0.0.1", 7000]},
        ],
    }
    table = RoutingTable.from_state(state, random.Random(1), now=0.0)
    assert table.own_id == own
    assert {n.node_id for n in table} == {good_id, b"\xbb" * ID_BYTES}

    for garbage in (None, 42, "x", [], {}, {"own_id": "nothex"}, {"own_id": own.hex(), "nodes": 5}):
        t = RoutingTable.from_state(garbage, random.Random(2), now=0.0)
        assert len(t.own_id) == ID_BYTES
        assert len(t) == 0


def test_with_own_id_keeps_nodes_and_liveness() -> None:
    rng = random.Random(21)
    # Caches big enough that the re-layout cannot overflow them and drop anyone.
    table = make_table(rand_id(rng), replacement_size=40)
    for i in range(40):
        table.heard_from(node(rand_id(rng), 1000 + i), 0.0, responded=i % 2 == 0)
    before = set(table) | set(table.replacements())
    member = next(iter(table))

    new_id = member.node_id  # worst case: our new ID equals a known node's ID
    moved = table.with_own_id(new_id, now=1.0)
    assert moved.own_id == new_id
    assert table.own_id != new_id  # the original is untouched
    after = set(moved) | set(moved.replacements())
    assert after == before - {member}
    assert all(s <= K for s in moved.bucket_sizes())
    for n in moved:
        # Even ports answered our queries (good); odd ones only queried us.
        assert (moved.status(n.node_id, 1.0) == "good") == (n.addr[1] % 2 == 0)


_op = st.tuples(
    st.sampled_from(["response", "query", "fail", "remove", "touch", "refresh"]),
    st.integers(min_value=0, max_value=40),  # node ID from a small pool (repeats matter)
    st.integers(min_value=0, max_value=12),  # port from a small pool (restarts matter)
    st.integers(min_value=0, max_value=300),  # seconds to advance the clock
)


@settings(max_examples=200, deadline=None)
@given(st.lists(_op, max_size=300), st.sampled_from([1, 2, 8]), st.integers(0, 3))
def test_random_operations_keep_the_table_consistent(
    ops: list[tuple[str, int, int, int]], k: int, repl: int
) -> None:
    rng = random.Random(0)
    own = rand_id(rng)
    # The ID pool mixes far and near IDs (and own_id itself) so buckets split and fill.
    pool = [own] + [
        id_with_cpl(own, rng.randrange(6), rng) if j % 3 else rand_id(rng) for j in range(40)
    ]
    table = make_table(own, k=k, replacement_size=repl)
    now = 0.0
    for kind, idx, port, dt in ops:
        now += dt
        nid = pool[idx]
        if kind in ("response", "query"):
            for p in table.heard_from(node(nid, port), now, responded=kind == "response"):
                assert table.get(p.node_id) == p
        elif kind == "fail":
            table.failed(nid, now)
        elif kind == "remove":
            table.remove(nid)
        elif kind == "touch":
            table.touch(nid, now)
        else:
            for tgt in table.refresh_targets(now):
                assert len(tgt) == ID_BYTES

        entries = list(table)
        cached = table.replacements()
        ids = [n.node_id for n in entries]
        assert len(ids) == len(set(ids)) == len(table) == sum(table.bucket_sizes())
        assert own not in ids
        assert all(table.get(n.node_id) == n for n in entries)
        assert all(s <= k for s in table.bucket_sizes())
        assert len(cached) <= repl * table.bucket_count
        assert not {n.node_id for n in cached} & set(ids)
        addrs = [n.addr for n in entries + cached]
        assert len(addrs) == len(set(addrs))  # one ID per endpoint
        for i in range(table.bucket_count):
            assert all(in_bucket(table, i, n.node_id) for n in table.bucket_nodes(i))


def test_own_id_property_is_read_only() -> None:
    table = make_table()
    with pytest.raises(AttributeError):
        table.own_id = b"\x01" * ID_BYTES  # type: ignore[misc]


def _benchmark(calls: int = 100_000, size: int = 300) -> None:
    """Microbenchmark: ``calls`` closest() calls on a table of about ``size`` nodes.

    The table has the shape of a real one: every bucket full (k IDs per common
    prefix length with own_id), which is what a node sees in a large network.
    A naive full sort over all entries is timed alongside for comparison.
    """
    import time

    rng = random.Random(0)
    table = make_table(rand_id(rng))
    port = 1000
    for cpl in range(math.ceil(size / K)):
        for _ in range(K):
            table.heard_from(node(id_with_cpl(table.own_id, cpl, rng), port), 0.0, responded=True)
            port += 1
    targets = [rand_id(rng) for _ in range(1000)]

    start = time.perf_counter()
    for j in range(calls):
        table.closest(targets[j % 1000])
    elapsed = time.perf_counter() - start
    print(
        f"closest(): {calls} calls on {len(table)} nodes / {table.bucket_count} buckets: "
        f"{elapsed:.3f} s ({elapsed / calls * 1e6:.2f} us/call, {calls / elapsed:,.0f}/s)"
    )

    entries = list(table)
    start = time.perf_counter()
    for j in range(calls // 10):
        t = targets[j % 1000]
        sorted(entries, key=lambda n: distance(n.node_id, t))[:K]
    naive = (time.perf_counter() - start) * 10
    print(f"naive full sort, same table: ~{naive:.3f} s per {calls} calls (for comparison)")


if __name__ == "__main__":
    _benchmark()


# ------------------------------------------------------------- one entry per public IP


def test_a_public_ip_holds_one_entry_whatever_its_ports_and_ids() -> None:
    # Regression: a node behind a symmetric NAT reaches us from a new port for every
    # mapping, and after its BEP 42 ID change under a new ID too; each became another
    # entry (the NAT lab saw one node under up to 34 ports in a 16-node swarm).
    rng = random.Random(7)
    table = make_table(rand_id(rng))
    ip = "203.0.113.104"
    ids = [rand_id(rng) for _ in range(6)]
    for i, node_id in enumerate(ids):
        table.heard_from(NodeInfo(node_id, (ip, 40_000 + i)), float(i), responded=True)
    held = [n for n in table if n.addr[0] == ip]
    assert held == [NodeInfo(ids[-1], (ip, 40_005))]  # the latest to answer stands for it
    # The same ID from yet another port (a new NAT mapping) moves, it does not add.
    table.heard_from(NodeInfo(ids[-1], (ip, 40_100)), 10.0 + GOOD_WINDOW, responded=True)
    assert [n for n in table if n.addr[0] == ip] == [NodeInfo(ids[-1], (ip, 40_100))]


def test_a_query_from_another_id_at_a_held_ip_does_not_evict_the_proven_node() -> None:
    rng = random.Random(8)
    table = make_table(rand_id(rng))
    good = NodeInfo(rand_id(rng), ("198.51.100.9", 6881))
    table.heard_from(good, 0.0, responded=True)
    # A query's source address can be forged: it must not push out a node that answered.
    table.heard_from(NodeInfo(rand_id(rng), ("198.51.100.9", 7000)), 1.0, responded=False)
    assert list(table) == [good]


def test_local_networks_may_hold_many_nodes_per_ip() -> None:
    rng = random.Random(9)
    table = make_table(rand_id(rng))
    for ip in ("127.0.0.1", "192.168.1.10", "10.0.0.2"):
        for port in range(3):
            table.heard_from(NodeInfo(rand_id(rng), (ip, 6881 + port)), 0.0, responded=True)
    assert len(table) == 9


def test_a_saved_table_with_several_entries_per_ip_restores_one() -> None:
    rng = random.Random(10)
    own = rand_id(rng)
    state = {
        "own_id": own.hex(),
        "nodes": [{"id": rand_id(rng).hex(), "addr": ["203.0.113.7", 6881 + i]} for i in range(4)],
    }
    table = RoutingTable.from_state(state, random.Random(1), 0.0)
    assert len(table) == 1
    moved = table.with_own_id(rand_id(rng), 1.0)
    assert len(moved) == 1
