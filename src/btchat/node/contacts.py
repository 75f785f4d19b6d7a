"""The contact book as the API sees it: finding a contact by any of its names, and its JSON.

Contacts are addressed in the CLI and API by petname, ID text, ``btchat:`` URI or hex
key; petnames are unique for that reason. What the user did wrong comes out as an
:class:`~btchat.errors.ApiError` with a status and a code.
"""

from __future__ import annotations

import contextlib
import logging
from typing import Any

from btchat.errors import ApiError
from btchat.identity.idtext import IdError, format_id, parse_contact_ref
from btchat.identity.keys import DeviceCertificate
from btchat.identity.names import PetnameError, clean_suggestion, petname
from btchat.messaging.store import Store
from btchat.node.device_lists import DeviceLists
from btchat.node.profile import Profiles

__all__ = ["ContactBook", "resolve_contact"]

log = logging.getLogger(__name__)


def resolve_contact(store: Store, ref: str) -> bytes:
    """A contact by ID text, URI, hex key or petname; 404 when unknown. An ID names its
    own contact even if an older database let a petname spell it."""
    try:
        pk: bytes | None = parse_contact_ref(ref)[0]
    except IdError:
        pk = None
    if pk is not None and store.get_contact(pk) is not None:
        return pk
    for row in store.list_contacts():
        if row.name == ref:
            return row.pk
    if pk is None:
        raise ApiError(404, "unknown_contact", f"no contact named {ref!r}")
    raise ApiError(404, "unknown_contact", f"{ref!r} is not one of your contacts")


class ContactBook:
    def __init__(self, me: bytes, store: Store, profiles: Profiles) -> None:
        self.me = me
        self.store = store
        self.profiles = profiles
        #: Seqs and revocations each contact's lists have shown, kept for good.
        self.device_lists = DeviceLists(store)

    def reachable(self) -> list[bytes]:
        """Contacts we hold sessions with and look for (all but the blocked)."""
        return [c.pk for c in self.store.list_contacts() if not c.blocked]

    def certs_of(self, contact: bytes) -> list[DeviceCertificate]:
        """The contact's device certificates, none of them revoked."""
        row = self.store.get_contact(contact)
        if row is None:
            return []
        gone = self.device_lists.revoked(contact)
        return [c for c in row.certs if c.device_id not in gone]

    def save_certs(self, contact: bytes, certs: list[DeviceCertificate]) -> None:
        if self.store.get_contact(contact) is not None:
            gone = self.device_lists.revoked(contact)
            self.store.set_certs(contact, [c for c in certs if c.device_id not in gone])

    def revoked_devices(self, contact: bytes) -> frozenset[bytes]:
        return self.device_lists.revoked(contact)

    def learn_devices(
        self,
        contact: bytes,
        list_seq: int | None,
        certs: list[DeviceCertificate] | None,
        revoked_seq: int | None,
        revoked: frozenset[bytes],
    ) -> frozenset[bytes]:
        if self.store.get_contact(contact) is None:
            return frozenset()
        learned = self.device_lists.learn(
            contact, list_seq=list_seq, revoked_seq=revoked_seq, revoked=revoked
        )
        if certs is not None and learned.list_current:
            self.save_certs(contact, certs)
        elif learned.newly_revoked:
            self.save_certs(contact, self.certs_of(contact))
        if not learned.list_current:
            log.warning("ignored an older device list of %s (rollback)", contact.hex()[:16])
        return learned.newly_revoked

    def resolve(self, ref: str) -> bytes:
        return resolve_contact(self.store, ref)

    def parse_new(self, ref: str) -> tuple[bytes, str | None]:
        """Someone to add: (key, suggested name); 400 for a bad ID or our own."""
        try:
            pk, suggested = parse_contact_ref(ref)
        except IdError as exc:
            raise ApiError(400, "bad_id", str(exc)) from None
        if pk == self.me:
            raise ApiError(400, "self", "that is your own ID")
        return pk, suggested

    def check_not_known(self, pk: bytes) -> None:
        if self.store.get_contact(pk) is not None:
            raise ApiError(409, "exists", "already a contact")

    def check_name(self, name: str, pk: bytes) -> str:
        """The petname as it will be stored. Petnames address contacts in the CLI and API,
        so a name is safe to show (400), is not an ID or link (400) and is free (409)."""
        try:
            name = petname(name)
        except PetnameError as exc:
            raise ApiError(400, "bad_name", str(exc)) from None
        try:
            parse_contact_ref(name)
        except IdError:
            pass
        else:
            raise ApiError(400, "bad_name", "a name may not be an ID, link or key")
        if any(c.name == name and c.pk != pk for c in self.store.list_contacts()):
            raise ApiError(409, "name_taken", f"another contact is already called {name!r}")
        return name

    def name_for(self, pk: bytes, chosen: str | None, suggested: str | None) -> str:
        """The user's ``chosen`` name (checked), else a name the peer or link suggested
        when it is usable and free, else the start of the contact's ID."""
        if chosen is not None:
            return self.check_name(chosen, pk)
        cleaned = clean_suggestion(suggested)
        if cleaned is not None:
            with contextlib.suppress(ApiError):
                return self.check_name(cleaned, pk)
        return format_id(pk)[:12]

    def json(self, pk: bytes, *, online: bool, retention_days: float) -> dict[str, Any]:
        row = self.store.get_contact(pk)
        assert row is not None
        return {
            "id": format_id(pk),
            "public_key": pk.hex(),
            "name": row.name,
            "verified": bool(row.verified),
            "blocked": bool(row.blocked),
            "presence": row.presence if online else "offline",
            "last_seen": row.last_seen_ms,
            "online": online,
            "profile": self.profiles.of(pk),
            "retention_days": retention_days,
        }
