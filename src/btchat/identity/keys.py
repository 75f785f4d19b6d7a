"""Identity and device keys, and the certificate that chains a device to an identity.

A person *is* their Ed25519 identity key: no usernames, no accounts. Each installation
(device) has its own X25519 key, used as the Noise static key of its sessions, and an
identity-signed :class:`DeviceCertificate` binding that key to the identity. A peer that
authenticates a session learns the device key from Noise and checks the certificate, so
a second device needs no new identity and a lost device can be replaced.

Everything here is pure: keys in, bytes out. Storage lives in ``keystore.py``.
"""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass
from typing import Any, ClassVar

import nacl.exceptions
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat
from nacl.bindings import crypto_sign_ed25519_sk_to_curve25519
from nacl.signing import VerifyKey

from btchat.codec.bencode import DecodeError, decode, encode
from btchat.errors import PeerError

__all__ = [
    "DEVICE_CERT_CONTEXT",
    "CertificateError",
    "DeviceCertificate",
    "DeviceKey",
    "Identity",
    "Signed",
    "verify_signature",
]

#: Domain separation: an identity signature over a certificate can never be replayed as
#: a signature over anything else btchat signs (envelopes, profiles), and vice versa.
DEVICE_CERT_CONTEXT = b"btchat device certificate v1\x00"
#: Longest encoded certificate we accept from a peer.
MAX_CERT_SIZE = 512


class CertificateError(PeerError):
    """A device certificate is malformed or its signature does not verify."""


@functools.lru_cache(maxsize=1024)
def _verify_key(public_key: bytes) -> VerifyKey | None:
    """A parsed key, kept: contacts sign every message, and parsing costs a quarter of
    a verification."""
    try:
        return VerifyKey(public_key)
    except (ValueError, TypeError, nacl.exceptions.CryptoError):
        return None


def verify_signature(public_key: bytes, signature: bytes, message: bytes) -> bool:
    """Ed25519 verification (libsodium: also refuses small-order keys and non-canonical
    signatures) that returns False, never raises, on any bad input."""
    if len(public_key) != 32 or len(signature) != 64:
        return False
    key = _verify_key(bytes(public_key))
    if key is None:
        return False
    try:
        key.verify(message, signature)
    except (nacl.exceptions.BadSignatureError, ValueError, TypeError):
        return False
    return True


class Signed:
    """A record signed by Ed25519 over ``CONTEXT`` + the canonical bencoding of its
    fields without the signature, and sent as those fields plus the signature under
    ``SIGNATURE_KEY``. The context is the domain separation: a signature over one kind
    of record can never be replayed as another. Certificates, envelopes, offline
    packets and channel messages are all signed this one way.

    Subclasses are frozen dataclasses with a ``signature`` field and ``_fields()``.
    """

    CONTEXT: ClassVar[bytes]
    SIGNATURE_KEY: ClassVar[bytes] = b"s"
    signature: bytes

    def _fields(self) -> dict[bytes, Any]:
        raise NotImplementedError

    def signed_bytes(self) -> bytes:
        """Exactly what the signature covers."""
        return self.CONTEXT + encode(self._fields())

    def encode(self) -> bytes:
        """The wire form: every field, the signature included, in canonical bencode."""
        return encode({**self._fields(), self.SIGNATURE_KEY: self.signature})

    def signed_by(self, public_key: bytes) -> bool:
        """True if ``public_key``'s owner made the signature; False (never an error) else."""
        return verify_signature(public_key, self.signature, self.signed_bytes())


class _KeyPair:
    """What both key pairs hand to the wire and the key file: their raw 32-byte forms."""

    private_key: Ed25519PrivateKey | X25519PrivateKey

    @property
    def private_bytes(self) -> bytes:
        return self.private_key.private_bytes(Encoding.Raw, PrivateFormat.Raw, NoEncryption())

    @property
    def public_key(self) -> bytes:
        return self.private_key.public_key().public_bytes_raw()


@dataclass(frozen=True)
class Identity(_KeyPair):
    """A person's long-term Ed25519 key pair."""

    private_key: Ed25519PrivateKey

    @classmethod
    def generate(cls) -> Identity:
        return cls(Ed25519PrivateKey.generate())

    @classmethod
    def from_seed(cls, seed: bytes) -> Identity:
        if len(seed) != 32:
            raise ValueError("an Ed25519 seed is 32 bytes")
        return cls(Ed25519PrivateKey.from_private_bytes(seed))

    @property
    def seed(self) -> bytes:
        """The 32-byte Ed25519 seed (RFC 8032 §5.1.5: the raw private key)."""
        return self.private_bytes

    def sign(self, message: bytes) -> bytes:
        return self.private_key.sign(message)

    def x25519_private(self) -> bytes:
        """This key converted to X25519 (libsodium's ``ed25519_sk_to_curve25519``): what
        opens a box sealed to our identity key and does DH with a contact's."""
        return crypto_sign_ed25519_sk_to_curve25519(self.seed + self.public_key)

    def certify(self, device: DeviceKey, created: int) -> DeviceCertificate:
        """Sign a certificate saying ``device`` speaks for this identity."""
        cert = DeviceCertificate(self.public_key, device.public_key, device.device_id, created, b"")
        return cert.with_signature(self.sign(cert.signed_bytes()))


@dataclass(frozen=True)
class DeviceKey(_KeyPair):
    """One installation's X25519 key (its Noise static key) and a random device id."""

    private_key: X25519PrivateKey
    device_id: bytes

    @classmethod
    def generate(cls) -> DeviceKey:
        return cls(X25519PrivateKey.generate(), os.urandom(16))

    @classmethod
    def from_bytes(cls, private: bytes, device_id: bytes) -> DeviceKey:
        if len(private) != 32 or len(device_id) != 16:
            raise ValueError("a device key is 32 bytes and a device id 16")
        return cls(X25519PrivateKey.from_private_bytes(private), device_id)


@dataclass(frozen=True)
class DeviceCertificate(Signed):
    """``identity`` says: the X25519 key ``device_key`` (device ``device_id``) is mine.

    Wire form: a bencoded dictionary ``{i: identity, k: device_key, d: device_id,
    c: created (unix seconds), s: signature}``; the signature is Ed25519 by ``i`` over
    ``DEVICE_CERT_CONTEXT`` followed by the bencoded dictionary without ``s``.
    """

    CONTEXT: ClassVar[bytes] = DEVICE_CERT_CONTEXT

    identity: bytes
    device_key: bytes
    device_id: bytes
    created: int
    signature: bytes

    def _fields(self) -> dict[bytes, Any]:
        return {
            b"i": self.identity,
            b"k": self.device_key,
            b"d": self.device_id,
            b"c": self.created,
        }

    def with_signature(self, signature: bytes) -> DeviceCertificate:
        return DeviceCertificate(
            self.identity, self.device_key, self.device_id, self.created, signature
        )

    @classmethod
    def decode(cls, data: bytes) -> DeviceCertificate:
        """Parse and verify; raises CertificateError on anything wrong."""
        if len(data) > MAX_CERT_SIZE:
            raise CertificateError("device certificate too large")
        try:
            d = decode(data)
        except DecodeError as exc:
            raise CertificateError(f"device certificate is not bencode: {exc}") from None
        if not isinstance(d, dict) or set(d) != {b"i", b"k", b"d", b"c", b"s"}:
            raise CertificateError("device certificate has the wrong fields")
        i, k, dev, c, s = d[b"i"], d[b"k"], d[b"d"], d[b"c"], d[b"s"]
        if not (
            isinstance(i, bytes)
            and len(i) == 32
            and isinstance(k, bytes)
            and len(k) == 32
            and isinstance(dev, bytes)
            and len(dev) == 16
            and isinstance(c, int)
            and c >= 0
            and isinstance(s, bytes)
            and len(s) == 64
        ):
            raise CertificateError("device certificate field has the wrong type or size")
        cert = cls(i, k, dev, c, s)
        if not cert.verify():
            raise CertificateError("device certificate signature does not verify")
        return cert

    def verify(self) -> bool:
        return self.signed_by(self.identity)

    @classmethod
    def all_of(cls, identity: bytes, items: object) -> list[DeviceCertificate]:
        """The items of a decoded list that are ``identity``'s valid certificates.

        Anything else (not a list, not bytes, malformed, forged, another identity's) is
        dropped, never trusted: for device lists fetched from the DHT and stored ones.
        """
        out = []
        for item in items if isinstance(items, list) else []:
            if not isinstance(item, bytes):
                continue
            try:
                cert = cls.decode(item)
            except CertificateError:
                continue
            if cert.identity == identity:
                out.append(cert)
        return out
