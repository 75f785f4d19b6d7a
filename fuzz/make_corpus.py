"""Write the seed corpus: a few valid inputs per target (``python -m fuzz.make_corpus``).

Valid seeds let the fuzzer start deep inside each parser instead of spending its time
finding the first well-formed byte. Inputs use random keys, so re-running rewrites the
files with other bytes; the committed corpus is what the tests read.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

from btchat.channels.chatfile import ChatFile
from btchat.channels.keys import ChannelKeys
from btchat.channels.members import MemberList
from btchat.channels.messages import seal_message
from btchat.codec.bencode import encode
from btchat.dht import bep44
from btchat.identity.idtext import format_id, format_uri
from btchat.identity.keys import DeviceKey, Identity
from btchat.messaging import envelope
from btchat.net.relay_core import Answer, Connect, Incoming, encode_header
from btchat.offline.packet import OfflinePacket
from btchat.transfer import wire
from btchat.transfer.manifest import Manifest
from btchat.transfer.tree import PieceHasher

CORPUS = Path(__file__).resolve().parent / "corpus"
NOW = 1_780_000_000.0


def _krpc() -> list[bytes]:
    q = {b"t": b"aa", b"y": b"q", b"a": {b"id": b"A" * 20}}
    return [
        encode({**q, b"q": b"ping"}),
        encode({**q, b"q": b"find_node", b"a": {b"id": b"A" * 20, b"target": b"T" * 20}}),
        encode({**q, b"q": b"get_peers", b"a": {b"id": b"A" * 20, b"info_hash": b"I" * 20}}),
        encode(
            {
                **q,
                b"q": b"announce_peer",
                b"a": {
                    b"id": b"A" * 20,
                    b"info_hash": b"I" * 20,
                    b"port": 6881,
                    b"token": b"12345678",
                    b"implied_port": 1,
                },
            }
        ),
        encode({**q, b"q": b"get", b"a": {b"id": b"A" * 20, b"target": b"T" * 20, b"seq": 1}}),
        encode(
            {
                b"t": b"aa",
                b"y": b"r",
                b"r": {b"id": b"B" * 20, b"nodes": b"N" * 26, b"token": b"tok", b"values": []},
                b"ip": b"\x7f\x00\x00\x01\x1a\xe1",
            }
        ),
        encode({b"t": b"aa", b"y": b"e", b"e": [201, b"A Generic Error Ocurred"]}),
    ]


def _put() -> bytes:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    item = bep44.sign_mutable(Ed25519PrivateKey.generate(), encode(b"value"), 3, b"salt")
    return encode(
        {
            b"t": b"aa",
            b"y": b"q",
            b"q": b"put",
            b"a": {
                b"id": b"A" * 20,
                b"k": item.public_key,
                b"salt": item.salt,
                b"seq": item.seq,
                b"sig": item.signature,
                b"token": b"12345678",
                b"v": b"value",
            },
        }
    )


def _quic() -> list[bytes]:
    """What else arrives on the DHT's socket: a client's Initial, a punch, a short header."""
    from aioquic.quic.configuration import QuicConfiguration
    from aioquic.quic.connection import QuicConnection

    from btchat.net.quic import ALPN, CID_LENGTH, PUNCH

    client = QuicConnection(
        configuration=QuicConfiguration(alpn_protocols=[ALPN], connection_id_length=CID_LENGTH)
    )
    client.connect(("198.51.100.2", 6881), 0.0)
    initial = client.datagrams_to_send(0.0)[0][0]
    return [initial, PUNCH, b"\x41" + b"\x07" * CID_LENGTH + b"\x00" * 40]


def _handshakes() -> tuple[list[bytes], list[bytes]]:
    """A real first message for a session responder (to the targets' fixed device) and
    for a link responder, so the fuzzer starts inside Noise."""
    from btchat.channels.link import Link
    from btchat.session.core import Session
    from fuzz.targets import _DEVICE

    me = Identity.generate()
    dev = DeviceKey.generate()
    dialler = Session(
        "initiator",
        dev,
        me.certify(dev, int(NOW)),
        lambda *_: True,
        remote_static=_DEVICE.public_key,
        now=0.0,
    )
    link = Link(
        "initiator",
        identity=me,
        channel_id=b"\x42" * 32,
        psk=b"\x43" * 32,
        authorize=lambda _identity: True,
        now=0.0,
    )
    return [dialler.data_to_send()], [link.data_to_send()]


def _stream_records() -> list[bytes]:
    """``u8 length || plaintext`` runs: DATA, PING, an OPEN + SDATA + FIN, a CREDIT, CLOSE."""

    def rec(plaintext: bytes) -> bytes:
        return bytes([len(plaintext)]) + plaintext

    sid = (1).to_bytes(4, "big")
    return [
        rec(b"\x00d1:ti1ee") + rec(b"\x01") + rec(b"\x04bye"),
        rec(b"\x10" + sid + b"\x03") + rec(b"\x11" + sid + b"bulk") + rec(b"\x13" + sid),
        rec(b"\x12" + (2).to_bytes(4, "big") + (4096).to_bytes(4, "big")) + rec(b"\x03"),
    ]


def _trackers() -> tuple[list[bytes], list[bytes]]:
    import struct

    http = [
        encode({b"interval": 1800, b"peers": bytes([127, 0, 0, 1, 0x1A, 0xE1])}),
        encode({b"failure reason": b"unregistered torrent"}),
        encode({b"interval": 900, b"peers6": bytes(16) + b"\x1a\xe1", b"complete": 3}),
    ]
    udp = [
        struct.pack(">IIQ", 0, 0x1234, 0x41727101980),
        struct.pack(">IIIII", 1, 0x1234, 1800, 2, 5) + bytes([10, 0, 0, 1, 0x1A, 0xE1]),
        struct.pack(">II", 3, 0x1234) + b"denied",
        struct.pack(">II", 3, 0x1234),
    ]
    return http, udp


def _lsd() -> list[bytes]:
    from btchat.discovery.lsd import build_announce

    return [build_announce([b"\x11" * 20], 6881, "other"), build_announce([b"\x22" * 20], 1, "x")]


def _lan() -> list[bytes]:
    """A real announcement from Alice to Bob (mode 0) and a real plaintext (mode 1), with
    the keys of ``fuzz.targets._lan``."""
    from btchat.discovery import lan_rendezvous as lan
    from fuzz.targets import _LAN_ALICE, _LAN_BOB, _LAN_NOW

    alice_cert = _LAN_ALICE.certify(DeviceKey.from_bytes(b"\x11" * 32, b"\xa1" * 16), 1)
    core = lan.LanRendezvous(_LAN_ALICE, alice_cert, 6881, dest=("239.0.0.1", 1))
    core.set_contacts([_LAN_BOB.public_key], _LAN_NOW)
    core.handle_timer(_LAN_NOW)
    [(datagram, _)] = core.datagrams_to_send()
    plain = encode({b"c": [alice_cert.encode()], b"p": 6881})
    return [b"\x00" + datagram, b"\x01" + plain, b"\x01" + encode({b"c": [], b"p": 0})]


def _link() -> list[bytes]:
    """A joiner's first bytes (its SPAKE2 message frame) for the linker (even first
    byte), and a payload for the sealed path (odd first byte)."""
    from btchat.identity import linking
    from fuzz.targets import _LINK_PAYLOAD

    joiner = linking.Joiner(linking.LinkCode(37, ("cobalt", "tiger")))
    return [b"\x00" + joiner.data_to_send(), b"\x01" + _LINK_PAYLOAD.encode()]


def _api_json() -> list[bytes]:
    """A first byte choosing the model, then a body (``fuzz.targets._BODIES`` order)."""
    from fuzz.targets import _BODIES

    names = [m.__name__ for m in _BODIES]
    bodies = {
        "NewContact": b'{"ref": "btchat:abc", "name": "Bob"}',
        "NewMessage": b'{"text": "hello"}',
        "ContactPatch": b'{"name": "x", "verified": true, "retention_days": 3}',
    }
    return [bytes([names.index(n)]) + body for n, body in bodies.items() if n in names] + [
        b"\x00" + b"[" * 40 + b"]" * 40
    ]


def _file_body() -> dict[bytes, object]:
    data = b"fuzz" * 10000
    hasher = PieceHasher(len(data), 16384)
    hasher.update(data)
    return Manifest("a.txt", len(data), "text/plain", 16384, hasher.root()).body()


def _transfer_messages() -> list[bytes]:
    oid = b"\x07" * 16
    msgs = [
        wire.GetLayer(oid),
        wire.Get(oid, (0, 1, 2)),
        wire.Cancel(oid, "rejected"),
        wire.Layer(oid, (b"h" * 32, b"i" * 32)),
        wire.Piece(oid, 1, b"piece bytes"),
    ]
    return [wire.encode(m) for m in msgs] + [b"".join(wire.encode(m) for m in msgs)]


def seeds() -> dict[str, list[bytes]]:
    alice, bob = Identity.generate(), Identity.generate()
    device = DeviceKey.generate()
    cert = alice.certify(device, created=int(NOW))
    envelopes = [
        envelope.encode_envelope(
            envelope.create(alice, device.device_id, bob.public_key, kind, body, lamport=7, now=NOW)
        )
        for kind, body in (
            (b"text", {b"t": b"hello"}),
            (b"receipt", {b"ids": [b"\x01" * 16], b"s": b"read"}),
            (b"typing", {b"on": 1}),
            (b"presence", {b"s": b"away", b"ls": 1_780_000_000, b"n": b"lunch"}),
            (b"file", _file_body()),
        )
    ]
    packet = OfflinePacket.create(
        alice, bob.public_key, 3, int(NOW * 1000), b"K" * 32, 0, b"B" * 40
    )
    packet_v2 = OfflinePacket.create_v2(
        alice,
        bob.public_key,
        4,
        int(NOW * 1000),
        b"K" * 32,
        [(b"D" * 16, 0, b"W" * 200), (b"E" * 16, 1, b"V" * 90)],
        b"C" * 40,
    )
    chat = ChatFile.create("friends", trackers=["udp://127.0.0.1:6969/announce"], now=NOW)
    owned = ChatFile.create("team", invite_only=True, owner=alice, now=NOW)
    channel = ChannelKeys.derive(chat.secret).channel_id
    members = MemberList.create(channel, alice.public_key, now=NOW).sign(alice)
    message = seal_message(
        alice,
        channel,
        kind=b"text",
        body={b"text": b"hi all"},
        lamport=1,
        now=NOW,
        generation=0,
        traffic_key=b"\x42" * 32,
    )
    krpc = [*_krpc(), _put()]
    session_first, link_first = _handshakes()
    http, udp = _trackers()
    return {
        "session_handshake": session_first,
        "link_handshake": link_first,
        "stream_frames": _stream_records(),
        "tracker_http": http,
        "tracker_udp": udp,
        "lsd": _lsd(),
        "relay_header": _relay_headers(alice),
        "gateway_answers": _gateway_answers(),
        "lan": _lan(),
        "link": _link(),
        "api_json": _api_json(),
        "bencode": [*krpc, encode([1, -2, b"x", {b"a": [b"", 0]}]), b"d1:bi2e1:ai1ee\n"],
        "krpc": krpc,
        "dht_node": krpc,
        "shared_socket": [*krpc, *_quic()],
        "envelope": envelopes,
        "transfer_wire": _transfer_messages(),
        "offline_packet": [packet.encode(), packet_v2.encode()],
        "device_cert": [cert.encode()],
        "chatfile": [chat.to_bytes(), owned.to_bytes()],
        "member_list": [members.to_bytes()],
        "channel_message": [message.encode()],
        "id_text": [
            format_id(alice.public_key).encode(),
            format_id(alice.public_key, grouped=True).encode(),
            format_uri(alice.public_key, "Alice").encode(),
            alice.public_key.hex().encode(),
        ],
    }


def _gateway_answers() -> list[bytes]:
    """The PCP answers of docs/vectors/pcp.json, and a NAT-PMP one."""
    vectors = json.loads((CORPUS.parents[1] / "docs" / "vectors" / "pcp.json").read_text())
    answers = [bytes.fromhex(v["bytes"]) for v in vectors["vectors"] if v["kind"] == "answer"]
    return [*answers, bytes.fromhex("0081 0000 00000065 1ae1 1b00 00000708")]


def _relay_headers(someone: Identity) -> list[bytes]:
    device = b"\x01" * 16
    return [
        encode_header(Connect(1, someone.public_key, device)) + b"ciphertext",
        encode_header(Incoming(7, someone.public_key, device)),
        encode_header(Answer(1, 0)),
        encode_header(Answer(2**32 - 1, 5)) + b"x",
    ]


def main() -> None:
    for name, inputs in seeds().items():
        folder = CORPUS / name
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir(parents=True)
        for data in inputs:
            (folder / hashlib.sha1(data).hexdigest()).write_bytes(data)
    print(f"wrote {sum(len(v) for v in seeds().values())} seeds to {CORPUS}")


if __name__ == "__main__":
    main()
