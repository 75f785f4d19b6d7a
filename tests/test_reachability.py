"""Reachability from fake evidence: external address, mapping, filtering, labels, bounds."""

from __future__ import annotations

import random

from harness import events

from btchat.codec.bencode import decode, encode
from btchat.dht.ids import encode_peer
from btchat.dht.node import DhtNode, NodeConfig
from btchat.dht.reachability import (
    MAX_CONTACTED,
    MAX_EVIDENCE_SOURCES,
    MAX_REPORTS,
    MIN_SOLICITED,
    Filtering,
    Mapping,
    Reachability,
)

LOCAL = "192.168.1.10"
WAN = "198.51.100.7"


def peer(i: int, port: int = 6881) -> tuple[str, int]:
    return (f"203.0.113.{i}", port)


def seen(r: Reachability, reports: dict[tuple[str, int], tuple[str, int]]) -> None:
    for responder, as_seen in reports.items():
        r.sent_to(responder)
        r.report(responder, as_seen)


def test_nothing_known_is_unknown() -> None:
    s = Reachability().summary({LOCAL})
    assert (s.external_ip, s.mapping, s.filtering, s.label) == (
        None,
        Mapping.UNKNOWN,
        Filtering.UNKNOWN,
        "unknown",
    )


def test_public_node_no_nat_and_open() -> None:
    r = Reachability()
    seen(r, {peer(i): ("203.0.113.99", 6881) for i in range(1, 5)})
    r.query_from(peer(50))  # never contacted
    s = r.summary({"203.0.113.99"})
    assert s.mapping is Mapping.NONE and s.filtering is Filtering.OPEN
    assert (s.label, s.external_ip, s.external_port) == ("public", "203.0.113.99", 6881)
    assert s.from_strangers == 1 and s.reports == 4 and s.agreeing == 4


def test_cone_types_by_filtering_evidence() -> None:
    base = {peer(i): (WAN, 40000) for i in range(1, 5)}
    full = Reachability()
    seen(full, base)
    full.query_from(peer(77))
    restricted = Reachability()
    seen(restricted, base)
    restricted.query_from(peer(1, 9999))  # a host we contacted, from a port we did not
    port_restricted = Reachability()
    seen(port_restricted, base)
    for p in list(base)[:MIN_SOLICITED]:
        port_restricted.query_from(p)
    labels = [r.summary({LOCAL}).label for r in (full, restricted, port_restricted)]
    assert labels == ["full cone", "restricted cone", "port-restricted"]
    s = port_restricted.summary({LOCAL})
    assert s.mapping is Mapping.INDEPENDENT and s.external_port == 40000
    assert s.filtering is Filtering.FILTERED and s.from_contacted == MIN_SOLICITED


def test_symmetric_when_responders_see_different_ports() -> None:
    r = Reachability()
    seen(r, {peer(i): (WAN, 40000 + i) for i in range(1, 6)})
    s = r.summary({LOCAL})
    assert s.mapping is Mapping.DEPENDENT and s.label == "symmetric"
    assert s.external_ip == WAN and s.external_port is None and s.distinct_ports == 5


def test_one_liar_does_not_flip_the_mapping_or_address() -> None:
    r = Reachability()
    seen(r, {peer(i): (WAN, 40000) for i in range(1, 5)})
    r.report(peer(9), ("6.6.6.6", 1))
    r.report(peer(10), (WAN, 1234))
    s = r.summary({LOCAL})
    assert s.external_ip == WAN and s.mapping is Mapping.INDEPENDENT and s.external_port == 40000
    assert s.reports == 6 and s.agreeing == 5


def test_too_few_reports_or_no_majority_is_unknown() -> None:
    r = Reachability()
    seen(r, {peer(1): (WAN, 1), peer(2): (WAN, 1)})
    assert r.summary().mapping is Mapping.UNKNOWN and r.external_ip() is None
    seen(r, {peer(3): ("198.51.100.8", 1), peer(4): ("198.51.100.9", 1)})
    assert r.external_ip() is None  # 2 of 4 is no strict majority


def test_a_new_report_from_the_same_responder_replaces_its_old_one() -> None:
    r = Reachability()
    for port in (1, 2, 3, 4):
        r.report(peer(1), (WAN, port))
    assert r.summary().reports == 1


def test_every_store_is_bounded() -> None:
    r = Reachability()
    for i in range(MAX_REPORTS + 30):
        r.report(("198.18.0.1", 1000 + i), (WAN, 1))
    for i in range(MAX_CONTACTED + 30):
        r.sent_to(("198.18.1.1", 1000 + i))
    for i in range(MAX_EVIDENCE_SOURCES + 30):
        r.query_from(("198.19.0.1", 1000 + i))
        r.query_from(("198.18.1.1", 60000 - i))  # contacted host, other port
    s = r.summary()
    assert s.reports == MAX_REPORTS
    assert len(r._contacted) == MAX_CONTACTED and sum(r._contacted_ips.values()) == MAX_CONTACTED
    assert s.from_strangers == MAX_EVIDENCE_SOURCES == s.from_known_hosts
    # The oldest contacted endpoints were forgotten, their host still counts as contacted.
    r.query_from(("198.18.1.1", 1000))
    assert r.summary().from_contacted == 0


def test_summary_as_dict_is_json_ready() -> None:
    r = Reachability()
    seen(r, {peer(i): (WAN, 40000 + i) for i in range(1, 4)})
    d = r.summary({LOCAL}).to_dict()
    assert d["mapping"] == "endpoint-dependent" and d["label"] == "symmetric"
    assert all(isinstance(v, str | int | type(None)) for v in d.values())


def _answer(node: DhtNode, responder: tuple[str, int], as_seen: tuple[str, int], i: int) -> None:
    node.ping(responder, 0.0)
    [(data, _)] = node.datagrams_to_send()
    reply = {
        b"t": decode(data)[b"t"],
        b"y": b"r",
        b"r": {b"id": bytes([i]) * 20},
        b"ip": encode_peer(as_seen),
    }
    node.receive_datagram(encode(reply), responder, 0.0)


def test_dht_node_feeds_reachability_from_responses_and_queries() -> None:
    node = DhtNode(NodeConfig(secure_id=False), rng=random.Random(1))
    for i in range(1, 5):
        _answer(node, peer(i), (WAN, 40000 + i), i)
    events(node)
    query = {b"t": b"q1", b"y": b"q", b"q": b"ping", b"a": {b"id": b"\x07" * 20}}
    node.receive_datagram(encode(query), peer(1), 0.0)  # a contacted endpoint
    node.receive_datagram(encode({**query, b"t": b"q2"}), peer(2), 0.0)
    s = node.reachability.summary({LOCAL})
    assert s.label == "symmetric" and s.external_ip == WAN
    assert s.filtering is Filtering.FILTERED and s.from_contacted == 2
    node.receive_datagram(encode({**query, b"t": b"q3"}), peer(60), 0.0)
    assert node.reachability.summary({LOCAL}).filtering is Filtering.OPEN
