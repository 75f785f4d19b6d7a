"""The messenger's store: every messaging table behind one object, over one database.

``Store`` is the per-domain stores combined (contacts, messages + search, outbox, replay
ids, contact requests, settings), each in its own module and each usable alone over a
:class:`~btchat.storage.Database`; the daemon and its helpers call one object, as before.
Opening, migrating and transactions are :mod:`btchat.storage`'s; the messaging tables
and their migrations are :mod:`btchat.messaging.schema`'s (offline and channel tables
register their own, in their packages).
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from btchat.messaging.contacts import MAX_CERTS, ContactRow, Contacts
from btchat.messaging.messages import (
    MAX_LIMIT,
    MAX_SEARCH_TERMS,
    MESSAGE_STATES,
    MessageRow,
    Messages,
)
from btchat.messaging.outbox import Outbox
from btchat.messaging.replay import ReplayIds
from btchat.messaging.requests import REQUEST_STATES, RequestRow, Requests
from btchat.messaging.schema import MIGRATIONS
from btchat.messaging.settings import Settings
from btchat.storage import WRONG_KEY, Connection, Database, StoreError

__all__ = [
    "MAX_CERTS",
    "MAX_LIMIT",
    "MAX_SEARCH_TERMS",
    "MESSAGE_STATES",
    "MIGRATIONS",
    "REQUEST_STATES",
    "WRONG_KEY",
    "Connection",
    "ContactRow",
    "MessageRow",
    "RequestRow",
    "Store",
    "StoreError",
]


class Store(Contacts, Messages, Outbox, ReplayIds, Requests, Settings):
    """One open database with every messaging table. Not thread-safe."""

    @classmethod
    def open(cls, path: Path, key: bytes | None) -> Store:
        """Open (creating and migrating as needed); ``key`` is 32 bytes or None."""
        return cls(Database.open(path, key))

    def close(self) -> None:
        self.db.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def migrate(self) -> None:
        """Run migrations registered since opening (a package that attaches calls this)."""
        self.db.migrate()

    def transaction(self) -> contextlib.AbstractContextManager[Connection]:
        """One write transaction for modules that keep their own tables here."""
        return self.db.transaction()

    def query(self, sql: str, params: Sequence[Any] = ()) -> list[Any]:
        return self.db.query(sql, params)

    @property
    def schema_version(self) -> int:
        return self.db.schema_version

    def integrity_check(self) -> list[str]:
        """``PRAGMA integrity_check`` rows: ``["ok"]`` for a sound database."""
        return self.db.integrity_check()
