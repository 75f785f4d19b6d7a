"""Deferred full-text indexing: stored rows are pending until indexed, search is exact
(it indexes what is pending first), deletes and edits stay correct whether a row was
indexed yet or not, rows left pending by a crash are indexed after the next start, and
the node's idle-time indexer (node/chat.py) runs only when no batch is in flight and
survives a full disk."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from btchat.identity.keys import Identity
from btchat.messaging import envelope as E
from btchat.messaging.conversation import Conversations
from btchat.messaging.store import Store
from btchat.node import chat as chat_mod
from btchat.node.chat import Chat
from btchat.storage import StoreError
from btchat.storage.database import StoreFull

ALICE = Identity.from_seed(b"\x01" * 32)
BOB = Identity.from_seed(b"\x02" * 32)
DEV = b"\xd0" * 16
NOW = time.time()
KEY = bytes(range(32))


def msg(text: str, lamport: int = 1) -> E.Envelope:
    return E.create(BOB, DEV, ALICE.public_key, E.TEXT, E.text_body(text), lamport=lamport, now=NOW)


@pytest.fixture(params=["encrypted", "plaintext"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    s = Store.open(tmp_path / "messages.db", KEY if request.param == "encrypted" else None)
    yield s
    s.close()


def texts(rows: list[Any]) -> list[str]:
    return sorted(r.text for r in rows)


def index_in_sync(s: Store) -> None:
    """FTS5's full check (rank 1): the index holds exactly the content table's rows.
    Only true once nothing is pending; raises on a stale or missing entry."""
    assert s.index_all() >= 0 and s.pending_index() == 0
    s.db._live().execute(
        "INSERT INTO messages_fts (messages_fts, rank) VALUES ('integrity-check', 1)"
    )


def in_index(s: Store, word: str) -> int:
    """Index entries for ``word`` (without indexing what is pending first)."""
    q = "SELECT count(*) FROM messages_fts WHERE messages_fts MATCH ?"
    return int(s.query(q, (word,))[0][0])


def test_storing_marks_pending_and_does_not_index(store: Store) -> None:
    env = msg("alpha beta")
    store.save_incoming(env, NOW)
    store.save_outgoing(
        E.create(ALICE, DEV, BOB.public_key, E.TEXT, E.text_body("alpha out"), lamport=2, now=NOW),
        NOW,
    )
    assert store.pending_index() == 2
    assert in_index(store, "alpha") == 0
    # A replay stores nothing and marks nothing.
    assert not store.save_incoming(env, NOW)
    assert store.pending_index() == 2


def test_search_finds_a_message_stored_a_moment_ago(store: Store) -> None:
    store.save_incoming(msg("fresh words", 1), NOW)
    assert texts(store.search("fresh")) == ["fresh words"]
    assert store.pending_index() == 0
    store.save_incoming(msg("fresher still", 2), NOW)  # right after the last search
    assert texts(store.search("fresh")) == ["fresh words", "fresher still"]
    index_in_sync(store)


def test_search_indexes_a_backlog_larger_than_a_batch(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    from btchat.messaging import messages

    monkeypatch.setattr(messages, "INDEX_BATCH", 7)
    with store.db.transaction():
        for i in range(30):
            store.save_incoming(msg(f"backlog {i}", i), NOW)
    assert store.pending_index() == 30
    assert len(store.search("backlog", limit=100)) == 30
    assert store.pending_index() == 0


def test_index_pending_is_bounded_and_oldest_first(store: Store) -> None:
    envs = [msg(f"row{i} common", i) for i in range(25)]
    for env in envs:
        store.save_incoming(env, NOW)
    assert store.index_pending(0) == 0
    assert store.index_pending(10) == 10
    assert store.pending_index() == 15
    assert in_index(store, "row0") == 1 and in_index(store, "row9") == 1
    assert in_index(store, "row10") == 0
    assert store.index_pending(10) == 10
    assert store.index_pending(10) == 5  # fewer than asked: none left
    assert store.index_pending(10) == 0
    index_in_sync(store)


def _delete(s: Store, text: str) -> None:
    s.db.write("DELETE FROM messages WHERE text = ?", (text,))


def _edit(s: Store, old: str, new: str | None) -> None:
    s.db.write("UPDATE messages SET text = ? WHERE text = ?", (new, old))


def test_deleted_rows_are_not_found_indexed_or_not(store: Store) -> None:
    store.save_incoming(msg("gone indexed", 1), NOW)
    store.index_all()
    store.save_incoming(msg("gone pending", 2), NOW)
    store.save_incoming(msg("gone kept", 3), NOW)
    _delete(store, "gone indexed")
    _delete(store, "gone pending")
    assert store.pending_index() == 1  # only "gone kept"
    assert texts(store.search("gone")) == ["gone kept"]
    index_in_sync(store)


def test_edited_rows_are_found_by_their_new_text_only(store: Store) -> None:
    store.save_incoming(msg("before one", 1), NOW)
    store.save_incoming(msg("before two", 2), NOW)
    store.index_all()
    store.save_incoming(msg("before three", 3), NOW)  # pending
    store.save_incoming(msg("before four", 4), NOW)  # pending
    _edit(store, "before one", "after one")  # indexed -> pending again with the new text
    _edit(store, "before three", "after three")  # pending: stays pending, new text
    _edit(store, "before two", None)  # indexed -> out of the index
    _edit(store, "before four", None)  # pending -> no longer pending
    assert in_index(store, "before") == 0  # the edited indexed ones left the index
    assert store.pending_index() == 2
    assert texts(store.search("before")) == []
    assert texts(store.search("after")) == ["after one", "after three"]
    # (FTS5's full check counts a row whose text is NULL as missing from the index, as
    # it did with the old triggers: take those two out before it.)
    store.db.write("DELETE FROM messages WHERE text IS NULL")
    index_in_sync(store)
    _edit(store, "after one", "after one")  # same text: re-indexed, still one entry
    assert texts(store.search("after")) == ["after one", "after three"]
    index_in_sync(store)


def test_a_rolled_back_batch_leaves_nothing_pending(store: Store) -> None:
    with pytest.raises(RuntimeError), store.db.transaction():
        store.save_incoming(msg("never stored", 1), NOW)
        raise RuntimeError("the batch fails")
    assert store.pending_index() == 0
    assert store.search("never") == []


def test_rows_pending_at_open_are_indexed_and_found(tmp_path: Path) -> None:
    """What a crash leaves: rows committed (acknowledged) but not yet indexed."""
    path = tmp_path / "m.db"
    with Store.open(path, KEY) as s:
        for i in range(5):
            s.save_incoming(msg(f"survivor {i}", i), NOW)
        s.index_pending(2)
    with Store.open(path, KEY) as s:
        assert s.pending_index() == 3
        assert len(s.search("survivor")) == 5
        index_in_sync(s)


# --------------------------------------------------------------------------- the indexer


def _chat(store: Store) -> Chat:
    core = Conversations(ALICE, DEV, store)
    return Chat(core, store, send=lambda peer, data: True, emit=lambda event: None)


@pytest.fixture
def fast(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(chat_mod, "INDEX_IDLE", 0.01)
    monkeypatch.setattr(chat_mod, "INDEX_FAULT_WAIT", 0.02)


async def _until(cond: Any, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.005)


async def test_indexer_indexes_rows_left_pending_at_start(
    tmp_path: Path, fast: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(chat_mod, "INDEX_BATCH", 3)
    path = tmp_path / "m.db"
    with Store.open(path, None) as s:
        for i in range(10):
            s.save_incoming(msg(f"left {i}", i), NOW)
    with Store.open(path, None) as s:
        chat = _chat(s)
        task = asyncio.create_task(chat.index_loop())
        try:
            await _until(lambda: s.pending_index() == 0)
        finally:
            task.cancel()
        assert chat.stats["indexed"] == 10
        assert in_index(s, "left") == 10
        index_in_sync(s)


async def test_indexer_waits_while_batches_are_committed(
    tmp_path: Path, fast: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(chat_mod, "INDEX_MAX_WAIT", 60.0)
    with Store.open(tmp_path / "m.db", None) as s:
        chat = _chat(s)
        steps: list[int] = []
        real = chat.index_step
        monkeypatch.setattr(chat, "index_step", lambda: steps.append(1) or real())
        task = asyncio.create_task(chat.index_loop())
        try:
            await _until(lambda: steps)  # the start-up step (nothing pending)
            steps.clear()
            for i in range(20):  # a batch committed every 2 ms: never idle
                s.save_incoming(msg(f"busy {i}", i), NOW)
                chat._last_commit = time.monotonic()
                chat._to_index.set()
                await asyncio.sleep(0.002)
            assert steps == [] and s.pending_index() == 20
            await _until(lambda: s.pending_index() == 0)  # quiet now: indexed
        finally:
            task.cancel()


async def test_indexer_survives_a_full_disk(
    tmp_path: Path, fast: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    with Store.open(tmp_path / "m.db", None) as s:
        s.save_incoming(msg("patient", 1), NOW)
        chat = _chat(s)
        faults: list[BaseException] = []
        real = s.index_pending
        full = {"on": True}

        def index_pending(limit: int) -> int:
            if full["on"]:
                raise StoreFull("database or disk is full")
            return real(limit)

        monkeypatch.setattr(s, "index_pending", index_pending)
        task = asyncio.create_task(chat.index_loop(faults.append))
        try:
            await _until(lambda: len(faults) >= 2)  # reported, retried, not crashed
            assert not task.done() and s.pending_index() == 1
            full["on"] = False
            await _until(lambda: s.pending_index() == 0)
        finally:
            task.cancel()
        assert isinstance(faults[0], StoreFull) and isinstance(faults[0], StoreError)
        assert [m.text for m in s.search("patient")] == ["patient"]


async def test_messages_stored_through_the_shell_are_found_before_indexing(
    tmp_path: Path,
) -> None:
    with Store.open(tmp_path / "m.db", None) as s:
        chat = _chat(s)
        await chat.send_text(BOB.public_key, "through the shell")
        assert s.pending_index() == 1
        assert [m.text for m in s.search("shell")] == ["through the shell"]
        chat.close()


async def test_the_daemon_indexes_rows_left_pending_when_it_starts(tmp_path: Path) -> None:
    """``btchat up`` after a crash: the rows a kill left pending are indexed in idle
    time by the daemon's own loop, with no search asking for it."""
    from btchat.node.boot import start_node
    from btchat.node.config import Settings

    settings = Settings(
        data_dir=tmp_path / "node", bootstrap=[], host="127.0.0.1", dht_port=0, no_passphrase=True
    )
    node = await start_node(settings, notice=lambda text: None)
    await _until(lambda: "indexed" in node.daemon.chat.stats)  # its first step, idle
    for i in range(20):  # stored behind the shell's back: nothing wakes the indexer
        node.store.save_incoming(msg(f"after a crash {i}", i), NOW)
    assert node.store.pending_index() == 20
    await node.stop()  # as a kill would leave it: 20 rows pending
    node = await start_node(settings, notice=lambda text: None)
    try:
        await _until(lambda: node.store.pending_index() == 0, 10.0)
        assert in_index(node.store, "crash") == 20
        assert node.daemon.chat.stats["indexed"] == 20
        found = await node.daemon.search("crash", None, 50)
        assert len(found) == 20
    finally:
        await node.stop()
