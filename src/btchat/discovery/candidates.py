"""Candidate records: where one device of a contact can be dialled, sealed for one peer.

The rendezvous announce (BEP 5, ``implied_port``) tells a contact one address: the one
our DHT socket is seen from. That misses our TCP listener when its port differs, a port
the home gateway mapped for us, our LAN address, an IPv6 address when the seeker is in
the IPv4 DHT only, and (Tor mode, which announces nothing) our onion service. So each
device also writes, per contact and per hour, a BEP 44 mutable item listing up to
:data:`MAX_CANDIDATES` candidates (kind, transport, address, port).

The item's Ed25519 key and its XChaCha20-Poly1305 key come from the pair's secret, the
direction, the device and the epoch: storing nodes see a random key that changes hourly
and an opaque value of one fixed size. The contact can derive the keys too, so the
record inside is also signed by our *identity* key (device keys are X25519, for Noise,
and cannot sign; every device holds the identity key): the contact cannot forge our
candidates, and a record is refused unless it names the seeker, the device and the epoch
of its slot, and is newer than the last one seen from it (``t``).

Nothing here does I/O: :func:`seal` and :func:`open_record` take and return bytes.
Layout and vectors: docs/PROTOCOL.md "Candidate records (1.6)", docs/vectors/candidates.json.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from nacl.bindings import (
    crypto_aead_xchacha20poly1305_ietf_decrypt,
    crypto_aead_xchacha20poly1305_ietf_encrypt,
    crypto_sign_seed_keypair,
)
from nacl.encoding import RawEncoder
from nacl.exceptions import CryptoError
from nacl.hash import blake2b

from btchat.codec import bencode
from btchat.errors import PeerError
from btchat.identity.keys import Identity, verify_signature

__all__ = [
    "AEAD_KEY_PERSON",
    "KINDS",
    "MAX_CANDIDATES",
    "PLAINTEXT_SIZE",
    "RECORD_CONTEXT",
    "ROOT_CONTEXT",
    "SEED_PERSON",
    "TRANSPORTS",
    "VALUE_SIZE",
    "Addr",
    "CandidateError",
    "Freshness",
    "Record",
    "Slot",
    "dialable",
    "open_record",
    "seal",
    "slot",
]

#: Domain label of the slot root (keyed BLAKE2b over it, the pair secret as key).
ROOT_CONTEXT = b"btchat/candidates/v1\0"
#: BLAKE2b personalisations: the item's Ed25519 seed, the AEAD key.
SEED_PERSON = b"btchat-cand-sig"
AEAD_KEY_PERSON = b"btchat-cand-enc"
#: What the identity key signs: this context, then the record without ``s``.
RECORD_CONTEXT = b"btchat candidate record v1\0"
#: Most candidates in one record (more is malformed: refused whole).
MAX_CANDIDATES = 8
#: Every record's plaintext is padded to this many bytes, so all records have one size.
PLAINTEXT_SIZE = 880
NONCE_SIZE = 24
TAG_SIZE = 16
#: The BEP 44 ``v``: one byte string of this length (924 bytes bencoded, under 1000).
VALUE_SIZE = NONCE_SIZE + PLAINTEXT_SIZE + TAG_SIZE
#: Kinds: host (a local socket address), mapped (by the gateway: UPnP/PCP/NAT-PMP),
#: reflexive (as the DHT's nodes see us), onion (a Tor v3 service; TCP only).
KINDS = {b"h": "host", b"m": "mapped", b"r": "reflexive", b"o": "onion"}
TRANSPORTS = {b"t": "tcp", b"u": "udp"}
_KIND_CODES = {v: k for k, v in KINDS.items()}
_TRANSPORT_CODES = {v: k for k, v in TRANSPORTS.items()}
#: A v3 onion address is 56 base32 characters before ``.onion``.
ONION_LABEL = 56
_BASE32 = frozenset(b"abcdefghijklmnopqrstuvwxyz234567")
_MAX_EPOCH = (1 << 64) - 1
_MAX_INT = (1 << 53) - 1


class CandidateError(PeerError):
    """A record that does not open, parse or verify; ``reason`` is a counter's name."""

    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(reason)


@dataclass(frozen=True, slots=True)
class Addr:
    """One candidate: ``kind`` (see :data:`KINDS`), ``transport`` "tcp" or "udp", and
    where: an IP literal, or ``xxx.onion`` for kind onion."""

    kind: str
    transport: str
    host: str
    port: int

    @property
    def addr(self) -> tuple[str, int]:
        return self.host, self.port

    def wire(self) -> list[object]:
        """``[kind, transport, address bytes, port]``: 4 or 16 bytes, or the onion label."""
        if self.kind == "onion":
            raw = self.host.removesuffix(".onion").encode()
        else:
            raw = ipaddress.ip_address(self.host).packed
        return [_KIND_CODES[self.kind], _TRANSPORT_CODES[self.transport], raw, self.port]

    @classmethod
    def from_wire(cls, item: object) -> Addr | None:
        """The candidate, or None for one of an unknown kind or transport or malformed
        (skipped; the rest of the record stands)."""
        if not isinstance(item, list) or len(item) < 4:
            return None
        kind, transport, raw, port = item[:4]  # later entries: a future version's
        if not all(isinstance(x, bytes) for x in (kind, transport, raw)):
            return None
        name, proto = KINDS.get(kind), TRANSPORTS.get(transport)
        if name is None or proto is None:
            return None
        if isinstance(port, bool) or not isinstance(port, int) or not 0 < port < 65536:
            return None
        if name == "onion":
            if proto != "tcp" or len(raw) != ONION_LABEL or not set(raw) <= _BASE32:
                return None
            return cls(name, proto, raw.decode() + ".onion", port)
        if len(raw) not in (4, 16):
            return None
        ip = ipaddress.ip_address(raw)
        if ip.version == 6 and ip.ipv4_mapped is not None:
            return None  # an IPv4 address is sent as 4 bytes
        return cls(name, proto, str(ip), port)


@dataclass(frozen=True, slots=True)
class Slot:
    """Where ``announcer``'s device writes its record for ``seeker`` in one epoch."""

    root: bytes
    seed: bytes
    public_key: bytes
    aead_key: bytes


def slot(secret: bytes, announcer: bytes, seeker: bytes, device_id: bytes, epoch: int) -> Slot:
    """Derive the slot: root from the pair secret, then the item key and the AEAD key."""
    if len(secret) != 32 or len(announcer) != 32 or len(seeker) != 32:
        raise ValueError("secret and keys are 32 bytes")
    if len(device_id) != 16 or not 0 <= epoch <= _MAX_EPOCH:
        raise ValueError("device id is 16 bytes, epoch a u64")
    message = ROOT_CONTEXT + announcer + seeker + device_id + epoch.to_bytes(8, "big")
    root = blake2b(message, digest_size=32, key=secret, encoder=RawEncoder)
    seed = blake2b(root, digest_size=32, person=SEED_PERSON, encoder=RawEncoder)
    aead_key = blake2b(root, digest_size=32, person=AEAD_KEY_PERSON, encoder=RawEncoder)
    public_key, _ = crypto_sign_seed_keypair(seed)
    return Slot(root, seed, public_key, aead_key)


@dataclass(frozen=True, slots=True)
class Record:
    """What one record says: device ``device_id`` of the signer, for ``seeker``, in
    ``epoch``, at time ``t`` (Unix ms; newer replaces older), may be dialled at
    ``candidates``. ``skipped``: entries not understood (unknown kind or transport)."""

    seeker: bytes
    device_id: bytes
    epoch: int
    t: int
    candidates: tuple[Addr, ...]
    skipped: int = 0

    def fields(self) -> dict[bytes, object]:
        return {
            b"c": [a.wire() for a in self.candidates],
            b"d": self.device_id,
            b"e": self.epoch,
            b"p": self.seeker,
            b"t": self.t,
        }


def _signed_bytes(fields: dict[bytes, object]) -> bytes:
    return RECORD_CONTEXT + bencode.encode({k: v for k, v in fields.items() if k != b"s"})


def plaintext(identity: Identity, record: Record) -> bytes:
    """The signed record in canonical bencode, padded with zero bytes."""
    if len(record.candidates) > MAX_CANDIDATES:
        raise ValueError(f"at most {MAX_CANDIDATES} candidates")
    fields = record.fields()
    body = bencode.encode({**fields, b"s": identity.sign(_signed_bytes(fields))})
    if len(body) > PLAINTEXT_SIZE:
        raise ValueError("the record does not fit")
    return body + bytes(PLAINTEXT_SIZE - len(body))


def seal(identity: Identity, where: Slot, record: Record) -> bytes:
    """The BEP 44 value (a byte string of :data:`VALUE_SIZE`): nonce || AEAD(padded)
    with the item's public key as associated data. The nonce is a keyed hash of the
    plaintext, so putting one record again gives the same bytes."""
    padded = plaintext(identity, record)
    nonce = blake2b(padded, digest_size=NONCE_SIZE, key=where.aead_key, encoder=RawEncoder)
    sealed = crypto_aead_xchacha20poly1305_ietf_encrypt(
        padded, where.public_key, nonce, where.aead_key
    )
    return nonce + sealed


def open_record(
    value: object, where: Slot, announcer: bytes, seeker: bytes, device_id: bytes, epoch: int
) -> Record:
    """The record in ``value`` (the decoded BEP 44 ``v``) if it opens under ``where``,
    is signed by ``announcer``'s identity key and names this seeker, device and epoch;
    else :class:`CandidateError`. Bounded: one AEAD open of 920 bytes, one decode of
    at most 880, one signature check."""
    if not isinstance(value, bytes) or len(value) != VALUE_SIZE:
        raise CandidateError("size")
    try:
        padded = crypto_aead_xchacha20poly1305_ietf_decrypt(
            value[NONCE_SIZE:], where.public_key, value[:NONCE_SIZE], where.aead_key
        )
    except CryptoError:
        raise CandidateError("sealed") from None
    body = padded.rstrip(b"\0")
    try:
        fields = bencode.decode(body)
    except bencode.DecodeError:
        raise CandidateError("malformed") from None
    if not isinstance(fields, dict):
        raise CandidateError("malformed")
    sig, cands, t = fields.get(b"s"), fields.get(b"c"), fields.get(b"t")
    if not isinstance(sig, bytes) or not isinstance(cands, list) or len(cands) > MAX_CANDIDATES:
        raise CandidateError("malformed")
    if isinstance(t, bool) or not isinstance(t, int) or not 0 <= t <= _MAX_INT:
        raise CandidateError("malformed")
    if not verify_signature(announcer, sig, _signed_bytes(fields)):
        raise CandidateError("signature")
    if fields.get(b"p") != seeker or fields.get(b"d") != device_id or fields.get(b"e") != epoch:
        raise CandidateError("elsewhere")  # signed for another seeker, device or hour
    parsed = [Addr.from_wire(c) for c in cands]
    found = tuple(a for a in parsed if a is not None)
    return Record(seeker, device_id, epoch, t, found, skipped=len(parsed) - len(found))


class Freshness:
    """The newest ``t`` seen per (contact, device, epoch): an older record (a storing
    node's stale copy, or one the contact put back) is refused. Epochs more than one
    behind the newest seen are forgotten, so this holds at most two per device."""

    def __init__(self) -> None:
        self._seen: dict[tuple[bytes, bytes, int], int] = {}

    def accept(self, contact: bytes, device_id: bytes, epoch: int, t: int) -> bool:
        key = (contact, device_id, epoch)
        if t < self._seen.get(key, -1):
            return False
        self._seen[key] = t
        for old in [k for k in self._seen if k[:2] == key[:2] and k[2] < epoch - 1]:
            del self._seen[old]
        return True


def dialable(candidate: Addr, *, onion_ok: bool, loopback_ok: bool) -> bool:
    """May we dial this candidate at all? Never an unspecified, multicast or broadcast
    address; loopback only when we ourselves listen on loopback (a sandbox: else a
    contact could point us at our own local services); onion only through Tor."""
    if candidate.kind == "onion":
        return onion_ok
    ip = ipaddress.ip_address(candidate.host)
    if ip.is_unspecified or ip.is_multicast or (ip.version == 4 and ip == _BROADCAST):
        return False
    if ip.version == 6 and ip.is_link_local:
        return False  # no zone: not dialable from another host's record
    return loopback_ok or not ip.is_loopback


_BROADCAST = ipaddress.ip_address("255.255.255.255")
