"""KRPC envelope parsing (BEP 5, with BEP 42 ``ip`` and BEP 43 ``ro``).

Whatever datagram arrives, ``parse_message`` returns a Query, Response or Error, or raises
:class:`DecodeError` (``KrpcError`` is one). If it raises anything else, that's a bug.
"""

from __future__ import annotations

import contextlib
import ipaddress
import random
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from btchat.codec.bencode import DecodeError, decode, encode
from btchat.dht.ids import encode_peer
from btchat.dht.krpc import (
    ERROR_GENERIC,
    ERROR_METHOD_UNKNOWN,
    ERROR_PROTOCOL,
    ERROR_SERVER,
    MAX_ERROR_TEXT,
    MAX_PACKET,
    MAX_TID,
    MAX_VERSION,
    Error,
    KrpcError,
    Query,
    Response,
    encode_error,
    encode_query,
    encode_response,
    parse_message,
)

FUZZ = settings(
    max_examples=2000,
    derandomize=True,
    database=None,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
PROPERTY = settings(max_examples=100, derandomize=True, database=None, deadline=None)

ID_A = b"abcdefghij0123456789"
ID_M = b"mnopqrstuvwxyz123456"
ID_0 = b"0123456789abcdefghij"

# Verbatim from the "bencoded = ..." lines of BEP 5 (shared/specs/bep_0005.rst).
SPEC_ERROR = b"d1:eli201e23:A Generic Error Ocurrede1:t2:aa1:y1:ee"
SPEC_PING_Q = b"d1:ad2:id20:abcdefghij0123456789e1:q4:ping1:t2:aa1:y1:qe"
SPEC_PING_R = b"d1:rd2:id20:mnopqrstuvwxyz123456e1:t2:aa1:y1:re"
SPEC_FIND_NODE_Q = (
    b"d1:ad2:id20:abcdefghij01234567896:target20:mnopqrstuvwxyz123456e1:q9:find_node1:t2:aa1:y1:qe"
)
SPEC_FIND_NODE_R = b"d1:rd2:id20:0123456789abcdefghij5:nodes9:def456...e1:t2:aa1:y1:re"
SPEC_GET_PEERS_Q = (
    b"d1:ad2:id20:abcdefghij01234567899:info_hash20:mnopqrstuvwxyz123456"
    b"e1:q9:get_peers1:t2:aa1:y1:qe"
)
SPEC_GET_PEERS_R_VALUES = (
    b"d1:rd2:id20:abcdefghij01234567895:token8:aoeusnth6:valuesl6:axje.u6:idhtnmee1:t2:aa1:y1:re"
)
SPEC_GET_PEERS_R_NODES = (
    b"d1:rd2:id20:abcdefghij01234567895:nodes9:def456...5:token8:aoeusnthe1:t2:aa1:y1:re"
)
SPEC_ANNOUNCE_Q = (
    b"d1:ad2:id20:abcdefghij012345678912:implied_porti1e9:info_hash20:mnopqrstuvwxyz123456"
    b"4:porti6881e5:token8:aoeusnthe1:q13:announce_peer1:t2:aa1:y1:qe"
)
SPEC_ANNOUNCE_R = b"d1:rd2:id20:mnopqrstuvwxyz123456e1:t2:aa1:y1:re"

SPEC_EXAMPLES = [
    SPEC_ERROR,
    SPEC_PING_Q,
    SPEC_PING_R,
    SPEC_FIND_NODE_Q,
    SPEC_FIND_NODE_R,
    SPEC_GET_PEERS_Q,
    SPEC_GET_PEERS_R_VALUES,
    SPEC_GET_PEERS_R_NODES,
    SPEC_ANNOUNCE_Q,
    SPEC_ANNOUNCE_R,
]


def query(**extra: Any) -> dict[bytes, Any]:
    msg: dict[bytes, Any] = {b"t": b"aa", b"y": b"q", b"q": b"ping", b"a": {b"id": ID_A}}
    msg.update({k.encode(): v for k, v in extra.items()})
    return msg


def response(**extra: Any) -> dict[bytes, Any]:
    msg: dict[bytes, Any] = {b"t": b"aa", b"y": b"r", b"r": {b"id": ID_M}}
    msg.update({k.encode(): v for k, v in extra.items()})
    return msg


def error(**extra: Any) -> dict[bytes, Any]:
    msg: dict[bytes, Any] = {b"t": b"aa", b"y": b"e", b"e": [201, b"oops"]}
    msg.update({k.encode(): v for k, v in extra.items()})
    return msg


def without(msg: dict[bytes, Any], key: bytes) -> dict[bytes, Any]:
    return {k: v for k, v in msg.items() if k != key}


def rejects(msg: Any) -> None:
    data = msg if isinstance(msg, bytes) else encode(msg)
    with pytest.raises(KrpcError):
        parse_message(data)


# ---------------------------------------------------------------------------------------
# BEP 5 examples


def test_krpc_error_is_a_decode_error() -> None:
    assert issubclass(KrpcError, DecodeError)
    assert (ERROR_GENERIC, ERROR_SERVER, ERROR_PROTOCOL, ERROR_METHOD_UNKNOWN) == (
        201,
        202,
        203,
        204,
    )


def test_spec_error() -> None:
    msg = parse_message(SPEC_ERROR)
    assert msg == Error(tid=b"aa", code=201, text="A Generic Error Ocurred", version=None)


def test_spec_ping() -> None:
    q = parse_message(SPEC_PING_Q)
    assert isinstance(q, Query)
    assert q.tid == b"aa"
    assert q.method == b"ping"
    assert q.sender_id == ID_A
    assert q.args == {b"id": ID_A}
    assert q.read_only is False
    assert q.version is None

    r = parse_message(SPEC_PING_R)
    assert r == Response(tid=b"aa", values={b"id": ID_M}, sender_id=ID_M, ip=None, version=None)


def test_spec_find_node() -> None:
    q = parse_message(SPEC_FIND_NODE_Q)
    assert isinstance(q, Query)
    assert (q.tid, q.method, q.sender_id) == (b"aa", b"find_node", ID_A)
    assert q.args == {b"id": ID_A, b"target": ID_M}

    r = parse_message(SPEC_FIND_NODE_R)
    assert isinstance(r, Response)
    assert (r.tid, r.sender_id, r.ip) == (b"aa", ID_0, None)
    assert r.values == {b"id": ID_0, b"nodes": b"def456..."}


def test_spec_get_peers() -> None:
    q = parse_message(SPEC_GET_PEERS_Q)
    assert isinstance(q, Query)
    assert (q.tid, q.method, q.sender_id) == (b"aa", b"get_peers", ID_A)
    assert q.args == {b"id": ID_A, b"info_hash": ID_M}

    r = parse_message(SPEC_GET_PEERS_R_VALUES)
    assert isinstance(r, Response)
    assert (r.tid, r.sender_id) == (b"aa", ID_A)
    assert r.values == {b"id": ID_A, b"token": b"aoeusnth", b"values": [b"axje.u", b"idhtnm"]}

    r = parse_message(SPEC_GET_PEERS_R_NODES)
    assert isinstance(r, Response)
    assert (r.tid, r.sender_id) == (b"aa", ID_A)
    assert r.values == {b"id": ID_A, b"token": b"aoeusnth", b"nodes": b"def456..."}


def test_spec_announce_peer() -> None:
    q = parse_message(SPEC_ANNOUNCE_Q)
    assert isinstance(q, Query)
    assert (q.tid, q.method, q.sender_id) == (b"aa", b"announce_peer", ID_A)
    assert q.args == {
        b"id": ID_A,
        b"implied_port": 1,
        b"info_hash": ID_M,
        b"port": 6881,
        b"token": b"aoeusnth",
    }

    r = parse_message(SPEC_ANNOUNCE_R)
    assert isinstance(r, Response)
    assert (r.tid, r.sender_id, r.values) == (b"aa", ID_M, {b"id": ID_M})


@pytest.mark.parametrize("data", SPEC_EXAMPLES)
def test_spec_examples_every_proper_prefix_rejected(data: bytes) -> None:
    for i in range(len(data)):
        with pytest.raises(DecodeError):
            parse_message(data[:i])


@pytest.mark.parametrize("data", SPEC_EXAMPLES)
def test_spec_examples_with_trailing_data_accepted_as_libtorrent_does(data: bytes) -> None:
    for tail in (b"\n", b"e", b"\x00", b"de", data):
        assert parse_message(data + tail) == parse_message(data)


def test_unsorted_keys_accepted_duplicates_refused() -> None:
    unsorted = b"d1:t2:aa1:y1:q1:q4:ping1:ad2:id20:abcdefghij0123456789ee"
    assert parse_message(unsorted) == parse_message(SPEC_PING_Q)
    with pytest.raises(DecodeError):
        parse_message(b"d1:t2:aa1:y1:q1:q4:ping1:t2:bb1:ad2:id20:abcdefghij0123456789ee")
    with pytest.raises(DecodeError):
        parse_message(
            b"d1:ad2:id20:abcdefghij01234567892:id20:abcdefghij0123456789e1:q4:ping1:t2:aa1:y1:qe"
        )


def test_accepts_bytearray_and_memoryview() -> None:
    assert parse_message(bytearray(SPEC_PING_Q)) == parse_message(SPEC_PING_Q)
    assert parse_message(memoryview(SPEC_PING_R)) == parse_message(SPEC_PING_R)


# ---------------------------------------------------------------------------------------
# Optional keys: v, ro (BEP 43), ip (BEP 42)


@pytest.mark.parametrize("make", [query, response, error])
def test_version_parsed(make: Any) -> None:
    assert parse_message(encode(make(v=b"LT\x01\x02"))).version == b"LT\x01\x02"
    assert parse_message(encode(make(v=b"x" * MAX_VERSION))).version == b"x" * MAX_VERSION
    assert parse_message(encode(make())).version is None


@pytest.mark.parametrize("make", [query, response, error])
@pytest.mark.parametrize("bad", [b"x" * (MAX_VERSION + 1), b"x" * 1000, 1, [b"LT"], {b"a": 1}])
def test_oversize_or_malformed_version_is_none(make: Any, bad: Any) -> None:
    msg = parse_message(encode(make(v=bad)))
    assert msg.version is None


def test_read_only_flag() -> None:
    assert parse_message(encode(query(ro=1))).read_only is True
    assert parse_message(encode(query())).read_only is False
    assert parse_message(encode(query(ro=0))).read_only is False
    assert parse_message(encode(query(ro=b"1"))).read_only is False
    assert parse_message(encode(query(ro=2))).read_only is False


def test_ip_ipv4_parsed() -> None:
    r = parse_message(encode(response(ip=bytes([1, 2, 3, 4]) + (6881).to_bytes(2, "big"))))
    assert isinstance(r, Response)
    assert r.ip == ("1.2.3.4", 6881)


def test_ip_ipv6_parsed() -> None:
    packed = ipaddress.IPv6Address("2001:db8::1").packed + (443).to_bytes(2, "big")
    r = parse_message(encode(response(ip=packed)))
    assert isinstance(r, Response)
    assert r.ip == ("2001:db8::1", 443)


@pytest.mark.parametrize(
    "bad", [b"", b"\x01", b"\x01\x02\x03\x04\x05", b"\x01" * 7, b"\x01" * 17, b"\x01" * 19]
)
def test_ip_wrong_length_is_none(bad: bytes) -> None:
    r = parse_message(encode(response(ip=bad)))
    assert isinstance(r, Response)
    assert r.ip is None


@pytest.mark.parametrize("bad", [6, [b"\x01\x02\x03\x04", 1], {b"ip": b"\x01" * 6}])
def test_ip_not_a_string_is_none(bad: Any) -> None:
    r = parse_message(encode(response(ip=bad)))
    assert isinstance(r, Response)
    assert r.ip is None


def test_unknown_top_level_keys_ignored() -> None:
    q = parse_message(encode(query(zzz=b"whatever", b=[1, 2])))
    assert isinstance(q, Query)
    assert q.method == b"ping"


# ---------------------------------------------------------------------------------------
# Rejections


@pytest.mark.parametrize("data", [b"le", b"li1ee", b"i1e", b"4:spam", b"0:"])
def test_not_a_dict_rejected(data: bytes) -> None:
    rejects(data)


@pytest.mark.parametrize("make", [query, response, error])
def test_missing_tid_rejected(make: Any) -> None:
    rejects(without(make(), b"t"))


@pytest.mark.parametrize("make", [query, response, error])
@pytest.mark.parametrize("bad", [b"x" * (MAX_TID + 1), b"x" * 500, 1, [b"aa"], {b"t": b"aa"}])
def test_oversize_or_malformed_tid_rejected(make: Any, bad: Any) -> None:
    rejects(make(t=bad))


def test_tid_at_limit_accepted() -> None:
    assert parse_message(encode(query(t=b"x" * MAX_TID))).tid == b"x" * MAX_TID


@pytest.mark.parametrize("bad", [b"x", b"", b"qq", b"Q", b"R", b"E", 1, [b"q"], {b"q": 1}])
def test_bad_y_rejected(bad: Any) -> None:
    rejects(query(y=bad))


def test_missing_y_rejected() -> None:
    rejects(without(query(), b"y"))


def test_query_missing_method_rejected() -> None:
    rejects(without(query(), b"q"))


@pytest.mark.parametrize("bad", [b"", 1, [b"ping"], {b"ping": 1}])
def test_query_empty_or_malformed_method_rejected(bad: Any) -> None:
    rejects(query(q=bad))


def test_query_missing_a_rejected() -> None:
    rejects(without(query(), b"a"))


@pytest.mark.parametrize("bad", [b"id", 1, [{b"id": ID_A}]])
def test_query_a_not_a_dict_rejected(bad: Any) -> None:
    rejects(query(a=bad))


def test_response_missing_r_rejected() -> None:
    rejects(without(response(), b"r"))


@pytest.mark.parametrize("bad", [b"id", 1, [{b"id": ID_M}]])
def test_response_r_not_a_dict_rejected(bad: Any) -> None:
    rejects(response(r=bad))


@pytest.mark.parametrize(
    "bad_id", [None, b"", b"x" * 19, b"x" * 21, b"x" * 40, 1, [ID_A], {b"id": ID_A}]
)
def test_sender_id_not_20_bytes_rejected(bad_id: Any) -> None:
    body = {} if bad_id is None else {b"id": bad_id}
    rejects(query(a=body))
    rejects(response(r=body))


@pytest.mark.parametrize(
    "bad",
    [
        None,
        b"oops",
        201,
        [],
        [201],
        [b"oops", 201],
        [b"201", b"oops"],
        [201, 5],
        [201, [b"oops"]],
        {b"code": 201},
    ],
)
def test_malformed_error_body_rejected(bad: Any) -> None:
    rejects(without(error(), b"e") if bad is None else error(e=bad))


def test_error_extra_elements_and_odd_codes_accepted() -> None:
    msg = parse_message(encode(error(e=[203, b"bad token", b"extra", 7])))
    assert msg == Error(tid=b"aa", code=203, text="bad token", version=None)
    assert parse_message(encode(error(e=[-1, b""]))).code == -1
    assert parse_message(encode(error(e=[2**64, b"x"]))).code == 2**64


def test_error_text_truncated_and_invalid_utf8_replaced() -> None:
    long = parse_message(encode(error(e=[201, b"x" * (MAX_ERROR_TEXT * 4)])))
    assert isinstance(long, Error)
    assert long.text == "x" * MAX_ERROR_TEXT
    bad = parse_message(encode(error(e=[201, b"\xff\xfeok"])))
    assert isinstance(bad, Error)
    assert bad.text == "\ufffd\ufffdok"


def _padded_query(size: int) -> bytes:
    """A valid query of exactly ``size`` bytes (padding in an unknown argument)."""
    base = len(encode(query(a={b"id": ID_A, b"pad": b""})))
    pad = size - base
    data = encode(query(a={b"id": ID_A, b"pad": b"x" * pad}))
    # The length prefix of the padding grows with it; trim to land exactly on size.
    data = encode(query(a={b"id": ID_A, b"pad": b"x" * (pad - (len(data) - size))}))
    assert len(data) == size
    return data


def test_datagram_at_max_packet_accepted() -> None:
    q = parse_message(_padded_query(MAX_PACKET))
    assert isinstance(q, Query)


@pytest.mark.parametrize("size", [MAX_PACKET + 1, MAX_PACKET * 2, 65536])
def test_datagram_over_max_packet_rejected(size: int) -> None:
    with pytest.raises(KrpcError, match="exceeds"):
        parse_message(_padded_query(size))


def test_oversize_garbage_rejected_before_decoding() -> None:
    with pytest.raises(KrpcError):
        parse_message(b"l" * (MAX_PACKET + 1))


@pytest.mark.parametrize("data", [b"", b"d", b"d1:t2:aa", b"d1:y1:q1:t2:aae", b"i-0e"])
def test_bencode_errors_surface_as_decode_error(data: bytes) -> None:
    with pytest.raises(DecodeError):
        parse_message(data)


# ---------------------------------------------------------------------------------------
# Encoders round-trip through the parser

tids = st.binary(max_size=MAX_TID)
versions = st.one_of(st.none(), st.binary(min_size=1, max_size=MAX_VERSION))
node_ids = st.binary(min_size=20, max_size=20)
arg_values = st.one_of(
    st.binary(max_size=30),
    st.integers(min_value=-(2**64), max_value=2**64),
    st.lists(st.binary(max_size=6), max_size=3),
)
extra_args = st.dictionaries(st.binary(min_size=1, max_size=10), arg_values, max_size=4)
ipv4 = st.integers(0, 2**32 - 1).map(lambda n: str(ipaddress.IPv4Address(n)))
ipv6 = st.integers(0, 2**128 - 1).map(lambda n: str(ipaddress.IPv6Address(n)))
ports = st.integers(0, 65535)
requesters = st.one_of(st.none(), st.tuples(ipv4, ports), st.tuples(ipv6, ports))


@PROPERTY
@given(tids, st.binary(min_size=1, max_size=20), node_ids, extra_args, versions, st.booleans())
def test_encode_query_roundtrip(
    tid: bytes,
    method: bytes,
    node_id: bytes,
    extra: dict[bytes, Any],
    version: bytes | None,
    read_only: bool,
) -> None:
    args = {**extra, b"id": node_id}
    data = encode_query(tid, method, args, version=version, read_only=read_only)
    assert parse_message(data) == Query(tid, method, args, node_id, read_only, version)


@PROPERTY
@given(tids, node_ids, extra_args, versions, requesters)
def test_encode_response_roundtrip(
    tid: bytes,
    node_id: bytes,
    extra: dict[bytes, Any],
    version: bytes | None,
    requester: tuple[str, int] | None,
) -> None:
    values = {**extra, b"id": node_id}
    data = encode_response(tid, values, version=version, requester=requester)
    # The envelope is written by hand (the hot path): byte for byte what the generic
    # encoder makes of the dictionary, keys in canonical order.
    envelope: dict[bytes, Any] = {b"t": tid, b"y": b"r", b"r": values}
    if version:
        envelope[b"v"] = version
    if requester is not None:
        envelope[b"ip"] = encode_peer(requester)
    assert data == encode(envelope)
    assert decode(data) == envelope  # strict: canonical
    msg = parse_message(data)
    assert isinstance(msg, Response)
    assert (msg.tid, msg.values, msg.sender_id, msg.version) == (tid, values, node_id, version)
    if requester is None:
        assert msg.ip is None
    else:
        assert msg.ip is not None
        # inet_ntop and ipaddress may spell an IPv6 address differently (::ffff:1.2.3.4).
        assert ipaddress.ip_address(msg.ip[0]) == ipaddress.ip_address(requester[0])
        assert msg.ip[1] == requester[1]


@PROPERTY
@given(
    tids,
    st.one_of(
        st.sampled_from([ERROR_GENERIC, ERROR_SERVER, ERROR_PROTOCOL, ERROR_METHOD_UNKNOWN]),
        st.integers(-(2**63), 2**63),
    ),
    st.text(st.characters(exclude_categories=("Cs",)), max_size=MAX_ERROR_TEXT // 4),
    versions,
)
def test_encode_error_roundtrip(tid: bytes, code: int, text: str, version: bytes | None) -> None:
    data = encode_error(tid, code, text, version=version)
    assert parse_message(data) == Error(tid, code, text, version)


def test_encoders_omit_empty_version_and_default_flags() -> None:
    assert encode_query(b"aa", b"ping", {b"id": ID_A}, version=None) == SPEC_PING_Q
    assert encode_query(b"aa", b"ping", {b"id": ID_A}, version=b"") == SPEC_PING_Q
    assert encode_response(b"aa", {b"id": ID_M}, version=None, requester=None) == SPEC_PING_R
    assert encode_error(b"aa", 201, "A Generic Error Ocurred", version=None) == SPEC_ERROR
    assert encode_query(
        b"aa",
        b"find_node",
        {b"id": ID_A, b"target": ID_M},
        version=None,
    ) == (SPEC_FIND_NODE_Q)


def test_encode_query_read_only_and_response_ip_on_the_wire() -> None:
    data = encode_query(b"aa", b"ping", {b"id": ID_A}, version=b"BT\x00\x01", read_only=True)
    assert b"2:roi1e" in data
    assert b"1:v4:BT\x00\x01" in data
    data = encode_response(b"aa", {b"id": ID_M}, version=None, requester=("1.2.3.4", 6881))
    assert b"2:ip6:\x01\x02\x03\x04\x1a\xe1" in data


# ---------------------------------------------------------------------------------------
# Hostile input: a Message or DecodeError, nothing else


def check_parse_total(data: bytes) -> None:
    try:
        msg = parse_message(data)
    except Exception as exc:
        assert isinstance(exc, DecodeError), f"{type(exc).__name__}: {exc} on {data!r}"
        return
    assert isinstance(msg, Query | Response | Error)
    assert isinstance(msg.tid, bytes)
    assert len(msg.tid) <= MAX_TID
    assert msg.version is None or (
        isinstance(msg.version, bytes) and len(msg.version) <= MAX_VERSION
    )
    if isinstance(msg, Query):
        assert isinstance(msg.method, bytes)
        assert msg.method
        assert isinstance(msg.args, dict)
        assert msg.args[b"id"] == msg.sender_id
        assert len(msg.sender_id) == 20
        assert isinstance(msg.read_only, bool)
    elif isinstance(msg, Response):
        assert isinstance(msg.values, dict)
        assert msg.values[b"id"] == msg.sender_id
        assert len(msg.sender_id) == 20
        assert msg.ip is None or (isinstance(msg.ip[0], str) and 0 <= msg.ip[1] <= 65535)
    else:
        assert isinstance(msg.code, int)
        assert isinstance(msg.text, str)


@settings(FUZZ, max_examples=1000)  # test_bencode fuzzes raw bytes harder; few get this far
@given(st.binary(max_size=300))
def test_arbitrary_bytes_parse_or_decode_error(data: bytes) -> None:
    check_parse_total(data)


# Envelopes assembled from the keys the parser looks at, each absent or set to one of a
# few right and wrong values, so the fuzzer gets past bencode and into every branch of
# parse_message. Choices come from one drawn seed: far cheaper than drawing each field.
_ID = b"abcdefghij0123456789"
_BODIES = [
    {b"id": _ID},
    {b"id": _ID, b"x": [1, b"2"]},
    {b"id": _ID[:19]},
    {b"id": _ID + b"x"},
    {b"id": 1},
    {b"id": [_ID]},
    {},
    b"id",
    1,
    [{b"id": _ID}],
]
_FIELDS: dict[bytes, list[Any]] = {
    b"t": [b"aa", b"", b"x" * MAX_TID, b"x" * (MAX_TID + 1), 1, [b"aa"], {b"t": b"aa"}],
    b"y": [b"q", b"r", b"e", b"x", b"", b"qq", 1, [b"q"], {b"q": b"q"}],
    b"q": [b"ping", b"x" * 100, b"", 0, [b"ping"]],
    b"a": _BODIES,
    b"r": _BODIES,
    b"e": [
        [201, b"oops"],
        [-1, b"\xff" * (MAX_ERROR_TEXT + 5)],
        [2**64, b""],
        [201],
        [],
        [b"oops", 201],
        [201, 5],
        [201, b"x", b"y"],
        b"e",
        201,
        {b"e": 1},
    ],
    b"v": [b"LT01", b"", b"x" * (MAX_VERSION + 1), 1, [b"LT"]],
    b"ro": [1, 0, 2, -1, b"1", [1]],
    b"ip": [b"\x01" * 6, b"\x02" * 18, b"", b"\x01" * 5, b"\x01" * 7, b"\x01" * 17, 6, [b""]],
    b"zz": [b"", 1, [], {}],
}


def make_envelope(rng: random.Random) -> bytes:
    msg: dict[bytes, Any] = {}
    for key, choices in _FIELDS.items():
        if rng.random() < 0.75:
            msg[key] = rng.choice(choices)
    return encode(msg)


envelopes = st.integers(0, 2**32 - 1).map(lambda seed: make_envelope(random.Random(seed)))


@FUZZ
@given(envelopes)
def test_fuzzed_envelopes_parse_or_decode_error(data: bytes) -> None:
    check_parse_total(data)


def test_fuzzed_envelopes_reach_every_message_type() -> None:
    """The envelope generator is only useful if it produces all three messages."""
    kinds = set()
    for seed in range(2000):
        with contextlib.suppress(DecodeError):
            kinds.add(type(parse_message(make_envelope(random.Random(seed)))))
    assert kinds == {Query, Response, Error}
