"""Pairwise rendezvous secrets and the hourly infohashes derived from them."""

from __future__ import annotations

import pytest

from btchat.identity.keys import Identity
from btchat.identity.rendezvous import (
    EPOCH_SECONDS,
    InvalidPeerKey,
    announce_targets,
    epoch_of,
    lookup_targets,
    pairwise_secret,
    rendezvous_infohash,
)

ALICE = Identity.from_seed(b"\xa1" * 32)
BOB = Identity.from_seed(b"\xb0" * 32)
CAROL = Identity.from_seed(b"\xc4" * 32)
A, B, C = ALICE.public_key, BOB.public_key, CAROL.public_key
BOUNDARY = 480_000 * EPOCH_SECONDS  # an epoch boundary in 2024


def test_secret_is_symmetric_and_pairwise() -> None:
    ab = pairwise_secret(ALICE, B)
    assert ab == pairwise_secret(BOB, A)
    assert len(ab) == 32
    assert pairwise_secret(ALICE, C) != ab
    assert pairwise_secret(BOB, C) != ab
    assert pairwise_secret(CAROL, A) == pairwise_secret(ALICE, C)


@pytest.mark.parametrize(
    "bad",
    [
        bytes([1]) + bytes(31),  # identity element (small order)
        bytes(32),  # small order
        bytes([0xEC]) + b"\xff" * 30 + b"\x7f",  # -1: small order / non-canonical
        b"\xff" * 32,  # not canonical
    ],
)
def test_invalid_peer_keys(bad: bytes) -> None:
    with pytest.raises(InvalidPeerKey):
        pairwise_secret(ALICE, bad)


def test_wrong_length() -> None:
    with pytest.raises(ValueError, match="32-byte"):
        pairwise_secret(ALICE, b"\x01" * 31)


def test_epoch_of() -> None:
    assert epoch_of(BOUNDARY) == 480_000
    assert epoch_of(BOUNDARY - 0.5) == 479_999
    with pytest.raises(ValueError):
        epoch_of(-1)


def test_infohash_directional_and_unrelated() -> None:
    s = pairwise_secret(ALICE, B)
    ab = rendezvous_infohash(s, A, B, 7)
    assert len(ab) == 20
    assert rendezvous_infohash(s, B, A, 7) != ab
    assert rendezvous_infohash(s, A, B, 8) != ab
    assert rendezvous_infohash(pairwise_secret(ALICE, C), A, C, 7) != ab
    assert rendezvous_infohash(s, A, B, 7) == ab


def test_targets_at_mid_epoch() -> None:
    s = pairwise_secret(ALICE, B)
    now = BOUNDARY + EPOCH_SECONDS / 2
    assert announce_targets(s, A, B, now) == [rendezvous_infohash(s, A, B, 480_000)]
    assert lookup_targets(s, B, A, now) == [rendezvous_infohash(s, A, B, 480_000)]


@pytest.mark.parametrize("base_offset", [-900, -600, -300, -61, 0, 1, 299, 300, 599, 600, 900])
@pytest.mark.parametrize("skew_min", range(-5, 6))
def test_skewed_clocks_meet(base_offset: int, skew_min: int) -> None:
    s = pairwise_secret(ALICE, B)
    announcer_now = BOUNDARY + base_offset
    seeker_now = announcer_now + skew_min * 60
    announced = set(announce_targets(s, A, B, announcer_now))
    sought = set(lookup_targets(pairwise_secret(BOB, A), B, A, seeker_now))
    assert announced & sought


def test_directions_differ() -> None:
    s = pairwise_secret(ALICE, B)
    for now in (BOUNDARY - 60, BOUNDARY, BOUNDARY + 60):
        a_announces = set(announce_targets(s, A, B, now))
        b_announces = set(announce_targets(s, B, A, now))
        assert not a_announces & b_announces
        # Alice looking for Bob never looks where she herself announces.
        assert not set(lookup_targets(s, A, B, now)) & a_announces


def test_other_pairs_unrelated() -> None:
    now = BOUNDARY - 30
    ab = set(announce_targets(pairwise_secret(ALICE, B), A, B, now))
    ac = set(announce_targets(pairwise_secret(ALICE, C), A, C, now))
    assert not ab & ac


def test_targets_per_phase() -> None:
    s = pairwise_secret(ALICE, B)
    assert len(announce_targets(s, A, B, BOUNDARY + 5)) == 1
    assert len(announce_targets(s, A, B, BOUNDARY - 5)) == 2
    assert len(lookup_targets(s, B, A, BOUNDARY + 5)) == 2
    assert len(lookup_targets(s, B, A, BOUNDARY - 5)) == 2
    assert len(lookup_targets(s, B, A, BOUNDARY + 1800)) == 1


def _ed25519_pk_to_x25519(pk: bytes) -> bytes:
    """Edwards y to Montgomery u = (1 + y) / (1 - y) mod p, written out independently."""
    p = 2**255 - 19
    y = int.from_bytes(pk, "little") & ((1 << 255) - 1)
    return ((1 + y) * pow(1 - y, p - 2, p) % p).to_bytes(32, "little")


def test_secret_matches_independent_computation() -> None:
    """Cross-check libsodium's conversions against `cryptography` X25519 and hashlib."""
    import hashlib

    from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey

    scalar = hashlib.sha512(ALICE.seed).digest()[:32]  # X25519 clamps it itself
    shared = X25519PrivateKey.from_private_bytes(scalar).exchange(
        X25519PublicKey.from_public_bytes(_ed25519_pk_to_x25519(B))
    )
    lo, hi = sorted((A, B))
    expected = hashlib.blake2b(shared + lo + hi, digest_size=32, person=b"btchat-pair-v1").digest()
    assert pairwise_secret(ALICE, B) == expected
    s = expected
    assert (
        rendezvous_infohash(s, A, B, 5)
        == hashlib.blake2b(
            b"btchat rendezvous v1" + A + B + (5).to_bytes(8, "big"), digest_size=20, key=s
        ).digest()
    )


def test_known_answer() -> None:
    """Pinned: changing the derivation would split the network between versions."""
    a, b = Identity.from_seed(bytes(32)), Identity.from_seed(b"\x01" * 32)
    s = pairwise_secret(a, b.public_key)
    assert s.hex() == "9e7da2644cd20add5984c04d51647ae07efbdf1d6d678386373f8158fffe9ed2"
    infohash = rendezvous_infohash(s, a.public_key, b.public_key, 480_000)
    assert infohash.hex() == "73425034433e4e123c765d3a1171348fb7afa034"
