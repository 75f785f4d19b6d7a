"""BEP 44 items: targets, the exact signing buffer, Ed25519 signatures and put validation.

Wire compatibility with libtorrent hinges on byte-exact signing buffers and targets, so
everything here works on the *bencoded* value ``v`` as it appeared on the wire, never on a
re-encoding chosen by us. Signatures use ``cryptography``'s Ed25519; no hand-rolled crypto.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)

from btchat.codec import bencode
from btchat.errors import PeerError

__all__ = [
    "ERR_CAS_MISMATCH",
    "ERR_INVALID_SIGNATURE",
    "ERR_PROTOCOL",
    "ERR_SALT_TOO_BIG",
    "ERR_SEQ_TOO_LOW",
    "ERR_VALUE_TOO_BIG",
    "MAX_SALT_SIZE",
    "MAX_SEQ",
    "MAX_VALUE_SIZE",
    "PUBLIC_KEY_SIZE",
    "SIGNATURE_SIZE",
    "ItemError",
    "MutableItem",
    "check_immutable",
    "check_mutable",
    "immutable_target",
    "mutable_target",
    "sign_mutable",
    "signing_buffer",
]

#: BEP 44: storing nodes MAY reject a ``v`` whose bencoded form is longer than 1000 bytes.
MAX_VALUE_SIZE = 1000
#: BEP 44: "The salt string MUST NOT be longer than 64 bytes."
MAX_SALT_SIZE = 64
#: BEP 44: ``seq`` SHOULD NOT exceed MAX_INT64; a client MAY reject larger or negative ones.
MAX_SEQ = 0x7FFFFFFFFFFFFFFF
#: BEP 44: ``k`` is a 32-byte Ed25519 public key.
PUBLIC_KEY_SIZE = 32
#: BEP 44: ``sig`` is a 64-byte Ed25519 signature.
SIGNATURE_SIZE = 64

#: BEP 5: "Protocol Error, such as a malformed packet, invalid arguments, or bad token".
ERR_PROTOCOL = 203
#: BEP 44 error codes.
ERR_VALUE_TOO_BIG = 205
ERR_INVALID_SIGNATURE = 206
ERR_SALT_TOO_BIG = 207
ERR_CAS_MISMATCH = 301
ERR_SEQ_TOO_LOW = 302

_MESSAGES = {
    ERR_PROTOCOL: "protocol error",
    ERR_VALUE_TOO_BIG: "message (v field) too big",
    ERR_INVALID_SIGNATURE: "invalid signature",
    ERR_SALT_TOO_BIG: "salt (salt field) too big",
    ERR_CAS_MISMATCH: "the CAS hash mismatched, re-read value and try again",
    ERR_SEQ_TOO_LOW: "sequence number less than current",
}


class ItemError(PeerError):
    """A put that must be refused; ``code`` and ``message`` go into the KRPC error reply."""

    def __init__(self, code: int, message: str | None = None) -> None:
        self.code = code
        self.message = message if message is not None else _MESSAGES.get(code, "error")
        super().__init__(code, self.message)

    def __str__(self) -> str:
        """Just the message, ready for the KRPC ``e`` list next to ``code``."""
        return self.message


def immutable_target(v_bencoded: bytes) -> bytes:
    """BEP 44: immutable items are stored under the SHA-1 of their bencoded value."""
    return hashlib.sha1(v_bencoded).digest()


def mutable_target(public_key: bytes, salt: bytes = b"") -> bytes:
    """BEP 44: a mutable item's target is SHA-1(k + salt); an empty salt is no salt."""
    return hashlib.sha1(public_key + salt).digest()


def signing_buffer(seq: int, v_bencoded: bytes, salt: bytes = b"") -> bytes:
    """The bytes Ed25519 signs, built by concatenation exactly as BEP 44 prescribes.

    Concatenating (rather than bencoding a dict) is what the BEP requires so that parser
    quirks cannot shift bytes between ``seq`` and ``v``.
    """
    # BEP 44: the salt part is prepended only if the salt is non-empty.
    prefix = b"4:salt%d:%s" % (len(salt), salt) if salt else b""
    # BEP 44: "3:seqi" seq "e1:v" followed by the already-encoded value.
    return b"%s3:seqi%de1:v%s" % (prefix, seq, v_bencoded)


@dataclass(frozen=True, slots=True)
class MutableItem:
    """A signed mutable item as carried by ``put`` and ``get`` (``k``, ``salt``, ``seq``,
    ``v``, ``sig``). Construction does not validate; call :func:`check_mutable`."""

    public_key: bytes
    salt: bytes
    seq: int
    v_bencoded: bytes
    signature: bytes

    @property
    def target(self) -> bytes:
        """The DHT key this item is stored under."""
        return mutable_target(self.public_key, self.salt)

    def verify(self) -> bool:
        """True if ``signature`` is a valid Ed25519 signature by ``public_key``."""
        if len(self.public_key) != PUBLIC_KEY_SIZE or len(self.signature) != SIGNATURE_SIZE:
            return False
        try:
            key = Ed25519PublicKey.from_public_bytes(self.public_key)
            key.verify(self.signature, signing_buffer(self.seq, self.v_bencoded, self.salt))
        except (InvalidSignature, ValueError):
            return False
        return True


def sign_mutable(
    private_key: Ed25519PrivateKey, v_bencoded: bytes, seq: int, salt: bytes = b""
) -> MutableItem:
    """Sign ``v_bencoded`` at ``seq``; raises :class:`ItemError` if peers would refuse it."""
    public_key = private_key.public_key().public_bytes_raw()
    signature = private_key.sign(signing_buffer(seq, v_bencoded, salt))
    item = MutableItem(public_key, salt, seq, v_bencoded, signature)
    _check_fields(item)
    return item


def check_immutable(v_bencoded: bytes) -> None:
    """Raise :class:`ItemError` unless ``v_bencoded`` is storable as an immutable item."""
    _check_value(v_bencoded)


def check_mutable(item: MutableItem) -> None:
    """Raise :class:`ItemError` unless a storing node may accept ``item``.

    Cheap checks run first so that oversized junk never costs a signature verification.
    """
    _check_fields(item)
    # BEP 44: "the signature MUST be verified before accepting the store command".
    if not item.verify():
        raise ItemError(ERR_INVALID_SIGNATURE)


def _check_value(v_bencoded: bytes) -> None:
    # BEP 44: storing nodes MAY reject a bencoded ``v`` longer than 1000 bytes.
    if len(v_bencoded) > MAX_VALUE_SIZE:
        raise ItemError(ERR_VALUE_TOO_BIG)
    # BEP 44: invalid bencoding in ``v`` MUST be rejected, SHOULD be with error 203.
    try:
        bencode.decode(v_bencoded)
    except bencode.DecodeError:
        raise ItemError(ERR_PROTOCOL, "invalid bencoding in v") from None


def _check_fields(item: MutableItem) -> None:
    _check_value(item.v_bencoded)
    # BEP 44: "The salt string MUST NOT be longer than 64 bytes."
    if len(item.salt) > MAX_SALT_SIZE:
        raise ItemError(ERR_SALT_TOO_BIG)
    # BEP 44: ``k`` is a 32-byte public key and ``sig`` a 64-byte signature.
    if len(item.public_key) != PUBLIC_KEY_SIZE:
        raise ItemError(ERR_PROTOCOL, "k must be 32 bytes")
    if len(item.signature) != SIGNATURE_SIZE:
        raise ItemError(ERR_PROTOCOL, "sig must be 64 bytes")
    # BEP 44: a client MAY reject negative seq or seq above MAX_INT64 (libtorrent's int64).
    if isinstance(item.seq, bool) or not isinstance(item.seq, int) or not 0 <= item.seq <= MAX_SEQ:
        raise ItemError(ERR_PROTOCOL, "seq out of range")
