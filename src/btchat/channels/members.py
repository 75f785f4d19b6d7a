"""The signed member list of an invite-only channel: who may join, with which role.

Wire form, a canonical bencoded dictionary with a closed key set::

    {v: 1, chan: channel id (32), ver: version >= 1, gen: traffic-key generation,
     prev: SHA-256 of the previous list's bytes (32), or empty,
     members: [{k: identity key (32), r: "owner"|"admin"|"member", t: added (unix s)}, ...],
     by: signer identity key (32), sig: Ed25519 (64)}

``members`` is sorted by ``k`` with no duplicates and holds exactly one owner: the
owner named in the ``.chat`` file, who can never change (the owner is bound into the
channel's key schedule). ``sig`` is Ed25519 by ``by`` over ``MEMBER_LIST_CONTEXT``
followed by the bencoded dictionary without ``sig``.

Who may sign a successor of a list ``P`` we already accepted (:meth:`MemberList.verify`):

- the **owner**: anything (except the owner entry), any higher version; ``prev`` is
  informational, so the owner can always resynchronise members who missed updates;
- an **admin of P**: only the direct successor (``ver = P.ver + 1``, ``prev =
  digest(P)``), and only adding or removing plain members: the owner and the set of
  admins stay exactly as in ``P``, existing entries unchanged. Requiring the direct
  successor stops a demoted admin from forking members who missed the demotion.

Every list that removes someone must raise ``gen``: the remaining members then wait for
the new generation's key, sealed to each of them (``keys.seal_generation_key``), so the
removed member cannot read what follows. Lower or equal versions are refused as
rollbacks.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from typing import Any, Literal, cast

from cryptography.hazmat.primitives import hashes
from nacl.bindings import crypto_sign_ed25519_pk_to_curve25519
from nacl.exceptions import CryptoError
from nacl.exceptions import RuntimeError as NaclRuntimeError

from btchat.codec.bencode import decode_dict, encode
from btchat.errors import PeerError
from btchat.identity.keys import Identity, verify_signature

__all__ = [
    "MAX_MEMBERS",
    "MAX_MEMBER_LIST",
    "MEMBER_LIST_CONTEXT",
    "REASON_CODES",
    "ROLES",
    "VERSION",
    "Member",
    "MemberList",
    "MemberListError",
    "Role",
]

VERSION = 1
MEMBER_LIST_CONTEXT = b"btchat member list v1\x00"
#: Most entries in one list (owner included); an entry is about 70 bytes encoded.
MAX_MEMBERS = 512
#: Largest encoded list we parse.
MAX_MEMBER_LIST = 48 * 1024
MAX_INT = 2**53 - 1
MAX_GENERATION = 2**32 - 1

Role = Literal["owner", "admin", "member"]
ROLES: tuple[Role, ...] = ("owner", "admin", "member")
_KEYS = frozenset({b"v", b"chan", b"ver", b"gen", b"prev", b"members", b"by", b"sig"})
_ENTRY_KEYS = frozenset({b"k", b"r", b"t"})

#: Every ``MemberListError.code``.
REASON_CODES = frozenset(
    {
        "malformed",  # not bencode, wrong fields, types, sizes, order, or not one owner
        "too_large",
        "bad_version",
        "unsigned",  # no signature (or asked to encode an unsigned list)
        "bad_signature",
        "wrong_channel",
        "bad_owner",  # the owner entry is not the channel's owner
        "rollback",  # version not above the list we have
        "bad_generation",  # generation went down
        "no_rotation",  # someone was removed but the generation did not advance
        "not_successor",  # admin-signed list that is not the direct successor of ours
        "unauthorized",  # signer may not sign this list, or an admin changed admins
        "bad_change",  # apply() asked for something impossible (API misuse)
    }
)


class MemberListError(PeerError):
    """A member list is malformed or refused; ``code`` is one of :data:`REASON_CODES`."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message


def _is_uint(value: object, limit: int = MAX_INT) -> bool:
    return type(value) is int and 0 <= value <= limit


def _valid_key(key: object) -> bool:
    """A 32-byte Ed25519 key that converts to X25519: generation keys are sealed to it."""
    if type(key) is not bytes or len(key) != 32:
        return False
    try:
        crypto_sign_ed25519_pk_to_curve25519(key)
    except (NaclRuntimeError, CryptoError, ValueError):
        return False
    return True


@dataclass(frozen=True)
class Member:
    key: bytes
    role: Role
    added: int


@dataclass(frozen=True)
class MemberList:
    """One version of a channel's member list; entries sorted by key."""

    channel_id: bytes
    version: int
    generation: int
    members: tuple[Member, ...]
    previous_digest: bytes = b""
    signer: bytes | None = None
    signature: bytes | None = None

    def __post_init__(self) -> None:
        """Invariants every list keeps, however built: the owner lookup and the
        canonical encoding rely on them."""
        if any(a.key >= b.key for a, b in itertools.pairwise(self.members)):
            raise MemberListError("malformed", "members are not sorted by key, or repeated")
        if sum(m.role == "owner" for m in self.members) != 1:
            raise MemberListError("malformed", "a member list has exactly one owner")

    # ----------------------------------------------------------------------- building

    @classmethod
    def create(cls, channel_id: bytes, owner: bytes, *, now: float) -> MemberList:
        """The first list of a channel (version 1, generation 0): just the owner.
        Unsigned; the owner signs it with :meth:`sign`."""
        if type(channel_id) is not bytes or len(channel_id) != 32:
            raise MemberListError("bad_change", "a channel id is 32 bytes")
        if not _valid_key(owner):
            raise MemberListError("bad_change", "the owner key is not a valid Ed25519 key")
        if not 0 <= now <= MAX_INT:
            raise MemberListError("bad_change", "time out of range")
        return cls(channel_id, 1, 0, (Member(owner, "owner", int(now)),))

    def apply(
        self,
        *,
        add: Iterable[bytes] = (),
        remove: Iterable[bytes] = (),
        roles: Mapping[bytes, Role] | None = None,
        rotate: bool = False,
        now: float,
    ) -> MemberList:
        """The unsigned successor: ``add`` new members (role ``member`` unless ``roles``
        says ``admin``), ``remove`` members, change ``roles`` of existing ones.

        Version + 1, ``prev`` = this list's digest, and a new generation whenever
        someone is removed (or ``rotate``). Whether the eventual signer may make these
        changes is checked by :meth:`sign` and :meth:`verify`.
        """
        if self.signature is None:
            raise MemberListError("unsigned", "sign a list before building its successor")
        if not 0 <= now <= MAX_INT:
            raise MemberListError("bad_change", "time out of range")
        entries = {m.key: m for m in self.members}
        removed = set()
        for key in remove:
            member = entries.get(key)
            if member is None:
                raise MemberListError("bad_change", "cannot remove someone who is not a member")
            if member.role == "owner":
                raise MemberListError("bad_change", "the owner cannot be removed")
            removed.add(key)
            del entries[key]
        for key in add:
            if key in entries or key in removed:
                raise MemberListError("bad_change", "already a member (or removed in this change)")
            if not _valid_key(key):
                raise MemberListError("bad_change", "not a valid Ed25519 identity key")
            entries[key] = Member(key, "member", int(now))
        for key, role in (roles or {}).items():
            if key not in entries:
                raise MemberListError("bad_change", "cannot set the role of a non-member")
            if role not in ("admin", "member") or entries[key].role == "owner":
                raise MemberListError("bad_change", "roles are admin or member; the owner stays")
            entries[key] = replace(entries[key], role=role)
        if len(entries) > MAX_MEMBERS:
            raise MemberListError("bad_change", f"at most {MAX_MEMBERS} members")
        generation = self.generation + 1 if removed or rotate else self.generation
        if generation > MAX_GENERATION:
            raise MemberListError("bad_change", "out of generations")
        return MemberList(
            self.channel_id,
            self.version + 1,
            generation,
            tuple(entries[k] for k in sorted(entries)),
            self.digest,
        )

    def sign(self, identity: Identity) -> MemberList:
        """Signed by ``identity``, which must be this list's owner or one of its admins
        (the full rule, against the previous list, is :meth:`verify`'s)."""
        signer = identity.public_key
        if self.role_of(signer) not in ("owner", "admin"):
            raise MemberListError("unauthorized", "only the owner or an admin signs a list")
        unsigned = replace(self, signer=signer, signature=None)
        return replace(unsigned, signature=identity.sign(unsigned._signed_bytes()))

    # ----------------------------------------------------------------------- queries

    @property
    def owner(self) -> bytes:
        return next(m.key for m in self.members if m.role == "owner")

    @property
    def keys(self) -> frozenset[bytes]:
        return frozenset(m.key for m in self.members)

    @property
    def key_issuers(self) -> frozenset[bytes]:
        """Who may grant generation keys: the owner and the admins."""
        return frozenset(m.key for m in self.members if m.role != "member")

    def role_of(self, key: bytes) -> Role | None:
        for m in self.members:
            if m.key == key:
                return m.role
        return None

    def __contains__(self, key: object) -> bool:
        return any(m.key == key for m in self.members)

    @property
    def digest(self) -> bytes:
        """SHA-256 of the encoded, signed list: the successor's ``prev``."""
        h = hashes.Hash(hashes.SHA256())
        h.update(self.to_bytes())
        return h.finalize()

    # ----------------------------------------------------------------------- encoding

    def _fields(self) -> dict[bytes, Any]:
        return {
            b"v": VERSION,
            b"chan": self.channel_id,
            b"ver": self.version,
            b"gen": self.generation,
            b"prev": self.previous_digest,
            b"members": [
                {b"k": m.key, b"r": m.role.encode("ascii"), b"t": m.added} for m in self.members
            ],
            b"by": self.signer,
        }

    def _signed_bytes(self) -> bytes:
        return MEMBER_LIST_CONTEXT + encode(self._fields())

    def to_bytes(self) -> bytes:
        if self.signer is None or self.signature is None:
            raise MemberListError("unsigned", "an unsigned member list has no wire form")
        return encode({**self._fields(), b"sig": self.signature})

    @classmethod
    def from_bytes(cls, data: bytes) -> MemberList:
        """Parse a list and check its structure and its signer's signature (not whether
        the signer was allowed to sign it: that needs the previous list, see
        :meth:`verify`)."""
        if not isinstance(data, bytes):
            raise MemberListError("malformed", "a member list is bytes")
        d = decode_dict(
            data, "member list", max_size=MAX_MEMBER_LIST, max_depth=3, error=MemberListError
        )
        if d.get(b"v") != VERSION:
            raise MemberListError("bad_version", "unsupported member list version")
        if b"sig" not in d or b"by" not in d:
            raise MemberListError("unsigned", "the member list is not signed")
        if set(d) != _KEYS:
            raise MemberListError("malformed", "the member list has the wrong fields")
        chan, ver, gen, prev, entries, by, sig = (
            d[k] for k in (b"chan", b"ver", b"gen", b"prev", b"members", b"by", b"sig")
        )
        if not (
            type(chan) is bytes
            and len(chan) == 32
            and _is_uint(ver)
            and ver >= 1
            and _is_uint(gen, MAX_GENERATION)
            and type(prev) is bytes
            and len(prev) in (0, 32)
            and type(entries) is list
            and 1 <= len(entries) <= MAX_MEMBERS
            and type(by) is bytes
            and len(by) == 32
            and type(sig) is bytes
            and len(sig) == 64
        ):
            raise MemberListError("malformed", "a member list field has the wrong type or size")
        result = cls(chan, ver, gen, tuple(_parse_entry(e) for e in entries), prev, by, sig)
        if not verify_signature(by, sig, result._signed_bytes()):
            raise MemberListError("bad_signature", "the member list signature does not verify")
        return result

    # ---------------------------------------------------------------------- verifying

    def verify(self, previous: MemberList | None, *, channel_id: bytes, owner: bytes) -> None:
        """Accept this list as the successor of ``previous`` (the list we hold, already
        verified; None if we hold none) or raise :class:`MemberListError`.

        ``channel_id`` and ``owner`` come from the ``.chat`` file.
        """
        if self.signer is None or self.signature is None:
            raise MemberListError("unsigned", "the member list is not signed")
        if self.channel_id != channel_id:
            raise MemberListError("wrong_channel", "the member list is for another channel")
        if self.owner != owner:
            raise MemberListError("bad_owner", "the member list names another owner")
        if not verify_signature(self.signer, self.signature, self._signed_bytes()):
            raise MemberListError("bad_signature", "the member list signature does not verify")
        if previous is None:
            if self.signer != owner:
                raise MemberListError(
                    "unauthorized", "with no earlier list to check against, only the owner signs"
                )
            return
        if previous.channel_id != self.channel_id:
            raise MemberListError("wrong_channel", "the previous list is for another channel")
        if self.version <= previous.version:
            same = self.version == previous.version
            raise MemberListError(
                "rollback",
                f"version {self.version} is {'the one we have' if same else 'older'} "
                f"(we have {previous.version})",
            )
        if self.generation < previous.generation:
            raise MemberListError("bad_generation", "the key generation went backwards")
        if previous.keys - self.keys and self.generation == previous.generation:
            raise MemberListError(
                "no_rotation", "a member was removed without a new key generation"
            )
        if self.signer == owner:
            return
        if previous.role_of(self.signer) != "admin":
            raise MemberListError("unauthorized", "signed by someone who is not owner or admin")
        if self.version != previous.version + 1 or self.previous_digest != previous.digest:
            raise MemberListError(
                "not_successor", "an admin's list must directly follow the list we have"
            )
        before = {m.key: m for m in previous.members}
        after = {m.key: m for m in self.members}
        if {k for k, m in before.items() if m.role != "member"} != {
            k for k, m in after.items() if m.role != "member"
        }:
            raise MemberListError("unauthorized", "only the owner changes the owner and admins")
        for key in before.keys() & after.keys():
            if before[key] != after[key]:
                raise MemberListError("unauthorized", "an admin cannot change existing entries")


def _parse_entry(entry: object) -> Member:
    if not isinstance(entry, dict) or set(entry) != _ENTRY_KEYS:
        raise MemberListError("malformed", "a member entry has the wrong fields")
    key, role, added = entry[b"k"], entry[b"r"], entry[b"t"]
    if not (_valid_key(key) and type(role) is bytes and _is_uint(added)):
        raise MemberListError("malformed", "a member entry has a bad key, role or time")
    text = role.decode("latin-1")
    if text not in ROLES:
        raise MemberListError("malformed", "a member's role is owner, admin or member")
    return Member(key, cast(Role, text), added)
