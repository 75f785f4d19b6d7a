"""A full (failing, read-only) disk: classified, logged once, shown in status, backed off
from, and nothing lost or duplicated once space is freed (issue 14 item 9)."""

from __future__ import annotations

import errno
import logging
import os
import sqlite3
import subprocess
from pathlib import Path
from typing import Any

import pytest
from harness import FaultyDatabase
from test_api_server import AUTH, Api, api, error_of  # noqa: F401
from test_channel_quota import Channel

from btchat.errors import DiskFull, ReadOnlyStorage, StorageFault, StorageIOError
from btchat.files import write_atomic
from btchat.identity.keys import Identity
from btchat.messaging import conversation as conv
from btchat.messaging.conversation import Conversations
from btchat.messaging.store import Store
from btchat.node.storage_guard import RECOVERED, StorageGuard, probe_store
from btchat.sansio import drain_events
from btchat.storage import Database, StoreError, classify
from btchat.storage.database import StoreFull, StoreIOError, StoreReadOnly
from btchat.storage.health import FaultLogFilter, StorageHealth, os_fault

T0 = 1_800_000_000.0


# ------------------------------------------------------------------ classification


def test_a_real_sqlite_full_is_a_disk_full_store_error(tmp_path: Path) -> None:
    """SQLite's own SQLITE_FULL (a page limit stands in for the disk) is classified."""
    db = Database.open(tmp_path / "x.db", None)
    db.write("CREATE TABLE t (b BLOB)")
    pages = db.query("PRAGMA page_count")[0][0]
    db.query(f"PRAGMA max_page_count = {pages}")
    with pytest.raises(StoreFull) as caught:
        db.write("INSERT INTO t VALUES (?)", (os.urandom(100_000),))
    assert isinstance(caught.value, DiskFull) and isinstance(caught.value, StoreError)
    assert caught.value.condition == "disk full"
    db.query(f"PRAGMA max_page_count = {pages + 1000}")
    db.write("INSERT INTO t VALUES (?)", (b"room again",))  # nothing stuck half-done
    db.close()


def test_a_read_only_database_is_classified(tmp_path: Path) -> None:
    db = Database.open(tmp_path / "x.db", None)
    db.write("CREATE TABLE t (b BLOB)")
    db.query("PRAGMA query_only = ON")
    with pytest.raises(StoreReadOnly) as caught:
        db.write("INSERT INTO t VALUES (1)")
    assert isinstance(caught.value, ReadOnlyStorage)
    db.close()


@pytest.mark.parametrize(
    ("code", "text", "cls"),
    [
        (13, "database or disk is full", StoreFull),
        (778, "disk I/O error", StoreIOError),  # SQLITE_IOERR_WRITE: an extended code
        (8, "attempt to write a readonly database", StoreReadOnly),
        (None, "database or disk is full", StoreFull),  # a driver without the code
        (5, "database is locked", StoreError),  # busy: not the machine's condition
        (None, "no such table: t", StoreError),
    ],
)
def test_classify_by_code_then_text(code: int | None, text: str, cls: type) -> None:
    exc = sqlite3.OperationalError(text)
    if code is not None:
        exc.sqlite_errorcode = code  # type: ignore[attr-defined]
    assert classify(exc) is cls
    assert issubclass(cls, StorageFault) == (cls is not StoreError)


def test_os_errors_of_file_writes_are_classified() -> None:
    assert isinstance(os_fault(OSError(errno.ENOSPC, "No space left")), DiskFull)
    assert isinstance(os_fault(OSError(errno.EDQUOT, "Quota")), DiskFull)
    assert isinstance(os_fault(OSError(errno.EIO, "I/O")), StorageIOError)
    assert isinstance(os_fault(OSError(errno.EROFS, "Read-only")), ReadOnlyStorage)
    assert os_fault(OSError(errno.ENOENT, "gone")) is None
    assert os_fault(ValueError("no")) is None


# ------------------------------------------------------------------ health


def test_one_log_line_per_condition_and_one_when_it_clears(
    caplog: pytest.LogCaptureFixture,
) -> None:
    health = StorageHealth(first_retry=1.0, max_retry=8.0)
    caplog.set_level(logging.WARNING, "btchat.storage.health")
    assert health.state() == "ok" and not health.ok(T0)
    assert health.fault(StoreFull("full"), "receiving", T0)
    for i in range(1000):
        assert not health.fault(StoreFull("full"), "receiving", T0 + i / 1000)
    assert health.state() == "disk full since 2027-01-15T08:00:00Z"
    assert health.stats["faults"] == 1001 and health.stats["conditions"] == 1
    # Each failed retry doubles the wait, up to the cap.
    waits = []
    now = T0
    for _ in range(6):
        assert health.retry_at is not None
        now = health.retry_at
        assert health.due(now) and not health.due(now - 0.01)
        health.fault(StoreFull("full"), "probe", now)
        waits.append(health.retry_at - now)
    assert waits == [2.0, 4.0, 8.0, 8.0, 8.0, 8.0]
    # Another condition is one more line; then clearing is one more.
    assert health.fault(StoreIOError("eio"), "receiving", now)
    assert health.ok(now + 5) and not health.ok(now + 6)
    assert health.state() == "ok" and health.stats["cleared"] == 1
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 3, lines
    assert "disk full" in lines[0] and "I/O error" in lines[1] and "cleared" in lines[2]


def test_the_log_filter_turns_fault_tracebacks_into_the_one_record() -> None:
    health = StorageHealth()
    flt = FaultLogFilter(health, clock=lambda: T0)

    def record(exc: BaseException | None) -> logging.LogRecord:
        info = (type(exc), exc, None) if exc is not None else None
        return logging.LogRecord("btchat.x", logging.ERROR, __file__, 1, "boom", (), info)

    assert not flt.filter(record(StoreFull("full")))
    assert not flt.filter(record(OSError(errno.ENOSPC, "No space left on device")))
    assert flt.filter(record(RuntimeError("a real bug")))  # bugs keep their traceback
    assert flt.filter(record(None))
    assert health.state().startswith("disk full since") and health.stats["faults"] == 2


# ------------------------------------------------------------------ the message path


class Ends:
    """Alice (healthy disk) and Bob (a store that can fill up), joined by hand, with
    Bob's receiving side shielded by a guard as the daemon's is."""

    def __init__(self, tmp: Path) -> None:
        self.now = T0
        self.a, self.a_store, self.a_dev = self._core(tmp / "a.db")
        self.b, self.b_store, self.b_dev = self._core(tmp / "b.db")
        self.a_store.add_contact(self.b.me, "bob", 0)
        self.b_store.add_contact(self.a.me, "alice", 0)
        self.disk = FaultyDatabase(self.b_store.db)
        self.b_store.db = self.disk  # type: ignore[assignment]
        self.health = StorageHealth()
        self.reconnects: list[tuple[bytes, str]] = []
        self.guard = StorageGuard(
            self.health,
            probe=lambda now: self.b_store.kv_set("storage_probe", b"x"),
            reconnect=lambda pk, why: self.reconnects.append((pk, why)),
            clock=lambda: self.now,
        )
        self.b_receive = self.guard.shield(
            "receiving", lambda pk, dev, data: self.b.receive(pk, dev, data, self.now)
        )
        self.b_up = self.guard.shield("session start", lambda pk: self.b.session_up(pk, self.now))

    @staticmethod
    def _core(path: Path) -> tuple[Conversations, Store, bytes]:
        store, device = Store.open(path, None), os.urandom(16)
        return Conversations(Identity.generate(), device, store), store, device

    def connect(self) -> None:
        self.a.session_up(self.b.me, self.now)
        self.b_up(self.a.me)
        self.pump()

    def disconnect(self) -> None:
        self.a.session_down(self.b.me, self.now)
        self.b.session_down(self.a.me, self.now)

    def pump(self) -> None:
        busy = True
        while busy:
            busy = False
            for event in drain_events(self.a):
                if isinstance(event, conv.Transmit):
                    busy = True
                    self.b_receive(self.a.me, self.a_dev, event.data)
            for event in drain_events(self.b):
                if isinstance(event, conv.Transmit):
                    busy = True
                    self.a.receive(self.b.me, self.b_dev, event.data, self.now)

    def states(self, ids: list[bytes]) -> list[str]:
        return [self.a_store.get_message(i).state for i in ids]


def test_a_full_disk_stops_receipts_and_a_reconnect_after_it_clears_delivers_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING)
    ends = Ends(tmp_path)
    ends.connect()
    first = ends.a.send_text(ends.b.me, "before", ends.now).id
    ends.pump()
    assert ends.states([first]) == ["delivered"]

    ends.disk.fault = StoreFull
    sent = [ends.a.send_text(ends.b.me, f"while full {i}", ends.now).id for i in range(5)]
    ends.pump()  # nothing raised: the shield dropped each one, unacknowledged
    assert ends.states(sent) == ["sent"] * 5
    assert len(ends.a_store.pending_outbox(ends.b.me)) == 5  # the sender keeps them
    assert ends.disk.refused >= 5 and ends.health.stats["not_acknowledged"] >= 5
    assert ends.health.state().startswith("disk full since")

    # Retries back off while it lasts; a failed probe reconnects nobody.
    assert not ends.guard.check()  # not due yet
    ends.now = ends.health.retry_at or ends.now
    assert not ends.guard.check() and ends.reconnects == []
    assert (ends.health.retry_at or 0) - ends.now == 2.0

    ends.disk.fault = None  # space freed
    ends.now = ends.health.retry_at or ends.now
    assert ends.guard.check()
    assert ends.reconnects == [(ends.a.me, RECOVERED)]
    assert ends.health.state() == "ok"

    ends.disconnect()  # what the guard's reconnect does to the session
    ends.connect()
    assert ends.states(sent) == ["delivered"] * 5
    assert ends.a_store.pending_outbox(ends.b.me) == []
    got = [r.text for r in ends.b_store.history(ends.a.me, limit=50)]
    assert got == ["before"] + [f"while full {i}" for i in range(5)]  # none lost, none twice
    lines = [r.getMessage() for r in caplog.records if r.name.startswith("btchat")]
    assert len(lines) == 2, lines  # one when it began, one when it cleared


def test_a_full_disk_at_reconnect_is_retried_not_crashed(tmp_path: Path) -> None:
    """The reconnect itself writes (presence): a fault there is shielded and remembered."""
    ends = Ends(tmp_path)
    ends.disk.fault = StoreFull
    ends.connect()
    assert ends.guard.affected == {ends.a.me}
    ends.disk.fault = None
    ends.now = ends.health.retry_at or ends.now
    assert ends.guard.check() and ends.reconnects == [(ends.a.me, RECOVERED)]


# ------------------------------------------------------------------ a real full file system


def _mount_tmpfs(path: Path, size: str) -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root to mount a small tmpfs (a real full file system)")
    path.mkdir()
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
        capture_output=True,
        text=True,
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip()}")


def _fill(folder: Path) -> Path:
    """Fill the file system holding ``folder`` to the last byte; returns the filler."""
    filler = folder / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        for size in (65536, 4096, 1):  # big writes, then the last partial page
            try:
                while True:
                    os.write(fd, b"\0" * size)
            except OSError as exc:
                assert exc.errno == errno.ENOSPC
    finally:
        os.close(fd)
    return filler


@pytest.fixture
def small_fs(tmp_path: Path) -> Any:
    mnt = tmp_path / "small"
    _mount_tmpfs(mnt, "4m")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


def test_a_real_full_file_system(small_fs: Path) -> None:
    """A database and a ``write_atomic`` on a tmpfs filled to the last byte: both fail
    as DiskFull; both work again once the filler is gone; nothing half-written stays."""
    db = Database.open(small_fs / "x.db", None)
    db.write("CREATE TABLE t (b BLOB)")
    filler = _fill(small_fs)
    with pytest.raises(StoreFull):
        for _ in range(100):
            db.write("INSERT INTO t VALUES (?)", (os.urandom(200_000),))
    with pytest.raises(OSError) as caught:
        write_atomic(small_fs / "api.json", os.urandom(200_000))
    assert isinstance(os_fault(caught.value), DiskFull)
    assert sorted(p.name for p in small_fs.iterdir() if p.name.startswith(".api.json")) == []
    filler.unlink()
    db.write("INSERT INTO t VALUES (?)", (b"room again",))
    write_atomic(small_fs / "api.json", b"{}")
    assert (small_fs / "api.json").read_bytes() == b"{}"
    db.close()


# ------------------------------------------------------------------ the API


@pytest.mark.parametrize(
    "fault",
    [StoreFull("message database error: database or disk is full"), OSError(errno.ENOSPC, "full")],
)
async def test_the_api_says_the_disk_is_full_without_a_traceback(
    api: Api,  # noqa: F811
    fault: Exception,
    caplog: pytest.LogCaptureFixture,
) -> None:
    client, fake = api

    async def full(c: str, text: str) -> dict[str, Any]:
        raise fault

    fake.send_message = full  # type: ignore[method-assign]
    resp = await client.post("/v1/contacts/alice/messages", json={"text": "hi"}, headers=AUTH)
    assert await error_of(resp, 507) == "storage"
    assert "disk full" in (await resp.json())["error"]["message"]
    assert not [r for r in caplog.records if r.exc_info]


def test_a_channel_drops_what_it_cannot_store_and_takes_it_again_later(tmp_path: Path) -> None:
    """The link stays up (no exception), nothing is relayed unstored, and the same
    message offered again (anti-entropy) is stored once there is room."""
    ch = Channel(tmp_path)
    disk = FaultyDatabase(ch.store.store.db)
    ch.store.store.db = disk  # type: ignore[assignment]
    author = Identity.generate()
    wire = ch.wire(author, text="while full")
    disk.fault = StoreFull
    assert ch.deliver(wire) == 0  # not relayed
    assert ch.engine.stats["not_stored"] == 1 and ch.authors() == []
    disk.fault = None
    assert ch.deliver(wire) == 1 and ch.authors() == [author.public_key]


def test_a_flapping_disk_keeps_backing_off(caplog: pytest.LogCaptureFixture) -> None:
    """A probe that fits where a message does not: each relapse waits longer, so the
    log lines and reconnects it causes are bounded (at most two a MAX_RETRY)."""
    caplog.set_level(logging.WARNING, "btchat.storage.health")
    health = StorageHealth(first_retry=1.0, max_retry=60.0)
    now, waits = T0, []
    for _ in range(10):
        health.fault(StoreFull("full"), "receiving", now)
        assert health.retry_at is not None
        waits.append(health.retry_at - now)
        now = health.retry_at
        health.ok(now)  # the probe fitted
        now += 0.5  # and the next message did not
    assert waits == [1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 60.0, 60.0, 60.0, 60.0]
    assert health.stats["relapses"] == 9
    health.ok(now)
    health.fault(StoreFull("full"), "receiving", now + 3600)  # a new condition, much later
    assert health.retry_at == now + 3600 + 1.0


def test_the_probe_needs_room_for_a_message(tmp_path: Path) -> None:
    store = Store.open(tmp_path / "m.db", None)
    probe = probe_store(store)
    pages = store.db.query("PRAGMA page_count")[0][0]
    store.db.query(f"PRAGMA max_page_count = {pages}")
    store.kv_set("small", b"fits in a page already there")
    with pytest.raises(StoreFull):
        probe(T0)
    store.db.query(f"PRAGMA max_page_count = {pages + 100}")
    probe(T0 + 1)  # room again
    store.close()


def test_up_on_a_full_disk_says_so_in_one_line(
    small_fs: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Before: a traceback from the data-dir lock's pid write (ENOSPC)."""
    from btchat.cli.main import main

    home = ["--data-dir", str(small_fs / "me")]
    assert main(["init", "--no-passphrase", *home]) == 0
    _fill(small_fs)
    capsys.readouterr()
    code = main(["up", *home, "--host", "127.0.0.1", "--dht-port", "0", "--port", "0"])
    err = capsys.readouterr().err
    assert code == 1 and "disk full" in err and "Traceback" not in err, err
