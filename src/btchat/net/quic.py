"""Sessions over UDP: QUIC (aioquic) on the DHT's own socket, and NAT hole punching.

How this works. :class:`QuicEndpoint` shares one UDP socket with the DHT: the DHT
service hands every datagram to :meth:`QuicEndpoint.datagram_received` first, which
keeps what :func:`classify` says is QUIC or a punch and returns KRPC to the DHT. A
QUIC long-header packet has the 0x80 bit set (RFC 9000 §17.2), which a KRPC message
(a bencoded dict, ``d``) never has; a short-header packet (§17.3) is recognised only by
a destination connection id we issued, never by its first byte alone (``d`` is 0x64, a
valid short-header first byte). What is neither is dropped and counted.

Each connection is an aioquic :class:`~aioquic.quic.connection.QuicConnection` (a
sans-I/O core with the same driving surface as ours: ``receive_datagram``,
``datagrams_to_send``, ``get_timer``/``handle_timer``, ``next_event``) driven here by
the loop's clock, one timer per connection. One bidirectional stream (id 0, opened by
the dialler) carries the bytes: :class:`QuicStream` is a
:class:`~btchat.net.transport.ByteStream`, so the Noise session runs inside it
unchanged and authentication stays Noise IK bound to device certificates. QUIC's TLS
uses a throwaway self-signed certificate per process and is not verified: it gives
QUIC its packet protection and nothing else is asked of it (docs/ARCHITECTURE.md).

Hole punching: :meth:`QuicEndpoint.punch` sends a small datagram (:data:`PUNCH`) to a
candidate every :data:`PUNCH_INTERVAL` for :data:`PUNCH_DURATION`, so that our NAT
keeps a mapping open toward the peer's mapped address; when the peer dials us from its
own rendezvous lookup, its QUIC Initial passes our NAT and we accept it, answering the
address its packets came from (which is how a peer behind a symmetric NAT is learned).
Every count a stranger can drive is bounded: connections in total and per source IP,
handshakes in progress (each proven by a Retry first, RFC 9000 §8.1.2, and at most
:data:`HANDSHAKE_DEADLINE` long), punch targets, bytes buffered unread.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import ipaddress
import logging
import os
import ssl
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

from aioquic.buffer import Buffer
from aioquic.quic import events as qe
from aioquic.quic.configuration import QuicConfiguration
from aioquic.quic.connection import QuicConnection
from aioquic.quic.packet import QuicPacketType, encode_quic_retry, pull_quic_header
from aioquic.quic.retry import QuicRetryTokenHandler
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from btchat.net.transport import CLOSE_LINGER, Address, ByteStream, OnStream
from btchat.tasks import TaskOwner

__all__ = [
    "ALPN",
    "CID_LENGTH",
    "MAX_CONNECTIONS",
    "MAX_CONNECTIONS_PER_IP",
    "MAX_HALF_OPEN",
    "MAX_PUNCH_TARGETS",
    "MAX_UNREAD",
    "PUNCH",
    "PUNCH_DURATION",
    "PUNCH_INTERVAL",
    "Kind",
    "QuicDialer",
    "QuicEndpoint",
    "QuicListener",
    "QuicStream",
    "classify",
]

log = logging.getLogger(__name__)

#: ALPN of a btchat session over QUIC (the version of what runs inside the stream).
ALPN = "btchat/1"
#: Length of the connection ids we issue: fixed, so a short header can be looked up.
CID_LENGTH = 8
#: A punch datagram: first byte 0x00 is neither KRPC (``d``) nor QUIC (RFC 9000 §17:
#: the fixed bit 0x40 is set in every QUIC packet we accept). Receivers count and drop it.
PUNCH = b"\x00btchat-punch"
#: Seconds between punches to one target, and how long a target is punched.
PUNCH_INTERVAL = 1.0
PUNCH_DURATION = 30.0
#: Targets punched at once (each costs one small datagram per interval).
MAX_PUNCH_TARGETS = 16
#: QUIC connections at once (both directions), and per remote IP (a home NAT may hide
#: several contacts behind one address, so more than one).
MAX_CONNECTIONS = 64
MAX_CONNECTIONS_PER_IP = 8
#: Accepted connections still in their QUIC handshake, in total and per remote IP.
MAX_HALF_OPEN = 16
MAX_HALF_OPEN_PER_IP = 4
#: Bytes received and not yet read by the pump. aioquic doubles a stream's credit as it
#: is used, so this, not flow control, bounds what a peer that is not read can make us hold.
MAX_UNREAD = 4 << 20
#: ``drain()`` waits while more than this is queued and not yet sent (asyncio's default).
HIGH_WATER = 64 * 1024
#: RFC 9000 §14.1: a client's Initial is padded to at least 1200 bytes; smaller ones
#: from an unknown source are dropped before any state is made.
MIN_INITIAL = 1200
#: Seconds an accepted connection may take to finish its QUIC handshake.
HANDSHAKE_DEADLINE = 10.0
#: Application error code we close a misbehaving connection with.
ERR_PROTOCOL = 0x1
#: A connection we hear nothing on for this long is over. A peer that was killed sends
#: no CLOSE over UDP (TCP's kernel would reset), so this is how soon we notice: short,
#: with keepalives far more often than any idle timeout of a NAT's UDP mapping.
QUIC_IDLE_TIMEOUT = 15.0
#: Seconds between our QUIC PINGs on an established connection (each is acknowledged,
#: so both idle timers stay fed and the NAT mapping stays open).
QUIC_KEEPALIVE = 4.0
#: QUIC versions we accept an Initial of (aioquic's: v1 and v2).
SUPPORTED_VERSIONS = tuple(QuicConfiguration().supported_versions)
#: The one stream a session uses: the client's first bidirectional stream.
STREAM_ID = 0


class Kind(Enum):
    """What a datagram on the shared socket is."""

    KRPC = "krpc"
    QUIC = "quic"
    PUNCH = "punch"
    UNKNOWN = "unknown"


def classify(data: bytes, known_cid: Callable[[bytes], bool]) -> Kind:
    """Which protocol ``data`` belongs to; ``known_cid`` says if we issued a connection id."""
    if not data:
        return Kind.UNKNOWN
    first = data[0]
    if first & 0x80:  # RFC 9000 §17.2 long header
        return Kind.QUIC
    if first & 0x40 and len(data) > CID_LENGTH and known_cid(data[1 : 1 + CID_LENGTH]):
        return Kind.QUIC  # §17.3 short header with a destination id of ours
    if first == 0x64:  # "d": a bencoded dict, for the DHT (which checks it further)
        return Kind.KRPC
    if data == PUNCH:
        return Kind.PUNCH
    return Kind.UNKNOWN


_tls: tuple[Any, Any] | None = None


def _tls_identity() -> tuple[Any, Any]:
    """A throwaway self-signed certificate for this process (module docstring: why)."""
    global _tls
    if _tls is None:
        key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "btchat")])
        now = datetime.datetime.now(datetime.UTC)
        cert = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=3650))
            .sign(key, hashes.SHA256())
        )
        _tls = (cert, key)
    return _tls


def _configuration(is_client: bool) -> QuicConfiguration:
    cfg = QuicConfiguration(
        is_client=is_client,
        alpn_protocols=[ALPN],
        connection_id_length=CID_LENGTH,
        idle_timeout=QUIC_IDLE_TIMEOUT,
        verify_mode=ssl.CERT_NONE,  # the Noise session inside authenticates the peer
    )
    if not is_client:
        cfg.certificate, cfg.private_key = _tls_identity()
    return cfg


def _unsent(quic: QuicConnection, stream_id: int) -> int:
    """Bytes of ``stream_id`` queued in aioquic and not yet sent once (no public API)."""
    stream = quic._streams.get(stream_id)
    if stream is None:
        return 0
    sender = stream.sender
    return max(0, sender._buffer_stop - sender.highest_offset)


def _fin_acked(quic: QuicConnection, stream_id: int) -> bool:
    stream = quic._streams.get(stream_id)
    return stream is None or stream.sender.is_finished


@dataclass(eq=False)
class _Conn:
    quic: QuicConnection
    addr: Address  # where its packets last came from (or where we dialled)
    client: bool
    cids: set[bytes] = field(default_factory=set)
    half_open: bool = True
    stream: QuicStream | None = None
    established: asyncio.Future[None] | None = None
    timer: asyncio.TimerHandle | None = None
    timer_at: float | None = None
    deadline: asyncio.TimerHandle | None = None  # of an accepted handshake
    keepalive: asyncio.TimerHandle | None = None
    pings: int = 0
    gone: bool = False
    origin: str = ""  # the IP it was counted under (addr may change: migration)

    @property
    def ip(self) -> str:
        return self.origin


class QuicEndpoint:
    """QUIC connections over a shared UDP socket; see the module docstring."""

    def __init__(self, send: Callable[[bytes, Address], None]) -> None:
        self._send = send
        self.loop = asyncio.get_running_loop()
        self._by_cid: dict[bytes, _Conn] = {}
        self._conns: set[_Conn] = set()
        self._per_ip: Counter[str] = Counter()
        self._half_open_ip: Counter[str] = Counter()
        self._on_stream: OnStream | None = None
        self._tasks = TaskOwner()
        self._punch: dict[Address, tuple[float, Callable[[], bool]]] = {}
        self._punch_task: asyncio.Task[None] | None = None
        self._retry = QuicRetryTokenHandler()  # a fresh key per process
        self.closed = False
        self.stats: Counter[str] = Counter()

    @classmethod
    def on(cls, dht: Any) -> QuicEndpoint:
        """An endpoint on ``dht``'s socket (a :class:`~btchat.net.dht_service.DhtService`)."""
        endpoint = cls(dht.send_datagram)
        dht.share_socket(endpoint.datagram_received)
        return endpoint

    # ------------------------------------------------------------------ counts

    @property
    def connections(self) -> int:
        return len(self._conns)

    @property
    def half_open(self) -> int:
        return sum(self._half_open_ip.values())

    # ------------------------------------------------------------------ input

    def datagram_received(self, data: bytes, addr: Address) -> bool:
        """Take ``data`` if it is ours (QUIC, a punch, or garbage to drop); False: KRPC."""
        kind = classify(data, self._by_cid.__contains__)
        if kind is Kind.KRPC:
            return False
        self.stats[f"rx_{kind.value}"] += 1
        if kind is Kind.QUIC and not self.closed:
            self._quic_datagram(data, (str(addr[0]), int(addr[1])))
        return True

    def _quic_datagram(self, data: bytes, addr: Address) -> None:
        try:
            header = pull_quic_header(Buffer(data=data), host_cid_length=CID_LENGTH)
        except ValueError:
            self.stats["dropped_malformed"] += 1
            return
        conn = self._by_cid.get(header.destination_cid)
        if conn is None:
            conn = self._accept(data, header, addr)
            if conn is None:
                return
        conn.quic.receive_datagram(data, addr, self.loop.time())
        self._process(conn)

    def _accept(self, data: bytes, header: Any, addr: Address) -> _Conn | None:
        """A new server connection for a client's Initial, within every bound.

        RFC 9000 §8.1.2: an Initial without a token gets a stateless Retry (smaller than
        the Initial, so no amplifier); only one that returns the token, proving it can
        receive at its address, makes state. So a sender of spoofed addresses fills no
        handshake slot, and the per-IP bounds hold for real addresses.
        """
        if (
            header.packet_type != QuicPacketType.INITIAL
            or len(data) < MIN_INITIAL
            or header.version not in SUPPORTED_VERSIONS
        ):
            self.stats["dropped_unmatched"] += 1  # no version negotiation: no amplifier
            return None
        if self._on_stream is None:
            self.stats["dropped_not_listening"] += 1
            return None
        now = self.loop.time()
        if not header.token:
            retry_cid = os.urandom(CID_LENGTH)
            token = self._retry.create_token(
                address=addr,
                original_destination_connection_id=header.destination_cid,
                retry_source_connection_id=retry_cid,
                now=now,
            )
            self._send(
                encode_quic_retry(
                    version=header.version,
                    source_cid=retry_cid,
                    destination_cid=header.source_cid,
                    original_destination_cid=header.destination_cid,
                    retry_token=token,
                ),
                addr,
            )
            self.stats["tx_retry"] += 1
            return None
        try:
            original = self._retry.validate_token(
                address=addr, destination_cid=header.destination_cid, token=header.token, now=now
            )
        except ValueError:
            self.stats["dropped_bad_token"] += 1
            return None
        ip = addr[0]
        if (
            len(self._conns) >= MAX_CONNECTIONS
            or self._per_ip[ip] >= MAX_CONNECTIONS_PER_IP
            or self.half_open >= MAX_HALF_OPEN
            or self._half_open_ip[ip] >= MAX_HALF_OPEN_PER_IP
        ):
            self.stats["refused_limit"] += 1
            return None
        quic = QuicConnection(
            configuration=_configuration(False),
            original_destination_connection_id=original,
            retry_source_connection_id=header.destination_cid,
        )
        conn = self._add(quic, addr, client=False)
        self._register(conn, header.destination_cid)  # the client's Initials carry it
        conn.deadline = self.loop.call_later(HANDSHAKE_DEADLINE, self._expire, conn)
        self.stats["accepted"] += 1
        return conn

    def _expire(self, conn: _Conn) -> None:
        """An accepted handshake that did not finish in time gives its slot back."""
        if conn.half_open and not conn.gone:
            self.stats["handshake_timeouts"] += 1
            self._abort(conn, "handshake timeout")

    # ------------------------------------------------------------------ state

    def _add(self, quic: QuicConnection, addr: Address, *, client: bool) -> _Conn:
        # Only accepted handshakes count as half-open: our own dials (while punching,
        # to many contacts at once) must never crowd out the peer's dial to us.
        conn = _Conn(quic, addr, client, half_open=not client, origin=addr[0])
        self._conns.add(conn)
        self._per_ip[addr[0]] += 1
        if conn.half_open:
            self._half_open_ip[addr[0]] += 1
        self._register(conn, quic.host_cid)
        return conn

    def _register(self, conn: _Conn, cid: bytes) -> None:
        conn.cids.add(cid)
        self._by_cid[cid] = conn

    def _remove(self, conn: _Conn) -> None:
        if conn.gone:
            return
        conn.gone = True
        for cid in conn.cids:
            if self._by_cid.get(cid) is conn:
                del self._by_cid[cid]
        self._conns.discard(conn)
        ip = conn.origin
        self._release(self._per_ip, ip)
        if conn.half_open:
            conn.half_open = False
            self._release(self._half_open_ip, ip)
        if conn.timer is not None:
            conn.timer.cancel()
        if conn.deadline is not None:
            conn.deadline.cancel()
        if conn.keepalive is not None:
            conn.keepalive.cancel()
        if conn.established is not None and not conn.established.done():
            conn.established.set_exception(ConnectionError("QUIC connection ended"))
        if conn.stream is not None:
            conn.stream._ended()

    @staticmethod
    def _release(counter: Counter[str], key: str) -> None:
        counter[key] -= 1
        if counter[key] <= 0:
            del counter[key]

    def _process(self, conn: _Conn) -> None:
        """Handle the core's events, send what it queued, re-arm its timer."""
        if conn.gone:
            return
        quic = conn.quic
        while (event := quic.next_event()) is not None:
            if isinstance(event, qe.ConnectionIdIssued):
                self._register(conn, event.connection_id)
            elif isinstance(event, qe.ConnectionIdRetired):
                conn.cids.discard(event.connection_id)
                if self._by_cid.get(event.connection_id) is conn:
                    del self._by_cid[event.connection_id]
            elif isinstance(event, qe.HandshakeCompleted):
                self._handshake_done(conn)
            elif isinstance(event, qe.StreamDataReceived):
                if event.stream_id != STREAM_ID or conn.stream is None:
                    self.stats["dropped_bad_stream"] += 1
                    quic.close(ERR_PROTOCOL, reason_phrase="one stream only")
                    continue
                conn.stream._feed(event.data, event.end_stream)
            elif isinstance(event, qe.StreamReset):
                if conn.stream is not None and event.stream_id == STREAM_ID:
                    conn.stream._ended(ConnectionResetError("QUIC stream reset"))
            elif isinstance(event, qe.ConnectionTerminated):
                self._remove(conn)
                return
        now = self.loop.time()
        for data, addr in quic.datagrams_to_send(now):
            self._send(data, addr)
        if conn.stream is not None:
            conn.stream._progress()
        when = quic.get_timer()
        if when != conn.timer_at:
            if conn.timer is not None:
                conn.timer.cancel()
            conn.timer = None if when is None else self.loop.call_at(when, self._on_timer, conn)
            conn.timer_at = when

    def _on_timer(self, conn: _Conn) -> None:
        conn.timer = None
        conn.timer_at = None
        if conn.gone:
            return
        conn.quic.handle_timer(self.loop.time())
        self._process(conn)

    def _keepalive(self, conn: _Conn) -> None:
        if conn.gone:
            return
        conn.pings += 1
        conn.quic.send_ping(conn.pings)
        self._process(conn)
        conn.keepalive = self.loop.call_later(QUIC_KEEPALIVE, self._keepalive, conn)

    def _handshake_done(self, conn: _Conn) -> None:
        if conn.half_open:
            conn.half_open = False
            self._release(self._half_open_ip, conn.ip)
        conn.stream = QuicStream(self, conn)
        conn.keepalive = self.loop.call_later(QUIC_KEEPALIVE, self._keepalive, conn)
        if conn.client:
            if conn.established is not None and not conn.established.done():
                conn.established.set_result(None)
        elif self._on_stream is not None:
            self._tasks.spawn(self._on_stream(conn.stream))
        else:
            conn.quic.close(ERR_PROTOCOL, reason_phrase="not listening")

    # ------------------------------------------------------------------ dialling

    async def dial(self, addr: Address, timeout: float = 10.0) -> QuicStream:
        """A QUIC stream to ``addr``, or OSError/TimeoutError."""
        if self.closed:
            raise ConnectionError("the QUIC endpoint is closed")
        if len(self._conns) >= MAX_CONNECTIONS:
            self.stats["refused_limit"] += 1
            raise ConnectionError("too many QUIC connections")
        addr = (str(addr[0]), int(addr[1]))
        quic = QuicConnection(configuration=_configuration(True))
        conn = self._add(quic, addr, client=True)
        conn.established = self.loop.create_future()
        self.stats["dials"] += 1
        quic.connect(addr, self.loop.time())
        self._process(conn)
        try:
            async with asyncio.timeout(timeout):
                await conn.established  # cancelled with us: nothing left unretrieved
        except BaseException:
            self._abort(conn, "dial abandoned")
            raise
        assert conn.stream is not None
        return conn.stream

    def _abort(self, conn: _Conn, reason: str) -> None:
        if conn.gone:
            return
        conn.quic.close(ERR_PROTOCOL, reason_phrase=reason)
        self._process(conn)
        if conn.half_open or (conn.client and conn.stream is None):
            self._remove(conn)  # nothing to linger for: free its slots at once

    # ------------------------------------------------------------------ punching

    def punch(self, addr: Address, stop: Callable[[], bool]) -> bool:
        """Punch ``addr`` for :data:`PUNCH_DURATION` (until ``stop()``); False if full."""
        if self.closed:
            return False
        addr = (str(addr[0]), int(addr[1]))
        if not _punchable(addr):
            self.stats["punch_refused"] += 1
            return False
        if addr not in self._punch and len(self._punch) >= MAX_PUNCH_TARGETS:
            self.stats["punch_refused"] += 1
            return False
        self._punch[addr] = (self.loop.time() + PUNCH_DURATION, stop)
        self._send(PUNCH, addr)
        self.stats["tx_punch"] += 1
        if self._punch_task is None or self._punch_task.done():
            self._punch_task = self._tasks.spawn(self._punch_loop())
        return True

    def punching(self) -> list[Address]:
        return list(self._punch)

    async def _punch_loop(self) -> None:
        while self._punch:
            await asyncio.sleep(PUNCH_INTERVAL)
            now = self.loop.time()
            for addr, (until, stop) in list(self._punch.items()):
                if now >= until or stop():
                    del self._punch[addr]
                    continue
                self._send(PUNCH, addr)
                self.stats["tx_punch"] += 1

    # ------------------------------------------------------------------ lifecycle

    def listen(self, on_stream: OnStream | None) -> None:
        """Accept incoming connections (each runs ``on_stream``); None stops accepting."""
        self._on_stream = on_stream

    async def aclose(self) -> None:
        self.closed = True
        self._on_stream = None
        self._punch.clear()
        for conn in list(self._conns):
            conn.quic.close(reason_phrase="shutting down")
            self._process(conn)
        for conn in list(self._conns):
            self._remove(conn)
        await self._tasks.cancel_all()


def _punchable(addr: Address) -> bool:
    """Only unicast IPv4/IPv6 addresses with a port (never broadcast, multicast, 0)."""
    try:
        ip = ipaddress.ip_address(addr[0])
    except ValueError:
        return False
    return (
        0 < addr[1] < 65536
        and not (ip.is_multicast or ip.is_unspecified)
        and (
            not isinstance(ip, ipaddress.IPv4Address)
            or ip != ipaddress.IPv4Address("255.255.255.255")
        )
    )


class QuicStream:
    """A :class:`~btchat.net.transport.ByteStream` over stream 0 of one QUIC connection."""

    def __init__(self, endpoint: QuicEndpoint, conn: _Conn) -> None:
        self._endpoint = endpoint
        self._conn = conn
        self._buf = bytearray()
        self._eof = False
        self._error: Exception | None = None
        self._closing = False
        self._changed = asyncio.Event()

    # ------------------------------------------------------------ fed by the endpoint

    def _feed(self, data: bytes, end: bool) -> None:
        if self._eof:
            return
        self._buf += data
        self._eof = end
        if len(self._buf) > MAX_UNREAD:
            # The endpoint is inside _process: close here, it sends the CLOSE.
            self._endpoint.stats["dropped_unread_overflow"] += 1
            self._error = ConnectionResetError("peer sent more than we read")
            self._closing = True
            self._conn.quic.close(ERR_PROTOCOL, reason_phrase="not read")
        self._changed.set()

    def _progress(self) -> None:
        self._changed.set()

    def _ended(self, error: Exception | None = None) -> None:
        if error is not None and self._error is None and not self._eof:
            self._error = error
        self._eof = True
        self._closing = True
        self._changed.set()

    # ------------------------------------------------------------ ByteStream

    @property
    def remote_address(self) -> Address | None:
        """Where the peer's packets come from (follows NAT rebinding and migration)."""
        peer = self._conn.quic.get_peer_address()
        return (str(peer[0]), int(peer[1])) if peer else self._conn.addr

    async def read(self, n: int) -> bytes:
        while not self._buf and not self._eof and self._error is None:
            self._changed.clear()
            await self._changed.wait()
        if self._buf:
            out = bytes(self._buf[:n])
            del self._buf[:n]
            return out
        if self._error is not None:
            raise self._error
        return b""

    def write(self, data: bytes) -> None:
        if self._closing or not data:
            return
        self._conn.quic.send_stream_data(STREAM_ID, data)
        self._endpoint._process(self._conn)

    def write_buffer_size(self) -> int:
        return 0 if self._conn.gone else _unsent(self._conn.quic, STREAM_ID)

    async def drain(self) -> None:
        while not self._closing and self.write_buffer_size() > HIGH_WATER:
            self._changed.clear()
            await self._changed.wait()
        if self._error is not None:
            raise self._error

    def is_closing(self) -> bool:
        return self._closing

    async def aclose(self) -> None:
        """Send FIN, wait (bounded) until the peer has it, then close the connection."""
        if self._conn.gone:
            self._closing = True
            return
        if not self._closing:
            self._closing = True
            self._conn.quic.send_stream_data(STREAM_ID, b"", end_stream=True)
            self._endpoint._process(self._conn)
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(CLOSE_LINGER):
                while not self._conn.gone and not _fin_acked(self._conn.quic, STREAM_ID):
                    self._changed.clear()
                    await self._changed.wait()
        if not self._conn.gone:
            self._conn.quic.close(reason_phrase="closed")
            self._endpoint._process(self._conn)

    def abort(self) -> None:
        self._closing = True
        self._endpoint._abort(self._conn, "aborted")


class QuicDialer:
    """A :class:`~btchat.net.transport.Dialer` that opens QUIC streams from an endpoint."""

    def __init__(self, endpoint: QuicEndpoint, *, timeout: float = 10.0) -> None:
        self.endpoint = endpoint
        self.timeout = timeout

    async def dial(self, address: Address) -> ByteStream:
        return await self.endpoint.dial(address, self.timeout)


class QuicListener:
    """A :class:`~btchat.net.transport.Listener`: the endpoint accepts while this is open."""

    def __init__(self, endpoint: QuicEndpoint, port: int, on_stream: OnStream) -> None:
        self.endpoint = endpoint
        self._port = port
        endpoint.listen(on_stream)

    @property
    def port(self) -> int:
        return self._port

    async def aclose(self) -> None:
        self.endpoint.listen(None)


def random_cid() -> bytes:
    """A connection id of our length (tests use it to forge short headers)."""
    return os.urandom(CID_LENGTH)
