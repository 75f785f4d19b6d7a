"""The one database module: a file written by older btchat opens with its data, and the
per-package migration registry applies each package's steps once, in order."""

from __future__ import annotations

import contextlib
import gzip
from pathlib import Path
from typing import Any

import pytest

from btchat.channels.store import MIGRATIONS as CHANNEL_MIGRATIONS
from btchat.channels.store import ChannelStore
from btchat.identity.keys import Identity
from btchat.messaging import envelope as E
from btchat.messaging.schema import MIGRATIONS as MESSAGING_MIGRATIONS
from btchat.messaging.store import Store, StoreError
from btchat.node import channel_sync, contact_sync, device_lists, own_sync
from btchat.node.devices import MIGRATIONS as DEVICE_MIGRATIONS
from btchat.offline.state import MailboxState
from btchat.storage import Database, register_migrations
from btchat.storage import database as db_mod

FIXTURE = Path(__file__).parent / "fixtures" / "store_42b1104.db.gz"
ALICE = Identity.from_seed(b"\x01" * 32)
BOB = Identity.from_seed(b"\x02" * 32)


def old_db(tmp_path: Path) -> Path:
    """The database ``tests/fixtures/make_store_42b1104.py`` wrote with the code of 42b1104."""
    path = tmp_path / "messages.db"
    path.write_bytes(gzip.decompress(FIXTURE.read_bytes()))
    return path


def test_database_from_42b1104_opens_with_its_data(tmp_path: Path) -> None:
    path = old_db(tmp_path)
    raw = Database.open(path, None, migrate=False)
    assert raw.schema_version == 3  # the pre-registry global sequence
    raw.close()
    with Store.open(path, None) as s:
        assert s.schema_version == db_mod.LAYOUT
        assert dict(s.query("SELECT package, version FROM schema_versions")) == {
            "messaging": len(MESSAGING_MIGRATIONS),  # 1 adopted, deferred FTS applied
            "offline": 1,
            "channels": len(CHANNEL_MIGRATIONS),  # 1 adopted, later steps applied
            "devices": len(DEVICE_MIGRATIONS),  # newer than the file: created
            "device_lists": len(device_lists.MIGRATIONS),
            "own_sync": len(own_sync.MIGRATIONS),
            "contact_sync": len(contact_sync.MIGRATIONS),
            "channel_sync": len(channel_sync.MIGRATIONS),
        }
        bob = s.get_contact(BOB.public_key)
        assert bob is not None and bob.name == "bob"
        texts = [m.text for m in s.history(BOB.public_key)]
        texts += [m.text for m in s.history(ALICE.public_key)]
        assert sorted(t or "" for t in texts) == ["hello bob", "hi alice"]
        assert [m.text for m in s.search("hello")] == ["hello bob"]
        assert len(s.pending_outbox(BOB.public_key)) == 1
        assert s.kv_get("profile.name") == b"alice"
        assert [r.note for r in s.list_requests()] == ["hello?"]
        assert MailboxState(s).peer(BOB.public_key).next_out == 7
        assert [c.id for c in ChannelStore(s).channels()] == [b"\xcc" * 32]
        assert s.integrity_check() == ["ok"]
        # Its rows were indexed by the old trigger; new ones are indexed deferred.
        triggers = {r[0] for r in s.query("SELECT name FROM sqlite_master WHERE type = 'trigger'")}
        assert "messages_fts_insert" not in triggers and "messages_fts_pending" in triggers
        assert s.pending_index() == 0
        body = E.text_body("hello again")
        new = E.create(BOB, b"\xd0" * 16, ALICE.public_key, E.TEXT, body, lamport=3, now=1.7e9)
        assert s.save_incoming(new, 1.7e9)
        assert s.pending_index() == 1
        assert sorted(m.text or "" for m in s.search("hello")) == ["hello again", "hello bob"]
        s.db.write("DELETE FROM messages WHERE text = 'hello bob'")  # indexed by the old code
        assert [m.text for m in s.search("hello")] == ["hello again"]
        s.db._live().execute("INSERT INTO messages_fts (messages_fts) VALUES ('integrity-check')")
    with Store.open(path, None) as s:  # adopted once; a second open changes nothing
        assert s.get_contact(BOB.public_key) is not None


@pytest.mark.parametrize("legacy", [1, 2])
def test_partly_migrated_legacy_file_gets_the_rest(tmp_path: Path, legacy: int) -> None:
    """A file at ``user_version`` 1 or 2 had only the first steps; the rest run now."""
    path = tmp_path / "m.db"
    with Store.open(path, None) as s:
        conn = s.db._live()
        if legacy < 3:
            conn.execute("DROP TABLE channel_messages")
            conn.execute("DROP TABLE channel_grants")
            conn.execute("DROP TABLE channel_keys")
            conn.execute("DROP TABLE channels")
        if legacy < 2:
            for table in ("olm_sessions", "mailbox_out", "mailbox_in", "held", "mailbox_peers"):
                conn.execute(f"DROP TABLE {table}")
        newer = ("own_devices", "device_lists", "own_sync", "contact_changes", "channel_changes")
        for table in newer:
            conn.execute(f"DROP TABLE {table}")  # newer than every legacy file
        conn.execute("DROP TABLE schema_versions")
        conn.execute(f"PRAGMA user_version = {legacy}")
        s.kv_set("kept", b"yes")
    with Store.open(path, None) as s:
        ChannelStore(s)
        MailboxState(s)
        assert s.kv_get("kept") == b"yes"
        tables = {r[0] for r in s.query("SELECT name FROM sqlite_master")}
        assert {"channels", "channel_messages", "mailbox_peers", "held"} <= tables


def test_package_registered_after_open_migrates_on_attach(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(db_mod, "_REGISTRY", dict(db_mod._REGISTRY))
    path = tmp_path / "m.db"
    calls: list[str] = []

    def step(conn: Any) -> None:
        calls.append("late")
        conn.execute("CREATE TABLE late_table (x)")

    with Store.open(path, None) as s:
        register_migrations("late", [step])
        s.migrate()
        s.migrate()
        assert s.query("SELECT count(*) FROM late_table") == [(0,)]
    with Store.open(path, None):
        pass
    assert calls == ["late"]


def test_registry_refuses_an_empty_package() -> None:
    with pytest.raises(ValueError):
        register_migrations("nothing", [])


def test_a_file_that_is_not_sqlite_is_reported_as_such(tmp_path: Path) -> None:
    path = old_db(tmp_path)
    data = bytearray(path.read_bytes())
    data[:16] = b"not a database!!"
    path.write_bytes(bytes(data))
    with pytest.raises(StoreError, match="not a readable SQLite file"):
        Store.open(path, None)


# ------------------------------------------------------------------ group commit


def _count(db: Database) -> int:
    return int(db.query("SELECT count(*) FROM t")[0][0])


def _table(tmp_path: Path) -> tuple[Database, Database]:
    """A database with one table, and a second connection to see what is committed."""
    db = Database.open(tmp_path / "g.db", None, migrate=False)
    db.write("CREATE TABLE t (x INTEGER PRIMARY KEY)")
    return db, Database.open(tmp_path / "g.db", None, migrate=False)


def test_nested_transactions_commit_once_with_the_outer_one(tmp_path: Path) -> None:
    db, other = _table(tmp_path)
    with db.transaction():
        assert db.in_transaction
        for i in range(3):
            with db.transaction() as conn:  # joins the open one as a savepoint
                conn.execute("INSERT INTO t (x) VALUES (?)", (i,))
        assert _count(db) == 3  # our own writes are visible to us...
        assert _count(other) == 0  # ...but not committed until the outer block ends
    assert not db.in_transaction
    assert _count(other) == 3


def test_a_failed_nested_transaction_dooms_the_outer_one(tmp_path: Path) -> None:
    db, other = _table(tmp_path)
    with pytest.raises(StoreError, match="inside this transaction failed"), db.transaction():
        with db.transaction() as conn:
            conn.execute("INSERT INTO t (x) VALUES (1)")
        with contextlib.suppress(StoreError), db.transaction() as inner:
            inner.execute("INSERT INTO t (x) VALUES (1)")  # a constraint violation, caught
        with db.transaction() as inner:
            inner.execute("INSERT INTO t (x) VALUES (3)")
    assert _count(other) == 0  # all of it or none: none
    with db.transaction() as conn:  # the next transaction starts clean
        conn.execute("INSERT INTO t (x) VALUES (4)")
    assert _count(other) == 1


def test_a_failed_outer_transaction_undoes_its_nested_ones(tmp_path: Path) -> None:
    db, other = _table(tmp_path)
    with pytest.raises(RuntimeError), db.transaction():
        with db.transaction() as inner:
            inner.execute("INSERT INTO t (x) VALUES (1)")
        raise RuntimeError("the batch failed")
    assert _count(other) == 0
    assert not db.in_transaction
    with db.transaction() as conn:  # and the connection is usable again
        conn.execute("INSERT INTO t (x) VALUES (9)")
    assert _count(other) == 1
