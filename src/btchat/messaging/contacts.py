"""Contacts: name, trust flags, their device certificates (re-verified on every read), presence."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, fields
from typing import Any

from btchat.codec.bencode import DecodeError, decode, encode
from btchat.identity.keys import DeviceCertificate
from btchat.messaging.envelope import PRESENCE_STATES
from btchat.storage import StoreError, Table

__all__ = ["MAX_CERTS", "ContactChange", "ContactRow", "Contacts"]

#: Most device certificates kept per contact: bounds what a peer can make us store.
MAX_CERTS = 32

_CONTACT_COLUMNS = "pk, name, added_ms, verified, blocked, certs, presence, last_seen_ms"


@dataclass(frozen=True)
class ContactChange:
    """One "update this contact" request: only the fields given (not ``None``) change.

    The one spelling of the change for the API facade, the daemon, the in-memory fake and
    the HTTP client, so a new contact setting is added here and nowhere else.
    """

    name: str | None = None
    verified: bool | None = None
    blocked: bool | None = None
    #: How long a message to this contact is retried while they are offline.
    retention_days: float | None = None

    def given(self) -> dict[str, Any]:
        """The fields that change, by name: also the JSON body of the API's PATCH."""
        values = {f.name: getattr(self, f.name) for f in fields(self)}
        return {k: v for k, v in values.items() if v is not None}


@dataclass(frozen=True)
class ContactRow:
    pk: bytes
    name: str
    added_ms: int
    verified: bool
    blocked: bool
    certs: tuple[DeviceCertificate, ...]
    presence: str
    last_seen_ms: int | None


class Contacts(Table):
    def add_contact(self, pk: bytes, name: str, now_ms: int) -> None:
        if len(pk) != 32:
            raise StoreError("a contact key is 32 bytes")
        with self.db.transaction() as conn:
            if conn.execute("SELECT 1 FROM contacts WHERE pk = ?", (pk,)).fetchone():
                raise StoreError("already a contact")
            conn.execute(
                "INSERT INTO contacts (pk, name, added_ms) VALUES (?, ?, ?)", (pk, name, now_ms)
            )

    def _contact(self, row: Sequence[Any]) -> ContactRow:
        pk, name, added_ms, verified, blocked, certs_blob, presence, last_seen = row
        return ContactRow(
            pk,
            name,
            added_ms,
            bool(verified),
            bool(blocked),
            self._decode_certs(pk, certs_blob),
            presence,
            last_seen,
        )

    @staticmethod
    def _decode_certs(pk: bytes, blob: bytes | None) -> tuple[DeviceCertificate, ...]:
        """Stored certificates, re-verified: one that fails is dropped, never trusted."""
        if not blob:
            return ()
        try:
            items = decode(blob)
        except DecodeError:
            return ()
        return tuple(DeviceCertificate.all_of(pk, items))

    def get_contact(self, pk: bytes) -> ContactRow | None:
        rows = self.db.query(f"SELECT {_CONTACT_COLUMNS} FROM contacts WHERE pk = ?", (pk,))
        return self._contact(rows[0]) if rows else None

    def list_contacts(self) -> list[ContactRow]:
        rows = self.db.query(f"SELECT {_CONTACT_COLUMNS} FROM contacts ORDER BY name, pk")
        return [self._contact(r) for r in rows]

    def rename_contact(self, pk: bytes, name: str) -> bool:
        return self.db.write("UPDATE contacts SET name = ? WHERE pk = ?", (name, pk)) > 0

    def remove_contact(self, pk: bytes) -> bool:
        """Forget the contact; the conversation history is kept."""
        return self.db.write("DELETE FROM contacts WHERE pk = ?", (pk,)) > 0

    def set_blocked(self, pk: bytes, blocked: bool) -> bool:
        return self.db.write("UPDATE contacts SET blocked = ? WHERE pk = ?", (int(blocked), pk)) > 0

    def set_verified(self, pk: bytes, verified: bool) -> bool:
        return (
            self.db.write("UPDATE contacts SET verified = ? WHERE pk = ?", (int(verified), pk)) > 0
        )

    def set_certs(self, pk: bytes, certs: list[DeviceCertificate]) -> bool:
        """Replace the contact's device certificates; each must be a valid one by ``pk``."""
        if len(certs) > MAX_CERTS:
            raise StoreError(f"at most {MAX_CERTS} device certificates per contact")
        for cert in certs:
            if cert.identity != pk or not cert.verify():
                raise StoreError("a device certificate is not a valid one by this contact")
        blob = encode([c.encode() for c in certs])
        return self.db.write("UPDATE contacts SET certs = ? WHERE pk = ?", (blob, pk)) > 0

    def set_presence(self, pk: bytes, status: str, last_seen_ms: int) -> bool:
        if status not in PRESENCE_STATES:
            raise StoreError(f"presence must be one of {', '.join(PRESENCE_STATES)}")
        return (
            self.db.write(
                "UPDATE contacts SET presence = ?, last_seen_ms = ? WHERE pk = ?",
                (status, int(last_seen_ms), pk),
            )
            > 0
        )
