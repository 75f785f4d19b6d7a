"""Node IDs, XOR distance and compact node/peer encodings (BEP 5, BEP 32)."""

from __future__ import annotations

import ipaddress
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from btchat.dht.ids import (
    ID_BYTES,
    NodeInfo,
    decode_nodes,
    decode_peers,
    distance,
    encode_nodes,
    encode_peer,
)

PROPERTY = settings(max_examples=100, derandomize=True, database=None, deadline=None)

node_ids = st.binary(min_size=ID_BYTES, max_size=ID_BYTES)
ipv4 = st.integers(0, 2**32 - 1).map(lambda n: str(ipaddress.IPv4Address(n)))
ipv6 = st.integers(0, 2**128 - 1).map(lambda n: str(ipaddress.IPv6Address(n)))
ports = st.integers(1, 65535)
nodes_v4 = st.builds(NodeInfo, node_ids, st.tuples(ipv4, ports))


def same_addr(a: tuple[str, int], b: tuple[str, int]) -> bool:
    """Equal endpoints; IPv6 text forms may differ (inet_ntop vs ipaddress)."""
    return ipaddress.ip_address(a[0]) == ipaddress.ip_address(b[0]) and a[1] == b[1]


# ---------------------------------------------------------------------------------------
# Compact peer info


def test_encode_peer_known_values() -> None:
    assert encode_peer(("1.2.3.4", 6881)) == b"\x01\x02\x03\x04\x1a\xe1"
    assert encode_peer(("255.255.255.255", 65535)) == b"\xff" * 6
    assert encode_peer(("::1", 1)) == bytes(15) + b"\x01" + b"\x00\x01"
    assert len(encode_peer(("2001:db8::1", 443))) == 18


@PROPERTY
@given(st.tuples(ipv4, st.integers(0, 65535)))
def test_ipv4_peer_roundtrip(addr: tuple[str, int]) -> None:
    packed = encode_peer(addr)
    assert len(packed) == 6
    assert decode_peers([packed]) == [addr]


@PROPERTY
@given(st.tuples(ipv6, st.integers(0, 65535)))
def test_ipv6_peer_roundtrip(addr: tuple[str, int]) -> None:
    packed = encode_peer(addr)
    assert len(packed) == 18
    [decoded] = decode_peers([packed])
    assert same_addr(decoded, addr)
    assert encode_peer(decoded) == packed


def test_ipv6_peer_decodes_to_canonical_text() -> None:
    packed = ipaddress.IPv6Address("2001:db8::1").packed + (443).to_bytes(2, "big")
    assert decode_peers([packed]) == [("2001:db8::1", 443)]


def test_decode_peers_mixed_families_in_order() -> None:
    v4 = encode_peer(("10.0.0.1", 1))
    v6 = encode_peer(("fe80::1", 2))
    assert decode_peers([v4, v6, v4]) == [("10.0.0.1", 1), ("fe80::1", 2), ("10.0.0.1", 1)]


@pytest.mark.parametrize(
    "bad",
    [b"\x01" * n for n in (0, 1, 5, 7, 12, 17, 19, 26)],
)
def test_decode_peers_skips_wrong_length_entries(bad: bytes) -> None:
    good = encode_peer(("1.2.3.4", 6881))
    assert decode_peers([bad]) == []
    assert decode_peers([bad, good, bad]) == [("1.2.3.4", 6881)]


@pytest.mark.parametrize("bad", [6881, [b"\x01" * 6], {b"a": 1}, None, "1.2.3.4:1"])
def test_decode_peers_skips_non_bytes_entries(bad: Any) -> None:
    good = encode_peer(("1.2.3.4", 6881))
    assert decode_peers([bad, good]) == [("1.2.3.4", 6881)]


def test_decode_peers_empty() -> None:
    assert decode_peers([]) == []


@PROPERTY
@given(st.lists(st.binary(max_size=20), max_size=8))
def test_decode_peers_never_raises_on_byte_strings(values: list[bytes]) -> None:
    out = decode_peers(values)
    assert len(out) == sum(len(v) in (6, 18) for v in values)
    for host, port in out:
        ipaddress.ip_address(host)
        assert 0 <= port <= 65535


# ---------------------------------------------------------------------------------------
# Compact node info


def test_encode_nodes_known_value() -> None:
    node = NodeInfo(b"A" * 20, ("1.2.3.4", 6881))
    assert encode_nodes([node]) == b"A" * 20 + b"\x01\x02\x03\x04\x1a\xe1"
    assert decode_nodes(b"A" * 20 + b"\x01\x02\x03\x04\x1a\xe1") == [node]


@PROPERTY
@given(st.lists(nodes_v4, max_size=8))
def test_nodes_roundtrip(nodes: list[NodeInfo]) -> None:
    blob = encode_nodes(nodes)
    assert len(blob) == 26 * len(nodes)
    assert decode_nodes(blob) == nodes


def test_encode_nodes_skips_ipv6() -> None:
    v4 = NodeInfo(b"a" * 20, ("1.2.3.4", 1))
    v6 = NodeInfo(b"b" * 20, ("2001:db8::1", 2))
    assert encode_nodes([v6, v4, v6]) == encode_nodes([v4])
    assert encode_nodes([v6]) == b""


@PROPERTY
@given(st.lists(nodes_v4, min_size=0, max_size=4), st.binary(min_size=1, max_size=25))
def test_decode_nodes_ignores_trailing_partial_entry(nodes: list[NodeInfo], tail: bytes) -> None:
    assert decode_nodes(encode_nodes(nodes) + tail) == nodes


@pytest.mark.parametrize("size", [0, 1, 20, 25])
def test_decode_nodes_short_blob_is_empty(size: int) -> None:
    assert decode_nodes(b"\x01" * size) == []


def test_decode_nodes_skips_port_zero() -> None:
    good = NodeInfo(b"g" * 20, ("1.2.3.4", 6881))
    zero = b"z" * 20 + b"\x05\x06\x07\x08\x00\x00"
    assert decode_nodes(zero) == []
    assert decode_nodes(zero + encode_nodes([good]) + zero) == [good]
    # Port 1 and 256 are not port 0: both bytes of the port count.
    assert decode_nodes(b"z" * 20 + b"\x05\x06\x07\x08\x00\x01")[0].addr == ("5.6.7.8", 1)
    assert decode_nodes(b"z" * 20 + b"\x05\x06\x07\x08\x01\x00")[0].addr == ("5.6.7.8", 256)


@PROPERTY
@given(st.binary(max_size=26 * 4 + 25))
def test_decode_nodes_never_raises(blob: bytes) -> None:
    out = decode_nodes(blob)
    assert len(out) <= len(blob) // 26
    for node in out:
        assert len(node.node_id) == ID_BYTES
        assert 1 <= node.addr[1] <= 65535
        assert encode_nodes([node]) in blob


# ---------------------------------------------------------------------------------------
# XOR distance


def test_distance_known_values() -> None:
    zero = bytes(20)
    assert distance(zero, zero) == 0
    assert distance(zero, b"\xff" * 20) == 2**160 - 1
    assert distance(zero, bytes(19) + b"\x01") == 1
    assert distance(b"\x80" + bytes(19), zero) == 2**159
    # Compared as unsigned big-endian: the top bit dominates everything below it.
    assert distance(zero, b"\x80" + bytes(19)) > distance(zero, b"\x7f" + b"\xff" * 19)


@PROPERTY
@given(node_ids, node_ids)
def test_distance_symmetric(a: bytes, b: bytes) -> None:
    assert distance(a, b) == distance(b, a)


@PROPERTY
@given(node_ids, node_ids)
def test_distance_zero_iff_equal(a: bytes, b: bytes) -> None:
    assert distance(a, a) == 0
    assert (distance(a, b) == 0) == (a == b)


@PROPERTY
@given(node_ids, node_ids, node_ids)
def test_distance_xor_metric(a: bytes, b: bytes, c: bytes) -> None:
    assert 0 <= distance(a, b) < 2 ** (8 * ID_BYTES)
    # Triangle inequality, and the XOR identity behind it.
    assert distance(a, c) <= distance(a, b) + distance(b, c)
    assert distance(a, c) == distance(a, b) ^ distance(b, c)


@PROPERTY
@given(node_ids, node_ids, node_ids)
def test_distance_unidirectional(a: bytes, b: bytes, c: bytes) -> None:
    """Kademlia: for a given point and distance there is exactly one other point."""
    if b != c:
        assert distance(a, b) != distance(a, c)
