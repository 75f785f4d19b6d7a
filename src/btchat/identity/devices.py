"""What one identity says of its devices: which speak for it, and which it has cut off.

An identity publishes two BEP 44 items under its key: the **device list** (salt
``btchat/devices``: the certificates of its devices, at most 5, so the item stays under
1000 bytes) and the **revocation list** (salt ``btchat/revoked``: the ids of devices it
has revoked, at most 48). Both are signed by the identity, so nobody else can forge or
edit them. A revocation is for good: a reader keeps every revoked id it has ever seen
for that identity (sticky), so an old device list replayed from a stale DHT node, or a
certificate remembered from an earlier session, can never bring a revoked device back.
A reader also keeps the highest ``seq`` it has seen of each list and ignores older ones
(rollback).

The devices of one identity each publish the lists; they converge because every device
merges what it reads back into what it has (:meth:`DeviceSet.merged`): the union of
certificates and of revocations, revoked certificates dropped. Merging is commutative
and idempotent, so the order in which devices hear of a change does not matter.

Everything here is pure: bytes in, values out.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from btchat.codec.bencode import DecodeError, decode, encode
from btchat.identity.keys import DeviceCertificate

__all__ = [
    "DEVICES_SALT",
    "MAX_DEVICES",
    "MAX_REVOKED",
    "REVOKED_SALT",
    "DeviceSet",
    "decode_device_list",
    "decode_revoked",
    "encode_device_list",
    "encode_revoked",
]

#: BEP 44 salt of the signed device list published under an identity key.
DEVICES_SALT = b"btchat/devices"
#: BEP 44 salt of the signed list of revoked device ids.
REVOKED_SALT = b"btchat/revoked"
#: Devices listed per identity (the item must stay under BEP 44's 1000 bytes).
MAX_DEVICES = 5
#: Revoked ids kept per identity: 48 x 18 bytes + framing < 1000 bytes.
MAX_REVOKED = 48
_DEVICE_ID = 16


def encode_device_list(certs: Iterable[DeviceCertificate]) -> bytes:
    return encode({b"certs": [c.encode() for c in list(certs)[:MAX_DEVICES]]})


def decode_device_list(v_bencoded: bytes, identity: bytes) -> list[DeviceCertificate]:
    """Certificates in a fetched device list that verify and belong to ``identity``."""
    try:
        value = decode(v_bencoded)
    except DecodeError:
        return []
    raw = value.get(b"certs") if isinstance(value, dict) else None
    return DeviceCertificate.all_of(identity, raw)[:MAX_DEVICES]


def encode_revoked(device_ids: Iterable[bytes]) -> bytes:
    """``{rev: [id, ...]}``, ids sorted (one canonical form per set), at most 48."""
    ids = sorted(set(device_ids))
    if len(ids) > MAX_REVOKED:
        raise ValueError(f"at most {MAX_REVOKED} revoked devices")
    if any(len(i) != _DEVICE_ID for i in ids):
        raise ValueError("a device id is 16 bytes")
    return encode({b"rev": ids})


def decode_revoked(v_bencoded: bytes) -> frozenset[bytes]:
    """The revoked ids of a fetched revocation list; entries that are not 16-byte
    strings are skipped, and at most 48 are read."""
    try:
        value = decode(v_bencoded)
    except DecodeError:
        return frozenset()
    raw = value.get(b"rev") if isinstance(value, dict) else None
    if not isinstance(raw, list):
        return frozenset()
    return frozenset(i for i in raw[:MAX_REVOKED] if isinstance(i, bytes) and len(i) == _DEVICE_ID)


@dataclass(frozen=True)
class DeviceSet:
    """The devices of one identity as far as we know: certificates that speak for it
    (none of them revoked) and every id it has revoked."""

    certs: tuple[DeviceCertificate, ...] = ()
    revoked: frozenset[bytes] = frozenset()

    def __post_init__(self) -> None:
        kept: dict[bytes, DeviceCertificate] = {}
        for cert in self.certs:
            if cert.device_id in self.revoked:
                continue
            old = kept.get(cert.device_id)
            if old is None or cert.created > old.created:
                kept[cert.device_id] = cert
        object.__setattr__(self, "certs", tuple(kept.values())[:MAX_DEVICES])

    def merged(self, other: DeviceSet) -> DeviceSet:
        """Both sets' knowledge: certificates of either (ours first, then theirs oldest
        first), revocations of either. Revocations beyond 48 keep the set but are not
        all published; a reader that saw one keeps it."""
        theirs = sorted(other.certs, key=lambda c: (c.created, c.device_id))
        return DeviceSet(self.certs + tuple(theirs), self.revoked | other.revoked)

    def with_revoked(self, device_id: bytes) -> DeviceSet:
        return DeviceSet(self.certs, self.revoked | {device_id})

    def allows(self, cert: DeviceCertificate) -> bool:
        return cert.device_id not in self.revoked

    def ids(self) -> list[bytes]:
        return [c.device_id for c in self.certs]
