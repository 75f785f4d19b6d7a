"""The fuzz targets: one function per parser that remote input reaches.

A target feeds the bytes to the parser exactly as the network would and lets through
only the one error type that parser promises for bad input (h11's rule: if it raises
anything else, that is a bug). Everything else, and any exception escaping a node core,
is a crash the fuzzer reports.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections.abc import Callable
from dataclasses import dataclass

from btchat.channels.chatfile import ChatFile, ChatFileError
from btchat.channels.members import MemberList, MemberListError
from btchat.channels.messages import ChannelMessage, MessageError
from btchat.codec.bencode import DecodeError, decode
from btchat.dht.krpc import parse_message
from btchat.dht.node import DhtNode, NodeConfig
from btchat.identity.idtext import IdError, parse_contact_ref
from btchat.identity.keys import CertificateError, DeviceCertificate
from btchat.messaging.envelope import EnvelopeError, parse_envelope
from btchat.net.quic import QuicEndpoint
from btchat.offline.packet import OfflinePacket, PacketError

__all__ = ["TARGETS", "Target"]


@dataclass(frozen=True)
class Target:
    name: str
    run: Callable[[bytes], object]
    #: The exceptions this parser promises for bad input; anything else is a crash.
    expected: tuple[type[BaseException], ...]

    def __call__(self, data: bytes) -> None:
        with contextlib.suppress(*self.expected):
            self.run(data)


TARGETS: dict[str, Target] = {}


def _target(
    name: str, *expected: type[BaseException]
) -> Callable[[Callable[[bytes], object]], Callable[[bytes], object]]:
    def register(fn: Callable[[bytes], object]) -> Callable[[bytes], object]:
        TARGETS[name] = Target(name, fn, expected)
        return fn

    return register


@_target("bencode", DecodeError)
def _bencode(data: bytes) -> None:
    decode(data)
    decode(data, strict=False)


@_target("krpc", DecodeError)
def _krpc(data: bytes) -> None:
    parse_message(data)


_NODE = DhtNode(NodeConfig(rate_limit=1e12, rate_burst=1e12), rng=random.Random(0))


@_target("dht_node")
def _dht_node(data: bytes) -> None:
    """A whole datagram into a live node core: it must drop or answer, never raise."""
    _NODE.receive_datagram(data, ("198.51.100.1", 6881), 1.0)
    _NODE.datagrams_to_send()
    while _NODE.next_event() is not None:
        pass


def _shared_socket_endpoint() -> tuple[asyncio.AbstractEventLoop, QuicEndpoint]:
    """A QUIC endpoint made inside a loop that stays open (its timers need one)."""
    loop = asyncio.new_event_loop()

    async def make() -> QuicEndpoint:
        endpoint = QuicEndpoint(lambda data, addr: None)
        endpoint.listen(_never)
        return endpoint

    return loop, loop.run_until_complete(make())


async def _never(stream: object) -> None:
    raise AssertionError("a fuzzed datagram completed a QUIC handshake")


_QUIC_LOOP, _QUIC = _shared_socket_endpoint()


@_target("shared_socket")
def _shared_socket(data: bytes) -> None:
    """A datagram on the DHT's socket as the daemon sorts it: QUIC (a new connection, a
    known one, or dropped), a punch, or KRPC for the node; nothing may raise."""
    addr = ("198.51.100.2", 6881)
    if not _QUIC.datagram_received(data, addr):
        _NODE.receive_datagram(data, addr, 1.0)
        _NODE.datagrams_to_send()


@_target("envelope", EnvelopeError)
def _envelope(data: bytes) -> None:
    parse_envelope(data)


@_target("offline_packet", PacketError)
def _offline_packet(data: bytes) -> None:
    OfflinePacket.parse(data)


@_target("device_cert", CertificateError)
def _device_cert(data: bytes) -> None:
    DeviceCertificate.decode(data)


@_target("chatfile", ChatFileError)
def _chatfile(data: bytes) -> None:
    ChatFile.from_bytes(data)


@_target("member_list", MemberListError)
def _member_list(data: bytes) -> None:
    MemberList.from_bytes(data)


@_target("channel_message", MessageError)
def _channel_message(data: bytes) -> None:
    ChannelMessage.parse(data, b"\x42" * 32)


@_target("id_text", IdError)
def _id_text(data: bytes) -> None:
    """IDs and links come pasted from anywhere: any text, any length."""
    parse_contact_ref(data.decode("utf-8", "replace"))
