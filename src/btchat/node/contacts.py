"""The contact book as the API sees it: finding a contact by any of its names, and its JSON.

Contacts are addressed in the CLI and API by petname, ID text, ``btchat:`` URI or hex
key; petnames are unique for that reason. What the user did wrong comes out as an
:class:`~btchat.errors.ApiError` with a status and a code.
"""

from __future__ import annotations

from typing import Any

from btchat.errors import ApiError
from btchat.identity.idtext import IdError, format_id, parse_contact_ref
from btchat.identity.keys import DeviceCertificate
from btchat.messaging.store import Store
from btchat.node.profile import Profiles

__all__ = ["ContactBook"]


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
        """A contact by petname, ID text, URI or hex key; 404 when unknown."""
        for row in self.store.list_contacts():
            if row.name == ref:
                return row.pk
        try:
            pk, _ = parse_contact_ref(ref)
        except IdError:
            raise ApiError(404, "unknown_contact", f"no contact named {ref!r}") from None
        if self.store.get_contact(pk) is None:
            raise ApiError(404, "unknown_contact", f"{ref!r} is not one of your contacts")
        return pk

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

    def check_name_free(self, name: str, pk: bytes) -> None:
        """Petnames address contacts in the CLI and API, so two may not share one."""
        if any(c.name == name and c.pk != pk for c in self.store.list_contacts()):
            raise ApiError(409, "name_taken", f"another contact is already called {name!r}")

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
