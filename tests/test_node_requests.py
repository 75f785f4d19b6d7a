"""Contact requests: sealed, signed, proof-of-work stamped, addressed to one recipient."""

from __future__ import annotations

import time

import pytest

from btchat.codec.bencode import decode, encode
from btchat.identity.keys import DeviceKey, Identity
from btchat.node import requests as creq

BITS = 8  # cheap proof-of-work for tests; the daemon defaults to REQUEST_POW_BITS


def make() -> tuple[Identity, Identity, bytes, float]:
    alice, bob = Identity.generate(), Identity.generate()
    cert = alice.certify(DeviceKey.generate(), 1)
    now = time.time()
    sealed = creq.seal_request(
        alice, cert, bob.public_key, name="Alice", note="hi", now=now, pow_bits=BITS
    )
    return alice, bob, sealed, now


def test_roundtrip() -> None:
    alice, bob, sealed, now = make()
    req = creq.open_request(bob, sealed, now=now, pow_bits=BITS)
    assert (req.sender, req.name, req.note) == (alice.public_key, "Alice", "hi")
    assert req.certificate.identity == alice.public_key
    assert len(sealed) < 900  # fits a BEP 44 value with room to spare


def test_only_the_recipient_can_open_it() -> None:
    _, _, sealed, now = make()
    with pytest.raises(creq.RequestError, match="not sealed to us"):
        creq.open_request(Identity.generate(), sealed, now=now, pow_bits=BITS)


def test_tampered_or_truncated_is_refused() -> None:
    _, bob, sealed, now = make()
    for bad in (sealed[:-1], sealed[:40] + bytes([sealed[40] ^ 1]) + sealed[41:], b"", b"x" * 80):
        with pytest.raises(creq.RequestError):
            creq.open_request(bob, bad, now=now, pow_bits=BITS)


def test_more_work_demanded_than_done_is_refused() -> None:
    _, bob, sealed, now = make()
    with pytest.raises(creq.RequestError, match="proof-of-work"):
        creq.open_request(bob, sealed, now=now, pow_bits=BITS + 12)


def test_stale_request_is_refused() -> None:
    _, bob, sealed, now = make()
    with pytest.raises(creq.RequestError, match="too old"):
        creq.open_request(bob, sealed, now=now + 3 * creq.DAY_SECONDS, pow_bits=BITS)


def test_forged_sender_is_refused() -> None:
    """Mallory re-seals Alice's request claiming to be Carol: the signature fails."""
    from nacl.bindings import (
        crypto_sign_ed25519_pk_to_curve25519,
        crypto_sign_ed25519_sk_to_curve25519,
    )
    from nacl.public import PrivateKey, PublicKey, SealedBox

    _, bob, sealed, now = make()
    secret = crypto_sign_ed25519_sk_to_curve25519(bob.seed + bob.public_key)
    fields = decode(SealedBox(PrivateKey(secret)).decrypt(sealed))
    fields[b"from"] = Identity.generate().public_key
    box = SealedBox(PublicKey(crypto_sign_ed25519_pk_to_curve25519(bob.public_key)))
    with pytest.raises(creq.RequestError, match="signature"):
        creq.open_request(bob, box.encrypt(encode(fields)), now=now, pow_bits=BITS)


def test_slots_are_derivable_and_distinct() -> None:
    pk = Identity.generate().public_key
    inbox = bytes(creq.INBOX_SIZE)

    def public(day: int, i: int, box: bytes = inbox) -> bytes:
        return creq.slot_key(pk, day, i, box).public_key().public_bytes_raw()

    keys = {public(20000, i) for i in range(8)}
    assert len(keys) == 8
    assert public(20000, 3) in keys
    assert public(20001, 3) not in keys
    assert public(20000, 3, b"\x01" * creq.INBOX_SIZE) not in keys  # a moved inbox
    with pytest.raises(ValueError):
        creq.slot_key(pk, 20000, 0, b"short")
