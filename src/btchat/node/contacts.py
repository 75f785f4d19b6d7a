"""The contact book as the API sees it: finding a contact by any of its names, and its JSON.

Contacts are addressed in the CLI and API by petname, ID text, ``btchat:`` URI or hex
key; petnames are unique for that reason. What the user did wrong comes out as an
:class:`~btchat.errors.ApiError` with a status and a code.
"""

from __future__ import annotations

import contextlib
from typing import Any

from btchat.errors import ApiError
from btchat.identity.idtext import IdError, format_id, parse_contact_ref
from btchat.identity.keys import DeviceCertificate
from btchat.identity.names import PetnameError, clean_suggestion, petname
from btchat.messaging.store import Store
from btchat.node.profile import Profiles

__all__ = ["ContactBook", "resolve_contact"]


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

    def reachable(self) -> list[bytes]:
        """Contacts we hold sessions with and look for (all but the blocked)."""
        return [c.pk for c in self.store.list_contacts() if not c.blocked]

    def certs_of(self, contact: bytes) -> list[DeviceCertificate]:
        row = self.store.get_contact(contact)
        return list(row.certs) if row is not None else []

    def save_certs(self, contact: bytes, certs: list[DeviceCertificate]) -> None:
        if self.store.get_contact(contact) is not None:
            self.store.set_certs(contact, certs)

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
