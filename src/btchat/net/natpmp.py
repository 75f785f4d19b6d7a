"""NAT-PMP (RFC 6886): port mapping on gateways that speak it instead of UPnP-IGD
(Apple's, many others beside UPnP). ``net/upnp.py`` falls back to it when no UPnP
gateway answers, driving the same :class:`~btchat.net.portmap.PortMapper` core.

No kept Python library speaks NAT-PMP (the packages on PyPI are a decade unmaintained),
and the protocol is four fixed-size messages, so the codec is here: pure functions
below, then :class:`NatPmpClient`, one request at a time to the gateway's port 5351
through ``net/gateway_udp.py`` (shared with PCP), retransmitted as the RFC says (250 ms,
doubling) but at most :data:`TRIES` times. A gateway that speaks PCP is asked in PCP
first (``net/upnp.py``); this is the fallback for those that do not.
"""

from __future__ import annotations

import ipaddress
import struct
from dataclasses import dataclass

from btchat.net.gateway_udp import SERVER_PORT, GatewayClient, Malformed, default_gateway

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

NATPMP_PORT = SERVER_PORT
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


class NatPmpClient(GatewayClient):
    """Requests to one gateway, one at a time; each bounded (1.75 s in all)."""

    async def external_address(self) -> ExternalAddress:
        got = await self._ask(encode_external_address())
        assert isinstance(got, ExternalAddress)
        return got

    async def map(self, protocol: str, internal: int, external: int, lifetime: int) -> Mapped:
        got = await self._ask(encode_map(protocol, internal, external, lifetime))
        assert isinstance(got, Mapped)
        return got

    async def _ask(self, request: bytes) -> ExternalAddress | Mapped:
        def read(data: bytes) -> ExternalAddress | Mapped:
            if data[:2] != bytes([VERSION, 128 + request[1]]) or len(data) < 4:
                raise Malformed("not a NAT-PMP answer to this request")
            return decode_response(data, request)  # a failure code is an answer too

        waits = [FIRST_WAIT * 2**i for i in range(TRIES)]
        return await self.exchange(request, read, waits)
