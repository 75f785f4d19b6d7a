"""The relayed -> direct upgrade exchange without I/O: payload vectors, the CONNECT/SYNC
timing on a fake clock (both sides punch at the same moment), retries with backoff,
malformed and unexpected payloads dropped and counted, and which addresses we dial."""

from __future__ import annotations

import contextlib
import json
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from btchat.net.dcutr import (
    CONNECT,
    MAGIC,
    MAX_ANSWERS,
    SYNC,
    Message,
    Punch,
    Send,
    Upgrade,
    acceptable,
    decode,
    encode,
)

VECTORS = json.loads((Path(__file__).parents[1] / "docs" / "vectors" / "dcutr.json").read_text())
A_ADDRS = [("203.0.113.5", 40000), ("2001:db8::5", 40000)]
B_ADDRS = [("198.51.100.9", 6881)]


def _addr(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    return host.strip("[]"), int(port)


@pytest.mark.parametrize("v", VECTORS["vectors"], ids=lambda v: v["name"])
def test_vectors_both_ways(v: dict[str, object]) -> None:
    kind = CONNECT if v["kind"] == "connect" else SYNC
    addrs = tuple(_addr(a) for a in v["addrs"])  # type: ignore[attr-defined]
    message = Message(kind, int(v["attempt"]), addrs)  # type: ignore[call-overload]
    assert encode(message).hex() == v["bytes"]
    assert decode(bytes.fromhex(str(v["bytes"]))) == message


@pytest.mark.parametrize("v", VECTORS["malformed"], ids=lambda v: v["name"])
def test_malformed_vectors_are_refused(v: dict[str, str]) -> None:
    with pytest.raises(ValueError):
        decode(bytes.fromhex(v["bytes"]))


@given(st.binary(max_size=200))
def test_any_bytes_after_the_magic_decode_or_raise_value_error(data: bytes) -> None:
    with contextlib.suppress(ValueError):
        decode(MAGIC + data)
    side = Upgrade(False, lambda: B_ADDRS, lambda: [])
    side.receive(MAGIC + data, 0.0)  # never raises


def _pair(**kw: float) -> tuple[Upgrade, Upgrade]:
    a = Upgrade(True, lambda: list(A_ADDRS), lambda: ["192.168.1.10"], **kw)  # type: ignore[arg-type]
    b = Upgrade(False, lambda: list(B_ADDRS), lambda: ["192.168.1.10"], **kw)  # type: ignore[arg-type]
    return a, b


def _sent(actions: list[Send | Punch]) -> bytes:
    (action,) = actions
    assert isinstance(action, Send)
    return action.payload


def test_both_sides_punch_at_the_same_moment() -> None:
    """One-way delay 0.1 s through the relay: the initiator measures 0.2 s, sends SYNC
    and punches 0.1 s later, just when SYNC reaches the responder, which punches then."""
    a, b = _pair()
    connect = _sent(a.start(0.0))
    assert decode(connect) == Message(CONNECT, 0, tuple(A_ADDRS))
    answer = _sent(b.receive(connect, 0.1))
    assert decode(answer) == Message(CONNECT, 0, tuple(B_ADDRS))
    sync = _sent(a.receive(answer, 0.2))
    assert decode(sync) == Message(SYNC, 0)
    assert a.rtt == pytest.approx(0.2)
    assert a.next_timer() == pytest.approx(0.3)
    assert a.handle_timer(0.29) == []  # not yet
    assert b.receive(sync, 0.3) == [Punch(tuple(A_ADDRS))]
    assert a.handle_timer(a.next_timer() or 0.0) == [Punch(tuple(B_ADDRS))]
    assert a.stats["punches"] == b.stats["punches"] == 1


def test_rounds_retry_with_backoff_then_stop() -> None:
    a, b = _pair(window=5.0, backoff=1.0)
    now, connects = 0.0, []
    actions = a.start(now)
    for _ in range(10):
        if actions:
            payload = _sent(actions)
            connects.append((now, decode(payload).attempt))
            sync = _sent(a.receive(_sent(b.receive(payload, now)), now))
            b.receive(sync, now)
        when = a.next_timer()
        if when is None:
            break
        now = when
        actions = [x for x in a.handle_timer(now) if isinstance(x, Send)]
    # Round n+1 begins its window (5 s) plus 1, then 2 s after round n punched.
    assert connects == [(0.0, 0), (6.0, 1), (13.0, 2)]
    assert a.done and a.next_timer() is None and a.stats["gave_up"] == 1
    assert b.stats["punches"] == 3


def test_an_unanswered_connect_times_out_into_the_next_round() -> None:
    a, _ = _pair(reply_timeout=10.0, backoff=1.0)
    a.start(0.0)
    assert a.next_timer() == 10.0
    assert a.handle_timer(10.0) == []
    assert a.stats["no_answer"] == 1
    assert decode(_sent(a.handle_timer(11.0))).attempt == 1


def test_a_direct_session_ends_the_exchange() -> None:
    a, b = _pair()
    answer = _sent(b.receive(_sent(a.start(0.0)), 0.0))
    a.finish()
    assert a.next_timer() is None
    assert a.receive(answer, 0.1) == [] and a.stats["dropped_done"] == 1


@pytest.mark.parametrize(
    "payload",
    [
        MAGIC,
        MAGIC + b"\x01",
        MAGIC + b"\x02\x01\x00\x00",  # version 2
        MAGIC + b"\x01\x07\x00",  # kind 7
        MAGIC + b"\x01\x01\x00\x01\x04\x01\x02",  # address cut short
        MAGIC + b"\x01\x02\x00\xff",  # SYNC with a tail
    ],
)
def test_malformed_payloads_are_dropped_and_counted(payload: bytes) -> None:
    a, b = _pair()
    a.start(0.0)
    assert a.receive(payload, 0.1) == [] and b.receive(payload, 0.1) == []
    assert a.stats["dropped_malformed"] == b.stats["dropped_malformed"] == 1
    assert a.next_timer() == 10.0  # still waiting for the real answer


def test_unexpected_payloads_are_dropped_and_counted() -> None:
    a, b = _pair()
    # A SYNC for no CONNECT, and a second SYNC for one: the responder punches once.
    assert b.receive(encode(Message(SYNC, 0)), 0.0) == []
    b.receive(encode(Message(CONNECT, 0, tuple(A_ADDRS))), 0.0)
    assert b.receive(encode(Message(SYNC, 0)), 0.0) == [Punch(tuple(A_ADDRS))]
    assert b.receive(encode(Message(SYNC, 0)), 0.0) == []
    assert b.stats["dropped_unexpected"] == 2
    # The initiator: an answer for another round, a SYNC, an answer before asking.
    assert a.receive(encode(Message(CONNECT, 0, ())), 0.0) == []
    a.start(0.0)
    assert a.receive(encode(Message(CONNECT, 5, ())), 0.0) == []
    assert a.receive(encode(Message(SYNC, 0)), 0.0) == []
    assert a.stats["dropped_unexpected"] == 3


def test_a_responder_answers_a_bounded_number_of_connects() -> None:
    _, b = _pair()
    connect = encode(Message(CONNECT, 0, tuple(A_ADDRS)))
    answered = sum(bool(b.receive(connect, float(i))) for i in range(MAX_ANSWERS + 5))
    assert answered == MAX_ANSWERS and b.stats["dropped_excess"] == 5


def test_addresses_we_would_not_dial_are_left_out_and_counted() -> None:
    _, b = _pair()
    offered = (
        ("127.0.0.1", 80),
        ("192.168.1.10", 5000),  # our own host address
        ("192.168.1.20", 5000),  # our LAN: kept
        ("10.0.0.5", 5000),  # someone else's LAN
        ("224.0.0.1", 5000),
        ("203.0.113.5", 40000),
    )
    b.receive(encode(Message(CONNECT, 0, offered)), 0.0)
    assert b.receive(encode(Message(SYNC, 0)), 0.0) == [
        Punch((("192.168.1.20", 5000), ("203.0.113.5", 40000)))
    ]
    assert b.stats["addrs_refused"] == 4


@pytest.mark.parametrize(
    ("addr", "own", "ok"),
    [
        (("203.0.113.5", 1), [], True),
        (("2001:db8::1", 6881), [], True),
        (("203.0.113.5", 0), [], False),
        (("127.0.0.1", 6881), ["127.0.0.1"], False),
        (("::1", 6881), [], False),
        (("169.254.1.1", 6881), ["169.254.1.2"], False),
        (("fe80::1", 6881), [], False),
        (("0.0.0.0", 6881), [], False),
        (("255.255.255.255", 6881), [], False),
        (("240.0.0.1", 6881), [], False),
        (("::ffff:203.0.113.5", 6881), [], False),
        (("ff02::1", 6881), [], False),
        (("10.1.2.3", 6881), ["10.1.2.4"], True),
        (("10.1.2.3", 6881), ["10.1.3.4"], False),
        (("100.64.0.9", 6881), [], False),
        (("fd00::9", 6881), ["fd00::1"], True),
        (("fd00:1::9", 6881), ["fd00::1"], False),
        (("203.0.113.5", 6881), ["203.0.113.5"], False),
    ],
)
def test_acceptable(addr: tuple[str, int], own: list[str], ok: bool) -> None:
    assert acceptable(addr, own) is ok
