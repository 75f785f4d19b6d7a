"""Where two contacts meet in the DHT without telling anyone else who is meeting whom.

If peers announced under their own public key, every DHT node that sees the announce
would learn who is online and whom they look up. Instead each pair of contacts derives a
secret only the two of them can compute (static-static X25519 of their identity keys,
converted from Ed25519 by libsodium), and from it a fresh infohash each hour, separately
for each direction. To outsiders the infohashes are random, unlinkable across hours and
across pairs.

Clocks disagree, so near an hour boundary the announcer also announces the next hour
and the seeker also looks up the adjacent one; any skew up to 10 minutes still meets.
"""

from __future__ import annotations

from nacl.bindings import (
    crypto_scalarmult,
    crypto_sign_ed25519_pk_to_curve25519,
)
from nacl.encoding import RawEncoder
from nacl.exceptions import CryptoError
from nacl.exceptions import RuntimeError as NaclRuntimeError
from nacl.hash import blake2b

from btchat.errors import PeerError
from btchat.identity.keys import Identity

__all__ = [
    "EPOCH_SECONDS",
    "INFOHASH_CONTEXT",
    "OVERLAP_SECONDS",
    "PAIRWISE_PERSON",
    "InvalidPeerKey",
    "announce_epochs",
    "announce_targets",
    "epoch_of",
    "lookup_epochs",
    "lookup_targets",
    "pairwise_secret",
    "rendezvous_infohash",
]

EPOCH_SECONDS = 3600
#: How close to an epoch boundary both sides also use the neighbouring epoch.
OVERLAP_SECONDS = 600
#: BLAKE2b personalisation (at most 16 bytes) of the pairwise secret hash.
PAIRWISE_PERSON = b"btchat-pair-v1"
INFOHASH_CONTEXT = b"btchat rendezvous v1"
_MAX_EPOCH = (1 << 64) - 1


class InvalidPeerKey(PeerError):
    """A public key that is not a usable curve point (invalid, or of small order).

    Such a key would give a predictable "shared" secret, so it is refused outright.
    """


def _check_key(name: str, key: bytes) -> None:
    if not isinstance(key, bytes) or len(key) != 32:
        raise ValueError(f"{name} is a 32-byte public key")


def pairwise_secret(my_identity: Identity, their_public_key: bytes) -> bytes:
    """The 32-byte secret shared by exactly this pair of identities; same on both sides."""
    _check_key("their_public_key", their_public_key)
    me = my_identity.public_key
    try:
        their_x = crypto_sign_ed25519_pk_to_curve25519(their_public_key)
    except (NaclRuntimeError, CryptoError, ValueError):
        raise InvalidPeerKey("the contact's key is not a valid Ed25519 public key") from None
    my_x = my_identity.x25519_private()
    try:
        shared = crypto_scalarmult(my_x, their_x)
    except (NaclRuntimeError, CryptoError):
        # libsodium refuses an all-zero result, i.e. a small-order point.
        raise InvalidPeerKey("the contact's key is a small-order point") from None
    first, second = sorted((me, their_public_key))
    return blake2b(
        shared + first + second, digest_size=32, person=PAIRWISE_PERSON, encoder=RawEncoder
    )


def epoch_of(t: float) -> int:
    """The rendezvous epoch (hour number since the Unix epoch) containing time ``t``."""
    if t < 0:
        raise ValueError("time before the Unix epoch")
    return int(t // EPOCH_SECONDS)


def rendezvous_infohash(secret: bytes, announcer: bytes, seeker: bytes, epoch: int) -> bytes:
    """The 20-byte DHT infohash where ``announcer`` waits for ``seeker`` in ``epoch``.

    Directional: swapping announcer and seeker gives an unrelated infohash, so the two
    directions cannot be linked to each other either.
    """
    if not isinstance(secret, bytes) or len(secret) != 32:
        raise ValueError("the pairwise secret is 32 bytes")
    _check_key("announcer", announcer)
    _check_key("seeker", seeker)
    if not 0 <= epoch <= _MAX_EPOCH:
        raise ValueError("epoch out of range")
    data = INFOHASH_CONTEXT + announcer + seeker + epoch.to_bytes(8, "big")
    return blake2b(data, digest_size=20, key=secret, encoder=RawEncoder)


def announce_epochs(now: float) -> list[int]:
    """The epochs to announce in: this one, and the next one in its last
    ``OVERLAP_SECONDS`` (so a seeker whose clock is ahead already finds us)."""
    epoch = epoch_of(now)
    if now - epoch * EPOCH_SECONDS >= EPOCH_SECONDS - OVERLAP_SECONDS:
        return [epoch, epoch + 1]
    return [epoch]


def lookup_epochs(now: float) -> list[int]:
    """The epochs to look in: this one, the previous one early in it and the next one
    late in it, so two clocks up to ``OVERLAP_SECONDS`` apart still meet."""
    epoch = epoch_of(now)
    into = now - epoch * EPOCH_SECONDS
    epochs = [epoch]
    if into < OVERLAP_SECONDS and epoch > 0:
        epochs.append(epoch - 1)
    if into >= EPOCH_SECONDS - OVERLAP_SECONDS:
        epochs.append(epoch + 1)
    return epochs


def announce_targets(secret: bytes, me: bytes, them: bytes, now: float) -> list[bytes]:
    """Infohashes to announce on so ``them`` can find ``me`` (:func:`announce_epochs`)."""
    return [rendezvous_infohash(secret, me, them, e) for e in announce_epochs(now)]


def lookup_targets(secret: bytes, me: bytes, them: bytes, now: float) -> list[bytes]:
    """Infohashes to look up to find ``them``: what they announce for ``me``
    (:func:`lookup_epochs`)."""
    return [rendezvous_infohash(secret, them, me, e) for e in lookup_epochs(now)]
