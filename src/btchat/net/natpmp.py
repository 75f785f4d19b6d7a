"""NAT-PMP (RFC 6886): port mapping on gateways that speak it instead of UPnP-IGD
(Apple's, many others beside UPnP). ``net/upnp.py`` falls back to it when no UPnP
gateway answers, driving the same :class:`~btchat.net.portmap.PortMapper` core.

No kept Python library speaks NAT-PMP (the packages on PyPI are a decade unmaintained),
and the protocol is four fixed-size messages, so the codec is here: pure functions
below, then :class:`NatPmpClient`, one request at a time over a UDP socket connected to
the gateway's port 5351 (so only the gateway's answers are read), retransmitted as the
RFC says (250 ms, doubling) but at most :data:`TRIES` times.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import socket
import struct
from dataclasses import dataclass

__all__ = [
    "NATPMP_PORT",
    "ExternalAddress",
    "Mapped",
    "NatPmpClient",
    "NatPmpError",
    "decode_response",
    "default_gateway",
    "encode_external_address",
    "encode_map",
]

NATPMP_PORT = 5351
VERSION = 0
OP_EXTERNAL, OP_MAP_UDP, OP_MAP_TCP = 0, 1, 2
#: First retransmission wait (RFC 6886 section 3.1), doubled each time, this many sends
#: (the RFC's nine would take 64 s; a gateway that speaks it answers the first).
FIRST_WAIT, TRIES = 0.25, 3
#: Result codes (RFC 6886 section 3.5), as a person reads them.
RESULTS = {
    1: "unsupported version",
    2: "not authorized or refused",
    3: "network failure",
    4: "out of resources",
    5: "unsupported opcode",
}


class NatPmpError(Exception):
    """The gateway answered with a result code other than success, or nonsense."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code


@dataclass(frozen=True)
class ExternalAddress:
    epoch: int
    ip: str


@dataclass(frozen=True)
class Mapped:
    epoch: int
    protocol: str
    internal_port: int
    external_port: int
    lifetime: int


def encode_external_address() -> bytes:
    return bytes([VERSION, OP_EXTERNAL])


def encode_map(protocol: str, internal_port: int, external_port: int, lifetime: int) -> bytes:
    """Map ``internal_port`` (suggesting ``external_port``) for ``lifetime`` seconds;
    lifetime 0 (and external port 0) deletes the mapping."""
    op = OP_MAP_UDP if protocol == "UDP" else OP_MAP_TCP
    return struct.pack("!BBHHHI", VERSION, op, 0, internal_port, external_port, lifetime)


def decode_response(data: bytes, request: bytes) -> ExternalAddress | Mapped:
    """The answer to ``request``; NatPmpError for a failure code or a malformed packet."""
    if len(data) < 8 or data[0] != VERSION or data[1] != 128 + request[1]:
        raise NatPmpError(-1, "not a NAT-PMP answer to our request")
    (result,) = struct.unpack("!H", data[2:4])
    if result != 0:
        raise NatPmpError(result, f"NAT-PMP: {RESULTS.get(result, f'result {result}')}")
    if request[1] == OP_EXTERNAL:
        if len(data) != 12:
            raise NatPmpError(-1, "a NAT-PMP external address answer is 12 bytes")
        epoch = struct.unpack("!I", data[4:8])[0]
        return ExternalAddress(epoch, str(ipaddress.IPv4Address(data[8:12])))
    if len(data) != 16:
        raise NatPmpError(-1, "a NAT-PMP mapping answer is 16 bytes")
    epoch, internal, external, lifetime = struct.unpack("!IHHI", data[4:16])
    if internal != struct.unpack("!H", request[4:6])[0]:
        raise NatPmpError(-1, "the NAT-PMP answer names another internal port")
    return Mapped(epoch, "UDP" if request[1] == OP_MAP_UDP else "TCP", internal, external, lifetime)


def default_gateway(route_table: str) -> str | None:
    """The IPv4 default gateway from Linux's ``/proc/net/route`` text, or None."""
    for line in route_table.splitlines()[1:]:
        fields = line.split()
        if len(fields) >= 3 and fields[1] == "00000000" and fields[2] != "00000000":
            with contextlib.suppress(ValueError):
                return str(ipaddress.IPv4Address(bytes.fromhex(fields[2])[::-1]))
    return None


class NatPmpClient:
    """Requests to one gateway, one at a time; each bounded (1.75 s in all)."""

    def __init__(self, gateway: str, host: str = "0.0.0.0", port: int = NATPMP_PORT) -> None:
        self.gateway = gateway
        self.host = host
        self.port = port
        self._one = asyncio.Lock()

    @classmethod
    def towards_default_gateway(cls, host: str = "0.0.0.0") -> NatPmpClient | None:
        gateway = None
        for table in ("/proc/thread-self/net/route", "/proc/net/route"):  # this netns
            try:
                with open(table) as f:
                    gateway = default_gateway(f.read())
                break
            except OSError:
                continue
        return None if gateway is None else cls(gateway, host)

    async def external_address(self) -> ExternalAddress:
        got = await self._ask(encode_external_address())
        assert isinstance(got, ExternalAddress)
        return got

    async def map(self, protocol: str, internal: int, external: int, lifetime: int) -> Mapped:
        got = await self._ask(encode_map(protocol, internal, external, lifetime))
        assert isinstance(got, Mapped)
        return got

    async def _ask(self, request: bytes) -> ExternalAddress | Mapped:
        async with self._one:
            loop = asyncio.get_running_loop()
            sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            sock.setblocking(False)
            try:
                sock.bind((self.host, 0))
                sock.connect((self.gateway, self.port))  # only its answers reach us
                wait = FIRST_WAIT
                for _ in range(TRIES):
                    await loop.sock_sendall(sock, request)
                    try:
                        async with asyncio.timeout(wait):
                            while True:  # junk is skipped; a failure code is an answer
                                data = await loop.sock_recv(sock, 64)
                                if len(data) >= 4 and data[:2] == bytes(
                                    [VERSION, 128 + request[1]]
                                ):
                                    return decode_response(data, request)
                    except TimeoutError:
                        wait *= 2
                raise TimeoutError(f"no NAT-PMP answer from {self.gateway}")
            finally:
                sock.close()
