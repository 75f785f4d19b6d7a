"""The message database is never silently replaced; backups, `btchat doctor` (issue 14 item 8)."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from btchat.node import doctor
from btchat.node.boot import BootError
from btchat.node.config import Settings
from btchat.node.history import DB_FILE, MARKER, HistoryError, open_history
from btchat.storage import backups

KEY = bytes(range(32))


def fresh(tmp_path: Path, key: bytes | None = None) -> Path:
    """A data directory whose database has been opened once (marker and first backup)."""
    store = open_history(tmp_path, key)
    store.db.write("CREATE TABLE IF NOT EXISTS probe (x)")
    store.db.write("INSERT INTO probe VALUES (42)")
    store.close()
    return tmp_path / DB_FILE


def test_first_open_creates_marks_and_backs_up(tmp_path: Path) -> None:
    fresh(tmp_path)
    assert (tmp_path / MARKER).exists()
    assert len(backups.backups(tmp_path)) == 1


@pytest.mark.parametrize("how", ["missing", "empty"])
def test_a_missing_or_empty_database_is_refused_and_not_recreated(tmp_path: Path, how: str) -> None:
    path = fresh(tmp_path)
    for extra in ("", "-wal", "-shm"):
        Path(f"{path}{extra}").unlink(missing_ok=True)
    if how == "empty":
        path.write_bytes(b"")
    with pytest.raises(HistoryError, match=f"is {how}.*doctor --restore"):
        open_history(tmp_path, None)
    assert path.exists() == (how == "empty") and (not path.exists() or path.stat().st_size == 0)


def test_a_database_without_a_marker_is_created_as_on_first_use(tmp_path: Path) -> None:
    open_history(tmp_path, KEY).close()  # e.g. after `btchat init`, before the first `up`
    assert (tmp_path / DB_FILE).stat().st_size > 0


def _damage(path: Path) -> None:
    data = bytearray(path.read_bytes())
    assert len(data) >= 3 * 4096
    for page in (1, 2):  # b-tree page headers of pages 2 and 3; the file header intact
        data[page * 4096 : page * 4096 + 64] = b"\xff" * 64
    path.write_bytes(bytes(data))


def _grow(tmp_path: Path) -> None:
    store = open_history(tmp_path, None)
    store.db.write("CREATE TABLE IF NOT EXISTS bulk (x)")
    with store.db.transaction() as conn:
        conn.executemany("INSERT INTO bulk VALUES (?)", [(os.urandom(200),) for _ in range(200)])
    store.close()


def test_a_damaged_database_is_found_at_start(tmp_path: Path) -> None:
    fresh(tmp_path)
    _grow(tmp_path)
    _damage(tmp_path / DB_FILE)
    before = (tmp_path / DB_FILE).read_bytes()
    with pytest.raises(HistoryError, match="damaged"):
        open_history(tmp_path, None)
    assert (tmp_path / DB_FILE).read_bytes() == before  # never overwritten


def test_backups_are_daily_and_the_newest_three_are_kept(tmp_path: Path) -> None:
    fresh(tmp_path)
    store = open_history(tmp_path, None)
    assert backups.take_backup(store.db, tmp_path) is None  # one a day
    day = backups.INTERVAL
    made = [
        backups.take_backup(store.db, tmp_path, now=time.time() + day * (i + 1)) for i in range(4)
    ]
    store.close()
    assert all(made)
    kept = backups.backups(tmp_path)
    assert len(kept) == backups.KEEP and kept[0] == made[-1]


def test_a_failed_backup_is_reported_and_the_node_still_opens(tmp_path: Path) -> None:
    fresh(tmp_path)
    folder = tmp_path / backups.BACKUP_DIR
    for old in folder.iterdir():
        old.unlink()
    folder.rmdir()
    folder.write_text("a file where the folder should be")
    warnings: list[str] = []
    open_history(tmp_path, None, warn=warnings.append).close()
    assert len(warnings) == 1 and "could not back up" in warnings[0]


def _settings(tmp_path: Path) -> Settings:
    return Settings(data_dir=tmp_path, bootstrap=[], no_passphrase=True)


def _make_identity(tmp_path: Path) -> None:
    from btchat.node.boot import create_identity

    create_identity(_settings(tmp_path))


def test_doctor_finds_the_problem_and_restores_the_newest_sound_backup(tmp_path: Path) -> None:
    _make_identity(tmp_path)
    path = fresh(tmp_path)  # its first backup predates the probe row
    store = open_history(tmp_path, None)
    assert backups.take_backup(store.db, tmp_path, now=time.time() + backups.INTERVAL)
    store.close()
    _grow(tmp_path)
    _damage(path)
    found = doctor.diagnose(_settings(tmp_path), lambda new: None)
    assert [f.ok for f in found if "messages.db:" in f.what] == [False]
    done = doctor.restore_backup(_settings(tmp_path), lambda new: None)
    assert "kept as" in done
    aside = [p for p in tmp_path.iterdir() if ".damaged-" in p.name]
    assert aside, "the damaged file is kept, not deleted"
    store = open_history(tmp_path, None)
    assert store.db.query("SELECT x FROM probe") == [(42,)]
    store.close()
    assert all(f.ok for f in doctor.diagnose(_settings(tmp_path), lambda new: None))


def test_doctor_new_database_keeps_the_old_file_aside(tmp_path: Path) -> None:
    _make_identity(tmp_path)
    fresh(tmp_path)
    assert "empty history" in doctor.new_database(_settings(tmp_path))
    assert not (tmp_path / DB_FILE).exists()
    open_history(tmp_path, None).close()  # allowed now
    assert any(".damaged-" in p.name for p in tmp_path.iterdir())


def test_doctor_refuses_to_mend_while_a_node_runs(tmp_path: Path) -> None:
    from btchat.storage.dir_lock import DirLock

    _make_identity(tmp_path)
    fresh(tmp_path)
    lock = DirLock(tmp_path)
    lock.acquire()
    try:
        with pytest.raises(BootError, match="in use by pid"):
            doctor.new_database(_settings(tmp_path))
    finally:
        lock.release()
    assert (tmp_path / DB_FILE).exists()
