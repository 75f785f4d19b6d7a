"""The relay core without I/O: headers (vectors, byte by byte, garbage), limits, pacing,
expiry, and the target's per-relay count."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from btchat.codec.bencode import DecodeError
from btchat.net.relay_core import (
    ANSWER_SIZE,
    HOP_SIZE,
    Answer,
    Connect,
    Expired,
    Grant,
    HeaderReader,
    Incoming,
    RelayCore,
    RelayLimits,
    Status,
    TokenBucket,
    encode_header,
    parse_header,
)

VECTORS = json.loads((Path(__file__).parents[1] / "docs" / "vectors" / "relay.json").read_text())
ME = b"\x00" * 32
A, B, D = (b"\xaa" * 32, b"\x01" * 16), (b"\xbb" * 32, b"\x02" * 16), (b"\xdd" * 32, b"\x03" * 16)


def _header(v: dict[str, object]) -> Connect | Incoming | Answer:
    circuit = int(v["circuit"])  # type: ignore[call-overload]
    if v["kind"] == "answer":
        return Answer(circuit, int(v["status"]))  # type: ignore[call-overload]
    cls = Connect if v["kind"] == "connect" else Incoming
    return cls(circuit, bytes.fromhex(str(v["identity"])), bytes.fromhex(str(v["device"])))


@pytest.mark.parametrize("v", VECTORS["vectors"], ids=lambda v: v["name"])
def test_vectors_both_ways(v: dict[str, object]) -> None:
    wire = bytes.fromhex(str(v["bytes"]))
    header = _header(v)
    assert encode_header(header) == wire
    assert parse_header(wire) == header
    # The layout, field by field (PROTOCOL.md): version, kind, circuit u32be, body.
    assert wire[0] == 1 and int.from_bytes(wire[2:6], "big") == header.circuit
    assert len(wire) == (ANSWER_SIZE if isinstance(header, Answer) else HOP_SIZE)


@pytest.mark.parametrize("v", VECTORS["malformed"], ids=lambda v: v["name"])
def test_malformed_vectors_are_refused(v: dict[str, str]) -> None:
    wire = bytes.fromhex(v["bytes"])
    with pytest.raises(DecodeError):
        parse_header(wire)


@pytest.mark.parametrize("v", VECTORS["vectors"], ids=lambda v: v["name"])
def test_reader_byte_by_byte_with_trailing_data(v: dict[str, object]) -> None:
    wire = bytes.fromhex(str(v["bytes"])) + b"ciphertext follows"
    reader = HeaderReader()
    got = None
    for i in range(len(wire)):
        got = reader.feed(wire[i : i + 1])
        if got is not None:
            break
    assert got == _header(v) and i == len(wire) - len(b"ciphertext follows") - 1
    whole = HeaderReader()
    assert whole.feed(wire) == _header(v) and whole.rest == b"ciphertext follows"


@given(st.binary(max_size=80))
def test_the_reader_fails_only_one_way(data: bytes) -> None:
    reader = HeaderReader()
    try:
        got = reader.feed(data)
    except DecodeError:
        return
    assert got is None or encode_header(got) + reader.rest == data


def test_encoding_refuses_misuse() -> None:
    with pytest.raises(ValueError):
        encode_header(Answer(0, 0))
    with pytest.raises(ValueError):
        encode_header(Connect(1, b"short", b"\x00" * 16))
    with pytest.raises(ValueError):
        RelayLimits(per_peer=0)


def test_refusals_in_order_of_the_checks() -> None:
    core = RelayCore(RelayLimits(per_peer=2, total=3))
    assert RelayCore(RelayLimits(enabled=False)).request(A, B, ME, True, 0) is Status.RELAY_OFF
    assert core.request(A, (A[0], b"\x09" * 16), ME, True, 0) is Status.LOOP
    assert core.request(A, (ME, b"\x09" * 16), ME, True, 0) is Status.LOOP
    assert core.request(A, B, ME, False, 0) is Status.NO_ROUTE
    first, second = core.request(A, B, ME, True, 0), core.request(A, B, ME, True, 0)
    assert isinstance(first, int) and isinstance(second, int) and first != second
    assert core.request(A, D, ME, True, 0) is Status.PEER_LIMIT  # alice holds 2
    assert core.request(D, B, ME, True, 0) is Status.PEER_LIMIT  # so does bob, as target
    third = core.request(D, (b"\xee" * 32, b"\x04" * 16), ME, True, 0)
    assert isinstance(third, int)
    assert core.request((b"\x11" * 32, A[1]), (b"\x12" * 32, A[1]), ME, True, 0) is Status.BUSY
    assert core.stats["refused_peer_limit"] == 2 and core.stats["refused_busy"] == 1
    # Closing frees the counts, whichever end went away; twice is harmless.
    core.close(first)
    core.close(first)
    assert isinstance(core.request(A, D, ME, True, 0), int)
    assert len(core) == 3


def test_setup_times_out_then_lifetime_ends_an_established_circuit() -> None:
    core = RelayCore(RelayLimits(setup_timeout=10, lifetime=100))
    slow, fast = core.request(A, B, ME, True, 0), core.request(A, D, ME, True, 0)
    assert isinstance(slow, int) and isinstance(fast, int)
    core.established(fast, 5)
    assert core.get_timer() == 10
    core.handle_timer(10)
    assert core.next_event() == Expired(slow, Status.TIMEOUT) and core.next_event() is None
    assert core.circuits() == [fast] and core.get_timer() == 105
    core.handle_timer(104.9)
    assert core.next_event() is None
    core.handle_timer(105)
    assert core.next_event() == Expired(fast, Status.OK) and len(core) == 0
    assert core.get_timer() is None


def test_credit_is_paced_by_the_token_bucket() -> None:
    rate, burst = 100_000.0, 50_000
    core = RelayCore(RelayLimits(rate=rate, burst=burst))
    cid = core.request(A, B, ME, True, 0)
    assert isinstance(cid, int)
    core.established(cid, 0)
    assert core.forwarded(cid, 0, 30_000, 0) == 30_000  # within the burst: at once
    assert core.forwarded(cid, 0, 60_000, 0) == 20_000  # the rest is owed
    assert core.forwarded(cid, 1, 10_000, 0) == 10_000  # the other direction has its own
    due = core.get_timer()
    assert due is not None and 0 < due <= (16 * 1024 + 1) / rate + 1e-9
    granted = 0
    now = 0.0
    while granted < 40_000:
        now = core.get_timer() or now
        core.handle_timer(now)
        while (event := core.next_event()) is not None:
            assert isinstance(event, Grant) and event.circuit == cid and event.direction == 0
            granted += event.nbytes
    assert granted == 40_000
    assert now == pytest.approx(40_000 / rate, rel=0.05)  # 100 kB/s, no faster
    assert core.stats["bytes_forwarded"] == 100_000


def test_token_bucket_never_exceeds_its_burst() -> None:
    bucket = TokenBucket(10.0, 5, 0.0)
    assert bucket.take(9, 0.0) == 5 and bucket.take(1, 0.0) == 0
    assert bucket.take(100, 1000.0) == 5
    assert bucket.ready_at(3) == pytest.approx(1000.4)  # one token of slack


def test_a_target_takes_a_bounded_number_through_one_relay() -> None:
    core = RelayCore(RelayLimits(incoming_per_relay=2))
    assert core.accept_incoming(b"c") and core.accept_incoming(b"c")
    assert not core.accept_incoming(b"c") and core.accept_incoming(b"other")
    core.incoming_done(b"c")
    assert core.accept_incoming(b"c")
    assert core.stats["incoming_refused"] == 1 and core.stats["incoming_accepted"] == 4
