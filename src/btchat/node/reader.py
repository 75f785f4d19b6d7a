"""Reading a data directory while no node runs: history for ``btchat history`` offline.

It holds the data-directory lock while it reads, so no node can start and write under
it, and it never creates anything: no identity, no database, no marker, no backup.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from btchat.identity.keystore import KeyStore
from btchat.messaging.store import Store
from btchat.node.boot import AskPassphrase, BootError, unlock_identity
from btchat.node.config import Settings
from btchat.node.contacts import resolve_contact
from btchat.node.history import DB_FILE
from btchat.storage.database import StoreError
from btchat.storage.dir_lock import DirLock, DirLockError

__all__ = ["OfflineHistory", "read_history"]


@dataclass(frozen=True)
class OfflineHistory:
    """Messages as the API gives them, and every contact's petname by hex key."""

    messages: list[dict[str, Any]]
    names: dict[str, str]


def read_history(
    settings: Settings, ask: AskPassphrase, ref: str, limit: int, before: int | None
) -> OfflineHistory:
    """The conversation with ``ref``, newest ``limit`` messages before Lamport ``before``.

    Raises :class:`BootError` with a sentence for the user (no identity, wrong
    passphrase, a node holding the directory, no or unreadable database) and
    :class:`~btchat.errors.ApiError` for an unknown contact."""
    data_dir = settings.data_dir
    if not KeyStore(data_dir).exists():  # before the lock, which would make the folder
        raise BootError(f"no identity in {data_dir} (`btchat init` creates one)")
    lock = DirLock(data_dir)
    try:
        lock.acquire()
    except DirLockError as exc:  # a node runs but its API did not answer
        raise BootError(f"{exc}; its API does not answer (is it starting?)") from None
    try:
        keys = unlock_identity(settings, ask)
        path = data_dir / DB_FILE
        if not path.exists():
            raise BootError(f"no history in {data_dir} yet")
        try:
            store = Store.open(path, keys.db_key)
        except StoreError as exc:
            raise BootError(f"{exc} ({path}); `btchat doctor` says more") from None
        try:
            pk = resolve_contact(store, ref)
            rows = store.history(pk, limit=limit, before_lamport=before)
            names = {c.pk.hex(): c.name for c in store.list_contacts()}
            return OfflineHistory([r.to_json() for r in rows], names)
        finally:
            store.close()
    finally:
        lock.release()
