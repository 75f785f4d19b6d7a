"""Offline packets, and how they are cut into private DHT mailbox slots.

An :class:`OfflinePacket` is one message for a contact who was not reachable: the
signed envelope, encrypted with the pair's Double Ratchet (Olm), wrapped with the
sender's identity signature, the recipient, and a per-direction counter ``n``. Version
2 (protocol 1.6) reaches every device of the recipient: the envelope is encrypted once
under a fresh key, and that key is wrapped in one Olm message per recipient device
(each device has its own Olm account), so any one of them can read it alone. The same
packet travels through the DHT mailbox and through a friend's backup; ``(sender, n)``
identifies it, so the recipient decrypts it once whatever path delivered it first.

In the DHT a packet is cut into chunks, each a BEP 44 mutable item whose key pair,
encryption key and therefore target are derived from the pair's secret, the direction,
and the counter (or, for the per-direction *head*, the day). Only the two contacts can
compute them: storing nodes see random keys and fixed-size ciphertext, never who writes
to whom, how long a message is, or how many there are per key.
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from typing import Any, ClassVar

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from nacl.bindings import (
    crypto_aead_xchacha20poly1305_ietf_decrypt,
    crypto_aead_xchacha20poly1305_ietf_encrypt,
)
from nacl.exceptions import CryptoError

from btchat.codec.bencode import DecodeError, decode, encode
from btchat.dht import bep44
from btchat.errors import PeerError
from btchat.identity.keys import Identity, Signed

__all__ = [
    "CHUNK_DATA",
    "DAY_SECONDS",
    "MAX_CHUNKS",
    "MAX_PACKET",
    "MAX_WRAPS",
    "Head",
    "OfflinePacket",
    "PacketError",
    "Slot",
    "chunk_slot",
    "head_slot",
    "join_chunks",
    "open_envelope",
    "open_item",
    "seal_envelope",
    "seal_item",
    "split_chunks",
]

PACKET_CONTEXT = b"btchat offline packet v1\x00"
DAY_SECONDS = 86400
#: Every sealed item carries exactly this many plaintext bytes (padded), so all mailbox
#: items have one size: 24-byte nonce + 940 + 16-byte tag = 980, bencoded "980:..." = 984,
#: inside BEP 44's 1000-byte limit.
ITEM_PLAINTEXT = 940
#: Packet bytes per chunk, leaving room for the chunk header in ITEM_PLAINTEXT.
CHUNK_DATA = 900
#: Largest packet: a 16 KiB text envelope encrypted, plus headers, fits.
MAX_PACKET = 24 * 1024
MAX_CHUNKS = (MAX_PACKET + CHUNK_DATA - 1) // CHUNK_DATA
MAX_OLM_BODY = 20 * 1024
MAX_INT = 2**53 - 1
_PACKET_KEYS = frozenset({b"v", b"f", b"t", b"n", b"x", b"k", b"m", b"b", b"s"})
_PACKET_V2_KEYS = frozenset({b"v", b"f", b"t", b"n", b"x", b"k", b"w", b"b", b"s"})
#: Most recipient devices one v2 packet wraps its key for (a device list names 5).
MAX_WRAPS = 5
#: Largest Olm message wrapping a 32-byte key (a pre-key message is about 200 bytes).
MAX_WRAP_BODY = 1024
DEVICE_ID_SIZE = 16
#: The v2 envelope ciphertext: XChaCha20-Poly1305 under a key used for this packet only,
#: so the nonce can be fixed.
_ENVELOPE_NONCE = bytes(24)
#: (recipient device id, Olm message type, Olm message of the packet key)
Wrap = tuple[bytes, int, bytes]


class PacketError(PeerError):
    """Remote bytes that are not a valid packet, chunk or head for us; the text says why."""


def _uint(value: object) -> bool:
    return type(value) is int and 0 <= value <= MAX_INT


# ----------------------------------------------------------------------------- packets


@dataclass(frozen=True)
class OfflinePacket(Signed):
    CONTEXT: ClassVar[bytes] = PACKET_CONTEXT

    sender: bytes
    recipient: bytes
    n: int  # per-direction counter, from 0
    expires_ms: int  # the sender stops trying (and stops asking friends to hold it) then
    olm_key: bytes  # the sender's Olm identity key (Curve25519), bound by the signature
    olm_type: int  # 0 = pre-key message (starts a session), 1 = normal message (v1 only)
    olm_body: bytes  # v1: the Olm message; v2: the envelope under the packet key
    signature: bytes = b""
    #: v2: the packet key wrapped for each recipient device; empty for v1.
    wraps: tuple[Wrap, ...] = ()

    @property
    def version(self) -> int:
        return 2 if self.wraps else 1

    def _fields(self) -> dict[bytes, Any]:
        d: dict[bytes, Any] = {
            b"v": self.version,
            b"f": self.sender,
            b"t": self.recipient,
            b"n": self.n,
            b"x": self.expires_ms,
            b"k": self.olm_key,
            b"b": self.olm_body,
        }
        if self.wraps:
            d[b"w"] = [list(w) for w in self.wraps]
        else:
            d[b"m"] = self.olm_type
        return d

    def wrap_for(self, device_id: bytes) -> Wrap | None:
        return next((w for w in self.wraps if w[0] == device_id), None)

    @classmethod
    def create(
        cls,
        identity: Identity,
        recipient: bytes,
        n: int,
        expires_ms: int,
        olm_key: bytes,
        olm_type: int,
        olm_body: bytes,
    ) -> OfflinePacket:
        unsigned = cls(identity.public_key, recipient, n, expires_ms, olm_key, olm_type, olm_body)
        signature = identity.sign(unsigned.signed_bytes())
        return cls(**{**unsigned.__dict__, "signature": signature})

    @classmethod
    def create_v2(
        cls,
        identity: Identity,
        recipient: bytes,
        n: int,
        expires_ms: int,
        olm_key: bytes,
        wraps: list[Wrap],
        ciphertext: bytes,
    ) -> OfflinePacket:
        """A v2 packet: ``ciphertext`` from :func:`seal_envelope`, its key in ``wraps``."""
        if not 1 <= len(wraps) <= MAX_WRAPS:
            raise ValueError(f"a packet wraps its key for 1 to {MAX_WRAPS} devices")
        unsigned = cls(
            identity.public_key, recipient, n, expires_ms, olm_key, 0, ciphertext, b"", tuple(wraps)
        )
        signature = identity.sign(unsigned.signed_bytes())
        return cls(**{**unsigned.__dict__, "signature": signature})

    @classmethod
    def parse(cls, data: bytes) -> OfflinePacket:
        """Structure only; :meth:`verify` checks who signed it and for whom."""
        if len(data) > MAX_PACKET:
            raise PacketError(f"packet of {len(data)} bytes exceeds {MAX_PACKET}")
        try:
            d = decode(bytes(data), max_depth=3, max_size=MAX_PACKET)
        except DecodeError as exc:
            raise PacketError(f"packet is not canonical bencode: {exc}") from None
        if type(d) is dict and d.keys() == _PACKET_V2_KEYS and d[b"v"] == 2:
            return cls._parse_v2(d)
        if type(d) is not dict or d.keys() != _PACKET_KEYS or d[b"v"] != 1:
            raise PacketError("packet has the wrong fields or version")
        cls._check_common(d)
        if d[b"m"] not in (0, 1):
            raise PacketError("packet message type out of range")
        if type(d[b"b"]) is not bytes or not 0 < len(d[b"b"]) <= MAX_OLM_BODY:
            raise PacketError("packet body has the wrong size")
        return cls(d[b"f"], d[b"t"], d[b"n"], d[b"x"], d[b"k"], d[b"m"], d[b"b"], d[b"s"])

    @classmethod
    def _parse_v2(cls, d: dict[bytes, Any]) -> OfflinePacket:
        cls._check_common(d)
        body, w = d[b"b"], d[b"w"]
        if type(body) is not bytes or not 16 < len(body) <= MAX_OLM_BODY:
            raise PacketError("packet ciphertext has the wrong size")
        if type(w) is not list or not 1 <= len(w) <= MAX_WRAPS:
            raise PacketError(f"packet must wrap its key for 1 to {MAX_WRAPS} devices")
        wraps: list[Wrap] = []
        for entry in w:
            if (
                type(entry) is not list
                or len(entry) != 3
                or type(entry[0]) is not bytes
                or len(entry[0]) != DEVICE_ID_SIZE
                or entry[1] not in (0, 1)
                or type(entry[2]) is not bytes
                or not 0 < len(entry[2]) <= MAX_WRAP_BODY
            ):
                raise PacketError("packet key wrap malformed")
            wraps.append((entry[0], entry[1], entry[2]))
        if len({wrap[0] for wrap in wraps}) != len(wraps):
            raise PacketError("packet wraps its key twice for one device")
        return cls(d[b"f"], d[b"t"], d[b"n"], d[b"x"], d[b"k"], 0, body, d[b"s"], tuple(wraps))

    @staticmethod
    def _check_common(d: dict[bytes, Any]) -> None:
        for key, size in ((b"f", 32), (b"t", 32), (b"k", 32), (b"s", 64)):
            if type(d[key]) is not bytes or len(d[key]) != size:
                raise PacketError(f"packet field {key.decode()} must be {size} bytes")
        if not (_uint(d[b"n"]) and _uint(d[b"x"])):
            raise PacketError("packet counter or expiry out of range")

    def verify(self, sender: bytes, recipient: bytes) -> None:
        if self.sender != sender:
            raise PacketError("packet is from someone else than the mailbox's contact")
        if self.recipient != recipient:
            raise PacketError("packet is addressed to someone else")
        if not self.signed_by(self.sender):
            raise PacketError("packet signature does not verify")


def seal_envelope(plaintext: bytes, key: bytes | None = None) -> tuple[bytes, bytes]:
    """(a fresh packet key, ``plaintext`` encrypted under it) for a v2 packet; ``key``
    only for test vectors (a key must never seal two envelopes: the nonce is fixed)."""
    key = secrets.token_bytes(32) if key is None else key
    return key, crypto_aead_xchacha20poly1305_ietf_encrypt(plaintext, b"", _ENVELOPE_NONCE, key)


def open_envelope(key: bytes, ciphertext: bytes) -> bytes:
    """The envelope of a v2 packet; PacketError for a wrong key or altered bytes."""
    if len(key) != 32:
        raise PacketError("wrapped packet key has the wrong size")
    try:
        return crypto_aead_xchacha20poly1305_ietf_decrypt(ciphertext, b"", _ENVELOPE_NONCE, key)
    except CryptoError:
        raise PacketError("packet ciphertext does not decrypt under its wrapped key") from None


# ------------------------------------------------------------------------------- slots


@dataclass(frozen=True)
class Slot:
    """One mailbox item's keys: where it lives in the DHT and how it is sealed."""

    private_key: Ed25519PrivateKey
    public_key: bytes
    aead_key: bytes


def _slot(secret: bytes, sender: bytes, recipient: bytes, label: bytes) -> Slot:
    root = hashlib.blake2b(
        b"btchat/mailbox/v1\x00" + sender + recipient + label, key=secret, digest_size=32
    ).digest()
    seed = hashlib.blake2b(root, person=b"btchat-mbox-sig", digest_size=32).digest()
    aead = hashlib.blake2b(root, person=b"btchat-mbox-enc", digest_size=32).digest()
    private = Ed25519PrivateKey.from_private_bytes(seed)
    return Slot(private, private.public_key().public_bytes_raw(), aead)


def chunk_slot(secret: bytes, sender: bytes, recipient: bytes, n: int, part: int) -> Slot:
    """Where chunk ``part`` of the sender's packet ``n`` to the recipient lives."""
    return _slot(secret, sender, recipient, b"chunk" + encode([n, part]))


def head_slot(secret: bytes, sender: bytes, recipient: bytes, day: int) -> Slot:
    """Where the sender's head for this direction lives on ``day`` (UTC days since 1970)."""
    return _slot(secret, sender, recipient, b"head" + encode(day))


def seal_item(slot: Slot, payload: dict[bytes, Any]) -> bytes:
    """The bencoded BEP 44 ``v`` for ``payload``: padded to ITEM_PLAINTEXT and sealed."""
    plain = encode(payload)
    if len(plain) > ITEM_PLAINTEXT:
        raise ValueError(f"item payload of {len(plain)} bytes exceeds {ITEM_PLAINTEXT}")
    padded = plain + bytes(ITEM_PLAINTEXT - len(plain))
    # Deterministic nonce (SIV-style): republishing an item yields the same bytes, so it
    # can keep one BEP 44 seq; a slot's key seals only one plaintext except for heads,
    # whose plaintexts differ and so get different nonces.
    nonce = hashlib.blake2b(padded, key=slot.aead_key, digest_size=24).digest()
    sealed = nonce + crypto_aead_xchacha20poly1305_ietf_encrypt(
        padded, slot.public_key, nonce, slot.aead_key
    )
    v = encode(sealed)
    assert len(v) <= bep44.MAX_VALUE_SIZE
    return v


def open_item(slot: Slot, value: object) -> dict[bytes, Any]:
    """The payload of a sealed item; PacketError if it is not ours or was altered."""
    if type(value) is not bytes or len(value) != 24 + ITEM_PLAINTEXT + 16:
        raise PacketError("mailbox item has the wrong size")
    try:
        padded = crypto_aead_xchacha20poly1305_ietf_decrypt(
            value[24:], slot.public_key, value[:24], slot.aead_key
        )
    except CryptoError:
        raise PacketError("mailbox item does not decrypt (forged or altered)") from None
    try:
        payload, _ = _decode_prefix(padded)
    except DecodeError as exc:
        raise PacketError(f"mailbox item payload is malformed: {exc}") from None
    if type(payload) is not dict:
        raise PacketError("mailbox item payload is not a dictionary")
    return payload


def _decode_prefix(padded: bytes) -> tuple[Any, int]:
    """Decode the bencoded value at the start of ``padded`` (the rest is zero padding)."""
    end = len(padded.rstrip(b"\x00"))
    # A payload is a dict, so it ends with "e"; trailing zero bytes are padding only.
    return decode(padded[:end], max_depth=3, max_size=ITEM_PLAINTEXT), end


# ------------------------------------------------------------------------------ chunks


def split_chunks(packet: bytes) -> list[dict[bytes, Any]]:
    count = max(1, (len(packet) + CHUNK_DATA - 1) // CHUNK_DATA)
    return [
        {b"c": count, b"i": i, b"d": packet[i * CHUNK_DATA : (i + 1) * CHUNK_DATA]}
        for i in range(count)
    ]


def chunk_count(payload: dict[bytes, Any], part: int) -> int:
    """Validate a chunk payload found at index ``part``; return the packet's chunk count."""
    count, index, data = payload.get(b"c"), payload.get(b"i"), payload.get(b"d")
    if type(count) is not int or not 1 <= count <= MAX_CHUNKS:
        raise PacketError("chunk count out of range")
    if index != part or type(data) is not bytes or not 0 < len(data) <= CHUNK_DATA:
        raise PacketError("chunk index or data malformed")
    return count


def join_chunks(parts: list[dict[bytes, Any]]) -> bytes:
    return b"".join(p[b"d"] for p in parts)


# -------------------------------------------------------------------------------- head


@dataclass(frozen=True)
class Head:
    """One direction's index, written by the sender: packets ``lo..hi-1`` may be pending,
    and ``ack`` is the highest counter it has received contiguously from the other side
    (-1 for none), so a head carries both what to fetch and what was received."""

    lo: int
    hi: int
    ack: int

    def payload(self) -> dict[bytes, Any]:
        return {b"lo": self.lo, b"hi": self.hi, b"a": self.ack + 1}

    @classmethod
    def from_payload(cls, payload: dict[bytes, Any]) -> Head:
        lo, hi, a = payload.get(b"lo"), payload.get(b"hi"), payload.get(b"a")
        if not (_uint(lo) and _uint(hi) and _uint(a)) or lo > hi:  # type: ignore[operator]
            raise PacketError("mailbox head malformed")
        return cls(lo, hi, a - 1)  # type: ignore[arg-type, operator]
