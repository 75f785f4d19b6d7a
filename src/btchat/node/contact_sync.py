"""The contact book the same on all our devices: petnames, blocks, verified marks,
additions and removals, merged last-writer-wins (``messaging/own_sync.py`` has the
format).

Every change the user makes here is recorded with its time and this device's id and
sent to our other devices up; a device coming up gets the whole book. A change newer
than what a device has (a tie goes to the higher device id) is applied there, so every
device ends with the same book whatever order the notes arrive in. A petname another
contact already has there is kept with the contact's key prefix added: both stay
reachable by name, and every device makes the same choice.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

from btchat.identity.names import PetnameError, petname
from btchat.messaging.own_sync import (
    CONTACTS_PER_NOTE,
    ContactChange,
    ContactsNote,
    encode_contacts,
)
from btchat.messaging.store import Store
from btchat.storage import register_migrations, sql_step

__all__ = ["ContactSync"]

log = logging.getLogger(__name__)

MIGRATIONS = (
    sql_step(
        (
            """CREATE TABLE contact_changes (
                pk BLOB PRIMARY KEY CHECK (length(pk) = 32),
                name TEXT NOT NULL,
                flags INTEGER NOT NULL,
                changed_ms INTEGER NOT NULL,
                device BLOB NOT NULL
            ) WITHOUT ROWID""",
        )
    ),
)
register_migrations("contact_sync", MIGRATIONS)


class ContactSync:
    def __init__(
        self,
        store: Store,
        device_id: bytes,
        send_to_all: Callable[[bytes], None],
        applied: Callable[[bytes, str], None],
    ) -> None:
        self.store = store
        store.migrate()
        self.device_id = device_id
        self._send_to_all = send_to_all
        #: Told of each change applied from another device: (key, "added"/"changed"/
        #: "removed"), for peering and the event stream.
        self._applied = applied
        self.stats = {"applied": 0, "stale": 0, "refused": 0}

    # ------------------------------------------------------------- what we have

    def _stored(self, pk: bytes) -> ContactChange | None:
        rows = self.store.query(
            "SELECT name, flags, changed_ms, device FROM contact_changes WHERE pk = ?", (pk,)
        )
        if not rows:
            return None
        name, flags, changed, device = rows[0]
        return ContactChange(int(changed), bytes(device), pk, name, bool(flags & 1),
                             bool(flags & 2), bool(flags & 4))  # fmt: skip

    def current(self, pk: bytes) -> ContactChange | None:
        """The last change of ``pk`` known here; a contact from before sync counts as
        added when it was, by this device."""
        stored = self._stored(pk)
        if stored is not None:
            return stored
        row = self.store.get_contact(pk)
        if row is None:
            return None
        return ContactChange(row.added_ms, self.device_id, pk, row.name, row.blocked,
                             row.verified, False)  # fmt: skip

    def _save(self, change: ContactChange) -> None:
        flags = int(change.blocked) | int(change.verified) << 1 | int(change.removed) << 2
        with self.store.transaction() as conn:
            conn.execute(
                "INSERT OR REPLACE INTO contact_changes (pk, name, flags, changed_ms, device)"
                " VALUES (?, ?, ?, ?, ?)",
                (change.pk, change.name, flags, change.changed_ms, change.device),
            )

    def payloads(self) -> list[bytes]:
        """The whole book (removals included), for a device that comes up."""
        known = {bytes(pk) for (pk,) in self.store.query("SELECT pk FROM contact_changes")} | {
            row.pk for row in self.store.list_contacts()
        }
        changes = [c for pk in sorted(known) if (c := self.current(pk)) is not None]
        return [
            encode_contacts(changes[i : i + CONTACTS_PER_NOTE])
            for i in range(0, len(changes), CONTACTS_PER_NOTE)
        ]

    # ------------------------------------------------------------- changes here

    def record(self, pk: bytes, *, removing: bool = False) -> None:
        """The user changed ``pk`` here (added, renamed, blocked, verified), or is about
        to remove it (``removing``: called while the contact is still stored)."""
        row = self.store.get_contact(pk)
        if row is None:
            return
        previous = self.current(pk)
        now = int(time.time() * 1000)
        at = now if previous is None else max(now, previous.changed_ms + 1)
        change = ContactChange(at, self.device_id, pk, row.name, row.blocked, row.verified,
                               removing)  # fmt: skip
        self._save(change)
        self._send_to_all(encode_contacts([change]))

    # ------------------------------------------------------------ changes there

    def merge(self, note: ContactsNote) -> None:
        for change in note.changes:
            local = self.current(change.pk)
            if local is not None and change <= local:
                self.stats["stale"] += 1
                continue
            try:
                self._apply(change)
            except PetnameError as exc:
                self.stats["refused"] += 1
                log.warning("a contact change from our other device was refused: %s", exc)
                continue
            self._save(change)
            self.stats["applied"] += 1

    def _free_name(self, change: ContactChange) -> str:
        name = petname(change.name)  # the same rules as a name typed here
        taken = any(c.name == name and c.pk != change.pk for c in self.store.list_contacts())
        return f"{name} ~{change.pk.hex()[:6]}" if taken else name

    def _apply(self, change: ContactChange) -> None:
        row = self.store.get_contact(change.pk)
        if change.removed:
            if row is not None:
                self.store.remove_contact(change.pk)
                self._applied(change.pk, "removed")
            return
        name = self._free_name(change)
        action: Any = "changed"
        if row is None:
            self.store.add_contact(change.pk, name, change.changed_ms)
            action = "added"
        elif row.name != name:
            self.store.rename_contact(change.pk, name)
        self.store.set_blocked(change.pk, change.blocked)
        self.store.set_verified(change.pk, change.verified)
        self._applied(change.pk, action)
