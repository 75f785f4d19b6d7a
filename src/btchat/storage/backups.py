"""Rolling backups of the message database, and putting one back.

Why: history and ratchet state live only here; a damaged file or a careless ``rm``
must never cost them for good. A node takes a backup when it starts (at most one per
:data:`INTERVAL`), keeps the newest :data:`KEEP`, and :func:`restore` puts one back
after moving whatever is in the way aside: nothing is ever deleted but old backups.
Backups are made with SQLite's online backup under the database's own key, so they
are as encrypted as the database itself.
"""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

from btchat.storage.database import Database, StoreError

__all__ = ["BACKUP_DIR", "INTERVAL", "KEEP", "backups", "move_aside", "restore", "take_backup"]

BACKUP_DIR = "backups"
#: Newest backups kept; older ones are removed once a new one is complete.
KEEP = 3
#: Seconds between backups: one a day is enough to bound what a loss can cost.
INTERVAL = 24 * 3600.0
_PREFIX = "messages-"
_SUFFIX = ".db"
#: SQLite's companion files that belong to a database file.
_COMPANIONS = ("-wal", "-shm")


def backups(data_dir: Path) -> list[Path]:
    """Complete backups, newest first."""
    folder = Path(data_dir) / BACKUP_DIR
    if not folder.is_dir():
        return []
    found = [p for p in folder.iterdir() if p.name.startswith(_PREFIX) and p.suffix == _SUFFIX]
    return sorted(found, key=lambda p: p.name, reverse=True)


def take_backup(db: Database, data_dir: Path, *, now: float | None = None) -> Path | None:
    """A new backup unless the newest is younger than :data:`INTERVAL`; its path or None."""
    now = time.time() if now is None else now
    existing = backups(data_dir)
    if existing and now - existing[0].stat().st_mtime < INTERVAL:
        return None
    folder = Path(data_dir) / BACKUP_DIR
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime(now))
    final = folder / f"{_PREFIX}{stamp}{_SUFFIX}"
    partial = folder / f".partial-{final.name}"
    partial.unlink(missing_ok=True)
    try:
        db.backup_to(partial)
        _fsync(partial)
        os.replace(partial, final)  # only complete copies carry the backup name
        os.utime(final, (now, now))
    except (OSError, StoreError):
        partial.unlink(missing_ok=True)
        raise
    for old in backups(data_dir)[KEEP:]:
        old.unlink(missing_ok=True)
    return final


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def move_aside(path: Path, *, now: float | None = None) -> Path | None:
    """Rename ``path`` (and its WAL) to ``<name>.damaged-<time>``; the new name or None."""
    path = Path(path)
    if not path.exists():
        return None
    stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime(time.time() if now is None else now))
    aside = path.with_name(f"{path.name}.damaged-{stamp}")
    for extra in ("", *_COMPANIONS):
        src = path.with_name(path.name + extra)
        if src.exists():
            os.replace(src, aside.with_name(aside.name + extra))
    return aside


def restore(backup: Path, target: Path) -> Path | None:
    """Put ``backup`` in place of ``target``; what was there is moved aside (returned)."""
    backup, target = Path(backup), Path(target)
    if not backup.is_file():
        raise StoreError(f"no backup at {backup}")
    aside = move_aside(target)
    partial = target.with_name(f".restoring-{target.name}")
    shutil.copyfile(backup, partial)
    os.chmod(partial, 0o600)
    _fsync(partial)
    os.replace(partial, target)
    return aside
