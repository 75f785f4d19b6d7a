"""A NAT-PMP/PCP gateway on loopback for the client tests (test_natpmp, test_pcp): its
answer to each request is whatever the test's ``reply`` says, junk included."""

from __future__ import annotations

import asyncio
import struct
from collections.abc import Callable

__all__ = ["Gateway", "mapping_answer", "serve"]


class Gateway(asyncio.DatagramProtocol):
    """A gateway on loopback whose answer to each request ``reply`` decides."""

    def __init__(self, reply: Callable[[bytes, int], list[bytes]]) -> None:
        self.reply = reply
        self.seen = 0
        self.last_from: tuple[str, int] = ("", 0)  # where the last request came from

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self.seen += 1
        self.last_from = addr
        for out in self.reply(data, self.seen):
            self.transport.sendto(out, addr)  # type: ignore[attr-defined]


async def serve(
    reply: Callable[[bytes, int], list[bytes]],
) -> tuple[Gateway, int, Callable[[], None]]:
    loop = asyncio.get_running_loop()
    transport, gw = await loop.create_datagram_endpoint(
        lambda: Gateway(reply), local_addr=("127.0.0.1", 0)
    )
    return gw, transport.get_extra_info("sockname")[1], transport.close


def mapping_answer(request: bytes, *, result: int = 0, external: int | None = None) -> bytes:
    """A NAT-PMP gateway's answer to the mapping ``request`` (RFC 6886 section 3.3)."""
    _, op, _, internal, suggested, lifetime = struct.unpack("!BBHHHI", request)
    granted = suggested if external is None else external
    return struct.pack("!BBHIHHI", 0, 128 + op, result, 7, internal, granted, lifetime)
