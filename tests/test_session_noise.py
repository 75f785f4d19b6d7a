"""The Noise wrapper against the cacophony vectors, REKEY, and hostile handshake input.

The vectors themselves (embedded so CI needs no outside file, checked against the
cacophony file when present) live in ``test_session_vectors.py``; here our own
``IKHandshake`` wrapper must reproduce the ones for our protocol.
"""

from __future__ import annotations

import os
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305
from hypothesis import given, settings
from hypothesis import strategies as st
from test_session_vectors import all_vectors

from btchat.session.noise_ik import PROTOCOL_NAME, IKHandshake, NoiseError, Transport

# The library warns (rightly) when an ephemeral key is fixed; the vectors need that.
pytestmark = pytest.mark.filterwarnings("ignore:One of ephemeral keypairs is already set")


def _ik_vectors() -> list[dict[str, Any]]:
    """Every cacophony vector for our exact protocol (embedded, plus the file's if any)."""
    return [v for v in all_vectors() if v["protocol_name"] == PROTOCOL_NAME.decode()]


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
