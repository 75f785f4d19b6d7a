"""The Noise wrapper against the cacophony vectors, REKEY, and hostile handshake input."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305
from hypothesis import given, settings
from hypothesis import strategies as st

from btchat.session.noise_ik import PROTOCOL_NAME, IKHandshake, NoiseError, Transport

# The cacophony vectors for our protocol (github.com/haskell-cryptography/cacophony,
# vectors/cacophony.txt), embedded so CI needs no external file. When the full file
# is available (BTCHAT_NOISE_VECTORS, or the shared specs folder) every vector for our
# protocol in it is run too, and must match these.
VECTORS = Path(
    os.environ.get("BTCHAT_NOISE_VECTORS", "/work/shared/specs/noise-vectors-cacophony.txt")
)

# The library warns (rightly) when an ephemeral key is fixed; the vectors need that.
pytestmark = pytest.mark.filterwarnings("ignore:One of ephemeral keypairs is already set")

EMBEDDED_VECTORS: list[dict[str, Any]] = [
    {
        "protocol_name": "Noise_IK_25519_ChaChaPoly_BLAKE2b",
        "init_prologue": "4a6f686e2047616c74",
        "init_static": "e61ef9919cde45dd5f82166404bd08e38bceb5dfdfded0a34c8df7ed542214d1",
        "init_ephemeral": "893e28b9dc6ca8d611ab664754b8ceb7bac5117349a4439a6b0569da977c464a",
        "init_remote_static": "31e0303fd6418d2f8c0e78b91f22e8caed0fbe48656dcf4767e4834f701b8f62",
        "resp_prologue": "4a6f686e2047616c74",
        "resp_static": "4a3acbfdb163dec651dfa3194dece676d437029c62a408b4c5ea9114246e4893",
        "resp_ephemeral": "bbdb4cdbd309f1a1f2e1456967fe288cadd6f712d65dc7b7793d5e63da6b375b",
        "handshake_hash": (
            "1c8fa891cb414fedba6daa7c6f4ae0a6d98e5f9768cc9cecd27e805614943ee9"
            "c8a1b27fbfb76dc197255c8aa69f6b4285c423840b8bedf45e652ca64f797d81"
        ),
        "messages": [
            {
                "payload": "4c756477696720766f6e204d69736573",
                "ciphertext": (
                    "ca35def5ae56cec33dc2036731ab14896bc4c75dbb07a61f879f8e3afa4c7944"
                    "ba83a447b38c83e327ad936929812f624884847b7831e95e197b2f797088efdd"
                    "2f88f1db7e1fb0e99c64419097af91cee64e470f4b6fcd9298ce0b56fe20f86e"
                    "13bf70439c538e3602a7127af71a29cc"
                ),
            },
            {
                "payload": "4d757272617920526f746862617264",
                "ciphertext": (
                    "95ebc60d2b1fa672c1f46a8aa265ef51bfe38e7ccb39ec5be34069f144808843"
                    "9f069b267a06b3de3ecb1043bcb098e9af91d9c64748d998c7b47890871571"
                ),
            },
            {
                "payload": "462e20412e20486179656b",
                "ciphertext": "cd54383060e7a28434cca27fb1cc524cfbabeb18181589df219d07",
            },
            {
                "payload": "4361726c204d656e676572",
                "ciphertext": "a856d3bf0246bfc476c655009cd1ed677b8dcc5b349ae8ef2a05f2",
            },
            {
                "payload": "4a65616e2d426170746973746520536179",
                "ciphertext": (
                    "49063084b2c51f098337cb8a13739ac848f907e67cfb2cc8a8b60586467aa02fc7"
                ),
            },
            {
                "payload": "457567656e2042f6686d20766f6e2042617765726b",
                "ciphertext": (
                    "8b9709d23b47e4639df7678d7a21741eba4ef1e9c60383001c7435549c20f9d56f30e935d3"
                ),
            },
        ],
    },
]


def _file_vectors() -> list[dict[str, Any]]:
    if not VECTORS.exists():
        return []
    data = json.loads(VECTORS.read_text())
    return [v for v in data["vectors"] if v["protocol_name"] == PROTOCOL_NAME.decode()]


def _ik_vectors() -> list[dict[str, Any]]:
    vectors = list(EMBEDDED_VECTORS)
    vectors += [v for v in _file_vectors() if v not in vectors]
    return vectors


def _public(private_hex: str) -> bytes:
    key = X25519PrivateKey.from_private_bytes(bytes.fromhex(private_hex))
    return key.public_key().public_bytes_raw()


def _pair_from_vector(v: dict[str, Any]) -> tuple[IKHandshake, IKHandshake]:
    initiator = IKHandshake(
        initiator=True,
        static_private=bytes.fromhex(v["init_static"]),
        prologue=bytes.fromhex(v["init_prologue"]),
        remote_static=bytes.fromhex(v["init_remote_static"]),
        ephemeral_private=bytes.fromhex(v["init_ephemeral"]),
    )
    responder = IKHandshake(
        initiator=False,
        static_private=bytes.fromhex(v["resp_static"]),
        prologue=bytes.fromhex(v["resp_prologue"]),
        ephemeral_private=bytes.fromhex(v["resp_ephemeral"]),
    )
    return initiator, responder


def test_embedded_vectors_match_the_file() -> None:
    if not VECTORS.exists():
        pytest.skip(f"no cacophony file at {VECTORS}; the embedded vectors still run")
    assert _file_vectors() == EMBEDDED_VECTORS


@pytest.mark.parametrize(
    "vector", _ik_vectors(), ids=lambda v: f"{v['protocol_name']}-{v['handshake_hash'][:8]}"
)
def test_cacophony_vector(vector: dict[str, Any]) -> None:
    initiator, responder = _pair_from_vector(vector)
    transports: dict[bool, Transport] = {}
    for index, message in enumerate(vector["messages"]):
        payload = bytes.fromhex(message["payload"])
        expected = bytes.fromhex(message["ciphertext"])
        from_initiator = index % 2 == 0  # cacophony: parties alternate, initiator first
        sender, receiver = (initiator, responder) if from_initiator else (responder, initiator)
        if not (initiator.complete and responder.complete):
            ciphertext = sender.write_message(payload)
            assert ciphertext == expected, f"handshake message {index}"
            assert receiver.read_message(ciphertext) == payload
            if index == 0:
                # The responder learned the initiator's static key from message 1.
                assert responder.remote_static == _public(vector["init_static"])
            if initiator.complete and responder.complete:
                transports = {True: initiator.transport(), False: responder.transport()}
        else:
            ciphertext = transports[from_initiator].encrypt(payload)
            assert ciphertext == expected, f"transport message {index}"
            assert transports[not from_initiator].decrypt(ciphertext) == payload
    handshake_hash = bytes.fromhex(vector["handshake_hash"])
    assert initiator.handshake_hash == handshake_hash
    assert responder.handshake_hash == handshake_hash


def _completed_pair() -> tuple[Transport, Transport]:
    v = _ik_vectors()[0]
    initiator, responder = _pair_from_vector(v)
    responder.read_message(initiator.write_message(b""))
    initiator.read_message(responder.write_message(b""))
    return initiator.transport(), responder.transport()


def _rekey_reference(key: bytes) -> bytes:
    # Noise §4.2 default REKEY: the first 32 bytes of ENCRYPT(k, 2^64-1, "", zeros),
    # with the §12.3 ChaChaPoly nonce (32 zero bits, then n little-endian).
    nonce = b"\x00" * 4 + (2**64 - 1).to_bytes(8, "little")
    return ChaCha20Poly1305(key).encrypt(nonce, b"\x00" * 32, b"")[:32]


def test_rekey_matches_spec_and_keeps_nonce() -> None:
    a, b = _completed_pair()
    for _ in range(3):
        b.decrypt(a.encrypt(b"warm up"))
    old_key, nonce = a._send.k, a.send_nonce
    a.rekey_send()
    assert a._send.k == _rekey_reference(old_key)
    assert a.send_nonce == nonce == 3  # §11.3: rekey does not reset n
    message = a.encrypt(b"after rekey")
    with pytest.raises(NoiseError):
        b.decrypt(message)  # still on the old key
    assert b.receive_nonce == nonce  # §5.1: a failed decrypt does not advance n
    b.rekey_receive()
    assert b.decrypt(message) == b"after rekey"


def test_transport_rejects_replay_and_reorder() -> None:
    a, b = _completed_pair()
    first, second = a.encrypt(b"1"), a.encrypt(b"2")
    with pytest.raises(NoiseError):
        b.decrypt(second)  # reordered: wrong implicit nonce
    assert b.decrypt(first) == b"1"
    with pytest.raises(NoiseError):
        b.decrypt(first)  # replayed
    assert b.decrypt(second) == b"2"


def test_wrong_prologue_fails_handshake() -> None:
    v = _ik_vectors()[0]
    initiator, _ = _pair_from_vector(v)
    responder = IKHandshake(
        initiator=False, static_private=bytes.fromhex(v["resp_static"]), prologue=b"other"
    )
    with pytest.raises(NoiseError):
        responder.read_message(initiator.write_message(b"hello"))


def test_argument_checks() -> None:
    key = os.urandom(32)
    with pytest.raises(ValueError):
        IKHandshake(initiator=True, static_private=key, prologue=b"")
    with pytest.raises(ValueError):
        IKHandshake(initiator=False, static_private=key, prologue=b"", remote_static=key)
    with pytest.raises(ValueError):
        IKHandshake(initiator=True, static_private=key, prologue=b"", remote_static=b"x")


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=700))
def test_garbage_message_1_raises_only_noise_error(garbage: bytes) -> None:
    responder = IKHandshake(initiator=False, static_private=os.urandom(32), prologue=b"p")
    with pytest.raises(NoiseError):
        responder.read_message(garbage)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=700))
def test_garbage_message_2_raises_only_noise_error(garbage: bytes) -> None:
    initiator = IKHandshake(
        initiator=True,
        static_private=os.urandom(32),
        prologue=b"p",
        remote_static=X25519PrivateKey.generate().public_key().public_bytes_raw(),
    )
    initiator.write_message(b"")
    with pytest.raises(NoiseError):
        initiator.read_message(garbage)


def test_low_order_ephemeral_is_rejected() -> None:
    # An all-zero point makes X25519 output all zeros; Noise §4.1/§12.1 lets us refuse.
    responder = IKHandshake(initiator=False, static_private=os.urandom(32), prologue=b"p")
    with pytest.raises(NoiseError):
        responder.read_message(b"\x00" * 32 + os.urandom(64))
