"""BEP 32 (IPv6) in the sans-I/O DHT node: nodes6, want, IPv6 peers, limits, a mixed swarm."""

from __future__ import annotations

import ipaddress
import random
from typing import Any

import pytest
from harness import raw_query

from btchat.codec.bencode import decode, encode
from btchat.dht import bep42
from btchat.dht.ids import (
    NODE6_BYTES,
    NodeInfo,
    decode_nodes6,
    decode_peers_counted,
    distance,
    encode_nodes,
    encode_nodes6,
    encode_peer,
)
from btchat.dht.node import (
    MAX_PEERS6_PER_RESPONSE,
    MAX_PEERS_PER_DUAL_RESPONSE,
    DhtNode,
    GetPeersResult,
    NodeConfig,
    OperationDone,
)
from btchat.dht.storage import MAX_PEERS_PER_IP
from btchat.sim.dht_swarm import SimSwarm

V4_ASKER = ("127.0.0.1", 4001)
V6_ASKER = ("::1", 4001)
PUBLIC6 = ("2001:db8::77", 6881)  # documentation prefix, not exempt from BEP 42


def make(seed: int, *, ipv4: bool = True, ipv6: bool = False, **cfg: Any) -> DhtNode:
    return DhtNode(NodeConfig(ipv4=ipv4, ipv6=ipv6, **cfg), rng=random.Random(seed), now=0.0)


def fill(node: DhtNode, n: int = 40, seed: int = 9) -> None:
    """Give ``node`` routing contacts in every family it speaks (as if they had answered)."""
    rng = random.Random(seed)
    for i in range(n):
        nid = rng.randbytes(20)
        if 4 in node.tables:
            node._learn(
                NodeInfo(nid, (f"10.0.{i // 200}.{i % 200 + 1}", 6881)), 0.0, responded=True
            )
        if 6 in node.tables:
            node._learn(NodeInfo(nid, (f"fd00::{i + 1:x}", 6881)), 0.0, responded=True)


def node6(i: int, port: int = 6881) -> NodeInfo:
    return NodeInfo(bytes([i]) * 20, (f"2001:db8::{i:x}", port))


# ------------------------------------------------------------------ compact formats


def test_nodes6_roundtrip_and_size() -> None:
    nodes = [node6(i) for i in range(1, 9)]
    blob = encode_nodes6([*nodes, NodeInfo(b"x" * 20, ("10.0.0.1", 1))])  # the IPv4 one is left out
    assert len(blob) == 8 * NODE6_BYTES
    assert decode_nodes6(blob) == (nodes, 0)
    assert encode_nodes(nodes) == b""  # nodes (BEP 5) never carries IPv6 contacts


@pytest.mark.parametrize(
    ("entry", "why"),
    [
        (b"\x01" * 20 + ipaddress.IPv6Address("2001:db8::1").packed + b"\x00\x00", "port 0"),
        (b"\x01" * 20 + bytes(16) + b"\x1a\xe1", "unspecified"),
        (b"\x01" * 20 + ipaddress.IPv6Address("::ffff:1.2.3.4").packed + b"\x1a\xe1", "v4-mapped"),
        (b"\x01" * 17, "truncated"),
    ],
)
def test_malformed_nodes6_entries_are_dropped_and_counted(entry: bytes, why: str) -> None:
    good = encode_nodes6([node6(2)])
    nodes, dropped = decode_nodes6(good + entry)
    assert nodes == [node6(2)], why
    assert dropped == 1, why


def test_hybrid_values_parse_and_bad_entries_count() -> None:
    v4, v6 = encode_peer(("1.2.3.4", 5)), encode_peer(("2001:db8::5", 6))
    mapped = ipaddress.IPv6Address("::ffff:1.2.3.4").packed + b"\x00\x07"
    peers, dropped = decode_peers_counted([v4, v6, b"short", 7, v4[:4] + b"\0\0", mapped])
    assert peers == [("1.2.3.4", 5), ("2001:db8::5", 6)]  # BEP 32: hybrid lists parse
    assert dropped == 4


# ------------------------------------------------------------------ answering: want


def test_dual_stack_answers_what_want_asks_for() -> None:
    node = make(1, ipv6=True)
    fill(node)
    target = {b"target": b"T" * 20}
    both = raw_query(node, V4_ASKER, b"find_node", {**target, b"want": [b"n4", b"n6", b"zz"]})
    assert both is not None and set(both[b"r"]) >= {b"nodes", b"nodes6"}
    assert len(both[b"r"][b"nodes"]) == 8 * 26 and len(both[b"r"][b"nodes6"]) == 8 * 38
    only6 = raw_query(node, V4_ASKER, b"find_node", {**target, b"want": [b"n6"]})
    assert only6 is not None and b"nodes" not in only6[b"r"] and b"nodes6" in only6[b"r"]
    # No want: the family the request came over (BEP 32 "find_nodes and get_peers").
    over6 = raw_query(node, V6_ASKER, b"find_node", target)
    assert over6 is not None and b"nodes" not in over6[b"r"]
    assert all(":" in n.addr[0] for n in decode_nodes6(over6[b"r"][b"nodes6"])[0])
    over4 = raw_query(node, V4_ASKER, b"find_node", target)
    assert over4 is not None and b"nodes6" not in over4[b"r"] and over4[b"r"][b"nodes"]


def test_malformed_want_is_counted_and_treated_as_absent() -> None:
    node = make(1, ipv6=True)
    fill(node)
    reply = raw_query(node, V6_ASKER, b"find_node", {b"target": b"T" * 20, b"want": b"n4"})
    assert reply is not None and b"nodes6" in reply[b"r"] and b"nodes" not in reply[b"r"]
    assert node.stats["rx_bad_want"] == 1


def test_ipv4_only_node_wire_is_unchanged_by_want() -> None:
    node = make(1)
    fill(node)
    target = {b"target": b"T" * 20}
    plain = raw_query(node, V4_ASKER, b"find_node", target)
    for want in ([b"n6"], [b"n4", b"n6"]):
        asked = raw_query(node, V4_ASKER, b"find_node", {**target, b"want": want})
        assert asked == plain  # byte for byte the same answer: nodes, never nodes6
    assert plain is not None and set(plain[b"r"]) == {b"id", b"nodes"}


def test_single_family_nodes_send_no_want_dual_stack_asks_both() -> None:
    for ipv4, ipv6, addr, expect in (
        (True, False, ("10.0.0.9", 6881), None),
        (False, True, ("fd00::9", 6881), None),
        (True, True, ("fd00::9", 6881), [b"n4", b"n6"]),
    ):
        node = make(3, ipv4=ipv4, ipv6=ipv6)
        node.bootstrap([addr], 0.0)
        [(data, dst)] = node.datagrams_to_send()
        assert dst == addr
        assert decode(data)[b"a"].get(b"want") == expect


# ------------------------------------------------------------------ IPv6 peers


def _announce(node: DhtNode, src: tuple[str, int], infohash: bytes, port: int) -> None:
    got = raw_query(node, src, b"get_peers", {b"info_hash": infohash})
    assert got is not None
    done = raw_query(
        node,
        src,
        b"announce_peer",
        {b"info_hash": infohash, b"port": port, b"token": got[b"r"][b"token"]},
    )
    assert done is not None and done[b"y"] == b"r", done


def test_ipv6_announce_is_stored_and_returned_only_over_ipv6() -> None:
    node = make(1, ipv6=True)
    ih = b"I" * 20
    _announce(node, ("2001:db8::a", 7000), ih, 7001)
    _announce(node, ("203.0.113.5", 7000), ih, 7002)
    over6 = raw_query(node, ("2001:db8::b", 7000), b"get_peers", {b"info_hash": ih})
    assert over6 is not None and over6[b"r"][b"values"] == [encode_peer(("2001:db8::a", 7001))]
    over4 = raw_query(
        node, ("203.0.113.6", 7000), b"get_peers", {b"info_hash": ih, b"want": [b"n4", b"n6"]}
    )
    # BEP 32: want governs nodes/nodes6 only; values stay in the family of the request.
    assert over4 is not None and over4[b"r"][b"values"] == [encode_peer(("203.0.113.5", 7002))]
    assert node.peer_stores[6].peer_count() == node.peer_stores[4].peer_count() == 1


def test_ipv6_per_ip_quota_leaves_ipv4_peers_alone() -> None:
    node = make(1, ipv6=True, rate_burst=10_000.0)
    _announce(node, ("203.0.113.5", 7000), b"\x00" * 20, 7002)
    flooder = ("2001:db8::f", 7000)
    for i in range(MAX_PEERS_PER_IP + 5):
        _announce(node, flooder, i.to_bytes(20, "big"), 9000)
    assert node.peer_stores[6].entries_of(flooder[0]) == MAX_PEERS_PER_IP
    assert node.stats["rx_announce_over_quota"] == 5
    assert node.peer_stores[4].peer_count() == 1


@pytest.mark.parametrize(
    ("asker", "peer", "limit"),
    [
        (
            ("2001:db8:ffff:ffff:ffff:ffff:ffff:ffff", 65535),
            "2001:db8:{:x}::1",  # each its own /64
            MAX_PEERS6_PER_RESPONSE,
        ),
        (("203.0.113.250", 65535), "203.0.{}.1", MAX_PEERS_PER_DUAL_RESPONSE),
    ],
)
def test_get_peers_answer_to_dual_stack_asker_fits_bep32_1024_bytes(
    asker: tuple[str, int], peer: str, limit: int
) -> None:
    node = make(1, ipv6=True, rate_burst=10_000.0)
    fill(node)
    ih = b"I" * 20
    for i in range(limit * 3):
        _announce(node, (peer.format(i + 1), 7000), ih, 7001)
    node.datagrams_to_send()
    args = {b"id": b"R" * 20, b"info_hash": ih, b"want": [b"n4", b"n6"]}
    msg = {b"t": b"tid-long", b"y": b"q", b"q": b"get_peers", b"a": args}
    node.receive_datagram(encode(msg), asker, 0.0)
    [(data, _)] = node.datagrams_to_send()
    reply = decode(data)[b"r"]
    assert len(reply[b"values"]) == limit
    assert len(reply[b"nodes"]) == 8 * 26 and len(reply[b"nodes6"]) == 8 * 38
    # BEP 32: "must not send UDP datagrams with a payload larger than 1024 octets".
    assert len(data) <= 1024, len(data)


def test_lookup_collects_ipv6_values_and_counts_bad_ones() -> None:
    node = make(1, ipv4=False, ipv6=True)
    peer = ("2001:db8::1", 6881)
    node._learn(NodeInfo(b"\x07" * 20, peer), 0.0, responded=True)
    op = node.get_peers(b"I" * 20, 0.0)
    [(data, dst)] = node.datagrams_to_send()
    assert dst == peer
    values = [encode_peer(("2001:db8::99", 5000)), b"junk", bytes(18)]
    unspecified = b"\x01" * 20 + bytes(16) + b"\x1a\xe1"
    reply = {
        b"t": decode(data)[b"t"],
        b"y": b"r",
        b"r": {
            b"id": b"\x07" * 20,
            b"token": b"tk",
            b"values": values,
            b"nodes6": unspecified + b"xx",  # a bad entry and a truncated one
        },
    }
    node.receive_datagram(encode(reply), peer, 0.1)
    done = [e for e in iter(node.next_event, None) if isinstance(e, OperationDone)]
    assert [e.op_id for e in done] == [op]
    assert isinstance(done[0].result, GetPeersResult)
    assert done[0].result.peers == [("2001:db8::99", 5000)]
    assert node.stats["rx_bad_values"] == 2
    assert node.stats["rx_bad_nodes6"] == 2


# ------------------------------------------------------------------ BEP 42 over IPv6


def test_bep42_uses_the_ipv6_mask_for_ipv6_contacts() -> None:
    node = make(1, ipv4=False, ipv6=True, enforce_node_id=True)
    bad = NodeInfo(b"\x00" * 20, PUBLIC6)
    good = NodeInfo(bep42.node_id_for_ip(PUBLIC6[0], random.Random(5)), PUBLIC6)
    node._learn(bad, 0.0, responded=True)
    assert node.stats["rx_noncompliant_id"] == 1 and len(node.routing) == 0
    node._learn(good, 0.0, responded=True)
    assert node.routing.get(good.node_id) is not None


def test_ipv4_only_node_ignores_nodes6_in_answers() -> None:
    node = make(1)
    peer = ("10.0.0.7", 6881)
    node._learn(NodeInfo(b"\x07" * 20, peer), 0.0, responded=True)
    node.find_node(b"T" * 20, 0.0)
    [(data, _)] = node.datagrams_to_send()
    reply = {
        b"t": decode(data)[b"t"],
        b"y": b"r",
        b"r": {b"id": b"\x07" * 20, b"nodes": b"", b"nodes6": encode_nodes6([node6(3)]) + b"x"},
    }
    node.receive_datagram(encode(reply), peer, 0.1)
    assert node.datagrams_to_send() == []  # nothing sent to the IPv6 contact
    assert node.stats["rx_bad_nodes6"] == 0  # not even parsed
    assert 6 not in node.tables


def test_save_state_keeps_both_tables() -> None:
    node = make(1, ipv6=True)
    fill(node, 10)
    state = node.save_state()
    again = DhtNode(
        NodeConfig(ipv6=True),
        node_id=node.node_id,
        routing_state=state["routing"],
        routing6_state=state["routing6"],
    )
    assert len(again.tables[4]) == len(node.tables[4]) > 0
    assert len(again.tables[6]) == len(node.tables[6]) > 0
    assert "routing6" not in make(2).save_state()


def test_a_node_needs_a_family() -> None:
    with pytest.raises(ValueError):
        make(1, ipv4=False, ipv6=False)


# ------------------------------------------------------------------ a mixed swarm


def _true_closest(swarm: SimSwarm, probe: Any, fam: str, target: bytes) -> list[bytes]:
    """The k nodes of family ``fam`` closest to ``target``, other than ``probe``."""
    ids = [swarm.net.endpoint(a).node.node_id for a in swarm.online() if fam in swarm.addrs[a]]
    ids.remove(swarm.net.endpoint(probe).node.node_id) if fam in swarm.addrs[probe] else None
    return sorted(ids, key=lambda i: distance(i, target))[: swarm.config.k]


def test_mixed_swarm_lookups_converge_in_both_families() -> None:
    swarm = SimSwarm(90, seed=4, stacks=("4", "46", "6"), batch=10)
    rng = random.Random(7)
    members = swarm.online()
    for probe in (members[3], members[4], members[5], members[40], members[41], members[42]):
        stack = "".join(sorted(swarm.addrs[probe]))
        target = rng.randbytes(20)
        outcome, _, _ = swarm.run_op(probe, lambda n, now, t=target: n.find_node(t, now))
        assert isinstance(outcome, OperationDone), outcome
        found = outcome.result
        for fam in stack:
            got = [n.node_id for n in found if (":" in n.addr[0]) == (fam == "6")]
            want = _true_closest(swarm, probe, fam, target)
            assert sorted(got, key=lambda i: distance(i, target)) == want, (stack, fam)


def test_mixed_swarm_peers_of_both_families_are_found() -> None:
    swarm = SimSwarm(60, seed=5, stacks=("4", "46", "6"), batch=10)
    ih = b"R" * 20
    members = swarm.online()
    dual, v4, v6 = members[1], members[0], members[2]
    assert set(swarm.addrs[dual]) == {"4", "6"} and set(swarm.addrs[v6]) == {"6"}
    outcome, _, _ = swarm.run_op(dual, lambda n, now: n.announce(ih, 0, now, implied_port=True))
    assert isinstance(outcome, OperationDone), outcome
    expect = {"4": swarm.addrs[dual]["4"], "6": swarm.addrs[dual]["6"]}
    for who, families in ((v4, "4"), (v6, "6"), (members[4], "46")):
        res, _, _ = swarm.run_op(who, lambda n, now: n.get_peers(ih, now))
        assert isinstance(res, OperationDone), res
        assert set(res.result.peers) == {expect[f] for f in families}, (who, families)


# ------------------------------------------------------------------ an IPv6 /64 is one source


def test_source_key_is_the_ipv6_slash_64() -> None:
    assert bep42.source_key("2001:db8:1:2:aaaa::1") == "2001:db8:1:2::/64"
    assert bep42.source_key("2001:db8:1:2:bbbb::9") == "2001:db8:1:2::/64"
    assert bep42.source_key("203.0.113.5") == "203.0.113.5"
    assert bep42.source_key("fd00::1") == "fd00::1"  # local networks: per address


def test_one_slash_64_shares_the_per_ip_peer_quota() -> None:
    node = make(1, ipv6=True, rate_burst=10_000.0)
    for i in range(MAX_PEERS_PER_IP + 5):
        # a new address of the same /64 for every announce
        _announce(node, (f"2001:db8:0:7::{i + 1:x}", 7000), i.to_bytes(20, "big"), 9000)
    assert node.peer_stores[6].entries_of("2001:db8:0:7::abcd") == MAX_PEERS_PER_IP
    assert node.stats["rx_announce_over_quota"] == 5


def test_one_slash_64_shares_the_rate_limit() -> None:
    node = make(1, ipv6=True, rate_limit=1.0, rate_burst=5.0)
    answered = sum(
        raw_query(node, (f"2001:db8:0:8::{i + 1:x}", 7000), b"ping", {}) is not None
        for i in range(20)
    )
    assert answered == 5
    assert node.stats["rx_rate_limited"] == 15
    assert raw_query(node, ("2001:db8:0:9::1", 7000), b"ping", {}) is not None  # next /64


def test_one_slash_64_holds_one_entry_per_infohash() -> None:
    node = make(1, ipv6=True, rate_burst=10_000.0)
    ih = b"S" * 20
    for i in range(10):
        _announce(node, (f"2001:db8:0:5::{i + 1:x}", 7000), ih, 9000 + i)
    got = raw_query(node, ("2001:db8:ffff::1", 7000), b"get_peers", {b"info_hash": ih})
    assert got is not None
    assert got[b"r"][b"values"] == [encode_peer(("2001:db8:0:5::a", 9009))]  # the latest


def test_one_slash_64_holds_one_routing_entry() -> None:
    node = make(1, ipv4=False, ipv6=True)
    for i in range(20):  # twenty IDs, each from a new address of one /64, only querying
        node._learn(
            NodeInfo(bytes([i + 1]) * 20, (f"2001:db8:0:6::{i + 1:x}", 6881)), 0.0, responded=False
        )
    assert len(node.routing) == 1
    node._learn(NodeInfo(b"\xee" * 20, ("2001:db8:0:6::ee", 6881)), 0.0, responded=True)
    assert [n.node_id for n in node.routing] == [b"\xee" * 20]  # only an answer replaces it
