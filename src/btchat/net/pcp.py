"""PCP, the Port Control Protocol (RFC 6887): NAT-PMP's successor, spoken by newer home
gateways (miniupnpd, many ISP routers) on the same port 5351. ``net/upnp.py`` asks in
PCP when no UPnP-IGD gateway answers, and in NAT-PMP when the gateway does not speak
PCP, driving the same :class:`~btchat.net.portmap.PortMapper` core.

No maintained Python PCP client exists, so the codec is here, without I/O: the MAP
opcode (request, answer, the mapping nonce that proves a renewal or deletion is ours),
the ANNOUNCE opcode (a probe at discovery, and the gateway's unsolicited one after it
restarts), result codes, the version negotiation (a NAT-PMP answer or UNSUPP_VERSION
means "not PCP here": :class:`PcpUnsupported`), the epoch check that tells a gateway
that lost its mappings (section 8.5), and the retransmission schedule (section 8.1.1).
Then :class:`PcpClient`, a thin shell over ``net/gateway_udp.py``, and
:class:`AnnounceListener` for the unsolicited ANNOUNCE (port 5350, from the gateway
only). We send no options; options in answers are checked for shape and skipped.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import random
import secrets
import socket
import struct
from collections.abc import Callable
from dataclasses import dataclass

from btchat.net.gateway_udp import (
    MAX_PCP,
    SERVER_PORT,
    GatewayClient,
    Malformed,
    local_ip_towards,
)

__all__ = [
    "CLIENT_PORT",
    "RESULTS",
    "AnnounceListener",
    "Announced",
    "EpochCheck",
    "MapAnswer",
    "PcpClient",
    "PcpError",
    "PcpUnsupported",
    "decode_announcement",
    "decode_response",
    "encode_announce",
    "encode_map",
    "retransmit_waits",
]

log = logging.getLogger(__name__)

VERSION = 2
OP_ANNOUNCE, OP_MAP = 0, 1
RESPONSE = 0x80
#: Where clients hear a gateway's unsolicited ANNOUNCE (RFC 6887 section 19.1), sent to
#: the all-hosts group 224.0.0.1 (section 14.1.3).
CLIENT_PORT = 5350
ALL_HOSTS = "224.0.0.1"
HEADER, MAP_DATA = 24, 36
PROTOCOLS = {"UDP": 17, "TCP": 6}
#: Result codes (section 7.4).
SUCCESS, UNSUPP_VERSION = 0, 1
RESULTS = {
    1: "UNSUPP_VERSION: the gateway speaks another PCP version",
    2: "NOT_AUTHORIZED: refused by the gateway's policy",
    3: "MALFORMED_REQUEST",
    4: "UNSUPP_OPCODE",
    5: "UNSUPP_OPTION",
    6: "MALFORMED_OPTION",
    7: "NETWORK_FAILURE",
    8: "NO_RESOURCES",
    9: "UNSUPP_PROTOCOL",
    10: "USER_EX_QUOTA: too many mappings for this host",
    11: "CANNOT_PROVIDE_EXTERNAL",
    12: "ADDRESS_MISMATCH: the gateway sees us from another address",
    13: "EXCESSIVE_REMOTE_PEERS",
}
#: Retransmission (section 8.1.1): initial and maximum wait, +-10 % random each time.
IRT, MRT, RAND = 3.0, 1024.0, 0.1
#: Sends of one request before giving up (the RFC goes on while the mapping is wanted;
#: the core asks again later). Discovery asks less: a gateway that speaks PCP answers.
MAP_TRIES, PROBE_TRIES = 3, 2
#: After an unsolicited ANNOUNCE, renew after a random delay up to this (section 14.1.3).
ANNOUNCE_DELAY = 5.0


class PcpError(Exception):
    """The gateway answered with a failure result code."""

    def __init__(self, code: int, message: str, lifetime: int = 0) -> None:
        super().__init__(message)
        self.code = code
        self.lifetime = lifetime  # how long the error holds (section 7.4), seconds


class PcpUnsupported(PcpError):
    """The gateway does not speak PCP version 2 (it answered in NAT-PMP, or with
    UNSUPP_VERSION): ask it in NAT-PMP instead (section 9)."""


@dataclass(frozen=True)
class MapAnswer:
    """A successful MAP answer: what the gateway granted, and its epoch."""

    epoch: int
    protocol: str
    internal_port: int
    external_port: int
    external_ip: str
    lifetime: int  # 0: the mapping is deleted


@dataclass(frozen=True)
class Announced:
    """An ANNOUNCE answer, solicited or not: only the gateway's epoch."""

    epoch: int


def _ip16(ip: str) -> bytes:
    """An address as PCP carries it: IPv4 as IPv4-mapped IPv6 (section 5)."""
    addr = ipaddress.ip_address(ip)
    if isinstance(addr, ipaddress.IPv4Address):
        return bytes(10) + b"\xff\xff" + addr.packed
    return addr.packed


def _ip_text(raw: bytes) -> str:
    addr = ipaddress.IPv6Address(raw)
    return str(addr.ipv4_mapped or addr)


def _header(op: int, lifetime: int, client_ip: str) -> bytes:
    return struct.pack("!BBHI", VERSION, op, 0, lifetime) + _ip16(client_ip)


def encode_announce(client_ip: str) -> bytes:
    """An ANNOUNCE request (section 14.1): does the gateway speak PCP, and its epoch."""
    return _header(OP_ANNOUNCE, 0, client_ip)


def encode_map(
    nonce: bytes,
    protocol: str,
    internal_port: int,
    external_port: int,
    lifetime: int,
    client_ip: str,
) -> bytes:
    """A MAP request (section 11.1) for ``internal_port`` on ``client_ip``, suggesting
    ``external_port`` (0: any) and no external address; lifetime 0 deletes it (with
    the nonce that made it)."""
    if len(nonce) != 12:
        raise ValueError("a PCP mapping nonce is 96 bits")
    suggested_ip = "0.0.0.0" if ":" not in client_ip else "::"
    return (
        _header(OP_MAP, lifetime, client_ip)
        + nonce
        + struct.pack("!B3xHH", PROTOCOLS[protocol], internal_port, external_port)
        + _ip16(suggested_ip)
    )


def _check_options(data: bytes, start: int) -> None:
    """Options after the opcode data (section 7.3): each must fit; contents skipped."""
    at = start
    while at < len(data):
        if at + 4 > len(data):
            raise Malformed("a truncated PCP option")
        (length,) = struct.unpack("!H", data[at + 2 : at + 4])
        at += 4 + length + (-length % 4)
        if at > len(data):
            raise Malformed("a PCP option longer than the message")


def _common(data: bytes, op: int) -> tuple[int, int, int]:
    """(result, lifetime, epoch) of an answer to opcode ``op``; Malformed when it is
    not one, PcpUnsupported when it says the gateway does not speak PCP version 2."""
    if len(data) >= 4 and data[0] == 0 and data[1] >= RESPONSE:
        raise PcpUnsupported(UNSUPP_VERSION, "the gateway answered in NAT-PMP, not PCP")
    if len(data) < HEADER or len(data) > MAX_PCP or len(data) % 4:
        raise Malformed("not the size of a PCP answer")
    if data[1] != RESPONSE | op:
        raise Malformed("not a PCP answer to this opcode")
    result = data[3]
    if data[0] != VERSION:
        if result == UNSUPP_VERSION:
            raise PcpUnsupported(result, f"the gateway speaks PCP version {data[0]}, not 2")
        raise Malformed(f"PCP version {data[0]}")
    lifetime, epoch = struct.unpack("!II", data[4:12])
    return result, lifetime, epoch


def _failure(result: int, lifetime: int) -> PcpError:
    cls = PcpUnsupported if result == UNSUPP_VERSION else PcpError
    return cls(result, f"PCP: {RESULTS.get(result, f'result {result}')}", lifetime)


def decode_response(data: bytes, request: bytes) -> MapAnswer | Announced:
    """The answer to ``request`` (a MAP or ANNOUNCE we sent). Malformed for a datagram
    to drop (not an answer, or another mapping's), PcpError for a failure code."""
    op = request[1]
    result, lifetime, epoch = _common(data, op)
    if op == OP_ANNOUNCE:
        if result != SUCCESS:
            raise _failure(result, lifetime)
        _check_options(data, HEADER)
        return Announced(epoch)
    end = HEADER + MAP_DATA
    if len(data) < end:
        if result != SUCCESS:  # a failure may carry the header only (section 7.2)
            raise _failure(result, lifetime)
        raise Malformed("a PCP MAP answer without its opcode data")
    nonce, proto, internal, external = struct.unpack("!12sB3xHH", data[HEADER : HEADER + 20])
    want_nonce, want_proto, want_internal = struct.unpack("!12sB3xH", request[HEADER:42])
    if (nonce, proto, internal) != (want_nonce, want_proto, want_internal):
        raise Malformed("a PCP answer for another mapping")
    _check_options(data, end)
    if result != SUCCESS:
        raise _failure(result, lifetime)
    protocol = "UDP" if proto == PROTOCOLS["UDP"] else "TCP"
    external_ip = _ip_text(data[HEADER + 20 : end])
    if lifetime and (external == 0 or external_ip in ("0.0.0.0", "::")):
        raise Malformed("a PCP mapping to no external address")
    return MapAnswer(epoch, protocol, internal, external, external_ip, lifetime)


def decode_announcement(data: bytes) -> Announced:
    """An unsolicited ANNOUNCE (section 14.1.3); Malformed for anything else."""
    try:
        result, _lifetime, epoch = _common(data, OP_ANNOUNCE)
    except PcpUnsupported as exc:
        raise Malformed("not a PCP announcement") from exc
    if result != SUCCESS:
        raise Malformed("an announcement with a failure code")
    _check_options(data, HEADER)
    return Announced(epoch)


def retransmit_waits(tries: int, rng: random.Random) -> list[float]:
    """How long to wait after each send (section 8.1.1): RT = (1 + RAND) * IRT, then
    (1 + RAND) * min(2 * RTprev, MRT), RAND uniform in [-0.1, +0.1]."""
    waits: list[float] = []
    for _ in range(tries):
        base = IRT if not waits else min(2 * waits[-1], MRT)
        waits.append((1 + rng.uniform(-RAND, RAND)) * base)
    return waits


@dataclass
class EpochCheck:
    """The client's side of the epoch (section 8.5): has the gateway lost our mappings
    since the last answer? Times are the caller's clock and the gateway's epoch."""

    client: float | None = None
    server: int | None = None

    def valid(self, epoch: int, now: float) -> bool:
        """Record an answer's epoch; False when the gateway restarted (or lost state)."""
        prev_client, prev_server = self.client, self.server
        self.client, self.server = now, epoch
        if prev_client is None or prev_server is None:
            return True
        if epoch < prev_server - 1:
            return False
        client_delta, server_delta = now - prev_client, epoch - prev_server
        return not (
            client_delta + 2 < server_delta - server_delta / 16
            or server_delta + 2 < client_delta - client_delta / 16
        )


class PcpClient(GatewayClient):
    """MAP requests to one gateway, one at a time; the nonce of each mapping is kept
    here (a renewal or deletion must carry it), the epoch is checked on every answer."""

    def __init__(self, gateway: str, host: str = "0.0.0.0", port: int = SERVER_PORT) -> None:
        super().__init__(gateway, host, port)
        self.client_ip = host if host not in ("0.0.0.0", "") else local_ip_towards(gateway)
        self.epoch = EpochCheck()
        self.restarted = False  # an answer's epoch said the gateway lost its state
        self.rng = random.Random()
        self._nonces: dict[tuple[str, int], bytes] = {}

    async def probe(self) -> Announced:
        """Does the gateway speak PCP? An ANNOUNCE; PcpUnsupported when it does not."""
        request = encode_announce(self.client_ip)
        got = await self._ask(request, PROBE_TRIES)
        assert isinstance(got, Announced)
        return got

    async def map(self, protocol: str, internal: int, external: int, lifetime: int) -> MapAnswer:
        """Create, renew (same nonce) or, with lifetime 0, delete a mapping."""
        key = (protocol, internal)
        nonce = self._nonces.get(key)
        if nonce is None:  # a new mapping: a new random nonce (section 11.1)
            nonce = self._nonces[key] = secrets.token_bytes(12)
        request = encode_map(nonce, protocol, internal, external, lifetime, self.client_ip)
        got = await self._ask(request, MAP_TRIES)
        assert isinstance(got, MapAnswer)
        if lifetime == 0:
            self._nonces.pop(key, None)
        return got

    async def _ask(self, request: bytes, tries: int) -> MapAnswer | Announced:
        got = await self.exchange(
            request, lambda data: decode_response(data, request), retransmit_waits(tries, self.rng)
        )
        if not self.epoch.valid(got.epoch, asyncio.get_running_loop().time()):
            self.restarted = True
        return got


class AnnounceListener(asyncio.DatagramProtocol):
    """Hears the gateway's unsolicited ANNOUNCE on port 5350 (multicast to all hosts,
    or unicast): from the gateway's address and port 5351 only, well-formed only;
    ``on_announce(epoch)`` is called for each. Others' datagrams are counted."""

    def __init__(
        self, gateway: str, on_announce: Callable[[int], None], server_port: int = SERVER_PORT
    ) -> None:
        self.gateway = gateway
        self.server_port = server_port
        self.on_announce = on_announce
        self.dropped = 0
        self.transport: asyncio.DatagramTransport | None = None

    @classmethod
    async def start(
        cls,
        gateway: str,
        client_ip: str,
        on_announce: Callable[[int], None],
        *,
        ports: tuple[int, int] = (SERVER_PORT, CLIENT_PORT),
    ) -> AnnounceListener | None:
        """Listening, or None when port 5350 cannot be had here (another program holds
        it without sharing): renewals then still notice a restart by the epoch.
        ``ports``: the gateway's and ours (tests use others)."""
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            with contextlib.suppress(AttributeError, OSError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            sock.bind(("0.0.0.0", ports[1]))
            with contextlib.suppress(OSError):
                group = socket.inet_aton(ALL_HOSTS) + socket.inet_aton(client_ip)
                sock.setsockopt(socket.IPPROTO_IP, socket.IP_ADD_MEMBERSHIP, group)
            sock.setblocking(False)
            loop = asyncio.get_running_loop()
            _, proto = await loop.create_datagram_endpoint(
                lambda: cls(gateway, on_announce, ports[0]), sock=sock
            )
        except OSError as exc:
            sock.close()
            log.info("cannot hear PCP announcements on port %d: %s", CLIENT_PORT, exc)
            return None
        return proto

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        if addr[0] != self.gateway or addr[1] != self.server_port:
            self.dropped += 1
            return
        try:
            announced = decode_announcement(data)
        except Malformed:
            self.dropped += 1
            return
        self.on_announce(announced.epoch)

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()
