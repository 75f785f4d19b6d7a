"""Contact requests from strangers, delivered through the DHT with proof-of-work.

A stranger who knows your ID cannot open a session to you (sessions answer contacts
only) and cannot find your address (rendezvous needs a pairwise secret). So a request
is left in the DHT instead, in one of ``SLOTS`` daily *request slots* of the recipient:
BEP 44 mutable items under key pairs derived from the recipient's public key, the day
and the recipient's *inbox* value, which it publishes in its signed profile. The value
is sealed to the recipient (libsodium sealed box to its X25519 key), so the DHT and
other requesters see only opaque bytes; inside, the request is signed by the
requester's identity, names the recipient (so it cannot be forwarded to someone else),
carries the requester's device certificate, and a hashcash proof bound to (recipient,
requester, day), so each request costs ~2^bits hashes to make.

Slots can be overwritten by anyone who read the profile: a flood costs the flooder the
proof-of-work per request, and a sender writes only into an empty slot when one is
free. DHT nodes do not check the work, so a stranger could instead *squat* the slots
with items at ``seq`` 2^63-1 that no later put can replace; the recipient recognises
such a ``seq`` (:func:`squatted`) and moves to a fresh inbox value, so squatting
becomes an attack that must watch and repeat, not sixteen puts once.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from nacl.bindings import crypto_sign_ed25519_pk_to_curve25519
from nacl.exceptions import CryptoError
from nacl.public import PrivateKey, PublicKey, SealedBox

from btchat.codec.bencode import DecodeError, decode, encode
from btchat.errors import PeerError
from btchat.identity import pow as hashcash
from btchat.identity.keys import CertificateError, DeviceCertificate, Identity, verify_signature

__all__ = [
    "DAY_SECONDS",
    "INBOX_SIZE",
    "REQUEST_POW_BITS",
    "SLOTS",
    "ContactRequest",
    "RequestError",
    "open_request",
    "seal_request",
    "slot_key",
    "squatted",
]

SLOTS = 8
DAY_SECONDS = 86400
#: Default proof-of-work: ~1M BLAKE2b hashes, about a second on a laptop.
REQUEST_POW_BITS = 20
REQUEST_CONTEXT = b"btchat contact request v1\x00"
MAX_NOTE = 280
MAX_NAME = 64
#: A request older than this is ignored (slots are polled for today and yesterday).
MAX_AGE = 2 * DAY_SECONDS
#: Bytes of the recipient's inbox value (profile field ``i``), part of every slot key.
INBOX_SIZE = 16
#: A slot item's ``seq`` further ahead of our clock than this marks the slot squatted.
MAX_SEQ_AHEAD_MS = 10 * 60 * 1000


class RequestError(PeerError):
    """A request slot held something that is not a valid request for us."""


@dataclass(frozen=True)
class ContactRequest:
    sender: bytes
    recipient: bytes
    certificate: DeviceCertificate
    name: str
    note: str
    ts_ms: int
    pow_nonce: int

    @property
    def request_id(self) -> bytes:
        return request_id(self.sender, self.ts_ms)


def request_id(sender: bytes, ts_ms: int) -> bytes:
    """Both sides name a request by its sender and creation time."""
    return hashlib.blake2b(sender + ts_ms.to_bytes(8, "big"), digest_size=16).digest()


def day_of(unix_time: float) -> int:
    return int(unix_time // DAY_SECONDS)


def slot_key(recipient: bytes, day: int, index: int, inbox: bytes) -> Ed25519PrivateKey:
    """The key pair of one of ``recipient``'s slots: derivable by anyone who has read
    the recipient's current ``inbox`` value from its signed profile."""
    if len(inbox) != INBOX_SIZE:
        raise ValueError(f"an inbox value is {INBOX_SIZE} bytes")
    seed = hashlib.blake2b(
        recipient + day.to_bytes(8, "big") + bytes([index]) + inbox,
        digest_size=32,
        person=b"btchat-reqslot",
    ).digest()
    return Ed25519PrivateKey.from_private_bytes(seed)


def squatted(seq: int, now: float) -> bool:
    """An item whose ``seq`` no honest sender could have written (senders use the time
    in ms): it would lock the slot against every later put, so the slot is squatted."""
    return seq > int(now * 1000) + MAX_SEQ_AHEAD_MS


def pow_challenge(recipient: bytes, sender: bytes, day: int) -> bytes:
    return b"btchat-request" + recipient + sender + day.to_bytes(8, "big")


def _signed(fields: dict[bytes, object]) -> bytes:
    return REQUEST_CONTEXT + encode(fields)


def seal_request(
    identity: Identity,
    certificate: DeviceCertificate,
    recipient: bytes,
    *,
    name: str,
    note: str,
    now: float,
    pow_bits: int = REQUEST_POW_BITS,
) -> bytes:
    """Build, sign, stamp with proof-of-work and seal a request (slow: does the work)."""
    if len(note.encode()) > MAX_NOTE or len(name.encode()) > MAX_NAME:
        raise ValueError(f"the note is at most {MAX_NOTE} bytes and the name {MAX_NAME}")
    sender = identity.public_key
    nonce = hashcash.solve(pow_challenge(recipient, sender, day_of(now)), pow_bits)
    fields: dict[bytes, object] = {
        b"from": sender,
        b"to": recipient,
        b"cert": certificate.encode(),
        b"name": name.encode(),
        b"note": note.encode(),
        b"ts": int(now * 1000),
        b"pow": nonce,
    }
    fields[b"sig"] = identity.sign(_signed(fields))
    box = SealedBox(PublicKey(crypto_sign_ed25519_pk_to_curve25519(recipient)))
    return box.encrypt(encode(fields))


def open_request(
    identity: Identity, sealed: bytes, *, now: float, pow_bits: int = REQUEST_POW_BITS
) -> ContactRequest:
    """Unseal and check a request found in one of our slots; RequestError if invalid."""
    secret = identity.x25519_private()
    try:
        plain = SealedBox(PrivateKey(secret)).decrypt(sealed)
        fields = decode(plain)
    except (CryptoError, DecodeError):
        raise RequestError("not sealed to us, or corrupt") from None
    if not isinstance(fields, dict):
        raise RequestError("malformed request")
    sig = fields.pop(b"sig", None)
    sender, to, cert_blob = fields.get(b"from"), fields.get(b"to"), fields.get(b"cert")
    name, note, ts, nonce = (
        fields.get(b"name"),
        fields.get(b"note"),
        fields.get(b"ts"),
        fields.get(b"pow"),
    )
    if not (
        isinstance(sender, bytes)
        and isinstance(to, bytes)
        and isinstance(sig, bytes)
        and isinstance(cert_blob, bytes)
        and isinstance(name, bytes)
        and isinstance(note, bytes)
        and isinstance(ts, int)
        and isinstance(nonce, int)
    ):
        raise RequestError("malformed request")
    if to != identity.public_key:
        raise RequestError("request addressed to someone else")
    if not verify_signature(sender, sig, _signed(fields)):
        raise RequestError("bad signature")
    if not 0 <= nonce < 2**64 or not hashcash.verify(
        pow_challenge(to, sender, day_of(ts / 1000)), nonce, pow_bits
    ):
        raise RequestError("insufficient proof-of-work")
    if not now * 1000 - MAX_AGE * 1000 <= ts <= now * 1000 + 600_000:
        raise RequestError("request too old or from the future")
    try:
        cert = DeviceCertificate.decode(cert_blob)
        text_name, text_note = name.decode(), note.decode()
    except (CertificateError, UnicodeDecodeError):
        raise RequestError("malformed request") from None
    if cert.identity != sender:
        raise RequestError("device certificate of another identity")
    if len(name) > MAX_NAME or len(note) > MAX_NOTE:
        raise RequestError("name or note too long")
    return ContactRequest(sender, to, cert, text_name, text_note, ts, nonce)
