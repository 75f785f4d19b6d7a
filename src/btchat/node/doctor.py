"""``btchat doctor``: what is wrong with a data directory, and the two ways to mend it.

Why a command: when :mod:`btchat.node.history` refuses to start (a missing, empty or
damaged database) the user needs a documented way out that cannot make things worse.
Both repairs hold the data-directory lock (so no node is running), and both move the
current file aside instead of deleting it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from btchat.identity.keystore import KeyStore
from btchat.node.boot import AskPassphrase, BootError, unlock_identity
from btchat.node.config import Settings
from btchat.node.history import DB_FILE, MARKER, forget_marker
from btchat.storage import backups
from btchat.storage.database import Database, StoreError
from btchat.storage.dir_lock import DirLock, DirLockError

__all__ = ["Finding", "diagnose", "new_database", "restore_backup"]


@dataclass(frozen=True)
class Finding:
    ok: bool
    what: str


def _check_db(path: Path, key: bytes | None) -> Finding:
    if not path.exists() or path.stat().st_size == 0:
        return Finding(False, f"message database {path}: {'empty' if path.exists() else 'missing'}")
    try:
        db = Database.open(path, key, migrate=False)
    except StoreError as exc:
        return Finding(False, f"message database {path}: {exc}")
    try:
        problems = db.integrity_check()
    except StoreError as exc:
        problems = [str(exc)]
    finally:
        db.close()
    if problems != ["ok"]:
        return Finding(False, f"message database {path}: damaged ({'; '.join(problems[:3])})")
    return Finding(True, f"message database {path}: sound ({path.stat().st_size} bytes)")


def diagnose(settings: Settings, ask: AskPassphrase) -> list[Finding]:
    """Every check, in the order a user would want them; never changes anything."""
    data_dir = settings.data_dir
    found: list[Finding] = []
    lock = DirLock(data_dir)
    try:
        lock.acquire()
        lock.release()
        found.append(Finding(True, f"data directory {data_dir}: no node running"))
    except DirLockError as exc:
        found.append(Finding(True, str(exc)))
    keystore = KeyStore(data_dir)
    if not keystore.exists():
        found.append(Finding(False, f"identity: none in {data_dir} (`btchat init` creates one)"))
        return found
    try:
        keys = unlock_identity(settings, ask)
    except BootError as exc:
        found.append(Finding(False, f"identity: {exc}"))
        return found
    encrypted = "encrypted" if keys.db_key is not None else "not encrypted (no passphrase)"
    found.append(Finding(True, f"identity: unlocked, {encrypted}"))
    found.append(_check_db(data_dir / DB_FILE, keys.db_key))
    had = (data_dir / MARKER).exists()
    found.append(Finding(True, f"history marker: {'present' if had else 'absent'}"))
    kept = backups.backups(data_dir)
    found.extend(_check_db(path, keys.db_key) for path in kept)
    if not kept:
        found.append(Finding(True, "backups: none yet (one is taken at each start, daily)"))
    return found


def _locked(settings: Settings) -> DirLock:
    lock = DirLock(settings.data_dir)
    try:
        lock.acquire()
    except DirLockError as exc:
        raise BootError(str(exc)) from None
    return lock


def restore_backup(settings: Settings, ask: AskPassphrase, backup: Path | None = None) -> str:
    """Put back ``backup`` (default: the newest sound one); say what was moved aside."""
    lock = _locked(settings)
    try:
        keys = unlock_identity(settings, ask)
        candidates = [backup] if backup is not None else backups.backups(settings.data_dir)
        for path in candidates:
            if _check_db(path, keys.db_key).ok:
                aside = backups.restore(path, settings.data_dir / DB_FILE)
                kept = f"; the old file is kept as {aside}" if aside else ""
                return f"restored {path}{kept}"
        raise BootError(
            "no sound backup to restore" if backup is None else f"{backup} is not sound"
        )
    finally:
        lock.release()


def new_database(settings: Settings) -> str:
    """Let the next start create an empty database; the current one is moved aside."""
    lock = _locked(settings)
    try:
        aside = backups.move_aside(settings.data_dir / DB_FILE)
        forget_marker(settings.data_dir)
        kept = f"the old file is kept as {aside}; " if aside else ""
        return f"{kept}the next `btchat up` starts with an empty history"
    finally:
        lock.release()
