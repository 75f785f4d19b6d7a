"""Write the seed corpus: a few valid inputs per target (``python -m fuzz.make_corpus``).

Valid seeds let the fuzzer start deep inside each parser instead of spending its time
finding the first well-formed byte. Inputs use random keys, so re-running rewrites the
files with other bytes; the committed corpus is what the tests read.
"""

from __future__ import annotations

import hashlib
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
from btchat.offline.packet import OfflinePacket

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
        )
    ]
    packet = OfflinePacket.create(
        alice, bob.public_key, 3, int(NOW * 1000), b"K" * 32, 0, b"B" * 40
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
    return {
        "bencode": [*krpc, encode([1, -2, b"x", {b"a": [b"", 0]}]), b"d1:bi2e1:ai1ee\n"],
        "krpc": krpc,
        "dht_node": krpc,
        "shared_socket": [*krpc, *_quic()],
        "envelope": envelopes,
        "offline_packet": [packet.encode()],
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
