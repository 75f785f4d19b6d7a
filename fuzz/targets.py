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

from nacl.bindings import crypto_aead_xchacha20poly1305_ietf_encrypt

from btchat.api.models import Body
from btchat.channels.chatfile import ChatFile, ChatFileError
from btchat.channels.link import Link
from btchat.channels.members import MemberList, MemberListError
from btchat.channels.messages import ChannelMessage, MessageError
from btchat.codec.bencode import DecodeError, decode
from btchat.codec.json_limits import JsonError, loads
from btchat.dht.krpc import parse_message
from btchat.dht.node import DhtNode, NodeConfig
from btchat.discovery import lan_rendezvous as lan
from btchat.discovery.lan_rendezvous import LanError
from btchat.discovery.lsd import LsdAnnouncer, LsdError, parse_announce
from btchat.discovery.trackers.protocol import (
    TrackerError,
    parse_http_announce_response,
    parse_udp_announce_response,
    parse_udp_connect_response,
)
from btchat.errors import ApiError
from btchat.identity import linking
from btchat.identity.idtext import IdError, parse_contact_ref
from btchat.identity.keys import CertificateError, DeviceCertificate, DeviceKey, Identity
from btchat.identity.rendezvous import epoch_of, pairwise_secret
from btchat.messaging.envelope import EnvelopeError, parse_envelope
from btchat.net import natpmp, pcp
from btchat.net.gateway_udp import Malformed
from btchat.net.natpmp import NatPmpError
from btchat.net.pcp import PcpError
from btchat.net.quic import QuicEndpoint
from btchat.net.relay_core import HeaderReader, parse_header
from btchat.offline.packet import OfflinePacket, PacketError
from btchat.session.core import WIRE as SESSION_WIRE
from btchat.session.core import Session
from btchat.stream.core import CipherError, SecureStream, StreamConfig
from btchat.stream.frames import TAGLEN, frame
from btchat.transfer.wire import Reader, WireError

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


@_target("transfer_wire", WireError)
def _transfer_wire(data: bytes) -> None:
    """A contact's transfer substream (file pieces and requests), cut in two reads."""
    reader = Reader(max_message=1 << 16)
    reader.feed(data[: len(data) // 2])
    reader.feed(data[len(data) // 2 :])


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


# ------------------------------------------------------------ sessions and links

_IDENTITY = Identity.from_seed(b"\x07" * 32)
_DEVICE = DeviceKey.from_bytes(b"\x17" * 32, b"\x27" * 16)
_CERT = _IDENTITY.certify(_DEVICE, 1_780_000_000)


def _feed(core: SecureStream, data: bytes) -> None:
    """Bytes as TCP might deliver them (in two reads), then whatever the core answers."""
    cut = data[0] % (len(data) + 1) if data else 0
    core.receive_data(data[:cut], 1.0)
    core.receive_data(data[cut:], 1.0)
    core.data_to_send()
    while core.next_event() is not None:
        pass


@_target("session_handshake")
def _session_handshake(data: bytes) -> None:
    """What a stranger's first bytes do to a session responder: fail quietly, never raise."""
    _feed(Session("responder", _DEVICE, _CERT, lambda *_: True, now=0.0), data)


@_target("link_handshake")
def _link_handshake(data: bytes) -> None:
    """A channel link responder: the same for links (Noise XXpsk3 and the proofs)."""
    core = Link(
        "responder",
        identity=_IDENTITY,
        channel_id=b"\x42" * 32,
        psk=b"\x43" * 32,
        authorize=lambda _identity: True,
        now=0.0,
    )
    _feed(core, data)


class _PlainCipher:
    """No encryption and a zero tag, so the fuzzer reaches the frame parser behind the
    AEAD (a real tag it could never forge)."""

    def encrypt(self, plaintext: bytes) -> bytes:
        return plaintext + bytes(TAGLEN)

    def decrypt(self, ciphertext: bytes | memoryview) -> bytes:
        # The core hands a view of its input buffer, released after the call: copy.
        if len(ciphertext) < TAGLEN or any(ciphertext[-TAGLEN:]):
            raise CipherError("bad tag")
        return bytes(ciphertext[:-TAGLEN])

    def rekey_send(self) -> None:
        pass

    def rekey_receive(self) -> None:
        pass


class _Established(SecureStream):
    """A session's stream layer after its handshake: frames, substreams, close."""

    def __init__(self) -> None:
        super().__init__("responder", SESSION_WIRE, StreamConfig(substreams=True), 0.0)
        self._install_transport(_PlainCipher(), confirm=False)
        self._establish(0.0)


@_target("stream_frames")
def _stream_frames(data: bytes) -> None:
    """Decrypted frames from an authenticated peer (a contact can be hostile too): the
    input is a run of ``u8 length || plaintext`` records, each sent as one frame."""
    core = _Established()
    core.receive_data(frame(b"\x00\x00btchat-caps\x00\x01" + bytes(TAGLEN)), 0.0)
    pos = 0
    while pos < len(data):
        n = data[pos]
        plaintext = data[pos + 1 : pos + 1 + n]
        pos += 1 + n
        core.receive_data(frame(plaintext + bytes(TAGLEN)), 1.0)
    core.handle_timer(100.0)
    core.data_to_send()
    while core.next_event() is not None:
        pass


@_target("relay_header", DecodeError)
def _relay_header(data: bytes) -> None:
    """The first bytes of a relay substream (any contact may send them), whole and in
    two pieces: a header and the rest, "more", or DecodeError."""
    parse_header(data)
    cut = data[0] % (len(data) + 1) if data else 0
    reader = HeaderReader()
    if reader.feed(data[:cut]) is None:
        reader.feed(data[cut:])


_PCP_MAP = pcp.encode_map(b"\x01" * 12, "UDP", 6881, 6881, 3600, "192.168.1.10")
_PCP_ANNOUNCE = pcp.encode_announce("192.168.1.10")
_NATPMP_MAP = natpmp.encode_map("UDP", 6881, 6881, 3600)


@_target("gateway_answers", Malformed, PcpError, NatPmpError)
def _gateway_answers(data: bytes) -> None:
    """A datagram from the home gateway (or a LAN host posing as one): as a PCP answer
    to our MAP and to our ANNOUNCE, an unsolicited ANNOUNCE, and a NAT-PMP answer."""
    for request in (_PCP_MAP, _PCP_ANNOUNCE):
        with contextlib.suppress(Malformed, PcpError):
            pcp.decode_response(data, request)
    with contextlib.suppress(Malformed):
        pcp.decode_announcement(data)
    natpmp.decode_response(data, _NATPMP_MAP)


# ------------------------------------------------------------ discovery and the API


@_target("tracker_http", TrackerError)
def _tracker_http(data: bytes) -> None:
    parse_http_announce_response(data)


@_target("tracker_udp", TrackerError)
def _tracker_udp(data: bytes) -> None:
    """A UDP tracker's answer; its transaction id echoed, so the fuzzer gets past it."""
    tid = int.from_bytes(data[4:8], "big") if len(data) >= 8 else 0
    with contextlib.suppress(TrackerError):
        parse_udp_connect_response(data, tid)
    parse_udp_announce_response(data, tid, ipv6=bool(data[:1] and data[0] & 1))


_LSD = LsdAnnouncer(6881, cookie="fuzz")
_LSD.add(b"\x11" * 20, 0.0)


@_target("lsd", LsdError)
def _lsd(data: bytes) -> None:
    """A multicast datagram from anyone on the LAN: the announcer drops or reports it."""
    _LSD.receive_datagram(data, ("192.168.1.20", 6771), 1.0)
    while _LSD.next_event() is not None:
        pass
    parse_announce(data)


_LAN_ALICE, _LAN_BOB = Identity.from_seed(b"\x01" * 32), Identity.from_seed(b"\x02" * 32)
_LAN_CERT = _LAN_BOB.certify(DeviceKey.from_bytes(b"\x21" * 32, b"\xb1" * 16), 1_700_000_000)
_LAN_NOW = 1_700_000_000.0
_LAN_SECRET = pairwise_secret(_LAN_BOB, _LAN_ALICE.public_key)


@_target("lan", LanError)
def _lan(data: bytes) -> None:
    """A LAN datagram (first byte even) into Bob's core, or (odd) a plaintext sealed with
    Alice's real key and tag, so the fuzzer reaches what is behind the MAC too."""
    core = lan.LanRendezvous(_LAN_BOB, _LAN_CERT, 1, dest=("239.0.0.1", 1))
    core.set_contacts([_LAN_ALICE.public_key], _LAN_NOW)
    body = data[1:]
    if data[:1] and data[0] & 1:
        a, b, epoch = _LAN_ALICE.public_key, _LAN_BOB.public_key, epoch_of(_LAN_NOW)
        tag, key = lan.lan_tag(_LAN_SECRET, a, b, epoch), lan.lan_key(_LAN_SECRET, a, b, epoch)
        nonce = bytes(lan.NONCE_SIZE)
        sealed = crypto_aead_xchacha20poly1305_ietf_encrypt(body, lan.MAGIC + tag, nonce, key)
        body = lan.MAGIC + tag + nonce + sealed
        core.receive_datagram(body, ("192.168.1.20", 6771), _LAN_NOW)
        lan.open_announcement(key, body, a)  # raises LanError (or returns) only
    else:
        core.receive_datagram(body, ("192.168.1.20", 6771), _LAN_NOW)
    while core.next_event() is not None:
        pass


_LINK_ME = Identity.from_seed(b"\x07" * 32)
_LINK_PAYLOAD = linking.LinkPayload(
    _LINK_ME.seed, (_LINK_ME.certify(DeviceKey.from_bytes(b"\x17" * 32, b"\xa7" * 16), 1),), ()
)
_LINK_KEY = b"\x42" * 32


@_target("link")
def _link(data: bytes) -> None:
    """Bytes from a would-be new device into a linker's fresh attempt (first byte even),
    or (odd) a chunk sealed with the real key, opened and parsed as the payload, so the
    fuzzer reaches what is behind the AEAD. The core never raises on remote input."""
    body = data[1:]
    if data[:1] and data[0] & 1:
        sealed = linking.Sealer(_LINK_KEY).seal_message(body)
        opener = linking.Sealer(_LINK_KEY)
        with contextlib.suppress(linking.LinkError):
            last, chunk = opener.open(sealed[5 : 5 + linking.MAX_FRAME - 1])
            if last:
                linking.LinkPayload.decode(chunk)
        return
    offer = linking.LinkOffer(_LINK_PAYLOAD, 0.0, code=linking.LinkCode(37, ("cobalt", "tiger")))
    conn = offer.attempt(0.0)
    assert conn is not None
    conn.receive_data(body)
    conn.connection_lost()
    offer.attempt_ended(conn)
    while conn.next_event() is not None:
        pass


_BODIES = sorted(Body.__subclasses__(), key=lambda m: m.__name__)


@_target("api_json", JsonError, ApiError)
def _api_json(data: bytes) -> None:
    """A local client's request body: bounded JSON, then a route's model (chosen by the
    first byte) validates it; a 400 is the only way out."""
    value = loads(data[1:])
    if isinstance(value, dict) and data:
        _BODIES[data[0] % len(_BODIES)].parse(value)
