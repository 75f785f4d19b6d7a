"""Channel links: the XXpsk3 wrapper against cacophony, the sans-I/O link on a fake clock
(handshake, proofs, refusals, frames, timers, garbage), and the asyncio shell over TCP."""

from __future__ import annotations

import asyncio
import json
import os
import struct
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from harness import events, split_frames, transfer
from hypothesis import given, settings
from hypothesis import strategies as st
from noise.connection import Keypair, NoiseConnection

from btchat.channels import link_connection
from btchat.channels.link import (
    HANDSHAKE_MESSAGE_LENGTHS,
    MAX_CLOSE_REASON,
    MAX_PAYLOAD,
    PROOF_MESSAGE_LEN,
    PROTOCOL_NAME,
    Link,
    LinkClosed,
    LinkConfig,
    LinkData,
    LinkEstablished,
    LinkEvent,
    LinkFailed,
    Role,
    XXpsk3Handshake,
    link_prologue,
    proof_message,
)
from btchat.channels.link_connection import LinkConnection, run_link
from btchat.identity.keys import Identity
from btchat.session.noise_ik import Transport

# The library warns (rightly) when an ephemeral key is fixed; the vector needs that.
pytestmark = pytest.mark.filterwarnings("ignore:One of ephemeral keypairs is already set")

VECTORS_FILE = Path(
    os.environ.get("BTCHAT_NOISE_VECTORS", "/work/shared/specs/noise-vectors-cacophony.txt")
)

# The Noise_XXpsk3_25519_ChaChaPoly_BLAKE2b vector from cacophony
# (github.com/haskell-cryptography/cacophony, vectors/cacophony.txt), verbatim.
XXPSK3_VECTOR: dict[str, Any] = {
    "protocol_name": "Noise_XXpsk3_25519_ChaChaPoly_BLAKE2b",
    "init_prologue": "4a6f686e2047616c74",
    "init_psks": ["54686973206973206d7920417573747269616e20706572737065637469766521"],
    "init_static": "e61ef9919cde45dd5f82166404bd08e38bceb5dfdfded0a34c8df7ed542214d1",
    "init_ephemeral": "893e28b9dc6ca8d611ab664754b8ceb7bac5117349a4439a6b0569da977c464a",
    "resp_prologue": "4a6f686e2047616c74",
    "resp_psks": ["54686973206973206d7920417573747269616e20706572737065637469766521"],
    "resp_static": "4a3acbfdb163dec651dfa3194dece676d437029c62a408b4c5ea9114246e4893",
    "resp_ephemeral": "bbdb4cdbd309f1a1f2e1456967fe288cadd6f712d65dc7b7793d5e63da6b375b",
    "handshake_hash": (
        "46b5997dfa51492ae9be5b611748455e83aebdbc2ea3c47d264ec6dd408cc076"
        "e962ff056890c60398fe3e7a430bbe057f34383a84df9ff99391266dcfd638b0"
    ),
    "messages": [
        {
            "payload": "4c756477696720766f6e204d69736573",
            "ciphertext": (
                "ca35def5ae56cec33dc2036731ab14896bc4c75dbb07a61f879f8e3afa4c7944"
                "0aa831d1e3bbd16bd7ffda87e9f7b6eeca2510006499a573ac27af3392ed1b69"
            ),
        },
        {
            "payload": "4d757272617920526f746862617264",
            "ciphertext": (
                "95ebc60d2b1fa672c1f46a8aa265ef51bfe38e7ccb39ec5be34069f144808843"
                "81a78489d56c9e2ac962826f25684980b25244dbfd505b7d903a94d4f4fd8400"
                "4a1c7fbe94d686bc4c1f67259364f6f2a41cb40bf5198b9b3975be2cdd49d3e0"
                "65a554e12c477d82029fabc6555bc1"
            ),
        },
        {
            "payload": "462e20412e20486179656b",
            "ciphertext": (
                "291dfeff6eff386e29adb0bdbd5a1ae9e09de4449c8695d109adcb63e80e4895"
                "55792a3e9150eff75d6d45571f824ed231173cb66e31e7da914241f86d0cbb67"
                "8335ffe768a7445d2f5bc1"
            ),
        },
        {
            "payload": "4361726c204d656e676572",
            "ciphertext": "6579dd60eb5e6a8b29dd60004289f5d3c2f69fcdbf683a869f59a8",
        },
        {
            "payload": "4a65616e2d426170746973746520536179",
            "ciphertext": "24715fd39c3c7606e81b26e69e47b54d043d9d87c512f9417bae51ab48ebb17722",
        },
        {
            "payload": "457567656e2042f6686d20766f6e2042617765726b",
            "ciphertext": (
                "e49194a013d873712318643acbf0e3851086326bb168c500a766439ff543a7a1e2deb3215c"
            ),
        },
    ],
}

CHANNEL = bytes(range(32))
PSK = bytes(range(100, 132))
ALICE = Identity.from_seed(b"a" * 32)
BOB = Identity.from_seed(b"b" * 32)
MALLORY = Identity.from_seed(b"m" * 32)

# ------------------------------------------------------------------------ vector


def _vector_party(v: dict[str, Any], side: str) -> XXpsk3Handshake:
    return XXpsk3Handshake(
        initiator=side == "init",
        psk=bytes.fromhex(v[f"{side}_psks"][0]),
        prologue=bytes.fromhex(v[f"{side}_prologue"]),
        static_private=bytes.fromhex(v[f"{side}_static"]),
        ephemeral_private=bytes.fromhex(v[f"{side}_ephemeral"]),
    )


def test_wrapper_reproduces_the_cacophony_vector() -> None:
    v = XXPSK3_VECTOR
    assert v["protocol_name"].encode() == PROTOCOL_NAME
    initiator, responder = _vector_party(v, "init"), _vector_party(v, "resp")
    transports: dict[bool, Transport] = {}
    for index, message in enumerate(v["messages"]):
        payload = bytes.fromhex(message["payload"])
        expected = bytes.fromhex(message["ciphertext"])
        from_initiator = index % 2 == 0  # cacophony: parties alternate, initiator first
        sender, receiver = (initiator, responder) if from_initiator else (responder, initiator)
        if index < 3:
            ciphertext = sender.write_message(payload)
            assert ciphertext == expected, f"handshake message {index}"
            assert receiver.read_message(ciphertext) == payload
            if index == 2:
                assert initiator.complete and responder.complete
                transports = {True: initiator.transport(), False: responder.transport()}
        else:
            ciphertext = transports[from_initiator].encrypt(payload)
            assert ciphertext == expected, f"transport message {index}"
            assert transports[not from_initiator].decrypt(ciphertext) == payload
    handshake_hash = bytes.fromhex(v["handshake_hash"])
    assert initiator.handshake_hash == responder.handshake_hash == handshake_hash


def test_embedded_vector_matches_the_file() -> None:
    if not VECTORS_FILE.exists():
        pytest.skip(f"no cacophony file at {VECTORS_FILE}; the embedded vector still runs")
    vectors = json.loads(VECTORS_FILE.read_text())["vectors"]
    found = [v for v in vectors if v["protocol_name"] == XXPSK3_VECTOR["protocol_name"]]
    assert found == [XXPSK3_VECTOR]


def test_wrapper_rejects_bad_arguments() -> None:
    with pytest.raises(ValueError):
        XXpsk3Handshake(initiator=True, psk=b"short", prologue=b"")
    with pytest.raises(ValueError):
        XXpsk3Handshake(initiator=True, psk=PSK, prologue=b"", static_private=b"x")


# ------------------------------------------------------------------------ harness


def make_link(
    role: Role,
    me: Identity,
    allowed: Callable[[bytes], Any] | set[bytes],
    *,
    channel_id: bytes = CHANNEL,
    psk: bytes = PSK,
    now: float = 0.0,
    config: LinkConfig | None = None,
) -> Link:
    authorize = allowed if callable(allowed) else (lambda identity: identity in allowed)
    return Link(
        role,
        identity=me,
        channel_id=channel_id,
        psk=psk,
        authorize=authorize,
        now=now,
        config=config or LinkConfig(),
    )


def pair(
    config: LinkConfig | None = None, now: float = 0.0, **responder_kw: Any
) -> tuple[Link, Link]:
    """Alice dials Bob; each accepts only the other."""
    a = make_link("initiator", ALICE, {BOB.public_key}, now=now, config=config)
    b = make_link(
        "responder",
        BOB,
        responder_kw.pop("allowed", {ALICE.public_key}),
        now=now,
        config=config,
        **responder_kw,
    )
    return a, b


def frame(message: bytes) -> bytes:
    return struct.pack(">H", len(message)) + message


def established_pair(config: LinkConfig | None = None, now: float = 0.0) -> tuple[Link, Link]:
    a, b = pair(config, now)
    transfer(a, b, now)
    assert a.established and b.established
    events(a), events(b)
    return a, b


def failed(link: Link) -> str:
    """The reason of the link's single, final LinkFailed."""
    evs = events(link)
    assert link.closed
    assert len(evs) == 1 and isinstance(evs[0], LinkFailed), evs
    return evs[0].reason


class Rogue:
    """A peer running other code: the Noise wrapper by hand, any first frame it likes."""

    def __init__(self, role: Role, *, psk: bytes = PSK, channel_id: bytes = CHANNEL) -> None:
        self.role = role
        self.hs = XXpsk3Handshake(
            initiator=role == "initiator", psk=psk, prologue=link_prologue(channel_id)
        )
        self.transport: Transport | None = None
        self.hash = b""
        self.peer_proof: bytes | None = None

    def handshake(self, link: Link) -> None:
        """Run messages 1-3 against ``link`` (and read an initiator's proof)."""
        if self.role == "initiator":
            link.receive_data(frame(self.hs.write_message(b"")), 0.0)
            (msg2,) = split_frames(link.data_to_send(), keep_prefix=False)
            self.hs.read_message(msg2)
            self._finish(self.hs.write_message(b""))
        else:
            (msg1,) = split_frames(link.data_to_send(), keep_prefix=False)
            self.hs.read_message(msg1)
            link.receive_data(frame(self.hs.write_message(b"")), 0.0)
            msg3, proof = split_frames(link.data_to_send(), keep_prefix=False)
            self.hs.read_message(msg3)
            self._finish(b"")
            assert self.transport is not None
            self.peer_proof = self.transport.decrypt(proof)

    def _finish(self, msg3: bytes) -> None:
        self.msg3 = msg3
        self.transport = self.hs.transport()
        self.hash = self.hs.handshake_hash

    def first_frame(self, plaintext: bytes) -> bytes:
        """The framed transport message; an initiator's goes out with message 3."""
        assert self.transport is not None
        data = frame(self.transport.encrypt(plaintext))
        return frame(self.msg3) + data if self.role == "initiator" else data

    def proof(
        self,
        signer: Identity,
        *,
        key: bytes | None = None,
        role: Role | None = None,
        handshake_hash: bytes | None = None,
        channel_id: bytes = CHANNEL,
    ) -> bytes:
        signed = proof_message(
            channel_id, role or self.role, self.hash if handshake_hash is None else handshake_hash
        )
        return (key or signer.public_key) + signer.sign(signed)


# ------------------------------------------------------------------------ handshake


@pytest.mark.parametrize("alice_dials", [True, False])
def test_handshake_both_ways(alice_dials: bool) -> None:
    dialler, listener = (ALICE, BOB) if alice_dials else (BOB, ALICE)
    i = make_link("initiator", dialler, {listener.public_key})
    r = make_link("responder", listener, {dialler.public_key})
    log: list[tuple[str, bytes]] = []
    transfer(i, r, 0.0, log)
    # Three writes: msg1; msg2; msg3 + initiator proof; then the responder's proof.
    sizes = [(side, [len(m) for m in split_frames(data, keep_prefix=False)]) for side, data in log]
    assert sizes == [
        ("a", [HANDSHAKE_MESSAGE_LENGTHS[0]]),
        ("b", [HANDSHAKE_MESSAGE_LENGTHS[1]]),
        ("a", [HANDSHAKE_MESSAGE_LENGTHS[2], PROOF_MESSAGE_LEN]),
        ("b", [PROOF_MESSAGE_LEN]),
    ]
    assert HANDSHAKE_MESSAGE_LENGTHS == (48, 96, 64)
    (ei,), (er,) = events(i), events(r)
    assert isinstance(ei, LinkEstablished) and isinstance(er, LinkEstablished)
    assert ei.identity == listener.public_key and er.identity == dialler.public_key
    assert ei.handshake_hash == er.handshake_hash and len(ei.handshake_hash) == 64
    assert i.remote_identity == listener.public_key and r.remote_identity == dialler.public_key
    assert i.handshake_hash == r.handshake_hash == ei.handshake_hash
    assert i.established and r.established and not i.closed and not r.closed


def test_nothing_is_public_before_both_proofs() -> None:
    a, b = pair()
    b.receive_data(a.data_to_send(), 0.0)
    a.receive_data(b.data_to_send(), 0.0)  # msg2: a has Split() and sent its proof
    assert not a.established and a.handshake_hash is None and a.remote_identity is None
    with pytest.raises(RuntimeError):
        a.send(b"too early", 0.0)
    assert events(a) == [] and events(b) == []


def test_byte_by_byte_delivery() -> None:
    a, b = pair()
    while True:
        ab, ba = a.data_to_send(), b.data_to_send()
        if not ab and not ba:
            break
        for i in range(len(ab)):
            b.receive_data(ab[i : i + 1], 0.0)
        for i in range(len(ba)):
            a.receive_data(ba[i : i + 1], 0.0)
    assert a.established and b.established


def test_links_are_independent() -> None:
    """Fresh ephemeral and static keys: two links between the same pair share nothing."""
    a1, _ = established_pair()
    a2, _ = established_pair()
    assert a1.handshake_hash != a2.handshake_hash


def test_wrong_psk_fails_both_and_responder_says_nothing_after_msg2() -> None:
    a, b = pair(psk=bytes(32))
    log: list[tuple[str, bytes]] = []
    transfer(a, b, 0.0, log)
    from_b = [data for side, data in log if side == "b"]
    assert [[len(m) for m in split_frames(d, keep_prefix=False)] for d in from_b] == [
        [HANDSHAKE_MESSAGE_LENGTHS[1]]
    ]
    assert "message 3 does not authenticate" in failed(b)
    # The initiator cannot tell until nothing comes: its handshake deadline fails it.
    assert not a.established and events(a) == []
    assert a.get_timer() == 10.0
    a.handle_timer(9.999)
    assert not a.closed
    a.handle_timer(10.0)
    assert "handshake timed out" in failed(a)
    assert a.data_to_send() == b""


def test_wrong_channel_id_fails_at_message_1() -> None:
    """The channel id is in the prologue: a link for another channel never starts."""
    a, b = pair(channel_id=bytes(32))
    transfer(a, b)
    assert "message 1 does not authenticate" in failed(b)
    b_said = b.data_to_send()
    assert b_said == b""
    a.connection_lost(1.0)
    assert failed(a) == "connection lost during the handshake"


def test_responder_refusal_is_silent() -> None:
    a, b = pair(allowed=set())
    log: list[tuple[str, bytes]] = []
    transfer(a, b, 0.0, log)
    assert [len(d) for side, d in log if side == "b"] == [2 + HANDSHAKE_MESSAGE_LENGTHS[1]]
    assert "initiator's identity is not authorized" in failed(b)
    assert not a.established and events(a) == []
    a.handle_timer(10.0)
    assert "timed out" in failed(a)


def test_initiator_refusal_sends_nothing_more() -> None:
    a = make_link("initiator", ALICE, set())
    b = make_link("responder", BOB, {ALICE.public_key})
    transfer(a, b)
    assert "responder's identity is not authorized" in failed(a)
    assert a.data_to_send() == b""
    assert [type(e) for e in events(b)] == [LinkEstablished]  # b proved itself to a member
    b.connection_lost(1.0)
    assert failed(b) == "connection lost without CLOSE"


@pytest.mark.parametrize("answer", [1, "yes", None, False, [True]])
def test_authorize_must_return_exactly_true(answer: object) -> None:
    a, b = pair(allowed=lambda identity: answer)
    transfer(a, b)
    assert "not authorized" in failed(b)


@pytest.mark.parametrize("role", ["initiator", "responder"])
def test_authorize_exception_fails_and_propagates(role: Role) -> None:
    def boom(identity: bytes) -> bool:
        raise KeyError("bug in the caller")

    a = make_link("initiator", ALICE, boom if role == "initiator" else {BOB.public_key})
    b = make_link("responder", BOB, boom if role == "responder" else {ALICE.public_key})
    with pytest.raises(KeyError):
        transfer(a, b)
    victim = a if role == "initiator" else b
    assert "raised an exception" in failed(victim)
    assert victim.data_to_send() == b""


def _forgeries(rogue: Rogue) -> dict[str, bytes]:
    peer_role: Role = "responder" if rogue.role == "initiator" else "initiator"
    victim_key = (ALICE if rogue.role == "initiator" else BOB).public_key
    return {
        "other hash": rogue.proof(MALLORY, handshake_hash=bytes(64)),
        "other identity's key": rogue.proof(MALLORY, key=victim_key),
        "reflected role": rogue.proof(MALLORY, role=peer_role),
        "other channel": rogue.proof(MALLORY, channel_id=bytes(32)),
        "garbage signature": MALLORY.public_key + bytes(64),
    }


FORGERIES = ["other hash", "other identity's key", "reflected role", "other channel"]


@pytest.mark.parametrize("forgery", [*FORGERIES, "garbage signature"])
def test_forged_initiator_proof(forgery: str) -> None:
    # The responder would admit anyone, even Mallory, if the proof were valid.
    b = make_link("responder", BOB, lambda identity: True)
    rogue = Rogue("initiator")
    rogue.handshake(b)
    b.receive_data(rogue.first_frame(_forgeries(rogue)[forgery]), 0.0)
    assert "initiator's identity proof does not verify" in failed(b)
    assert b.data_to_send() == b""


@pytest.mark.parametrize("forgery", [*FORGERIES, "garbage signature"])
def test_forged_responder_proof(forgery: str) -> None:
    a = make_link("initiator", ALICE, lambda identity: True)
    rogue = Rogue("responder")
    rogue.handshake(a)
    a.receive_data(rogue.first_frame(_forgeries(rogue)[forgery]), 0.0)
    assert "responder's identity proof does not verify" in failed(a)


def test_honest_rogue_proof_is_accepted() -> None:
    """The Rogue harness itself is sound: a correct proof from it establishes."""
    b = make_link("responder", BOB, {MALLORY.public_key})
    rogue = Rogue("initiator")
    rogue.handshake(b)
    b.receive_data(rogue.first_frame(rogue.proof(MALLORY)), 0.0)
    assert [type(e) for e in events(b)] == [LinkEstablished]
    assert b.remote_identity == MALLORY.public_key


def test_initiator_proof_is_bound_to_the_handshake() -> None:
    """What the honest initiator sends verifies only for this link's hash and role."""
    a = make_link("initiator", ALICE, lambda identity: True)
    rogue = Rogue("responder")
    rogue.handshake(a)
    proof = rogue.peer_proof
    assert proof is not None and proof[:32] == ALICE.public_key
    signed = proof_message(CHANNEL, "initiator", rogue.hash)
    ALICE.private_key.public_key().verify(proof[32:], signed)


# ------------------------------------------------------------------------ frames


def test_data_both_ways_including_maximum_size() -> None:
    a, b = established_pair()
    payloads = [b"", b"x", os.urandom(1000), os.urandom(MAX_PAYLOAD)]
    for p in payloads:
        a.send(p, 1.0)
        b.send(p[::-1], 1.0)
    transfer(a, b, 1.0)
    assert events(b) == [LinkData(p) for p in payloads]
    assert events(a) == [LinkData(p[::-1]) for p in payloads]
    with pytest.raises(ValueError):
        a.send(bytes(MAX_PAYLOAD + 1), 1.0)
    with pytest.raises(TypeError):
        a.send("text", 1.0)  # type: ignore[arg-type]
    assert MAX_PAYLOAD == 65535 - 16 - 1


def test_close_is_orderly_and_final() -> None:
    a, b = established_pair()
    reason = "é" * 200  # 400 bytes of UTF-8: cut to whole characters within 256
    a.send(b"last words", 1.0)
    a.close(reason, 1.0)
    a.close("again", 1.0)  # idempotent
    assert events(a) == [LinkClosed(reason)]
    with pytest.raises(RuntimeError):
        a.send(b"after close", 1.0)
    b.receive_data(a.data_to_send(), 1.0)
    got = events(b)
    assert got[0] == LinkData(b"last words")
    assert got[1] == LinkClosed("é" * (MAX_CLOSE_REASON // 2), by_peer=True)
    assert b.closed and b.get_timer() is None
    b.receive_data(b"\x00\x01x", 2.0)  # ignored from now on
    assert events(b) == []


def test_close_during_handshake_sends_nothing() -> None:
    a, _ = pair()
    a.close("changed my mind", 0.0)
    assert a.data_to_send() == b""
    assert events(a) == [LinkClosed("changed my mind")]


@pytest.mark.parametrize("offset", [2, 3, 10, -1])
def test_tampered_byte_fails(offset: int) -> None:
    a, b = established_pair()
    a.send(b"hello channel", 1.0)
    data = bytearray(a.data_to_send())
    data[offset] ^= 0x01
    b.receive_data(bytes(data), 1.0)
    assert "failed authentication" in failed(b)
    assert b.data_to_send() == b""


@pytest.mark.parametrize("message", [0, 1, 2])
def test_tampered_handshake_fails(message: int) -> None:
    a, b = pair()
    flows = [a, b, a]
    for index, sender in enumerate(flows):
        receiver = b if sender is a else a
        data = bytearray(sender.data_to_send())
        if index == message:
            data[5] ^= 0x80
        receiver.receive_data(bytes(data), 0.0)
        if index == message:
            assert "does not authenticate" in failed(receiver)
            return


REPLAY = "frame failed authentication (tampered, replayed or reordered)"


def test_replayed_and_reordered_frames_fail() -> None:
    a, b = established_pair()
    a.send(b"1", 1.0)
    first = a.data_to_send()
    b.receive_data(first, 1.0)
    b.receive_data(first, 1.0)  # replayed
    assert events(b) == [LinkData(b"1"), LinkFailed(REPLAY)]
    a2, b2 = established_pair()
    a2.send(b"1", 1.0)
    a2.data_to_send()
    a2.send(b"2", 1.0)
    b2.receive_data(a2.data_to_send(), 1.0)  # "1" was dropped: "2" is out of order
    assert failed(b2) == REPLAY


def test_data_before_proof_fails_at_the_responder() -> None:
    b = make_link("responder", BOB, lambda identity: True)
    rogue = Rogue("initiator")
    rogue.handshake(b)
    b.receive_data(rogue.first_frame(b"\x00hello"), 0.0)
    assert "expected the peer's identity proof first" in failed(b)
    assert b.data_to_send() == b""


def test_proof_sized_data_before_proof_fails_at_the_responder() -> None:
    b = make_link("responder", BOB, lambda identity: True)
    rogue = Rogue("initiator")
    rogue.handshake(b)
    b.receive_data(rogue.first_frame(b"\x00" + bytes(95)), 0.0)
    assert "identity proof does not verify" in failed(b)


def test_data_before_proof_fails_at_the_initiator() -> None:
    a = make_link("initiator", ALICE, lambda identity: True)
    rogue = Rogue("responder")
    rogue.handshake(a)
    a.receive_data(rogue.first_frame(b"\x00hello"), 0.0)
    assert "expected the peer's identity proof first" in failed(a)


@pytest.mark.parametrize(
    ("plaintext", "reason"),
    [
        (b"\x09", "unknown frame type 9"),
        (b"\xff" + b"x" * 10, "unknown frame type 255"),
        (b"\x01x", "malformed PING"),
        (b"\x02x", "malformed PONG"),
    ],
)
def test_bad_frames_after_the_proofs(plaintext: bytes, reason: str) -> None:
    a, b = established_pair()
    assert a._transport is not None
    a.data_to_send()
    b.receive_data(frame(a._transport.encrypt(plaintext)), 1.0)  # a peer running other code
    assert reason in failed(b)


def test_short_frame_after_the_proofs_fails() -> None:
    _, b = established_pair()
    b.receive_data(frame(bytes(16)), 1.0)
    assert "shorter than a transport message" in failed(b)


@pytest.mark.parametrize("length", [0, 47, 49, 65535])
def test_wrong_handshake_length_fails_before_buffering(length: int) -> None:
    b = make_link("responder", BOB, lambda identity: True)
    b.receive_data(struct.pack(">H", length), 0.0)  # the body is never awaited
    assert "handshake message 1 must be 48 bytes" in failed(b)


def test_low_order_ephemeral_fails_cleanly() -> None:
    """An all-zero ``e`` in message 1 makes the responder's ``ee`` all zeros."""
    conn = NoiseConnection.from_name(PROTOCOL_NAME)
    conn.set_as_initiator()
    conn.set_psks(psk=PSK)
    conn.set_prologue(link_prologue(CHANNEL))
    conn.set_keypair_from_private_bytes(Keypair.STATIC, bytes(range(32)))
    conn.set_keypair_from_public_bytes(Keypair.EPHEMERAL, bytes(32))
    conn.start_handshake()
    b = make_link("responder", BOB, lambda identity: True)
    b.receive_data(frame(bytes(conn.write_message(b""))), 0.0)
    assert "ephemeral key is unusable" in failed(b)
    assert b.data_to_send() == b""


def test_handshake_payload_is_refused() -> None:
    hs = XXpsk3Handshake(initiator=True, psk=PSK, prologue=link_prologue(CHANNEL))
    b = make_link("responder", BOB, lambda identity: True)
    # 48 bytes with a 0-byte payload is the only valid size; a 1-byte payload is 49.
    message = hs.write_message(b"x")
    b.receive_data(frame(message), 0.0)
    assert "must be 48 bytes" in failed(b)


# ------------------------------------------------------------------------ timers


def test_handshake_timeout_covers_the_proofs() -> None:
    cfg = LinkConfig(handshake_timeout=5.0)
    b = make_link("responder", BOB, lambda identity: True, config=cfg, now=100.0)
    rogue = Rogue("initiator")
    rogue.handshake(b)  # Noise done, but no proof ever comes
    b.receive_data(frame(rogue.msg3), 100.0)
    assert b.get_timer() == 105.0
    b.handle_timer(104.9)
    assert not b.closed
    b.handle_timer(105.0)
    assert failed(b) == "handshake timed out after 5 s"
    assert b.get_timer() is None


def test_keepalive_keeps_a_quiet_link_alive() -> None:
    cfg = LinkConfig(keepalive=15.0, idle_timeout=45.0)
    a, b = established_pair(cfg)
    now = 0.0
    pings = 0
    while now < 600.0:
        now = min(t for t in (a.get_timer(), b.get_timer()) if t is not None)
        a.handle_timer(now)
        b.handle_timer(now)
        ab, ba = a.data_to_send(), b.data_to_send()
        pings += len(split_frames(ab, keep_prefix=False)) + len(split_frames(ba, keep_prefix=False))
        if ab:
            b.receive_data(ab, now)
        if ba:
            a.receive_data(ba, now)
        transfer(a, b, now)  # the PONGs
    assert a.established and b.established
    assert events(a) == [] and events(b) == []
    assert pings >= 600.0 / 15.0  # each side pings about every 15 s, answers cover both


def test_keepalive_pings_after_quiet_sending_only() -> None:
    a, b = established_pair(LinkConfig(keepalive=15.0, idle_timeout=45.0))
    assert a.get_timer() == 15.0
    a.send(b"busy", 10.0)
    assert a.get_timer() == 25.0  # sending postpones the PING
    b.receive_data(a.data_to_send(), 10.0)
    assert events(b) == [LinkData(b"busy")]
    a.handle_timer(25.0)
    (ping,) = split_frames(a.data_to_send(), keep_prefix=False)
    b.receive_data(frame(ping), 25.0)
    (pong,) = split_frames(b.data_to_send(), keep_prefix=False)
    assert len(ping) == len(pong) == 17  # type byte + tag
    a.receive_data(frame(pong), 25.0)
    assert a.established and events(a) == [] and events(b) == []


def test_idle_timeout() -> None:
    a, _ = established_pair(LinkConfig(keepalive=15.0, idle_timeout=45.0))
    for t in (15.0, 30.0):
        a.handle_timer(t)
        a.data_to_send()  # the peer never answers
    assert a.get_timer() == 45.0
    a.handle_timer(44.99)
    assert not a.closed
    a.handle_timer(45.0)
    assert failed(a) == "idle timeout: nothing received for 45 s"
    assert a.data_to_send() == b""


def test_config_validation() -> None:
    with pytest.raises(ValueError):
        LinkConfig(keepalive=45.0, idle_timeout=45.0)
    with pytest.raises(ValueError):
        LinkConfig(handshake_timeout=0.0)
    with pytest.raises(ValueError):
        make_link("observer", ALICE, set())  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        make_link("initiator", ALICE, set(), psk=b"short")
    with pytest.raises(ValueError):
        make_link("initiator", ALICE, set(), channel_id=b"short")


# ------------------------------------------------------------------------ garbage


def _check_garbage(link: Link, data: bytes) -> None:
    link.receive_data(data, 1.0)
    evs = events(link)
    assert all(isinstance(e, LinkFailed) for e in evs), evs
    assert len(evs) <= 1
    assert link.closed == bool(evs)


garbage = st.one_of(
    st.binary(max_size=400),
    st.lists(st.binary(max_size=130), max_size=5).map(lambda ms: b"".join(map(frame, ms))),
    # Bodies of exactly the sizes the link expects, so they reach the AEAD checks.
    st.lists(
        st.sampled_from([16, 17, 48, 64, 96, 112]).flatmap(
            lambda n: st.binary(min_size=n, max_size=n)
        ),
        min_size=1,
        max_size=4,
    ).map(lambda ms: b"".join(map(frame, ms))),
)


@settings(max_examples=300, deadline=None)
@given(data=garbage)
def test_garbage_into_a_fresh_responder(data: bytes) -> None:
    _check_garbage(make_link("responder", BOB, lambda identity: True), data)


@settings(max_examples=300, deadline=None)
@given(data=garbage)
def test_garbage_into_a_waiting_initiator(data: bytes) -> None:
    a = make_link("initiator", ALICE, lambda identity: True)
    a.data_to_send()
    _check_garbage(a, data)


@settings(max_examples=200, deadline=None)
@given(data=garbage)
def test_garbage_into_a_proving_responder(data: bytes) -> None:
    b = make_link("responder", BOB, lambda identity: True)
    rogue = Rogue("initiator")
    rogue.handshake(b)
    b.receive_data(frame(rogue.msg3), 0.0)
    _check_garbage(b, data)


@settings(max_examples=200, deadline=None)
@given(data=garbage, to_initiator=st.booleans())
def test_garbage_into_an_established_link(data: bytes, to_initiator: bool) -> None:
    a, b = established_pair()
    _check_garbage(a if to_initiator else b, data)


# ------------------------------------------------------------------------ asyncio


class FakeTransport:
    """A socket whose peer reads nothing unless the test takes the bytes."""

    def __init__(self) -> None:
        self.buffered = 0
        self.aborted = False

    def get_write_buffer_size(self) -> int:
        return self.buffered

    def abort(self) -> None:
        self.aborted = True


class FakeWriter:
    def __init__(self) -> None:
        self.transport = FakeTransport()
        self.chunks: list[bytes] = []
        self.closing = False

    def write(self, data: bytes) -> None:
        self.chunks.append(data)
        self.transport.buffered += len(data)

    def take(self, *, drain: bool = True) -> bytes:
        data = b"".join(self.chunks)
        self.chunks.clear()
        if drain:
            self.transport.buffered = 0
        return data

    def is_closing(self) -> bool:
        return self.closing

    def close(self) -> None:
        self.closing = True

    async def wait_closed(self) -> None:
        return None

    async def drain(self) -> None:
        return None


async def _settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


async def test_backlog_refuses_sends_then_aborts_a_peer_that_does_not_read(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(link_connection, "MAX_WRITE_BACKLOG", 64 * 1024)
    monkeypatch.setattr(link_connection, "ABORT_WRITE_BACKLOG", 128 * 1024)
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    writer = FakeWriter()
    link = make_link("responder", BOB, {ALICE.public_key}, now=loop.time())
    conn = LinkConnection(link, writer)  # type: ignore[arg-type]
    seen: list[LinkEvent] = []
    assert conn.send(b"not yet") is False
    pump = asyncio.create_task(
        run_link(link, reader, writer, on_event=seen.append, connection=conn)  # type: ignore[arg-type]
    )
    peer = make_link("initiator", ALICE, {BOB.public_key}, now=loop.time())
    reader.feed_data(peer.data_to_send())
    await _settle()
    peer.receive_data(writer.take(), loop.time())
    reader.feed_data(peer.data_to_send())
    await _settle()
    peer.receive_data(writer.take(), loop.time())
    assert peer.established and [type(e) for e in seen] == [LinkEstablished]
    # The peer stops reading: sends are refused once 64 KiB are queued...
    accepted = 0
    while conn.send(bytes(10_000)):
        accepted += 1
        await asyncio.sleep(0)
    assert accepted == 7 and conn.backlog > 64 * 1024
    # ...but its frames are still read and delivered,
    peer.send(b"still talking", loop.time())
    reader.feed_data(peer.data_to_send())
    await _settle()
    assert seen[-1] == LinkData(b"still talking")
    # and a peer that makes us answer PINGs without reading is dropped.
    assert peer._transport is not None
    for _ in range(4000):
        reader.feed_data(frame(peer._transport.encrypt(b"\x01")))
    await asyncio.wait_for(pump, 5.0)
    assert isinstance(seen[-1], LinkFailed) and "not reading" in seen[-1].reason
    assert writer.transport.aborted
    assert conn.send(b"gone") is False


async def test_run_link_refuses_a_link_built_on_another_clock() -> None:
    reader, writer = asyncio.StreamReader(), FakeWriter()
    link = make_link("initiator", ALICE, set(), now=time.time() + 1e6)
    with pytest.raises(ValueError, match="loop"):
        await run_link(link, reader, writer, on_event=lambda e: None)  # type: ignore[arg-type]
    assert writer.closing and link.closed


async def _serve(
    make: Callable[[float], Link],
    on_event: Callable[[LinkConnection, LinkEvent], None],
) -> tuple[asyncio.Server, int, list[asyncio.Task[None]]]:
    tasks: list[asyncio.Task[None]] = []

    async def accept(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        link = make(asyncio.get_running_loop().time())
        conn = LinkConnection(link, writer)
        await run_link(link, reader, writer, on_event=lambda e: on_event(conn, e), connection=conn)

    def accept_task(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        tasks.append(asyncio.ensure_future(accept(reader, writer)))

    server = await asyncio.start_server(accept_task, "127.0.0.1", 0)
    return server, server.sockets[0].getsockname()[1], tasks


async def test_loopback_tcp_1000_messages_each_way(capsys: pytest.CaptureFixture[str]) -> None:
    loop = asyncio.get_running_loop()
    count = 1000

    def payload(side: str, n: int) -> bytes:
        size = MAX_PAYLOAD if n == count - 1 else (n * 37) % 3000
        head = f"{side}{n:04d}".encode()
        return (head * (size // len(head) + 1))[: max(size, len(head))]

    received: dict[str, list[bytes]] = {"i": [], "r": []}
    ended: dict[str, asyncio.Future[LinkEvent]] = {
        "i": loop.create_future(),
        "r": loop.create_future(),
    }
    senders: list[asyncio.Task[None]] = []

    async def push(conn: LinkConnection, side: str) -> None:
        for n in range(count):
            while not conn.send(payload(side, n)):
                await conn.drain()
            if n % 64 == 0:
                await conn.drain()

    def handler(side: str) -> Callable[[LinkConnection, LinkEvent], None]:
        def on_event(conn: LinkConnection, event: LinkEvent) -> None:
            if isinstance(event, LinkEstablished):
                senders.append(loop.create_task(push(conn, side)))
            elif isinstance(event, LinkData):
                received[side].append(event.payload)
            else:
                ended[side].set_result(event)

        return on_event

    server, port, accepted = await _serve(
        lambda now: make_link("responder", BOB, {ALICE.public_key}, now=now), handler("r")
    )
    start = time.perf_counter()
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    link = make_link("initiator", ALICE, {BOB.public_key}, now=loop.time())
    conn = LinkConnection(link, writer)
    on_i = handler("i")
    # The initiator closes once both sides have everything.
    client = loop.create_task(
        run_link(link, reader, writer, on_event=lambda e: on_i(conn, e), connection=conn)
    )

    async def close_when_done() -> None:
        while not (len(received["i"]) == count and len(received["r"]) == count):
            await asyncio.sleep(0.01)
        conn.close("done")

    closer = loop.create_task(close_when_done())
    try:
        end_i = await asyncio.wait_for(ended["i"], 30.0)
        end_r = await asyncio.wait_for(ended["r"], 30.0)
        await asyncio.wait_for(client, 10.0)
        await asyncio.wait_for(asyncio.gather(*accepted), 10.0)
    finally:
        closer.cancel()
        server.close()
        await server.wait_closed()
    elapsed = time.perf_counter() - start
    assert received["r"] == [payload("i", n) for n in range(count)]
    assert received["i"] == [payload("r", n) for n in range(count)]
    assert end_i == LinkClosed("done")
    assert end_r == LinkClosed("done", by_peer=True)
    await asyncio.gather(*senders)
    total = sum(map(len, received["i"])) + sum(map(len, received["r"]))
    with capsys.disabled():
        print(f"\n  loopback link: 2x{count} messages, {total / 1e6:.1f} MB in {elapsed:.2f} s")


async def test_loopback_tcp_wrong_psk_both_fail() -> None:
    loop = asyncio.get_running_loop()
    ended: dict[str, asyncio.Future[LinkEvent]] = {
        "i": loop.create_future(),
        "r": loop.create_future(),
    }

    def on_r(conn: LinkConnection, event: LinkEvent) -> None:
        ended["r"].set_result(event)

    server, port, accepted = await _serve(
        lambda now: make_link("responder", BOB, {ALICE.public_key}, now=now, psk=bytes(32)),
        on_r,
    )
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    link = make_link("initiator", ALICE, {BOB.public_key}, now=loop.time())
    try:
        await asyncio.wait_for(run_link(link, reader, writer, on_event=ended["i"].set_result), 10.0)
        await asyncio.wait_for(asyncio.gather(*accepted), 10.0)
    finally:
        server.close()
        await server.wait_closed()
    end_r, end_i = ended["r"].result(), ended["i"].result()
    assert isinstance(end_r, LinkFailed) and "message 3" in end_r.reason
    assert end_i == LinkFailed("connection lost during the handshake")
