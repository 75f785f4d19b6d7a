"""QUIC on the DHT's socket: the demultiplexer, the byte stream, and what strangers can do."""

from __future__ import annotations

import asyncio
import os
import socket
from collections.abc import AsyncIterator

import pytest
from aioquic.quic.connection import QuicConnection
from harness import until

from btchat.codec.bencode import encode
from btchat.net import quic as q
from btchat.net.dht_service import DhtService
from btchat.net.quic import (
    CID_LENGTH,
    MAX_HALF_OPEN_PER_IP,
    PUNCH,
    Kind,
    QuicEndpoint,
    QuicStream,
    classify,
)
from btchat.net.transport import ByteStream

KRPC_PING = encode({b"t": b"aa", b"y": b"q", b"q": b"ping", b"a": {b"id": b"x" * 20}})


def test_classify_by_header_form_and_issued_ids() -> None:
    ours = os.urandom(CID_LENGTH)
    known = {ours}.__contains__
    assert classify(KRPC_PING, known) is Kind.KRPC
    assert classify(b"\xc0" + os.urandom(40), known) is Kind.QUIC  # long header
    assert classify(b"\x80", known) is Kind.QUIC  # long form: QUIC's to reject in full
    # A short header is ours only with a destination id we issued, even when its first
    # byte is "d" (0x64 has the fixed bit 0x40 set: a valid short-header first byte).
    assert classify(b"\x64" + ours + b"payload", known) is Kind.QUIC
    assert classify(b"\x41" + ours + b"payload", known) is Kind.QUIC
    assert classify(b"\x64" + os.urandom(CID_LENGTH) + b"x", known) is Kind.KRPC  # DHT checks it
    assert classify(b"\x41" + os.urandom(CID_LENGTH) + b"x", known) is Kind.UNKNOWN
    assert classify(b"\x01" + ours, known) is Kind.UNKNOWN  # fixed bit clear: not QUIC
    assert classify(PUNCH, known) is Kind.PUNCH
    assert classify(PUNCH + b"x", known) is Kind.UNKNOWN
    assert classify(b"", known) is Kind.UNKNOWN
    assert classify(b"\x41" + ours[:4], known) is Kind.UNKNOWN  # too short for an id


@pytest.fixture
async def pair() -> AsyncIterator[tuple[DhtService, QuicEndpoint, DhtService, QuicEndpoint]]:
    a = await DhtService.start(host="127.0.0.1")
    b = await DhtService.start(host="127.0.0.1")
    ea, eb = QuicEndpoint.on(a), QuicEndpoint.on(b)
    try:
        yield a, ea, b, eb
    finally:
        await ea.aclose()
        await eb.aclose()
        a.close()
        b.close()


async def _echo(stream: ByteStream) -> None:
    while data := await stream.read(1 << 16):
        stream.write(data)
        await stream.drain()
    await stream.aclose()


async def test_a_quic_stream_carries_bytes_both_ways_beside_the_dht(pair) -> None:  # type: ignore[no-untyped-def]
    a, ea, b, eb = pair
    eb.listen(_echo)
    stream = await ea.dial(b.addr, timeout=5)
    assert isinstance(stream, QuicStream) and stream.remote_address == b.addr
    stream.write(b"hello")
    assert await stream.read(100) == b"hello"

    # Bulk both ways with backpressure: 3 MB out and echoed back, byte for byte.
    blob = os.urandom(3 << 20)
    received = bytearray()

    async def read_all() -> None:
        while len(received) < len(blob):
            data = await stream.read(1 << 18)
            assert data, "EOF before all the echo came back"
            received.extend(data)

    reader = asyncio.create_task(read_all())
    for i in range(0, len(blob), 1 << 16):
        stream.write(blob[i : i + (1 << 16)])
        await stream.drain()
        assert stream.write_buffer_size() <= q.HIGH_WATER + (1 << 16)
    await asyncio.wait_for(reader, 30)
    assert bytes(received) == blob

    # The DHT on the same socket still works, and no KRPC went to QUIC or back.
    assert await a.ping(b.addr) == b.node_id
    assert ea.stats["rx_unknown"] == eb.stats["rx_unknown"] == 0

    # An orderly close: the echo side sees EOF, closes, and both connections go away.
    await stream.aclose()
    await until(lambda: ea.connections == eb.connections == 0, 10, "both connections gone")


async def test_dialling_where_nobody_listens_fails_within_the_timeout(pair) -> None:  # type: ignore[no-untyped-def]
    _, ea, b, eb = pair  # b does not listen: its endpoint drops new Initials
    with pytest.raises(TimeoutError):
        await ea.dial(b.addr, timeout=0.5)
    assert ea.connections == 0 and eb.connections == 0
    assert eb.stats["dropped_not_listening"] >= 1


async def test_garbage_on_the_shared_port_is_dropped_and_counted(pair) -> None:  # type: ignore[no-untyped-def]
    a, ea, b, eb = pair
    eb.listen(_echo)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        for data in (
            b"\x00",
            b"\xff" * 3,  # a long header too short to parse
            b"\xc0\x00\x00\x00\x01" + os.urandom(60),  # an Initial below 1200 bytes
            b"\xe0\x00\x00\x00\x01\x08" + os.urandom(1300),  # Handshake for nobody
            b"\x41" + os.urandom(1200),  # a short header with an id we never issued
            b"d1:x",  # looks like KRPC: the DHT drops it
            PUNCH,  # a punch: counted, never answered
        ):
            s.sendto(data, b.addr)
        await asyncio.sleep(0.3)
        s.setblocking(False)
        with pytest.raises(BlockingIOError):
            s.recv(2048)  # nothing was answered
    assert eb.connections == 0
    assert eb.stats["rx_unknown"] == 2 and eb.stats["rx_punch"] == 1
    assert eb.stats["rx_quic"] == 3
    assert eb.stats["dropped_malformed"] + eb.stats["dropped_unmatched"] == 3
    assert b.node.stats["rx_malformed"] == 1  # only "d1:x" reached the DHT
    # ... and the port still serves both protocols.
    assert await a.ping(b.addr) == b.node_id
    stream = await ea.dial(b.addr, timeout=5)
    stream.write(b"still here")
    assert await stream.read(100) == b"still here"
    stream.abort()


def _client(token: bytes = b"") -> QuicConnection:
    config = q._configuration(True)
    config.token = token
    return QuicConnection(configuration=config)


def _first(client: QuicConnection, addr: tuple[str, int]) -> bytes:
    """The first datagram of a fresh QUIC client to ``addr`` (a padded Initial)."""
    client.connect(addr, 0.0)
    return client.datagrams_to_send(0.0)[0][0]


async def test_a_new_connection_costs_state_only_once_its_address_is_proven(
    pair,  # type: ignore[no-untyped-def]
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    _, _, b, eb = pair
    eb.listen(_echo)
    monkeypatch.setattr(q, "HANDSHAKE_DEADLINE", 1.0)
    loop = asyncio.get_running_loop()
    tries = MAX_HALF_OPEN_PER_IP + 3
    socks = []
    try:
        # Initials without a token (as a sender of spoofed addresses could send them):
        # each gets a stateless Retry, smaller than the Initial, and nothing is kept.
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.bind(("127.0.0.1", 0))
        socks.append(s)
        for _ in range(tries):
            s.sendto(_first(_client(), b.addr), b.addr)
        await until(lambda: eb.stats["tx_retry"] == tries, 5, "a Retry for each")
        assert eb.connections == 0 and eb.half_open == 0
        # A token we never issued is dropped.
        s.sendto(_first(_client(token=os.urandom(40)), b.addr), b.addr)
        await until(lambda: eb.stats["dropped_bad_token"] == 1, 5, "the forged token dropped")
        # Clients that answer the Retry (a real address) but never finish the handshake:
        # each holds a slot, up to the bound per source IP; the rest are refused.
        for _ in range(tries):
            sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            sock.bind(("127.0.0.1", 0))
            sock.setblocking(False)
            socks.append(sock)
            client = _client()
            sock.sendto(_first(client, b.addr), b.addr)
            retry = await asyncio.wait_for(loop.sock_recv(sock, 2048), 5)
            assert retry[0] & 0xF0 == 0xF0  # a v1 long-header Retry
            client.receive_datagram(retry, b.addr, 0.1)
            for data, _ in client.datagrams_to_send(0.1):
                sock.sendto(data, b.addr)
        await until(
            lambda: eb.stats["accepted"] + eb.stats["refused_limit"] >= tries,
            5,
            "every answered Retry handled",
        )
        assert eb.half_open == MAX_HALF_OPEN_PER_IP == eb.connections
        assert eb.stats["refused_limit"] >= 3
        # ... and an unfinished handshake gives its slot back at the deadline.
        await until(lambda: eb.connections == 0, 5, "the unfinished handshakes expired")
        assert eb.stats["handshake_timeouts"] == MAX_HALF_OPEN_PER_IP
    finally:
        for sock in socks:
            sock.close()


async def test_punches_are_bounded_and_stop(pair, monkeypatch: pytest.MonkeyPatch) -> None:  # type: ignore[no-untyped-def]
    _, ea, b, eb = pair
    monkeypatch.setattr(q, "PUNCH_INTERVAL", 0.05)
    stop = False
    assert ea.punch(b.addr, lambda: stop)
    await until(lambda: eb.stats["rx_punch"] >= 3, 5, "three punches arrived")
    stop = True
    await until(lambda: not ea.punching(), 5, "punching stopped")
    sent = ea.stats["tx_punch"]
    await asyncio.sleep(0.2)
    assert ea.stats["tx_punch"] == sent
    assert eb.connections == 0  # a punch makes no state at the receiver
    # Bounded targets; and never broadcast, multicast or port 0.
    for port in range(1, q.MAX_PUNCH_TARGETS + 1):
        assert ea.punch(("127.0.0.1", port), lambda: False)
    assert not ea.punch(("127.0.0.1", 9999), lambda: False)
    for bad in (("255.255.255.255", 1), ("224.0.0.1", 1), ("0.0.0.0", 1), ("127.0.0.1", 0)):
        assert not ea.punch(bad, lambda: False)
    assert len(ea.punching()) == q.MAX_PUNCH_TARGETS


class Rebinder(asyncio.DatagramProtocol):
    """A userspace NAT for one client on loopback: what the client sends to ``front``
    leaves from an "outside" socket; :meth:`rebind` moves that to a new port, as a home
    router does when its mapping expires."""

    def __init__(self, server: tuple[str, int]) -> None:
        self.server = server
        self.client: tuple[str, int] | None = None
        self.front: asyncio.DatagramTransport | None = None
        self.outside: asyncio.DatagramTransport | None = None

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self.client = addr
        assert self.outside is not None
        self.outside.sendto(data, self.server)

    async def rebind(self) -> tuple[str, int]:
        """A new outside port (the old one is closed); returns it."""
        if self.outside is not None:
            self.outside.close()
        rebinder = self

        class Outside(asyncio.DatagramProtocol):
            def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
                if rebinder.client is not None and rebinder.front is not None:
                    rebinder.front.sendto(data, rebinder.client)

        loop = asyncio.get_running_loop()
        transport, _ = await loop.create_datagram_endpoint(Outside, local_addr=("127.0.0.1", 0))
        self.outside = transport  # type: ignore[assignment]
        return transport.get_extra_info("sockname")[:2]  # type: ignore[no-any-return]


async def test_a_quic_stream_survives_nat_rebinding(pair) -> None:  # type: ignore[no-untyped-def]
    _, ea, b, eb = pair
    accepted: list[ByteStream] = []

    async def keep(stream: ByteStream) -> None:
        accepted.append(stream)
        await _echo(stream)

    eb.listen(keep)
    nat = Rebinder(b.addr)
    loop = asyncio.get_running_loop()
    front, _ = await loop.create_datagram_endpoint(lambda: nat, local_addr=("127.0.0.1", 0))
    nat.front = front  # type: ignore[assignment]
    first = await nat.rebind()
    try:
        stream = await ea.dial(front.get_extra_info("sockname")[:2], timeout=5)
        stream.write(b"before")
        assert await stream.read(100) == b"before"
        assert accepted[0].remote_address == first  # the server sees the mapping
        second = await nat.rebind()
        assert second != first
        stream.write(b"after")  # leaves from the new port: the server follows it
        assert await asyncio.wait_for(stream.read(100), 10) == b"after"
        await until(lambda: accepted[0].remote_address == second, 5, "the server migrated")
        stream.abort()
    finally:
        front.close()
        if nat.outside is not None:
            nat.outside.close()


async def test_a_killed_peer_is_noticed_within_the_idle_timeout(
    pair, monkeypatch: pytest.MonkeyPatch
) -> None:  # type: ignore[no-untyped-def]
    """A killed process sends no CLOSE over UDP (a TCP peer's kernel would reset), so the
    survivor notices by silence alone: keepalives feed a live connection, and one that
    goes quiet ends at the idle timeout (regression: a restarted contact's new session
    was refused for a minute beside the dead one)."""
    monkeypatch.setattr(q, "QUIC_IDLE_TIMEOUT", 1.5)
    monkeypatch.setattr(q, "QUIC_KEEPALIVE", 0.3)
    _, ea, b, eb = pair
    eb.listen(_echo)
    stream = await ea.dial(b.addr, timeout=5)
    stream.write(b"hi")
    assert await stream.read(10) == b"hi"
    await asyncio.sleep(2.5)  # quiet but alive: the keepalives hold it past the timeout
    assert ea.connections == eb.connections == 1
    b.close()  # "killed": b's socket is gone, nothing is sent
    started = asyncio.get_running_loop().time()
    await until(lambda: ea.connections == 0, 5, "the dead peer noticed")
    assert asyncio.get_running_loop().time() - started < 3.5
    assert await stream.read(10) == b""
