"""The message store: idempotence, replay, ordering, search, states, outbox, encryption."""

from __future__ import annotations

import os
import random
import sqlite3
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

# Importing a package's store registers its migrations; the tests below expect its tables.
import btchat.channels.store
import btchat.offline.state  # noqa: F401
from btchat.identity.keys import DeviceKey, Identity
from btchat.messaging import envelope as E
from btchat.messaging import store as store_mod
from btchat.messaging.envelope import Envelope
from btchat.messaging.messages import MessageRow
from btchat.messaging.store import WRONG_KEY, Store, StoreError
from btchat.storage import database as db_mod
from btchat.transfer.manifest import Manifest

ALICE = Identity.from_seed(b"\x01" * 32)
BOB = Identity.from_seed(b"\x02" * 32)
CAROL = Identity.from_seed(b"\x03" * 32)
DEV = b"\xd0" * 16
NOW = 1_700_000_000.0
KEY = bytes(range(32))


def msg(
    frm: Identity = BOB,
    to: Identity = ALICE,
    text: str = "hi",
    lamport: int = 1,
    kind: bytes = b"text",
    body: dict[bytes, Any] | None = None,
    msg_id: bytes | None = None,
) -> Envelope:
    return E.create(
        frm,
        DEV,
        to.public_key,
        kind,
        E.text_body(text) if body is None else body,
        lamport=lamport,
        now=NOW,
        msg_id=msg_id,
    )


@pytest.fixture(params=["encrypted", "plaintext"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    s = Store.open(tmp_path / "messages.db", KEY if request.param == "encrypted" else None)
    yield s
    s.close()


@pytest.fixture
def plain(tmp_path: Path) -> Iterator[Store]:
    s = Store.open(tmp_path / "plain.db", None)
    yield s
    s.close()


def ids(rows: list[store_mod.MessageRow]) -> list[bytes]:
    return [r.id for r in rows]


def conn(s: Store) -> Any:
    return s.db._live()


def versions(s: Store) -> dict[str, int]:
    return dict(s.query("SELECT package, version FROM schema_versions"))


# --------------------------------------------------------------------------- opening


def test_plaintext_mode(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "plain.db"
    with Store.open(path, None) as s:
        s.kv_set("k", b"v")
        assert conn(s).execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert conn(s).execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL
        assert conn(s).execute("PRAGMA foreign_keys").fetchone()[0] == 1
        assert conn(s).execute("PRAGMA busy_timeout").fetchone()[0] > 0
    assert path.read_bytes()[:16] == b"SQLite format 3\x00"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    with sqlite3.connect(path) as raw:  # an ordinary SQLite file
        assert raw.execute("SELECT value FROM kv WHERE key = 'k'").fetchone() == (b"v",)
    raw.close()


def test_encrypted_mode(tmp_path: Path) -> None:
    path = tmp_path / "enc.db"
    with Store.open(path, KEY) as s:
        # A petname long enough that random ciphertext never spells it (b"bob" did, once).
        s.add_contact(BOB.public_key, "bob-the-petname", 1)
        s.save_incoming(msg(text="supersecretword"), NOW)
        assert conn(s).execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert conn(s).execute("PRAGMA synchronous").fetchone()[0] == 2
        # Before close: the WAL holds the new pages, encrypted too.
        for f in tmp_path.iterdir():
            data = f.read_bytes()
            assert b"supersecretword" not in data and b"bob-the-petname" not in data, f.name
    header = path.read_bytes()[:16]
    assert header != b"SQLite format 3\x00"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    with Store.open(path, KEY) as s:
        assert s.get_contact(BOB.public_key) is not None
        assert [r.text for r in s.search("supersecret")] == ["supersecretword"]


def test_wrong_key_fails_clearly(tmp_path: Path) -> None:
    path = tmp_path / "enc.db"
    Store.open(path, KEY).close()
    with pytest.raises(StoreError) as info:
        Store.open(path, bytes(32))
    assert str(info.value) == "cannot open the message database: wrong key or corrupt file"
    with pytest.raises(StoreError, match="encrypted and opened without its key"):
        Store.open(path, None)
    Store.open(path, KEY).close()  # the failed attempts changed nothing
    plain = tmp_path / "plain.db"
    Store.open(plain, None).close()
    with pytest.raises(StoreError, match="not encrypted but a key was given"):
        Store.open(plain, KEY)


def test_corrupt_file(tmp_path: Path) -> None:
    path = tmp_path / "junk.db"
    path.write_bytes(os.urandom(8192))
    with pytest.raises(StoreError, match=WRONG_KEY):
        Store.open(path, KEY)
    with pytest.raises(StoreError, match="not a readable SQLite file"):
        Store.open(path, None)


def test_bad_key_length(tmp_path: Path) -> None:
    with pytest.raises(StoreError, match="32 bytes"):
        Store.open(tmp_path / "x.db", b"short")


def test_closed_store(tmp_path: Path) -> None:
    s = Store.open(tmp_path / "x.db", None)
    s.close()
    s.close()  # idempotent
    with pytest.raises(StoreError, match="closed"):
        s.kv_get("k")


# --------------------------------------------------------------------------- migrations


def test_migrations_from_empty_and_reopen(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "m.db"
    with Store.open(path, KEY) as s:
        assert s.schema_version == db_mod.LAYOUT
        assert versions(s) == {p: len(steps) for p, steps in db_mod.registered_migrations().items()}
        tables = {r[0] for r in conn(s).execute("SELECT name FROM sqlite_master")}
        assert {
            "contacts",
            "messages",
            "messages_fts",
            "seen",
            "outbox",
            "contact_requests",
            "olm_sessions",
            "mailbox_out",
            "held",
            "kv",
            "clocks",
        } <= tables
        s.kv_set("kept", b"1")
    calls: list[int] = []

    def second(c: Any) -> None:
        calls.append(1)
        c.execute("ALTER TABLE kv ADD COLUMN note TEXT")

    monkeypatch.setitem(db_mod._REGISTRY, "messaging", (*store_mod.MIGRATIONS, second))
    for _ in range(2):  # applied once, then never again
        with Store.open(path, KEY) as s:
            assert versions(s)["messaging"] == len(store_mod.MIGRATIONS) + 1
            assert s.kv_get("kept") == b"1"
            conn(s).execute("SELECT note FROM kv").fetchall()
    assert calls == [1]


def test_failed_migration_rolls_back(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "m.db"
    Store.open(path, None).close()

    def broken(c: Any) -> None:
        c.execute("CREATE TABLE half_done (x)")
        raise RuntimeError("boom")

    monkeypatch.setitem(db_mod._REGISTRY, "messaging", (*store_mod.MIGRATIONS, broken))
    with pytest.raises(RuntimeError):
        Store.open(path, None)
    monkeypatch.undo()
    with Store.open(path, None) as s:
        assert versions(s)["messaging"] == len(store_mod.MIGRATIONS)
        assert (
            not conn(s).execute("SELECT 1 FROM sqlite_master WHERE name = 'half_done'").fetchall()
        )


@pytest.mark.parametrize(
    ("sql", "message"),
    [
        ("PRAGMA user_version = 99", "schema version 99, newer"),
        (
            "UPDATE schema_versions SET version = 99 WHERE package = 'messaging'",
            "messaging schema version 99, newer",
        ),
    ],
    ids=["layout", "package"],
)
def test_newer_schema_refused(tmp_path: Path, sql: str, message: str) -> None:
    path = tmp_path / "m.db"
    with Store.open(path, None) as s:
        conn(s).execute(sql)
    with pytest.raises(StoreError, match=message):
        Store.open(path, None)


# --------------------------------------------------------------------------- contacts


def test_contacts(store: Store) -> None:
    pk = BOB.public_key
    assert store.get_contact(pk) is None
    store.add_contact(pk, "bob", 123)
    with pytest.raises(StoreError, match="already"):
        store.add_contact(pk, "bob2", 124)
    store.add_contact(CAROL.public_key, "alice's friend", 5)
    row = store.get_contact(pk)
    assert row == store_mod.ContactRow(pk, "bob", 123, False, False, (), "offline", None)
    assert store.rename_contact(pk, "Bobby")
    assert store.set_verified(pk, True) and store.set_blocked(pk, True)
    assert store.set_presence(pk, "away", 999)
    row = store.get_contact(pk)
    assert row is not None
    assert (row.name, row.verified, row.blocked, row.presence, row.last_seen_ms) == (
        "Bobby",
        True,
        True,
        "away",
        999,
    )
    assert [c.name for c in store.list_contacts()] == ["Bobby", "alice's friend"]
    with pytest.raises(StoreError):
        store.set_presence(pk, "invisible", 1)
    assert not store.rename_contact(ALICE.public_key, "nobody")  # unknown: no change
    assert not store.set_presence(ALICE.public_key, "online", 1)
    assert store.remove_contact(pk) and store.get_contact(pk) is None
    assert not store.remove_contact(pk)


def test_certs(store: Store) -> None:
    pk = BOB.public_key
    store.add_contact(pk, "bob", 1)
    certs = [BOB.certify(DeviceKey.generate(), 100), BOB.certify(DeviceKey.generate(), 200)]
    assert store.set_certs(pk, certs)
    row = store.get_contact(pk)
    assert row is not None and row.certs == tuple(certs)
    with pytest.raises(StoreError):  # Carol's device is not Bob's
        store.set_certs(pk, [CAROL.certify(DeviceKey.generate(), 1)])
    forged = certs[0].with_signature(bytes(64))
    with pytest.raises(StoreError):
        store.set_certs(pk, [forged])
    with pytest.raises(StoreError):
        store.set_certs(pk, [certs[0]] * (store_mod.MAX_CERTS + 1))
    assert store.set_certs(pk, [])
    row = store.get_contact(pk)
    assert row is not None and row.certs == ()


def test_tampered_cert_column_is_dropped(plain: Store) -> None:
    pk = BOB.public_key
    plain.add_contact(pk, "bob", 1)
    good = BOB.certify(DeviceKey.generate(), 1)
    plain.set_certs(pk, [good])
    blob = conn(plain).execute("SELECT certs FROM contacts").fetchone()[0]
    conn(plain).execute("UPDATE contacts SET certs = ?", (blob[:-5] + b"xxxxx",))
    row = plain.get_contact(pk)
    assert row is not None and row.certs == ()


# --------------------------------------------------------------------------- messages


def test_save_incoming_is_idempotent(store: Store) -> None:
    env = msg(text="once")
    assert not store.seen_before(env.id)
    assert store.save_incoming(env, NOW) is True
    assert store.save_incoming(env, NOW + 1) is False
    assert store.save_incoming(E.parse_envelope(E.encode_envelope(env)), NOW + 2) is False
    assert store.seen_before(env.id)
    rows = store.history(BOB.public_key)
    assert len(rows) == 1
    r = rows[0]
    assert (r.id, r.peer, r.sender, r.direction, r.text, r.state, r.type, r.lamport) == (
        env.id,
        BOB.public_key,
        BOB.public_key,
        "in",
        "once",
        "delivered",
        "text",
        1,
    )
    assert r.ts_ms == env.ts_ms and r.received_ms == int(NOW * 1000)
    assert store.get_message(env.id) == r
    assert len(store.search("once")) == 1


def test_replay_refused_after_pruning(store: Store) -> None:
    env = msg()
    assert store.save_incoming(env, NOW)
    assert store.prune_seen(int(NOW * 1000) + 1) == 1
    assert store.save_incoming(env, NOW + 10) is False  # the stored row still has the id
    assert store.seen_before(env.id)
    assert len(store.history(BOB.public_key)) == 1


def test_replay_of_a_resend_with_new_content_refused(store: Store) -> None:
    first = msg(text="original", msg_id=b"\x07" * 16)
    again = msg(text="changed", msg_id=b"\x07" * 16, lamport=2)
    assert store.save_incoming(first, NOW)
    assert not store.save_incoming(again, NOW)
    assert [r.text for r in store.history(BOB.public_key)] == ["original"]


def test_peer_cannot_overwrite_our_message_by_reusing_its_id(store: Store) -> None:
    mine = msg(frm=ALICE, to=BOB, text="mine")
    store.save_outgoing(mine, NOW)
    echo = msg(frm=BOB, to=ALICE, text="theirs", msg_id=mine.id)
    assert store.save_incoming(echo, NOW) is False
    row = store.get_message(mine.id)
    assert row is not None and row.direction == "out" and row.text == "mine"
    assert store.pending_outbox(BOB.public_key) == [E.encode_envelope(mine)]


def test_save_outgoing_duplicate_refused(store: Store) -> None:
    env = msg(frm=ALICE, to=BOB)
    store.save_outgoing(env, NOW)
    with pytest.raises(StoreError):
        store.save_outgoing(env, NOW)
    assert len(store.history(BOB.public_key)) == 1
    assert len(store.pending_outbox(BOB.public_key)) == 1


def test_non_text_messages_have_no_text(store: Store) -> None:
    env = msg(kind=b"reaction", body={b"e": b"+1"})
    assert store.save_incoming(env, NOW)
    row = store.get_message(env.id)
    assert row is not None and row.type == "reaction" and row.text is None


def test_to_json(store: Store) -> None:
    env = msg(text="json")
    store.save_incoming(env, NOW)
    row = store.get_message(env.id)
    assert row is not None
    assert row.to_json() == {
        "id": env.id.hex(),
        "peer": BOB.public_key.hex(),
        "sender": BOB.public_key.hex(),
        "direction": "in",
        "text": "json",
        "state": "delivered",
        "ts": env.ts_ms,
        "lamport": 1,
        "type": "text",
    }


def conversation(seed: int) -> list[Envelope]:
    """Alice and Bob talking, with concurrent messages (equal Lamport values)."""
    rng = random.Random(seed)
    out = []
    for lamport in range(1, 30):
        for who in rng.sample([(ALICE, BOB), (BOB, ALICE)], rng.randint(1, 2)):
            out.append(msg(frm=who[0], to=who[1], text=f"m{lamport}", lamport=lamport))
    return out


def test_same_order_whatever_the_arrival_order(tmp_path: Path) -> None:
    envs = conversation(1)
    views = []
    for n in range(3):
        order = envs[:]
        random.Random(n).shuffle(order)
        with Store.open(tmp_path / f"alice{n}.db", None) as s:
            for env in order:
                if env.sender == ALICE.public_key:
                    s.save_outgoing(env, NOW)
                else:
                    s.save_incoming(env, NOW)
            views.append(ids(s.history(BOB.public_key, limit=1000)))
    order = envs[:]
    random.Random(99).shuffle(order)
    with Store.open(tmp_path / "bob.db", None) as s:  # Bob's side of the same conversation
        for env in order:
            if env.sender == BOB.public_key:
                s.save_outgoing(env, NOW)
            else:
                s.save_incoming(env, NOW)
        views.append(ids(s.history(ALICE.public_key, limit=1000)))
    assert all(v == views[0] for v in views)
    assert len(views[0]) == len(envs)
    expected = sorted(envs, key=lambda e: (e.lamport, e.sender, e.id))
    assert views[0] == [e.id for e in expected]


def test_history_pages(store: Store) -> None:
    envs = [msg(text=f"m{i}", lamport=i) for i in range(1, 11)]
    for env in reversed(envs):
        store.save_incoming(env, NOW)
    store.save_incoming(msg(frm=CAROL, text="other conversation", lamport=5), NOW)
    peer = BOB.public_key
    assert ids(store.history(peer)) == [e.id for e in envs]
    assert ids(store.history(peer, limit=3)) == [e.id for e in envs[-3:]]
    assert ids(store.history(peer, limit=3, before_lamport=8)) == [e.id for e in envs[4:7]]
    assert ids(store.history(peer, limit=50, before_lamport=3)) == [e.id for e in envs[:2]]
    assert store.history(peer, limit=50, before_lamport=1) == []
    assert store.history(peer, limit=0) == []
    assert store.history(peer, limit=-5) == []
    assert len(store.history(peer, limit=10**9)) == 10
    assert len(store.history(peer, before_lamport=2**80)) == 10
    assert store.history(ALICE.public_key) == []


# --------------------------------------------------------------------------- search

HOSTILE = [
    '"',
    '""',
    "'",
    "''",
    "*",
    "**",
    "a*",
    "*a",
    "NEAR",
    "NEAR(a b)",
    "NEAR(a b, 2)",
    "OR",
    "AND",
    "NOT",
    "a OR b",
    "a AND NOT b",
    "(",
    ")",
    "(a",
    "a)",
    "((()))",
    "^a",
    "text:a",
    "messages_fts:x",
    "{text}: a",
    "-a",
    "+a",
    "a:",
    ":",
    "\\",
    "\x00",
    "\x00a",
    "'; DROP TABLE messages; --",
    '" OR 1=1 --',
    'a" OR "b',
    "%",
    "_",
    "\ud800",
    "🙂",
    "ﷺ",
    "e\u0301",
    "ß",
    "İ",
    "\u200b",
    "a" * 10000,
    "a " * 1000,
    "   ",
    "",
]


@pytest.mark.parametrize("query", HOSTILE)
def test_hostile_search_strings(plain: Store, query: str) -> None:
    plain.save_incoming(msg(text="a OR b (c) NEAR* \"quoted\" 'single' text:colon"), NOW)
    plain.search(query)
    plain.search(query, peer=BOB.public_key, limit=3)
    assert plain.history(BOB.public_key)  # the table is still there
    conn(plain).execute("INSERT INTO messages_fts (messages_fts) VALUES ('integrity-check')")


def test_search_treats_operators_as_words(store: Store) -> None:
    a = msg(text="meet me NEAR the (old) mill OR the barn", lamport=1)
    b = msg(text="near miss", lamport=2)
    c = msg(text='she said "hi" * 3', lamport=3)
    for env in (a, b, c):
        store.save_incoming(env, NOW)

    def found(q: str) -> set[bytes]:
        return {r.id for r in store.search(q)}

    assert found("near") == {a.id, b.id}
    assert found("NEAR mill") == {a.id}
    assert found("mill OR pizza") == set()  # every word must match: OR is a word here
    assert found("(old)") == {a.id}
    assert found('"hi"') == {c.id}
    assert found('she "said') == {c.id}
    assert found("*") == set()
    assert found("m") == {a.id, b.id}  # the last word is a prefix: me, mill, miss
    assert found("mis") == {b.id}
    assert found("said h") == {c.id}
    assert found("said b") == set()
    assert found("me mi") == {a.id}


def test_search_unicode_peer_and_order(store: Store) -> None:
    old = msg(text="Café crème", lamport=1)
    new = E.create(
        BOB, DEV, ALICE.public_key, b"text", E.text_body("cafe au lait"), lamport=2, now=NOW + 5
    )
    other = msg(frm=CAROL, text="CAFÉ with carol", lamport=1)
    mine = msg(frm=ALICE, to=BOB, text="café? sure", lamport=3)
    for env in (old, new, other):
        store.save_incoming(env, NOW)
    store.save_outgoing(mine, NOW)
    found = ids(store.search("café"))  # newest first: ts, then lamport, then id
    assert found[:2] == [new.id, mine.id] and set(found[2:]) == {old.id, other.id}
    assert set(ids(store.search("CAFE", peer=BOB.public_key))) == {old.id, new.id, mine.id}
    assert ids(store.search("cafe", peer=CAROL.public_key)) == [other.id]
    assert ids(store.search("crème")) == [old.id]
    assert store.search("café", limit=0) == []
    assert ids(store.search("café", limit=2)) == [new.id, mine.id]


def test_fts_index_stays_in_sync(plain: Store) -> None:
    envs = [msg(text=f"word{i} common", lamport=i) for i in range(20)]
    for env in envs:
        plain.save_incoming(env, NOW)
    c = conn(plain)
    c.execute("INSERT INTO messages_fts (messages_fts) VALUES ('integrity-check')")
    c.execute("UPDATE messages SET text = 'replaced' WHERE id = ?", (envs[0].id,))
    c.execute("DELETE FROM messages WHERE id = ?", (envs[1].id,))
    c.execute("INSERT INTO messages_fts (messages_fts) VALUES ('integrity-check')")
    assert len(plain.search("common", limit=100)) == 18
    assert ids(plain.search("replaced")) == [envs[0].id]


# --------------------------------------------------------------------------- states


def test_states_are_monotonic(store: Store) -> None:
    env = msg(frm=ALICE, to=BOB)
    store.save_outgoing(env, NOW)

    def state() -> str:
        row = store.get_message(env.id)
        assert row is not None
        return row.state

    assert state() == "pending"
    assert store.mark_state([env.id], "sent") == 1 and state() == "sent"
    assert store.mark_state([env.id], "pending") == 0 and state() == "sent"
    assert store.mark_state([env.id], "read") == 1 and state() == "read"
    for s in ("delivered", "sent", "pending", "failed"):
        assert store.mark_state([env.id], s) == 0
        assert state() == "read"
    with pytest.raises(StoreError):
        store.mark_state([env.id], "bogus")


def test_failed_only_from_pending_or_sent(store: Store) -> None:
    a, b, c = (msg(frm=ALICE, to=BOB, lamport=i) for i in (1, 2, 3))
    for env in (a, b, c):
        store.save_outgoing(env, NOW)
    store.mark_state([b.id], "sent")
    store.mark_state([c.id], "delivered")
    assert store.mark_state([a.id, b.id, c.id], "failed") == 2
    assert [r.state for r in store.history(BOB.public_key)] == ["failed", "failed", "delivered"]
    assert store.mark_state([a.id], "pending") == 0  # failed never goes back to pending
    assert store.mark_state([a.id], "delivered") == 1  # a late receipt still counts
    assert store.mark_state([b.id], "sent") == 1  # a retry went out
    assert store.mark_state([a.id, b.id, b"\x00" * 16], "read") == 2
    assert store.mark_state([], "read") == 0


def test_many_ids(store: Store) -> None:
    envs = [msg(frm=ALICE, to=BOB, lamport=i) for i in range(1200)]
    for env in envs:
        store.save_outgoing(env, NOW)
    all_ids = [e.id for e in envs]
    assert store.mark_state(all_ids + all_ids[:10], "sent") == 1200
    assert store.ack_outbox(all_ids) == 1200
    assert store.pending_outbox(BOB.public_key) == []


# --------------------------------------------------------------------------- outbox


def test_outbox_lifecycle(store: Store, tmp_path: Path) -> None:
    to_bob = [msg(frm=ALICE, to=BOB, text=f"b{i}", lamport=i) for i in (3, 1, 2)]
    to_carol = msg(frm=ALICE, to=CAROL, text="c", lamport=1)
    for env in (*to_bob, to_carol):
        store.save_outgoing(env, NOW)
        row = store.get_message(env.id)
        assert row is not None and row.state == "pending" and row.direction == "out"
    queued = store.pending_outbox(BOB.public_key)
    assert [E.parse_envelope(b).lamport for b in queued] == [1, 2, 3]
    assert set(queued) == {E.encode_envelope(e) for e in to_bob}
    for blob in queued:  # byte for byte what was signed
        E.verify_envelope(
            E.parse_envelope(blob),
            expected_sender=ALICE.public_key,
            expected_recipient=BOB.public_key,
            now=NOW,
        )
    assert store.pending_outbox(CAROL.public_key) == [E.encode_envelope(to_carol)]
    store.mark_state([e.id for e in to_bob], "sent")
    assert len(store.pending_outbox(BOB.public_key)) == 3  # sent is not acknowledged
    assert store.ack_outbox([to_bob[1].id]) == 1
    assert [E.parse_envelope(b).lamport for b in store.pending_outbox(BOB.public_key)] == [2, 3]
    assert store.ack_outbox([to_bob[1].id]) == 0
    store.ack_outbox([e.id for e in to_bob])
    assert store.pending_outbox(BOB.public_key) == []
    assert len(store.pending_outbox(CAROL.public_key)) == 1
    assert len(store.history(BOB.public_key)) == 3  # history is kept


def test_replace_outbox_with_a_resigned_copy(store: Store) -> None:
    old = msg(frm=ALICE, to=BOB, text="queued for weeks")
    store.save_outgoing(old, NOW)
    later = NOW + 30 * 86400
    fresh = E.resign(ALICE, old, now=later)
    assert (fresh.id, fresh.lamport, fresh.body) == (old.id, old.lamport, old.body)
    assert fresh.ts_ms > old.ts_ms and fresh.signature != old.signature
    assert store.replace_outbox(fresh)
    (blob,) = store.pending_outbox(BOB.public_key)
    E.verify_envelope(
        E.parse_envelope(blob),
        expected_sender=ALICE.public_key,
        expected_recipient=BOB.public_key,
        now=later,
    )
    with pytest.raises(StoreError):  # a different conversation position is a new message
        store.replace_outbox(
            E.create(
                ALICE,
                DEV,
                BOB.public_key,
                b"text",
                E.text_body("x"),
                lamport=99,
                now=later,
                msg_id=old.id,
            )
        )
    with pytest.raises(E.EnvelopeError):
        E.resign(BOB, old, now=later)
    store.ack_outbox([old.id])
    assert not store.replace_outbox(fresh)


def test_unopenable_path(tmp_path: Path) -> None:
    (tmp_path / "dir.db").mkdir()
    for key in [KEY, None]:
        with pytest.raises(StoreError, match="cannot open the message database: unable"):
            Store.open(tmp_path / "dir.db", key)


def test_outbox_survives_reopen(tmp_path: Path) -> None:
    path = tmp_path / "o.db"
    env = msg(frm=ALICE, to=BOB)
    with Store.open(path, KEY) as s:
        s.save_outgoing(env, NOW)
    with Store.open(path, KEY) as s:
        assert s.pending_outbox(BOB.public_key) == [E.encode_envelope(env)]


# --------------------------------------------------------------------------- clocks, kv


def test_next_lamport(tmp_path: Path) -> None:
    path = tmp_path / "c.db"
    with Store.open(path, None) as s:
        assert s.next_lamport(BOB.public_key, None) == 1
        assert s.next_lamport(BOB.public_key, None) == 2
        assert s.next_lamport(BOB.public_key, 10) == 11  # advanced past what we saw
        assert s.next_lamport(BOB.public_key, 3) == 12
        assert s.next_lamport(CAROL.public_key, None) == 1  # per conversation
    with Store.open(path, None) as s:
        assert s.next_lamport(BOB.public_key, None) == 13  # persisted
        assert s.next_lamport(BOB.public_key, 2**70) == E.MAX_INT  # clamped, no overflow
        assert s.next_lamport(BOB.public_key, None) == E.MAX_INT
        assert s.next_lamport(CAROL.public_key, -5) == 2


def test_kv(store: Store) -> None:
    assert store.kv_get("x") is None
    store.kv_set("x", b"1")
    store.kv_set("x", b"\x00\xff")
    assert store.kv_get("x") == b"\x00\xff"
    store.kv_set("y", b"")
    assert store.kv_get("y") == b""
    assert store.kv_delete("x") and store.kv_get("x") is None


# --------------------------------------------------------------------------- requests


def test_requests(store: Store) -> None:
    rid = b"\x05" * 16
    assert store.add_request(rid, BOB.public_key, "in", "hi, it's bob", 10, name="bob")
    assert not store.add_request(rid, BOB.public_key, "in", "again", 11)
    assert store.add_request(b"\x06" * 16, CAROL.public_key, "out", None, 20)
    rows = store.list_requests()
    assert [r.id for r in rows] == [rid, b"\x06" * 16]
    assert rows[0].to_json() == {
        "id": rid.hex(),
        "public_key": BOB.public_key.hex(),
        "direction": "in",
        "name": "bob",
        "note": "hi, it's bob",
        "state": "pending",
        "created": 10,
        "updated": 10,
    }
    assert store.set_request_state(rid, "accepted", 30)
    assert not store.set_request_state(rid, "declined", 31)  # answers are final
    row = store.get_request(rid)
    assert row is not None and row.state == "accepted" and row.updated_ms == 30
    with pytest.raises(StoreError):
        store.set_request_state(rid, "maybe")
    with pytest.raises(StoreError):
        store.add_request(rid, BOB.public_key, "sideways", None, 1)
    assert store.get_request(b"\x00" * 16) is None


def test_a_row_built_from_the_envelope_is_the_stored_one(store: Store) -> None:
    """The shell reports a stored message without reading it back: the same JSON."""
    mine, theirs = msg(frm=ALICE, to=BOB, text="out", lamport=3), msg(text="in", lamport=4)
    offer = Manifest("a b.png", 5, "image/png", 16384, b"\x01" * 32).body()
    file = msg(kind=E.FILE, body=offer, lamport=5)  # shown by its name and size
    store.save_outgoing(mine, NOW, sent=True)
    store.save_incoming(theirs, NOW + 1)
    store.save_incoming(file, NOW + 2)
    rows = ((mine, "out", "sent"), (theirs, "in", "delivered"), (file, "in", "delivered"))
    for env, direction, state in rows:
        stored = store.get_message(env.id)
        assert stored is not None
        assert MessageRow.of(env, direction, state, 0).to_json() == stored.to_json()


def test_message_ids_filters_by_conversation_and_direction(store: Store) -> None:
    mine, theirs, carols = msg(frm=ALICE, to=BOB), msg(), msg(frm=CAROL)
    store.save_outgoing(mine, NOW)
    store.save_incoming(theirs, NOW)
    store.save_incoming(carols, NOW)
    ids = [mine.id, theirs.id, carols.id, b"\x00" * 16]
    assert store.message_ids(ids, BOB.public_key, "out") == {mine.id}
    assert store.message_ids(ids, BOB.public_key, "in") == {theirs.id}
    many = [bytes([i % 256, i // 256]) * 8 for i in range(1200)] + [carols.id]  # 3 chunks
    assert store.message_ids(many, CAROL.public_key, "in") == {carols.id}
