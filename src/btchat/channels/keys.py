"""The channel key schedule: every key a channel uses, derived or distributed.

A channel is named by a 32-byte random *secret* carried in its ``.chat`` file. All
derived values come from one HKDF-SHA256 (RFC 5869) pseudorandom key::

    binding = 0x00                      (open channel)
            | 0x01 || owner public key  (invite-only channel)
    root    = HKDF-Extract(salt = "btchat channel v1", IKM = secret || binding)
    value   = HKDF-Expand(root, info = label [|| parameter], length)

Binding the owner key means a ``.chat`` file whose owner was swapped (and re-signed by
the swapper) names a *different* channel: other ids, infohashes and keys, so it cannot
hijack the real one. Labels are distinct ASCII strings ending in NUL, so no two
derivations can collide.

Traffic keys come in *generations*. In an open channel anyone holding the file is a
member, so generation secrets are derived from the root. In an invite-only channel they
are fresh random keys that the owner (or an admin) seals to each current member
(:func:`seal_generation_key`): a member removed from the list keeps the ``.chat`` file,
hence the root, but can never compute a later generation's key. Even generation 0 of an
invite-only channel is random, so the file alone never decrypts channel traffic.

Sans-I/O and clock-free: callers pass ``now`` or an epoch.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Collection
from dataclasses import dataclass

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.constant_time import bytes_eq
from cryptography.hazmat.primitives.hmac import HMAC
from cryptography.hazmat.primitives.kdf.hkdf import HKDFExpand
from nacl.bindings import crypto_sign_ed25519_pk_to_curve25519
from nacl.exceptions import CryptoError
from nacl.exceptions import RuntimeError as NaclRuntimeError
from nacl.public import PrivateKey, PublicKey, SealedBox

from btchat.codec.bencode import DecodeError, decode, encode
from btchat.errors import PeerError
from btchat.identity.keys import Identity, verify_signature
from btchat.identity.rendezvous import announce_epochs, lookup_epochs

__all__ = [
    "GENERATION_KEY_CONTEXT",
    "LABEL_CHANNEL_ID",
    "LABEL_FILE_MAC",
    "LABEL_GENERATION_PROOF",
    "LABEL_INFOHASH",
    "LABEL_OPEN_GENERATION",
    "LABEL_PROOF",
    "LABEL_TRAFFIC",
    "MAX_GENERATION",
    "PROOF_CONTEXT",
    "PROOF_SIZE",
    "ROOT_SALT",
    "ChannelKeyError",
    "ChannelKeys",
    "GenerationKey",
    "hmac_sha256",
    "membership_proof",
    "new_generation_key",
    "open_generation_key",
    "seal_generation_key",
    "verify_membership_proof",
]

#: HKDF-Extract salt of the channel root.
ROOT_SALT = b"btchat channel v1"
#: HKDF-Expand labels (the ``info`` strings). Parameters follow the label big-endian.
LABEL_CHANNEL_ID = b"btchat channel id v1\x00"
LABEL_INFOHASH = b"btchat channel infohash v1\x00"  # || epoch (8 bytes)
LABEL_FILE_MAC = b"btchat channel file mac v1\x00"
LABEL_PROOF = b"btchat channel proof v1\x00"
LABEL_OPEN_GENERATION = b"btchat channel open generation v1\x00"  # || generation (4 bytes)
#: Labels applied to a *generation secret* (salt = channel id) rather than to the root.
LABEL_TRAFFIC = b"btchat channel traffic v1\x00"  # || generation (4 bytes)
LABEL_GENERATION_PROOF = b"btchat channel generation proof v1\x00"  # || generation (4 bytes)
#: Prefix of the HMAC input of a membership proof: an HMAC under a proof key can never
#: be confused with any other use of that key.
PROOF_CONTEXT = b"btchat channel membership proof v1\x00"
#: Prefix of the signed bytes of a generation-key grant.
GENERATION_KEY_CONTEXT = b"btchat channel generation key v1\x00"

SECRET_SIZE = 32
KEY_SIZE = 32
CHANNEL_ID_SIZE = 32
INFOHASH_SIZE = 20
PROOF_SIZE = 32
MIN_TRANSCRIPT, MAX_TRANSCRIPT = 32, 64
MAX_GENERATION = 2**32 - 1
_MAX_EPOCH = 2**64 - 1
#: A sealed grant is about 330 bytes; anything much larger is not one.
_MAX_SEALED_GRANT = 1024
_GRANT_KEYS = frozenset({b"v", b"chan", b"gen", b"key", b"to", b"by", b"mlv", b"sig"})
_MAX_INT = 2**53 - 1


class ChannelKeyError(PeerError):
    """A sealed generation key cannot be opened or is not acceptable."""


def hmac_sha256(key: bytes, message: bytes) -> bytes:
    h = HMAC(key, hashes.SHA256())
    h.update(message)
    return h.finalize()


def _expand(prk: bytes, info: bytes, length: int) -> bytes:
    return HKDFExpand(hashes.SHA256(), length, info).derive(prk)


def _check_generation(generation: int) -> None:
    if type(generation) is not int or not 0 <= generation <= MAX_GENERATION:
        raise ValueError(f"a generation is an integer from 0 to {MAX_GENERATION}")


def _check_key32(name: str, value: bytes) -> None:
    if not isinstance(value, bytes) or len(value) != 32:
        raise ValueError(f"{name} is 32 bytes")


@dataclass(frozen=True, repr=False)
class ChannelKeys:
    """Everything derived from one channel's secret (and owner, if invite-only).

    ``repr`` is hidden so the root never ends up in a log line.
    """

    root: bytes
    invite_only: bool

    @classmethod
    def derive(cls, secret: bytes, owner: bytes | None = None) -> ChannelKeys:
        """``owner`` is the owner identity key of an invite-only channel, None if open."""
        _check_key32("the channel secret", secret)
        if owner is None:
            binding = b"\x00"
        else:
            _check_key32("the owner key", owner)
            binding = b"\x01" + owner
        return cls(hmac_sha256(ROOT_SALT, secret + binding), owner is not None)

    def __repr__(self) -> str:
        kind = "invite-only" if self.invite_only else "open"
        return f"ChannelKeys({kind}, id={self.channel_id.hex()[:16]}...)"

    @functools.cached_property
    def channel_id(self) -> bytes:
        """Stable 32-byte id: local storage key and the binding of member lists and
        generation keys. Private: it is never announced, since it does not rotate."""
        return _expand(self.root, LABEL_CHANNEL_ID, CHANNEL_ID_SIZE)

    @property
    def file_mac_key(self) -> bytes:
        """Key of the ``.chat`` file's MAC."""
        return _expand(self.root, LABEL_FILE_MAC, KEY_SIZE)

    @property
    def proof_key(self) -> bytes:
        """Proves knowledge of the channel file (see :func:`membership_proof`)."""
        return _expand(self.root, LABEL_PROOF, KEY_SIZE)

    def infohash(self, epoch: int) -> bytes:
        """The 20-byte infohash members announce on and look up during ``epoch``:
        random-looking to outsiders and unlinkable across hours."""
        if type(epoch) is not int or not 0 <= epoch <= _MAX_EPOCH:
            raise ValueError("epoch out of range")
        return _expand(self.root, LABEL_INFOHASH + epoch.to_bytes(8, "big"), INFOHASH_SIZE)

    def announce_targets(self, now: float) -> list[bytes]:
        """Infohashes to announce on: this epoch's, plus the next one during the last
        ``OVERLAP_SECONDS`` of the epoch (as ``rendezvous.announce_targets``)."""
        return [self.infohash(e) for e in announce_epochs(now)]

    def lookup_targets(self, now: float) -> list[bytes]:
        """Infohashes to look up: this epoch's, the previous one early in an epoch and the
        next one late in it, so members whose clocks differ by up to
        ``OVERLAP_SECONDS`` still meet."""
        return [self.infohash(e) for e in lookup_epochs(now)]

    def _generation_secret(self, generation: int, generation_secret: bytes | None) -> bytes:
        _check_generation(generation)
        if self.invite_only:
            if generation_secret is None:
                raise ValueError(
                    "an invite-only channel's generation keys come sealed from its owner; "
                    "they cannot be derived from the channel secret"
                )
            _check_key32("a generation secret", generation_secret)
            return generation_secret
        if generation_secret is not None:
            raise ValueError("an open channel derives its generation secrets; pass none")
        return _expand(self.root, LABEL_OPEN_GENERATION + generation.to_bytes(4, "big"), KEY_SIZE)

    def _from_generation(self, label: bytes, generation: int, secret: bytes | None) -> bytes:
        ikm = self._generation_secret(generation, secret)
        prk = hmac_sha256(self.channel_id, ikm)  # HKDF-Extract, salt = channel id
        return _expand(prk, label + generation.to_bytes(4, "big"), KEY_SIZE)

    def traffic_key(self, generation: int, generation_secret: bytes | None = None) -> bytes:
        """The 32-byte key of channel traffic in ``generation``.

        Open channel: derived (pass no ``generation_secret``). Invite-only: pass the
        generation secret from :func:`open_generation_key`; without it this raises
        ``ValueError`` rather than derive something a removed member could compute.
        """
        return self._from_generation(LABEL_TRAFFIC, generation, generation_secret)

    def generation_proof_key(
        self, generation: int, generation_secret: bytes | None = None
    ) -> bytes:
        """A proof key only holders of ``generation`` have: lets an invite-only member
        prove it is *still* a member, which :attr:`proof_key` (file-level) cannot."""
        return self._from_generation(LABEL_GENERATION_PROOF, generation, generation_secret)


# ----------------------------------------------------------------------- membership proof


def _proof_input(transcript_hash: bytes, prover: bytes) -> bytes:
    if not isinstance(transcript_hash, bytes) or not (
        MIN_TRANSCRIPT <= len(transcript_hash) <= MAX_TRANSCRIPT
    ):
        raise ValueError(
            f"the transcript hash is {MIN_TRANSCRIPT} to {MAX_TRANSCRIPT} bytes "
            "(e.g. the Noise handshake hash)"
        )
    _check_key32("the prover's identity key", prover)
    return PROOF_CONTEXT + prover + transcript_hash


def membership_proof(key: bytes, transcript_hash: bytes, prover: bytes) -> bytes:
    """HMAC-SHA256 proving knowledge of ``key`` (``ChannelKeys.proof_key`` or a
    generation proof key) on one session.

    ``transcript_hash`` (32 to 64 bytes, e.g. the Noise handshake hash) ties the proof
    to this session, so it cannot be replayed on another; ``prover`` (the proving side's
    identity key) stops a peer from reflecting our own proof back at us.
    """
    _check_key32("a proof key", key)
    return hmac_sha256(key, _proof_input(transcript_hash, prover))


def verify_membership_proof(
    key: bytes, transcript_hash: bytes, prover: bytes, proof: bytes
) -> bool:
    """Constant-time check of :func:`membership_proof`; False on any bad proof."""
    _check_key32("a proof key", key)
    message = _proof_input(transcript_hash, prover)
    if not isinstance(proof, bytes) or len(proof) != PROOF_SIZE:
        return False
    h = HMAC(key, hashes.SHA256())
    h.update(message)
    try:
        h.verify(proof)
    except InvalidSignature:
        return False
    return True


# ------------------------------------------------------------------------ generation keys


def new_generation_key() -> bytes:
    """A fresh random generation secret (the owner makes one per generation)."""
    return os.urandom(KEY_SIZE)


@dataclass(frozen=True, repr=False)
class GenerationKey:
    """An opened, signature-checked grant of one generation secret to one member."""

    channel_id: bytes
    generation: int
    key: bytes
    recipient: bytes
    issuer: bytes
    member_list_version: int

    def __repr__(self) -> str:
        return f"GenerationKey(generation={self.generation}, issuer={self.issuer.hex()[:16]})"


def _x25519_public(ed25519_public: bytes) -> bytes:
    try:
        return crypto_sign_ed25519_pk_to_curve25519(ed25519_public)
    except (NaclRuntimeError, CryptoError, ValueError):
        raise ValueError("not a valid Ed25519 public key") from None


def seal_generation_key(
    issuer: Identity,
    recipient: bytes,
    *,
    channel_id: bytes,
    generation: int,
    key: bytes,
    member_list_version: int,
) -> bytes:
    """Grant ``key`` (generation ``generation``) to ``recipient``: signed, then sealed.

    The grant is signed by ``issuer`` (a sealed box alone is anonymous: anyone, a
    removed member included, could seal a key of their choosing to a member) and sealed
    (libsodium sealed box) to the recipient's X25519 key converted from its Ed25519
    identity key, so only that member can read it.
    """
    _check_key32("the channel id", channel_id)
    _check_key32("the generation key", key)
    _check_generation(generation)
    if type(member_list_version) is not int or not 0 <= member_list_version <= _MAX_INT:
        raise ValueError("the member list version is a non-negative integer")
    _check_key32("the recipient key", recipient)
    box = SealedBox(PublicKey(_x25519_public(recipient)))
    fields: dict[bytes, object] = {
        b"v": 1,
        b"chan": channel_id,
        b"gen": generation,
        b"key": key,
        b"to": recipient,
        b"by": issuer.public_key,
        b"mlv": member_list_version,
    }
    fields[b"sig"] = issuer.sign(GENERATION_KEY_CONTEXT + encode(fields))
    return box.encrypt(encode(fields))


def open_generation_key(
    identity: Identity, sealed: bytes, *, channel_id: bytes, issuers: Collection[bytes]
) -> GenerationKey:
    """Open a grant sealed to ``identity``; ChannelKeyError unless it is for this
    channel and this member and signed by one of ``issuers`` (the current member
    list's owner and admins: ``MemberList.key_issuers``)."""
    if not isinstance(sealed, bytes) or len(sealed) > _MAX_SEALED_GRANT:
        raise ChannelKeyError("not a generation key grant")
    me = identity.public_key
    secret = identity.x25519_private()
    try:
        fields = decode(SealedBox(PrivateKey(secret)).decrypt(sealed), max_depth=2)
    except (CryptoError, DecodeError, ValueError, TypeError):
        raise ChannelKeyError("not sealed to us, or corrupt") from None
    if not isinstance(fields, dict) or set(fields) != _GRANT_KEYS:
        raise ChannelKeyError("malformed generation key grant")
    if fields[b"v"] != 1:
        raise ChannelKeyError("unsupported generation key grant version")
    chan, gen, key, to, by, mlv, sig = (
        fields[k] for k in (b"chan", b"gen", b"key", b"to", b"by", b"mlv", b"sig")
    )
    if not (
        all(type(x) is bytes and len(x) == 32 for x in (chan, key, to, by))
        and type(sig) is bytes
        and len(sig) == 64
        and type(gen) is int
        and 0 <= gen <= MAX_GENERATION
        and type(mlv) is int
        and 0 <= mlv <= _MAX_INT
    ):
        raise ChannelKeyError("malformed generation key grant")
    del fields[b"sig"]
    if not verify_signature(by, sig, GENERATION_KEY_CONTEXT + encode(fields)):
        raise ChannelKeyError("generation key grant signature does not verify")
    if not bytes_eq(chan, channel_id):
        raise ChannelKeyError("generation key grant is for another channel")
    if to != me:
        raise ChannelKeyError("generation key grant is addressed to someone else")
    if by not in issuers:
        raise ChannelKeyError("generation key grant is not from the owner or an admin")
    return GenerationKey(chan, gen, key, to, by, mlv)
