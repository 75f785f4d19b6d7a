"""The node's message database: opened only if it is the one this identity had.

Why: history and ratchet state exist nowhere else. SQLite happily creates a new, empty
database where one was deleted or truncated, which would silently cost a user
everything, and a damaged file would otherwise start a node that fails later. So the
data directory remembers (:data:`MARKER`) that it has had a database; a missing or
empty one then stops the start with what to do, a damaged one is found by a quick
check at start, and a rolling backup is taken (see :mod:`btchat.storage.backups`).
Nothing here ever overwrites or deletes the database.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from pathlib import Path

from btchat.messaging.store import Store
from btchat.storage import backups
from btchat.storage.database import StoreError

__all__ = ["DB_FILE", "MARKER", "HistoryError", "forget_marker", "open_history"]

log = logging.getLogger(__name__)

DB_FILE = "messages.db"
#: Written once a database has been opened here; its absence allows creating one.
MARKER = ".has-history"


class HistoryError(Exception):
    """The database is missing, empty or damaged; the text says what to do."""


def _how_to_recover(data_dir: Path) -> str:
    found = backups.backups(data_dir)
    newest = f" (newest backup: {found[0].name})" if found else " (no backups yet)"
    return (
        f"`btchat doctor --restore` puts back the newest backup{newest}; "
        "`btchat doctor --new-database` starts over with no history"
    )


def open_history(
    data_dir: Path, db_key: bytes | None, *, warn: Callable[[str], None] = log.warning
) -> Store:
    """The store, checked and backed up; :class:`HistoryError` when it must not be used."""
    path = data_dir / DB_FILE
    marker = data_dir / MARKER
    state = "missing" if not path.exists() else "empty" if path.stat().st_size == 0 else None
    if state and marker.exists():
        raise HistoryError(
            f"{path} is {state}, but this data directory had a message database: btchat "
            f"will not replace your history with an empty one. {_how_to_recover(data_dir)}"
        )
    try:
        store = Store.open(path, db_key)
    except StoreError as exc:
        raise HistoryError(f"{exc} ({path}). {_how_to_recover(data_dir)}") from None
    try:
        problems = store.db.integrity_check(quick=True)
    except StoreError as exc:
        problems = [str(exc)]
    if problems != ["ok"]:
        store.close()
        shown = "; ".join(problems[:3])
        raise HistoryError(
            f"the message database {path} is damaged ({shown}). {_how_to_recover(data_dir)}"
        )
    if not marker.exists():
        marker.write_text(f"{int(time.time())}\n")
    try:
        backups.take_backup(store.db, data_dir)
    except (OSError, StoreError) as exc:  # a full disk must not stop the node; said once
        warn(f"could not back up the message database: {exc}")
    return store


def forget_marker(data_dir: Path) -> None:
    """Allow the next start to create a new database (``doctor --new-database``)."""
    (data_dir / MARKER).unlink(missing_ok=True)
