"""Tracker announce clients: HTTP (BEP 3, 7, 23) and UDP (BEP 15).

The sans-I/O parsers are checked against the byte layouts in shared/specs and fuzzed: for
any input they return a result or raise :class:`TrackerError`, nothing else. The asyncio
clients are driven against tiny scripted trackers on 127.0.0.1 for every error path a
real tracker only shows by accident: silence (resends), wrong transaction ids, error
packets, failure reasons, HTTP errors, oversized and malformed answers.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import socket
import struct
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any, cast
from urllib.parse import unquote_to_bytes, urlsplit

import pytest
from aiohttp import web
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from btchat.codec.bencode import encode
from btchat.discovery.trackers import DEFAULT_TIMEOUT, announce
from btchat.discovery.trackers.http import http_announce
from btchat.discovery.trackers.protocol import (
    ACTION_ANNOUNCE,
    ACTION_CONNECT,
    ACTION_ERROR,
    CONNECTION_ID_LIFETIME,
    MAX_HTTP_RESPONSE,
    MAX_MESSAGE,
    MAX_PEERS,
    PROTOCOL_ID,
    AnnounceRequest,
    AnnounceResult,
    TrackerError,
    TransactionIdMismatch,
    build_http_announce_url,
    build_udp_announce,
    build_udp_connect,
    decode_compact_peers,
    decode_response,
    parse_http_announce_response,
    parse_tracker_url,
    parse_udp_announce_response,
    parse_udp_connect_response,
)
from btchat.discovery.trackers.udp import UdpTrackerClient

FUZZ = settings(
    max_examples=600,
    derandomize=True,
    database=None,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)

INFO_HASH = bytes(range(0x80, 0x94))  # every byte needs escaping in a URL
PEER_ID = b"-BC0001-" + bytes([0, 1, 2, 0x25, 0x26, 0x3D, 0x2B, 0x20, 0xFF, 0x7E, 0x2E, 0x41])
REQUEST = AnnounceRequest(info_hash=INFO_HASH, peer_id=PEER_ID, port=6881, key=0x0BADF00D)


def compact(*peers: tuple[str, int]) -> bytes:
    return b"".join(socket.inet_aton(ip) + port.to_bytes(2, "big") for ip, port in peers)


def compact6(*peers: tuple[str, int]) -> bytes:
    return b"".join(
        socket.inet_pton(socket.AF_INET6, ip) + port.to_bytes(2, "big") for ip, port in peers
    )


# --- requests and URLs ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("field_name", "value"),
    [
        ("info_hash", b"x" * 19),
        ("info_hash", "x" * 20),
        ("peer_id", b"x" * 21),
        ("port", 0),
        ("port", 65536),
        ("event", "paused"),
        ("event", "empty"),
        ("numwant", -2),
        ("uploaded", -1),
        ("left", 2**63),
        ("key", 2**32),
    ],
)
def test_request_rejects_misuse(field_name: str, value: Any) -> None:
    fields: dict[str, Any] = {"info_hash": INFO_HASH, "peer_id": PEER_ID, "port": 1}
    fields[field_name] = value
    with pytest.raises(ValueError):
        AnnounceRequest(**fields)


def test_request_draws_a_random_key() -> None:
    keys = {AnnounceRequest(info_hash=INFO_HASH, peer_id=PEER_ID, port=1).key for _ in range(8)}
    assert len(keys) > 1


@pytest.mark.parametrize(
    ("url", "scheme", "host", "port"),
    [
        ("http://tracker.example/announce", "http", "tracker.example", 80),
        ("HTTPS://tracker.example/announce", "https", "tracker.example", 443),
        ("http://127.0.0.1:6969/announce?passkey=abc", "http", "127.0.0.1", 6969),
        ("udp://tracker.example:1337/announce", "udp", "tracker.example", 1337),
        ("udp://[::1]:6969", "udp", "::1", 6969),
    ],
)
def test_parse_tracker_url(url: str, scheme: str, host: str, port: int) -> None:
    parsed = parse_tracker_url(url)
    assert (parsed.scheme, parsed.host, parsed.port) == (scheme, host, port)


@pytest.mark.parametrize(
    ("url", "words"),
    [
        ("ftp://tracker.example/announce", "scheme"),
        ("wss://tracker.example", "scheme"),
        ("tracker.example:80", "scheme"),
        ("http:///announce", "no host"),
        ("udp://tracker.example/announce", "no port"),
        ("udp://tracker.example:0", "out of range"),
        ("http://tracker.example:99999/", "bad tracker URL"),
        ("http://tracker.example:http/", "bad tracker URL"),
        ("http://user:pw@tracker.example/", "credentials"),
        ("http://tracker.example/a b", "spaces"),
        ("http://tracker.example/\x00", "control"),
        ("http://tracker.example/#frag", "fragment"),
        ("http://[::1/announce", "bad tracker URL"),
        ("http://tracker.example/" + "a" * 3000, "longer than"),
    ],
)
def test_parse_tracker_url_rejects(url: str, words: str) -> None:
    with pytest.raises(TrackerError, match=words):
        parse_tracker_url(url)


def _query(url: str) -> dict[str, bytes]:
    pairs = [part.split("=", 1) for part in urlsplit(url).query.split("&")]
    return {key: unquote_to_bytes(value) for key, value in pairs}


def test_http_announce_url_carries_bep3_keys_byte_exact() -> None:
    request = AnnounceRequest(
        info_hash=INFO_HASH,
        peer_id=PEER_ID,
        port=6881,
        event="started",
        numwant=30,
        uploaded=1,
        downloaded=2,
        left=3,
        key=0x0BADF00D,
    )
    url = build_http_announce_url("http://t.example:6969/announce", request)
    assert url.startswith("http://t.example:6969/announce?info_hash=%80%81%82")
    # Only unreserved characters stay as they are (RFC 3986); everything else is %XX.
    assert all(c.isalnum() or c in "-._~%=&:/?" for c in url)
    assert _query(url) == {
        "info_hash": INFO_HASH,
        "peer_id": PEER_ID,
        "port": b"6881",
        "uploaded": b"1",
        "downloaded": b"2",
        "left": b"3",
        "compact": b"1",
        "key": b"0badf00d",
        "numwant": b"30",
        "event": b"started",
    }


def test_http_announce_url_keeps_passkey_and_omits_defaults() -> None:
    request = AnnounceRequest(info_hash=INFO_HASH, peer_id=PEER_ID, port=1, numwant=-1)
    url = build_http_announce_url("https://t.example/a/announce?passkey=s3cr3t", request)
    assert url.startswith("https://t.example/a/announce?passkey=s3cr3t&info_hash=")
    query = _query(url)
    assert "event" not in query and "numwant" not in query
    assert build_http_announce_url("http://t.example/", request, compact=False).count("compact=0")
    with pytest.raises(TrackerError):
        build_http_announce_url("udp://t.example:1", request)


# --- HTTP answers -------------------------------------------------------------------------


def test_http_compact_peers_and_counts() -> None:
    body = encode(
        {
            b"complete": 3,
            b"incomplete": 4,
            b"interval": 1800,
            b"min interval": 60,
            b"peers": compact(("10.0.0.1", 6881), ("192.168.1.2", 65535)),
            b"peers6": compact6(("2001:db8::1", 443)),
        }
    )
    assert parse_http_announce_response(body) == AnnounceResult(
        interval=1800,
        peers=[("10.0.0.1", 6881), ("192.168.1.2", 65535), ("2001:db8::1", 443)],
        complete=3,
        incomplete=4,
        warning=None,
        min_interval=60,
    )


def test_http_dictionary_peers() -> None:
    body = encode(
        {
            b"interval": 900,
            b"peers": [
                {b"ip": b"10.0.0.1", b"peer id": b"a" * 20, b"port": 1},
                {b"ip": b"2001:DB8:0::2", b"port": 2},  # canonicalised
                {b"ip": b"tracker.example", b"port": 3},  # a name: not resolved, skipped
                {b"ip": b"10.0.0.1", b"port": 1},  # duplicate
                {b"ip": b"10.0.0.4", b"port": 0},  # nobody listens on port 0
            ],
        }
    )
    result = parse_http_announce_response(body)
    assert result.peers == [("10.0.0.1", 1), ("2001:db8::2", 2)]
    assert (result.complete, result.incomplete, result.min_interval) == (None, None, None)


def test_http_failure_reason_and_warning() -> None:
    with pytest.raises(TrackerError, match="refused the announce: unregistered torrent"):
        parse_http_announce_response(encode({b"failure reason": b"unregistered torrent"}))
    with pytest.raises(TrackerError, match="malformed failure reason"):
        parse_http_announce_response(encode({b"failure reason": 7}))
    long_reason = b"\x1b[31m" + b"x" * 5000
    with pytest.raises(TrackerError) as info:
        parse_http_announce_response(encode({b"failure reason": long_reason}))
    assert "\x1b" not in str(info.value) and len(str(info.value)) < MAX_MESSAGE + 100
    result = parse_http_announce_response(
        encode({b"interval": 5, b"peers": b"", b"warning message": b"slow down"})
    )
    assert result.warning == "slow down" and result.peers == []


def test_http_accepts_unsorted_keys_but_nothing_else_non_canonical() -> None:
    unsorted = b"d8:intervali60e5:peers6:" + compact(("1.2.3.4", 5)) + b"8:completei1ee"
    result = parse_http_announce_response(unsorted)
    assert result == AnnounceResult(interval=60, peers=[("1.2.3.4", 5)], complete=1)
    for bad in (
        b"d8:intervali60e8:intervali61e5:peers0:e",  # duplicate key
        b"d8:intervali060e5:peers0:e",  # leading zero
        b"d8:intervali60e5:peers0:ee",  # trailing byte
        b"d5:peers0:8:intervali-0ee",  # -0, keys unsorted too
    ):
        with pytest.raises(TrackerError, match="not bencoded"):
            parse_http_announce_response(bad)


@pytest.mark.parametrize(
    ("value", "words"),
    [
        (b"le", "not a dictionary"),
        ({b"peers": b""}, "no integer 'interval'"),
        ({b"interval": b"60", b"peers": b""}, "no integer 'interval'"),
        ({b"interval": -1, b"peers": b""}, "out of range"),
        ({b"interval": 2**32, b"peers": b""}, "out of range"),
        ({b"interval": 60}, "no 'peers'"),
        ({b"interval": 60, b"peers": b"12345"}, "not a multiple of 6"),
        ({b"interval": 60, b"peers": b"", b"peers6": b"x" * 17}, "not a multiple of 18"),
        ({b"interval": 60, b"peers": 5}, "neither a string nor a list"),
        ({b"interval": 60, b"peers": b"", b"peers6": []}, "not a string"),
        ({b"interval": 60, b"peers": [b"1.2.3.4"]}, "not a dictionary"),
        ({b"interval": 60, b"peers": [{b"ip": b"1.2.3.4"}]}, "lacks"),
        ({b"interval": 60, b"peers": [{b"ip": 1, b"port": 1}]}, "lacks"),
        ({b"interval": 60, b"peers": [{b"ip": b"1.2.3.4", b"port": 70000}]}, "out of range"),
        ({b"interval": 60, b"peers": b"", b"complete": -1}, "bad 'complete'"),
        ({b"interval": 60, b"peers": b"", b"incomplete": b"1"}, "bad 'incomplete'"),
        ({b"interval": 60, b"peers": b"", b"min interval": []}, "bad 'min interval'"),
        ({b"interval": 60, b"peers": b"", b"warning message": 1}, "warning message"),
    ],
)
def test_http_malformed_answers(value: Any, words: str) -> None:
    body = value if isinstance(value, bytes) else encode(value)
    with pytest.raises(TrackerError, match=words):
        parse_http_announce_response(body)


def test_http_hostile_answers() -> None:
    hostile = [
        b"",
        b"l" * 100_000,  # nesting far past the limit
        b"d" * 50 + b"e" * 50,
        b"99999999999999999999:x",  # a string longer than the input
        b"d8:intervali" + b"9" * 500 + b"e5:peers0:e",  # an integer with 500 digits
        b"x" * (MAX_HTTP_RESPONSE + 1),
        encode({b"interval": 1, b"peers": b"\x00" * (MAX_HTTP_RESPONSE + 6)}),
    ]
    for body in hostile:
        with pytest.raises(TrackerError):
            parse_http_announce_response(body)


def test_peer_lists_are_capped() -> None:
    many = b"".join(i.to_bytes(4, "big") + b"\x00\x01" for i in range(1, MAX_PEERS + 500))
    assert len(decode_compact_peers(many)) == MAX_PEERS
    entries = [{b"ip": b"10.0.%d.%d" % divmod(i, 256), b"port": 1} for i in range(1500)]
    body = encode({b"interval": 1, b"peers": entries, b"peers6": compact6(("::2", 1))})
    assert len(parse_http_announce_response(body).peers) == MAX_PEERS


# --- UDP packets (BEP 15 layouts) ---------------------------------------------------------


def test_udp_connect_request_layout() -> None:
    packet = build_udp_connect(0xDEADBEEF)
    assert packet == bytes.fromhex("000004172710198000000000deadbeef")
    assert struct.unpack(">QII", packet) == (PROTOCOL_ID, ACTION_CONNECT, 0xDEADBEEF)


def test_udp_announce_request_layout() -> None:
    request = AnnounceRequest(
        info_hash=INFO_HASH,
        peer_id=PEER_ID,
        port=51413,
        event="stopped",
        numwant=-1,
        uploaded=3,
        downloaded=1,
        left=2**40,
        key=0xCAFEBABE,
    )
    packet = build_udp_announce(0x0102030405060708, 0x11223344, request)
    assert len(packet) == 98
    # Offsets from BEP 15 "IPv4 announce request".
    assert packet[0:8] == bytes.fromhex("0102030405060708")  # connection_id
    assert packet[8:12] == b"\x00\x00\x00\x01"  # action announce
    assert packet[12:16] == bytes.fromhex("11223344")  # transaction_id
    assert packet[16:36] == INFO_HASH
    assert packet[36:56] == PEER_ID
    assert int.from_bytes(packet[56:64], "big") == 1  # downloaded
    assert int.from_bytes(packet[64:72], "big") == 2**40  # left
    assert int.from_bytes(packet[72:80], "big") == 3  # uploaded
    assert packet[80:84] == b"\x00\x00\x00\x03"  # event stopped
    assert packet[84:88] == b"\x00\x00\x00\x00"  # IP address: default
    assert packet[88:92] == bytes.fromhex("cafebabe")  # key
    assert packet[92:96] == b"\xff\xff\xff\xff"  # num_want -1: default
    assert packet[96:98] == (51413).to_bytes(2, "big")
    events = {"": 0, "completed": 1, "started": 2}
    for event, code in events.items():
        request = AnnounceRequest(info_hash=INFO_HASH, peer_id=PEER_ID, port=1, event=event)
        assert build_udp_announce(0, 0, request)[80:84] == code.to_bytes(4, "big")


def test_udp_connect_response() -> None:
    answer = struct.pack(">IIQ", ACTION_CONNECT, 7, 0x41727101980)
    assert parse_udp_connect_response(answer, 7) == 0x41727101980
    assert parse_udp_connect_response(answer + b"future extension", 7) == 0x41727101980
    with pytest.raises(TransactionIdMismatch, match="transaction id 0x00000007"):
        parse_udp_connect_response(answer, 8)
    with pytest.raises(TransactionIdMismatch, match="only 7 bytes"):
        parse_udp_connect_response(answer[:7], 7)
    with pytest.raises(TrackerError, match="shorter than 16"):
        parse_udp_connect_response(answer[:15], 7)
    with pytest.raises(TrackerError, match="action 1, expected 0"):
        parse_udp_connect_response(struct.pack(">IIQ", ACTION_ANNOUNCE, 7, 1), 7)


def test_udp_error_packet() -> None:
    error = struct.pack(">II", ACTION_ERROR, 9) + b"torrent not registered"
    for parse in (parse_udp_connect_response, parse_udp_announce_response):
        with pytest.raises(TrackerError, match="returned an error: torrent not registered"):
            parse(error, 9)
        with pytest.raises(TransactionIdMismatch):
            parse(error, 10)
    with pytest.raises(TrackerError, match=r"\(no message\)"):
        parse_udp_announce_response(struct.pack(">II", ACTION_ERROR, 9), 9)
    with pytest.raises(TrackerError) as info:
        parse_udp_announce_response(struct.pack(">II", 3, 9) + b"\xff\x00\n" * 1000, 9)
    assert "\x00" not in str(info.value) and len(str(info.value)) < MAX_MESSAGE + 100


def test_udp_announce_response_ipv4_and_ipv6_strides() -> None:
    header = struct.pack(">IIIII", ACTION_ANNOUNCE, 5, 1800, 2, 3)
    v4 = header + compact(("127.0.0.1", 1), ("10.1.2.3", 65535))
    assert parse_udp_announce_response(v4, 5) == AnnounceResult(
        interval=1800, peers=[("127.0.0.1", 1), ("10.1.2.3", 65535)], complete=3, incomplete=2
    )
    v6 = header + compact6(("::1", 1), ("2001:db8::7", 2))
    result = parse_udp_announce_response(v6, 5, ipv6=True)
    assert result.peers == [("::1", 1), ("2001:db8::7", 2)]
    assert parse_udp_announce_response(header, 5).peers == []
    with pytest.raises(TrackerError, match="not a multiple of 6"):
        parse_udp_announce_response(v4 + b"\x00", 5)
    with pytest.raises(TrackerError, match="not a multiple of 18"):
        parse_udp_announce_response(v4, 5, ipv6=True)
    with pytest.raises(TrackerError, match="shorter than 20"):
        parse_udp_announce_response(header[:19], 5)
    with pytest.raises(TrackerError, match="action 0, expected 1"):
        parse_udp_announce_response(struct.pack(">IIQ", ACTION_CONNECT, 5, 1) + b"\0" * 4, 5)


# --- fuzzing: only TrackerError -----------------------------------------------------------


def _only_tracker_errors(call: Callable[[], object]) -> None:
    with contextlib.suppress(TrackerError):
        call()


@FUZZ
@given(st.binary(max_size=400))
def test_fuzz_http_parser_raw(body: bytes) -> None:
    _only_tracker_errors(lambda: parse_http_announce_response(body))
    _only_tracker_errors(lambda: decode_response(body))


_KEYS = [
    b"interval",
    b"min interval",
    b"peers",
    b"peers6",
    b"complete",
    b"incomplete",
    b"failure reason",
    b"warning message",
]
_leaf = st.one_of(
    st.integers(min_value=-(2**70), max_value=2**70),
    st.binary(max_size=40),
    st.sampled_from([b"1.2.3.4", b"::1", b"host.example", compact(("1.2.3.4", 1))]),
)
_peer_entry = st.dictionaries(st.sampled_from([b"ip", b"port", b"peer id"]), _leaf, max_size=3)
_value = st.one_of(_leaf, _peer_entry, st.lists(st.one_of(_peer_entry, _leaf), max_size=4))


@settings(FUZZ, max_examples=400)
@given(st.dictionaries(st.sampled_from(_KEYS), _value, max_size=8))
def test_fuzz_http_parser_structured(value: dict[bytes, Any]) -> None:
    """Well-formed bencode with the right keys and wrong types or values."""
    body = encode(value)
    try:
        result = parse_http_announce_response(body)
    except TrackerError:
        return
    assert isinstance(result.interval, int)
    assert all(isinstance(ip, str) and 0 < port < 65536 for ip, port in result.peers)


@FUZZ
@given(
    st.binary(max_size=120),
    st.sampled_from([0, 1, 2, 3, 7, 2**32 - 1]),
    st.booleans(),
    st.booleans(),
)
def test_fuzz_udp_parsers(tail: bytes, action: int, ipv6: bool, right_tid: bool) -> None:
    tid = 0x01020304
    packet = struct.pack(">II", action, tid if right_tid else tid ^ 1) + tail
    for data in (packet, tail):
        _only_tracker_errors(lambda d=data: parse_udp_connect_response(d, tid))  # type: ignore[misc]
        _only_tracker_errors(
            lambda d=data: parse_udp_announce_response(d, tid, ipv6=ipv6)  # type: ignore[misc]
        )
        _only_tracker_errors(lambda d=data: decode_compact_peers(d, ipv6=ipv6))  # type: ignore[misc]


# --- a scripted UDP tracker on 127.0.0.1 --------------------------------------------------

Handler = Callable[["FakeUdpTracker", bytes], list[bytes]]


@dataclass
class FakeUdpTracker(asyncio.DatagramProtocol):
    """Answers each datagram with what ``handler`` returns; records what it received."""

    handler: Handler
    received: list[tuple[float, bytes]] = field(default_factory=list)
    transport: asyncio.DatagramTransport | None = None
    connection_id: int = 0x1122334455667788

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: Any) -> None:
        self.received.append((asyncio.get_running_loop().time(), data))
        assert self.transport is not None
        for answer in self.handler(self, data):
            self.transport.sendto(answer, addr)

    def actions(self) -> list[int]:
        return [struct.unpack_from(">I", data, 8)[0] for _, data in self.received]


def well_behaved(
    peers: bytes = compact(("10.0.0.1", 1)),
) -> Handler:
    def handle(tracker: FakeUdpTracker, data: bytes) -> list[bytes]:
        _, action, tid = struct.unpack_from(">QII", data)
        if action == ACTION_CONNECT:
            return [struct.pack(">IIQ", ACTION_CONNECT, tid, tracker.connection_id)]
        assert struct.unpack_from(">Q", data)[0] == tracker.connection_id
        return [struct.pack(">IIIII", ACTION_ANNOUNCE, tid, 300, 1, 2) + peers]

    return handle


@pytest.fixture
async def udp_tracker() -> AsyncIterator[Callable[[Handler, str], Any]]:
    transports: list[asyncio.DatagramTransport] = []

    async def start(handler: Handler, host: str = "127.0.0.1") -> tuple[FakeUdpTracker, str]:
        loop = asyncio.get_running_loop()
        tracker = FakeUdpTracker(handler)
        transport, _ = await loop.create_datagram_endpoint(lambda: tracker, local_addr=(host, 0))
        transports.append(transport)
        port = transport.get_extra_info("sockname")[1]
        url_host = f"[{host}]" if ":" in host else host
        return tracker, f"udp://{url_host}:{port}/announce"

    yield start
    for transport in transports:
        transport.close()


def fast_client(max_tries: int = 3, **kwargs: Any) -> UdpTrackerClient:
    return UdpTrackerClient(base_timeout=0.05, max_tries=max_tries, **kwargs)


async def test_udp_announce_and_connection_id_cache(udp_tracker: Any) -> None:
    tracker, url = await udp_tracker(well_behaved(compact(("10.0.0.1", 1), ("10.0.0.2", 2))))
    now = [1000.0]
    client = fast_client(clock=lambda: now[0])
    result = await client.announce(url, REQUEST)
    assert result == AnnounceResult(
        interval=300, peers=[("10.0.0.1", 1), ("10.0.0.2", 2)], complete=2, incomplete=1
    )
    assert tracker.actions() == [ACTION_CONNECT, ACTION_ANNOUNCE]
    announce_packet = tracker.received[1][1]
    assert announce_packet[16:36] == INFO_HASH and announce_packet[36:56] == PEER_ID
    # Within a minute the connection id is reused; after it, a new connect comes first.
    now[0] += CONNECTION_ID_LIFETIME - 1
    await client.announce(url, REQUEST)
    assert tracker.actions() == [ACTION_CONNECT, ACTION_ANNOUNCE, ACTION_ANNOUNCE]
    now[0] += 1
    await client.announce(url, REQUEST)
    assert tracker.actions()[3:] == [ACTION_CONNECT, ACTION_ANNOUNCE]


async def test_udp_silence_resends_with_backoff_then_fails(udp_tracker: Any) -> None:
    tracker, url = await udp_tracker(lambda tracker, data: [])
    client = fast_client(max_tries=4)
    with pytest.raises(TrackerError, match=r"no answer from tracker .* after 4 tries"):
        await client.announce(url, REQUEST)
    packets = [data for _, data in tracker.received]
    assert len(packets) == 4 and len(set(packets)) == 1  # the same connect, same tid
    times = [t for t, _ in tracker.received]
    gaps = [b - a for a, b in itertools.pairwise(times)]
    # BEP 15: resend after base * 2**n: 0.05, 0.1, 0.2 (timers fire late, never early).
    for gap, expected in zip(gaps, [0.05, 0.1, 0.2], strict=True):
        assert expected * 0.9 <= gap < expected + 0.15


async def test_udp_lost_packets_are_resent(udp_tracker: Any) -> None:
    answer = well_behaved()
    seen: dict[int, int] = {}

    def lossy(tracker: FakeUdpTracker, data: bytes) -> list[bytes]:
        action = struct.unpack_from(">I", data, 8)[0]
        seen[action] = seen.get(action, 0) + 1
        return answer(tracker, data) if seen[action] > 1 else []  # drop each first one

    tracker, url = await udp_tracker(lossy)
    result = await fast_client().announce(url, REQUEST)
    assert result.peers == [("10.0.0.1", 1)]
    actions = tracker.actions()
    assert actions == [ACTION_CONNECT, ACTION_CONNECT, ACTION_ANNOUNCE, ACTION_ANNOUNCE]
    # The resent announce reuses its transaction id: a late answer to either counts.
    assert tracker.received[2][1] == tracker.received[3][1]


async def test_udp_expired_connection_id_is_renewed_during_resends(udp_tracker: Any) -> None:
    """BEP 15 example "Announce times out": once the id is a minute old, connect again."""
    answer = well_behaved()
    now = [0.0]

    def ages(tracker: FakeUdpTracker, data: bytes) -> list[bytes]:
        action = struct.unpack_from(">I", data, 8)[0]
        if action == ACTION_ANNOUNCE and len(tracker.actions()) == 2:
            now[0] += CONNECTION_ID_LIFETIME  # the first announce is lost and takes a minute
            return []
        return answer(tracker, data)

    tracker, url = await udp_tracker(ages)
    await fast_client(clock=lambda: now[0]).announce(url, REQUEST)
    assert tracker.actions() == [ACTION_CONNECT, ACTION_ANNOUNCE, ACTION_CONNECT, ACTION_ANNOUNCE]


async def test_udp_wrong_transaction_id_is_ignored(udp_tracker: Any) -> None:
    def liar(tracker: FakeUdpTracker, data: bytes) -> list[bytes]:
        tid = struct.unpack_from(">I", data, 12)[0]
        return [struct.pack(">IIQ", ACTION_CONNECT, tid ^ 0x80000000, 1), b"\x00\x00"]

    _, url = await udp_tracker(liar)
    with pytest.raises(TrackerError, match=r"after 2 tries; ignored 4 packet\(s\) not for us"):
        await fast_client(max_tries=2).announce(url, REQUEST)

    answer = well_behaved()

    def spoofed_then_real(tracker: FakeUdpTracker, data: bytes) -> list[bytes]:
        return liar(tracker, data) + answer(tracker, data)

    _, url = await udp_tracker(spoofed_then_real)
    assert (await fast_client().announce(url, REQUEST)).peers == [("10.0.0.1", 1)]


async def test_udp_error_packet_fails_at_once_and_forgets_connection(udp_tracker: Any) -> None:
    answer = well_behaved()
    refuse = [True]

    def refusing(tracker: FakeUdpTracker, data: bytes) -> list[bytes]:
        action, tid = struct.unpack_from(">II", data, 8)
        if action == ACTION_ANNOUNCE and refuse[0]:
            return [struct.pack(">II", ACTION_ERROR, tid) + b"info_hash not allowed"]
        return answer(tracker, data)

    tracker, url = await udp_tracker(refusing)
    client = fast_client()
    with pytest.raises(TrackerError, match=r"returned an error: info_hash not allowed \(tracker"):
        await client.announce(url, REQUEST)
    refuse[0] = False
    await client.announce(url, REQUEST)
    assert tracker.actions() == [ACTION_CONNECT, ACTION_ANNOUNCE, ACTION_CONNECT, ACTION_ANNOUNCE]

    def refuse_connect(tracker: FakeUdpTracker, data: bytes) -> list[bytes]:
        tid = struct.unpack_from(">I", data, 12)[0]
        return [struct.pack(">II", ACTION_ERROR, tid) + b"go away"]

    _, url = await udp_tracker(refuse_connect)
    with pytest.raises(TrackerError, match="returned an error: go away"):
        await fast_client().announce(url, REQUEST)


async def test_udp_malformed_answer_with_our_tid_fails(udp_tracker: Any) -> None:
    _, url = await udp_tracker(well_behaved(peers=b"\x01\x02\x03"))
    with pytest.raises(TrackerError, match="not a multiple of 6"):
        await fast_client().announce(url, REQUEST)


async def test_udp_ipv6_tracker_uses_18_byte_peers(udp_tracker: Any) -> None:
    try:
        socket.socket(socket.AF_INET6, socket.SOCK_DGRAM).close()
        _, url = await udp_tracker(well_behaved(compact6(("2001:db8::1", 7))), "::1")
    except OSError:
        pytest.skip("no IPv6 loopback on this machine")
    assert (await fast_client().announce(url, REQUEST)).peers == [("2001:db8::1", 7)]


async def test_udp_closed_port_fails_fast() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    client = UdpTrackerClient(base_timeout=5, max_tries=3)
    start = asyncio.get_running_loop().time()
    with pytest.raises(TrackerError, match="cannot reach tracker"):
        await client.announce(f"udp://127.0.0.1:{port}", REQUEST)
    assert asyncio.get_running_loop().time() - start < 2  # ICMP, not the resend schedule


async def test_udp_unresolvable_host(monkeypatch: pytest.MonkeyPatch) -> None:
    """A name that does not resolve (faked: tests make no DNS queries)."""

    async def no_such_name(*args: Any, **kwargs: Any) -> Any:
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    monkeypatch.setattr(asyncio.get_running_loop(), "getaddrinfo", no_such_name)
    with pytest.raises(TrackerError, match=r"cannot reach tracker .*Name or service not known"):
        await fast_client().announce("udp://tracker.example:6969", REQUEST)


async def test_udp_overall_timeout_and_bad_urls(udp_tracker: Any) -> None:
    _, url = await udp_tracker(lambda tracker, data: [])
    client = UdpTrackerClient(base_timeout=10, max_tries=9)
    with pytest.raises(TrackerError, match=r"within 0\.2 s"):
        await client.announce(url, REQUEST, timeout=0.2)
    with pytest.raises(TrackerError, match="not a UDP tracker URL"):
        await client.announce("http://127.0.0.1:1/", REQUEST)
    with pytest.raises(ValueError):
        UdpTrackerClient(base_timeout=0)
    with pytest.raises(ValueError):
        UdpTrackerClient(max_tries=0)


# --- a scripted HTTP tracker on 127.0.0.1 -------------------------------------------------


@dataclass
class FakeHttpTracker:
    """Serves ``status``/``body`` (after ``delay``) at /announce; records raw queries."""

    base: str = ""
    status: int = 200
    body: bytes = b""
    delay: float = 0.0
    queries: list[str] = field(default_factory=list)

    async def handle(self, request: web.Request) -> web.StreamResponse:
        self.queries.append(request.query_string)
        if self.delay:
            await asyncio.sleep(self.delay)
        return web.Response(status=self.status, body=self.body)

    async def redirect(self, request: web.Request) -> web.StreamResponse:
        raise web.HTTPFound(f"/loop?{request.query_string}")


@pytest.fixture
async def http_tracker() -> AsyncIterator[FakeHttpTracker]:
    tracker = FakeHttpTracker()
    app = web.Application()
    app.router.add_get("/announce", tracker.handle)
    app.router.add_get("/loop", tracker.redirect)
    runner = web.AppRunner(app, handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    tracker.base = f"http://127.0.0.1:{port}"
    yield tracker
    await runner.cleanup()


async def test_http_announce_end_to_end(http_tracker: FakeHttpTracker) -> None:
    http_tracker.body = encode(
        {b"interval": 600, b"peers": compact(("10.0.0.9", 9)), b"peers6": compact6(("::9", 9))}
    )
    result = await announce(
        f"{http_tracker.base}/announce?passkey=k",
        INFO_HASH,
        PEER_ID,
        6881,
        event="started",
        key=0x0BADF00D,
    )
    assert result == AnnounceResult(interval=600, peers=[("10.0.0.9", 9), ("::9", 9)])
    (query,) = http_tracker.queries
    sent = _query(f"http://x/?{query}")
    assert sent["passkey"] == b"k" and sent["event"] == b"started"
    assert sent["info_hash"] == INFO_HASH and sent["peer_id"] == PEER_ID  # not re-quoted
    assert sent["key"] == b"0badf00d" and sent["numwant"] == b"50"


@pytest.mark.parametrize(
    ("status", "body", "words"),
    [
        (200, encode({b"failure reason": b"unregistered torrent"}), "unregistered torrent"),
        (500, b"Internal Server Error", "answered HTTP 500 Internal Server Error"),
        (404, b"", "answered HTTP 404"),
        (400, encode({b"failure reason": b"bad port"}), r"refused the announce \(HTTP 400"),
        (200, b"<html>hello</html>", "not bencoded"),
        (200, encode({b"interval": 60}), "no 'peers'"),
        (200, b"d" * (MAX_HTTP_RESPONSE + 1), "sent more than"),
    ],
)
async def test_http_error_answers(
    http_tracker: FakeHttpTracker, status: int, body: bytes, words: str
) -> None:
    http_tracker.status, http_tracker.body = status, body
    with pytest.raises(TrackerError, match=words):
        await announce(f"{http_tracker.base}/announce", INFO_HASH, PEER_ID, 1)


async def test_http_timeout_redirect_loop_and_refused(http_tracker: FakeHttpTracker) -> None:
    http_tracker.delay = 0.5
    http_tracker.body = encode({b"interval": 1, b"peers": b""})
    with pytest.raises(TrackerError, match=r"within 0\.2 s"):
        await announce(f"{http_tracker.base}/announce", INFO_HASH, PEER_ID, 1, timeout=0.2)
    with pytest.raises(TrackerError, match="redirected more than 3 times"):
        await announce(f"{http_tracker.base}/loop", INFO_HASH, PEER_ID, 1)
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with pytest.raises(TrackerError, match="cannot reach tracker"):
        await announce(f"http://127.0.0.1:{port}/announce", INFO_HASH, PEER_ID, 1)


async def test_http_chunked_oversized_body_is_cut(http_tracker: FakeHttpTracker) -> None:
    """No Content-Length: the cap applies while reading, not only from the header."""

    async def endless(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse()
        await response.prepare(request)
        for _ in range(100):
            await response.write(b"l" * 65536)
        return response

    app = web.Application()
    app.router.add_get("/announce", endless)
    runner = web.AppRunner(app, handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        url = f"http://127.0.0.1:{runner.addresses[0][1]}/announce"
        with pytest.raises(TrackerError, match="sent more than"):
            await http_announce(url, REQUEST, timeout=5)
    finally:
        await runner.cleanup()


async def test_announce_dispatch_and_misuse(udp_tracker: Any) -> None:
    _, url = await udp_tracker(well_behaved())
    result = await announce(url, INFO_HASH, PEER_ID, 1, udp_client=fast_client())
    assert result.peers == [("10.0.0.1", 1)]
    for bad_url in ("ftp://x/", "udp://x", "", "http://"):
        with pytest.raises(TrackerError):
            await announce(bad_url, INFO_HASH, PEER_ID, 1)
    with pytest.raises(ValueError):
        await announce(url, INFO_HASH[:19], PEER_ID, 1)
    with pytest.raises(ValueError):
        await announce(url, INFO_HASH, PEER_ID, 1, event="bogus")
    with pytest.raises(ValueError):
        await announce(url, INFO_HASH, PEER_ID, 1, timeout=0)
    assert DEFAULT_TIMEOUT > 0
