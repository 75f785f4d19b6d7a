"""Requests to the home gateway's UDP port 5351: what NAT-PMP (``net/natpmp.py``, RFC
6886) and PCP (``net/pcp.py``, RFC 6887) share. IANA gave PCP NAT-PMP's port, and
both are one request, one answer, retransmitted until answered.

Each request goes out of a fresh UDP socket *connected* to the gateway's port, so the
kernel hands us only the gateway's datagrams (a stranger's never reach the reader);
what the gateway sends that is not an answer is dropped and counted in
:attr:`GatewayClient.dropped`. Each request is bounded by the waits its protocol gives.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import socket
from collections.abc import Callable, Iterable
from typing import TypeVar

__all__ = [
    "SERVER_PORT",
    "GatewayClient",
    "Malformed",
    "default_gateway",
    "default_gateway_here",
    "local_ip_towards",
]

#: The gateway's port for NAT-PMP and PCP (RFC 6887 section 19.1).
SERVER_PORT = 5351
#: A PCP message is at most 1100 bytes (RFC 6887 section 7); NAT-PMP's are shorter.
MAX_PCP = 1100
MAX_DATAGRAM = MAX_PCP + 4  # one longer than any answer is read whole, then refused

T = TypeVar("T")


class Malformed(ValueError):
    """A datagram from the gateway that is not an answer to our request: dropped."""


def default_gateway(route_table: str) -> str | None:
    """The IPv4 default gateway from Linux's ``/proc/net/route`` text, or None."""
    for line in route_table.splitlines()[1:]:
        fields = line.split()
        if len(fields) >= 3 and fields[1] == "00000000" and fields[2] != "00000000":
            with contextlib.suppress(ValueError):
                return str(ipaddress.IPv4Address(bytes.fromhex(fields[2])[::-1]))
    return None


def default_gateway_here() -> str | None:
    """This network namespace's IPv4 default gateway, or None."""
    for table in ("/proc/thread-self/net/route", "/proc/net/route"):  # this netns
        try:
            with open(table) as f:
                return default_gateway(f.read())
        except OSError:
            continue
    return None


def local_ip_towards(host: str) -> str:
    """Our address on the route to ``host`` (the gateway): the internal client to map to."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.connect((host, 1900))  # UDP connect sends nothing; it only picks the route
        return str(probe.getsockname()[0])


class GatewayClient:
    """Requests to one gateway, one at a time (a subclass says what they are)."""

    def __init__(self, gateway: str, host: str = "0.0.0.0", port: int = SERVER_PORT) -> None:
        self.gateway = gateway
        self.host = host
        self.port = port
        #: Datagrams from the gateway that answered nothing we asked (malformed, stale).
        self.dropped = 0
        self._one = asyncio.Lock()

    @classmethod
    def towards_default_gateway(cls: type[C], host: str = "0.0.0.0") -> C | None:
        gateway = default_gateway_here()
        return None if gateway is None else cls(gateway, host)

    async def exchange(
        self, request: bytes, read: Callable[[bytes], T], waits: Iterable[float]
    ) -> T:
        """Send ``request``, again after each of ``waits`` seconds without an answer;
        ``read`` turns a datagram into the answer (raising :class:`Malformed` for one
        to drop, another exception for an answer that is a failure). TimeoutError when
        every wait ran out, OSError when the gateway's host says nothing listens."""
        async with self._one:
            loop = asyncio.get_running_loop()
            sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            sock.setblocking(False)
            try:
                sock.bind((self.host, 0))
                sock.connect((self.gateway, self.port))  # only its answers reach us
                for wait in waits:
                    await loop.sock_sendall(sock, request)
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout(wait):
                            while True:
                                data = await loop.sock_recv(sock, MAX_DATAGRAM)
                                try:
                                    return read(data)
                                except Malformed:
                                    self.dropped += 1
                raise TimeoutError(f"no answer from the gateway {self.gateway}")
            finally:
                sock.close()


C = TypeVar("C", bound=GatewayClient)
