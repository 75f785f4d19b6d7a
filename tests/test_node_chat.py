"""The conversation core's asyncio shell: group commit per loop turn (node/chat.py)."""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path
from typing import Any

import pytest

from btchat.identity.keys import Identity
from btchat.messaging import conversation as conv
from btchat.messaging import envelope as E
from btchat.messaging.conversation import Conversations
from btchat.messaging.store import Store, StoreError
from btchat.node import chat as chat_mod
from btchat.node.chat import Chat
from btchat.sansio import drain_events
from btchat.storage import Database


class End:
    """One side: a core over a store, its shell, what it sent and emitted."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.identity, self.device = Identity.generate(), os.urandom(16)
        self.store = Store.open(path, None)
        self.core = Conversations(self.identity, self.device, self.store)
        self.sent: list[tuple[bytes, bytes]] = []
        self.events: list[dict[str, Any]] = []
        self.on_send = lambda peer, data: None
        self.chat = Chat(self.core, self.store, send=self._send, emit=self.events.append)

    def _send(self, peer: bytes, data: bytes) -> bool:
        self.on_send(peer, data)
        self.sent.append((peer, data))
        return True


@pytest.fixture
def ends(tmp_path: Path) -> tuple[End, End]:
    a, b = End(tmp_path / "a.db"), End(tmp_path / "b.db")
    now = time.time()
    a.core.session_up(b.identity.public_key, now)
    b.core.session_up(a.identity.public_key, now)
    for end in (a, b):  # the presence envelopes: not part of these tests
        list(drain_events(end.core))
    return a, b


def _wire_from(a: End, b: End, n: int) -> list[bytes]:
    """``n`` texts A committed and would send to B."""
    now = time.time()
    with a.core.batch(now):
        for i in range(n):
            a.core.send_text(b.identity.public_key, f"text {i}", now)
    return [e.data for e in drain_events(a.core) if isinstance(e, conv.Transmit)]


async def test_a_loop_turn_of_payloads_is_one_commit_then_one_receipt(
    ends: tuple[End, End],
) -> None:
    a, b = ends
    wire = _wire_from(a, b, 12)
    ids = [E.parse_envelope(w).id for w in wire]
    reader = Database.open(b.path, None, migrate=False)  # sees only what is committed

    def committed_first(peer: bytes, data: bytes) -> None:
        acked, _ = E.decode_receipt(E.parse_envelope(data))
        assert not b.store.db.in_transaction
        stored = {bytes(r[0]) for r in reader.query("SELECT id FROM messages")}
        assert set(acked) <= stored, "a receipt left before its messages were on disk"

    b.on_send = committed_first
    batches = b.core.stats["batches"]
    for data in wire:  # as the pump hands over the frames of one read
        b.chat.receive(a.identity.public_key, a.device, data)
    assert b.sent == [] and b.store.get_message(ids[0]) is None  # not yet: end of turn
    await asyncio.sleep(0)
    assert b.core.stats["batches"] == batches + 1  # one transaction for all twelve
    (receipt,) = [E.parse_envelope(d) for _, d in b.sent]
    assert E.decode_receipt(receipt) == (ids, b"delivered")
    stored = [e["message"]["id"] for e in b.events if e["type"] == "message"]
    assert stored == [i.hex() for i in ids]
    assert b.events[0]["message"] == b.store.get_message(ids[0]).to_json()  # type: ignore[union-attr]
    reader.close()


async def test_api_sends_of_one_turn_share_a_commit_and_are_sent_after_it(
    ends: tuple[End, End],
) -> None:
    a, b = ends
    reader = Database.open(a.path, None, migrate=False)

    def committed_first(peer: bytes, data: bytes) -> None:
        msg_id = E.parse_envelope(data).id
        assert reader.query("SELECT state FROM messages WHERE id = ?", (msg_id,)) == [("sent",)]

    a.on_send = committed_first
    batches = a.core.stats["batches"]
    futures = [a.chat.send_text(b.identity.public_key, f"hello {i}") for i in range(5)]
    envelopes = await asyncio.gather(*futures)
    assert a.core.stats["batches"] == batches + 1
    assert [E.parse_envelope(d).id for _, d in a.sent] == [e.id for e in envelopes]
    assert len(a.store.pending_outbox(b.identity.public_key)) == 5  # until receipts come
    reader.close()


async def test_a_batch_that_cannot_be_stored_fails_its_sends_and_acknowledges_nothing(
    ends: tuple[End, End],
) -> None:
    a, b = ends
    wire = _wire_from(a, b, 3)
    for data in wire:
        b.chat.receive(a.identity.public_key, a.device, data)
    future = b.chat.send_text(a.identity.public_key, "will fail")
    b.store.close()  # every store call now fails with StoreError
    await asyncio.sleep(0)
    with pytest.raises(StoreError):
        await future
    assert b.sent == [] and b.events == []
    assert b.chat.stats["batches_failed"] == 1 and b.chat.stats["payloads_dropped"] == 3


async def test_more_than_a_batch_flushes_at_once(
    ends: tuple[End, End], monkeypatch: pytest.MonkeyPatch
) -> None:
    a, b = ends
    monkeypatch.setattr(chat_mod, "MAX_BATCH", 4)
    wire = _wire_from(a, b, 10)
    for data in wire:
        b.chat.receive(a.identity.public_key, a.device, data)
    assert b.chat.stats["batches"] == 2  # 4 + 4 at once, the last 2 at the end of the turn
    await asyncio.sleep(0)
    assert b.chat.stats["batches"] == 3 and b.chat.stats["batched"] == 10
    assert len(b.store.history(a.identity.public_key)) == 10
