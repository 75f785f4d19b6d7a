"""BEP 44 items against the BEP's own test vectors, plus signing and validation rules."""

from __future__ import annotations

import dataclasses

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from btchat.dht import bep44
from btchat.dht.bep44 import ItemError, MutableItem

VALUE = b"12:Hello World!"
PUBLIC_KEY = bytes.fromhex("77ff84905a91936367c01360803104f92432fcd904a43511876df5cdf3e7e548")
# The BEP's "private key" is the 64-byte expanded ref10 secret (SHA-512 of the seed, then
# clamped), not the 32-byte seed ``cryptography`` loads, so we cannot re-sign with it.
# Verifying the published signature with the published public key is the check instead.
SIG_TEST1 = bytes.fromhex(
    "305ac8aeb6c9c151fa120f120ea2cfb923564e11552d06a5d856091e5e853cff"
    "1260d3f39e4999684aa92eb73ffd136e6f4f3ecbfda0ce53a1608ecd7ae21f01"
)
SIG_TEST2 = bytes.fromhex(
    "6834284b6b24c3204eb2fea824d82f88883a3d95e8b4a21b8c0ded553d17d17d"
    "df9a8a7104b1258f30bed3787e6cb896fca78c58f8e03b5f18f14951a87d9a08"
)


def test_vector_1_mutable() -> None:
    assert bep44.signing_buffer(1, VALUE) == b"3:seqi1e1:v12:Hello World!"
    item = MutableItem(PUBLIC_KEY, b"", 1, VALUE, SIG_TEST1)
    assert item.target.hex() == "4a533d47ec9c7d95b1ad75f576cffc641853b750"
    assert bep44.mutable_target(PUBLIC_KEY) == item.target
    assert item.verify()
    bep44.check_mutable(item)


def test_vector_2_mutable_with_salt() -> None:
    assert bep44.signing_buffer(1, VALUE, b"foobar") == b"4:salt6:foobar3:seqi1e1:v12:Hello World!"
    item = MutableItem(PUBLIC_KEY, b"foobar", 1, VALUE, SIG_TEST2)
    assert item.target.hex() == "411eba73b6f087ca51a3795d9c8c938d365e32c1"
    assert bep44.mutable_target(PUBLIC_KEY, b"foobar") == item.target
    assert item.verify()
    bep44.check_mutable(item)


def test_vector_3_immutable() -> None:
    assert bep44.immutable_target(VALUE).hex() == "e5f96f6f38320f0f33959cb4d3d656452117aadb"


def test_signature_of_one_vector_does_not_verify_the_other() -> None:
    # The salt is part of what is signed: test 1's signature must not cover test 2.
    assert not MutableItem(PUBLIC_KEY, b"foobar", 1, VALUE, SIG_TEST1).verify()
    assert not MutableItem(PUBLIC_KEY, b"", 1, VALUE, SIG_TEST2).verify()


def test_empty_salt_is_no_salt() -> None:
    assert bep44.signing_buffer(4, b"12:Hello world!", b"") == b"3:seqi4e1:v12:Hello world!"
    assert bep44.mutable_target(PUBLIC_KEY, b"") == bep44.mutable_target(PUBLIC_KEY)


@pytest.fixture
def key() -> Ed25519PrivateKey:
    return Ed25519PrivateKey.from_private_bytes(bytes(range(32)))


def test_sign_verify_roundtrip(key: Ed25519PrivateKey) -> None:
    item = bep44.sign_mutable(key, b"d1:ai1ee", 7, b"salt")
    assert item.public_key == key.public_key().public_bytes_raw()
    assert len(item.signature) == 64
    assert item.target == bep44.mutable_target(item.public_key, b"salt")
    assert item.verify()
    bep44.check_mutable(item)


@pytest.mark.parametrize(
    "change",
    [
        {"v_bencoded": b"d1:ai2ee"},
        {"seq": 8},
        {"salt": b"other"},
        {"salt": b""},
        {"public_key": Ed25519PrivateKey.generate().public_key().public_bytes_raw()},
        {"signature": bytes(64)},
    ],
)
def test_tampered_item_fails(key: Ed25519PrivateKey, change: dict[str, object]) -> None:
    item = dataclasses.replace(bep44.sign_mutable(key, b"d1:ai1ee", 7, b"salt"), **change)
    assert not item.verify()
    with pytest.raises(ItemError) as exc:
        bep44.check_mutable(item)
    assert exc.value.code == bep44.ERR_INVALID_SIGNATURE == 206


def test_value_size_limit(key: Ed25519PrivateKey) -> None:
    at_limit = b"996:" + b"x" * 996
    assert len(at_limit) == bep44.MAX_VALUE_SIZE
    bep44.check_mutable(bep44.sign_mutable(key, at_limit, 1))
    bep44.check_immutable(at_limit)
    too_big = b"997:" + b"x" * 997
    with pytest.raises(ItemError) as exc:
        bep44.sign_mutable(key, too_big, 1)
    assert exc.value.code == 205
    with pytest.raises(ItemError) as exc:
        bep44.check_immutable(too_big)
    assert exc.value.code == 205
    # A remote item that is too big is refused with 205 even with a valid signature.
    signature = key.sign(bep44.signing_buffer(1, too_big))
    remote = MutableItem(key.public_key().public_bytes_raw(), b"", 1, too_big, signature)
    assert remote.verify()
    with pytest.raises(ItemError) as exc:
        bep44.check_mutable(remote)
    assert exc.value.code == 205


def test_salt_size_limit(key: Ed25519PrivateKey) -> None:
    bep44.check_mutable(bep44.sign_mutable(key, b"i1e", 1, b"s" * 64))
    salt = b"s" * 65
    signature = key.sign(bep44.signing_buffer(1, b"i1e", salt))
    remote = MutableItem(key.public_key().public_bytes_raw(), salt, 1, b"i1e", signature)
    with pytest.raises(ItemError) as exc:
        bep44.check_mutable(remote)
    assert exc.value.code == 207
    assert exc.value.message == "salt (salt field) too big"


@pytest.mark.parametrize("seq", [-1, bep44.MAX_SEQ + 1])
def test_seq_out_of_range(key: Ed25519PrivateKey, seq: int) -> None:
    signature = key.sign(bep44.signing_buffer(seq, b"i1e"))
    item = MutableItem(key.public_key().public_bytes_raw(), b"", seq, b"i1e", signature)
    with pytest.raises(ItemError) as exc:
        bep44.check_mutable(item)
    assert exc.value.code == 203


def test_seq_max_int64_accepted(key: Ed25519PrivateKey) -> None:
    bep44.check_mutable(bep44.sign_mutable(key, b"i1e", bep44.MAX_SEQ))


def test_invalid_bencoding_rejected(key: Ed25519PrivateKey) -> None:
    # BEP 44: invalid bencoding (here unsorted dict keys) MUST be rejected, code 203.
    bad = b"d1:bi1e1:ai2ee"
    signature = key.sign(bep44.signing_buffer(1, bad))
    item = MutableItem(key.public_key().public_bytes_raw(), b"", 1, bad, signature)
    with pytest.raises(ItemError) as exc:
        bep44.check_mutable(item)
    assert exc.value.code == 203
    with pytest.raises(ItemError):
        bep44.check_immutable(bad)


@pytest.mark.parametrize(
    ("public_key", "signature"), [(bytes(31), bytes(64)), (PUBLIC_KEY, SIG_TEST1[:63])]
)
def test_wrong_field_sizes(public_key: bytes, signature: bytes) -> None:
    item = MutableItem(public_key, b"", 1, VALUE, signature)
    assert not item.verify()
    with pytest.raises(ItemError) as exc:
        bep44.check_mutable(item)
    assert exc.value.code == 203


def test_item_error_default_messages() -> None:
    assert ItemError(301).message.startswith("the CAS hash mismatched")
    assert ItemError(302).message == "sequence number less than current"
    assert str(ItemError(206)) == "invalid signature"
    assert ItemError(206).code == 206
    assert ItemError(205, "custom").message == "custom"
