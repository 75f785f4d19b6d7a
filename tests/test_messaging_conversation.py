"""The 1:1 conversation core alone: two cores, two stores, a fake clock, a hand-made link."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from btchat.identity.keys import Identity
from btchat.messaging import conversation as conv
from btchat.messaging import envelope as env_mod
from btchat.messaging.conversation import Conversations
from btchat.messaging.envelope import Envelope
from btchat.messaging.messages import MessageRow
from btchat.messaging.store import Store, StoreError
from btchat.sansio import drain_events

T0 = 1_800_000_000.0


@dataclass
class Side:
    core: Conversations
    store: Store
    device: bytes
    events: list[Any] = field(default_factory=list)

    @property
    def pk(self) -> bytes:
        return self.core.me

    def of(self, kind: type) -> list[Any]:
        return [e for e in self.events if isinstance(e, kind)]


class Pair:
    """Alice and Bob, contacts of each other; ``up`` says whether a session is live."""

    def __init__(self, tmp: Path) -> None:
        self.now = T0
        self.up = False
        self.a = self._side(tmp / "a.db")
        self.b = self._side(tmp / "b.db")
        for x, y in ((self.a, self.b), (self.b, self.a)):
            x.store.add_contact(y.pk, "peer", int(self.now * 1000))
        self.lost: list[bytes] = []  # bytes sent while the link was down (dropped)

    def _side(self, path: Path) -> Side:
        identity, device = Identity.generate(), os.urandom(16)
        store = Store.open(path, None)
        return Side(Conversations(identity, device, store), store, device)

    def other(self, side: Side) -> Side:
        return self.b if side is self.a else self.a

    def connect(self) -> None:
        self.up = True
        self.a.core.session_up(self.b.pk, self.now)
        self.b.core.session_up(self.a.pk, self.now)
        self.pump()

    def disconnect(self) -> None:
        self.up = False
        self.a.core.session_down(self.b.pk, self.now)
        self.b.core.session_down(self.a.pk, self.now)

    def pump(self, drop: int = 0) -> None:
        """Deliver Transmits until both cores are quiet; drop the first ``drop`` of them."""
        busy = True
        while busy:
            busy = False
            for side in (self.a, self.b):
                for event in drain_events(side.core):
                    busy = True
                    if not isinstance(event, conv.Transmit):
                        side.events.append(event)
                    elif drop > 0 or not self.up:
                        drop -= 1
                        self.lost.append(event.data)
                    else:
                        peer = self.other(side)
                        peer.core.receive(side.pk, side.device, event.data, self.now)

    def advance(self, seconds: float) -> None:
        self.now += seconds
        for side in (self.a, self.b):
            timer = side.core.get_timer()
            if timer is not None and timer <= self.now:
                side.core.handle_timer(self.now)
        self.pump()


@pytest.fixture
def pair(tmp_path: Path) -> Pair:
    return Pair(tmp_path)


def state_of(side: Side, msg_id: bytes) -> str:
    row = side.store.get_message(msg_id)
    assert row is not None
    return str(row.state)


def texts(side: Side, peer: Side) -> list[str]:
    return [str(r.text) for r in side.store.history(peer.pk, limit=50)]


def test_message_and_delivered_receipt(pair: Pair) -> None:
    pair.connect()
    sent = pair.a.core.send_text(pair.b.pk, "hello bob", pair.now)
    pair.pump()
    assert state_of(pair.a, sent.id) == "delivered"
    assert [e.envelope.id for e in pair.b.of(conv.MessageStored)] == [sent.id]
    assert pair.a.of(conv.ReceiptReceived) == [
        conv.ReceiptReceived(pair.b.pk, "delivered", (sent.id,))
    ]
    assert pair.a.store.pending_outbox(pair.b.pk) == []  # acknowledged: not resent


def test_offline_send_is_deposited_then_replayed_after_reconnect(pair: Pair) -> None:
    sent = pair.a.core.send_text(pair.b.pk, "while you were away", pair.now)
    pair.pump()
    (deposit,) = pair.a.of(conv.Deposit)
    assert deposit.envelope.id == sent.id and state_of(pair.a, sent.id) == "pending"
    pair.connect()  # sync offer -> sync_want -> resend -> receipt
    assert state_of(pair.a, sent.id) == "delivered"
    assert pair.a.core.stats["offered"] == 1 and pair.a.core.stats["resent"] == 1
    assert pair.b.store.get_message(sent.id) is not None


def test_lost_receipt_means_a_resend_that_is_acknowledged_not_stored_twice(pair: Pair) -> None:
    pair.connect()
    sent = pair.a.core.send_text(pair.b.pk, "once", pair.now)
    for event in drain_events(pair.a.core):  # deliver by hand; Bob's receipt is lost
        if isinstance(event, conv.Transmit):
            pair.b.core.receive(pair.a.pk, pair.a.device, event.data, pair.now)
    pair.up = False
    pair.pump()
    pair.disconnect()
    assert state_of(pair.a, sent.id) == "sent"
    pair.now += 60
    pair.connect()  # Bob has it: acknowledges the offer instead of asking for it
    assert state_of(pair.a, sent.id) == "delivered"
    assert pair.a.core.stats["resent"] == 0
    assert len(pair.b.of(conv.MessageStored)) == 1


def test_sync_reconciles_what_came_another_way(pair: Pair) -> None:
    first = pair.a.core.send_text(pair.b.pk, "through the mailbox", pair.now)
    second = pair.a.core.send_text(pair.b.pk, "not yet anywhere", pair.now)
    pair.pump()
    # The first reached Bob through the offline mailbox meanwhile.
    assert pair.b.store.save_incoming(pair.a.of(conv.Deposit)[0].envelope, pair.now)
    pair.connect()
    assert pair.a.core.stats["offered"] == 2 and pair.a.core.stats["resent"] == 1
    assert state_of(pair.a, first.id) == state_of(pair.a, second.id) == "delivered"
    assert pair.b.core.stats["duplicates_received"] == 0


def test_unanswered_offer_falls_back_to_a_full_resend(pair: Pair) -> None:
    sent = pair.a.core.send_text(pair.b.pk, "old peer", pair.now)
    pair.pump()
    pair.up = True
    pair.a.core.session_up(pair.b.pk, pair.now)
    pair.pump(drop=10)  # Bob (an older client) never answers the offer
    assert pair.a.core.get_timer() == pair.now + conv.SYNC_TIMEOUT
    pair.b.core.session_up(pair.a.pk, pair.now)
    pair.advance(conv.SYNC_TIMEOUT)
    assert pair.a.core.get_timer() is None
    assert state_of(pair.a, sent.id) == "delivered"


def test_replayed_envelope_is_acknowledged_but_stored_once(pair: Pair) -> None:
    pair.connect()
    pair.a.core.send_text(pair.b.pk, "hi", pair.now)
    transmits = [e for e in drain_events(pair.a.core) if isinstance(e, conv.Transmit)]
    (data,) = [t.data for t in transmits]
    pair.b.core.receive(pair.a.pk, pair.a.device, data, pair.now)
    pair.b.core.receive(pair.a.pk, pair.a.device, data, pair.now)  # a replay
    pair.pump()
    assert len(pair.b.of(conv.MessageStored)) == 1
    assert pair.b.core.stats["duplicates_received"] == 1
    assert texts(pair.b, pair.a) == ["hi"]


@pytest.mark.parametrize(
    ("mutate", "reason"),
    [
        ("other_device", "wrong_device"),
        ("other_sender", "wrong_sender"),
        ("garbage", None),
        ("too_old", "too_old"),
    ],
)
def test_bad_envelopes_are_refused_not_raised(pair: Pair, mutate: str, reason: str | None) -> None:
    pair.connect()
    a, b = pair.a, pair.b
    body = env_mod.text_body("x")
    sent_at = pair.now - 16 * 86400 if mutate == "too_old" else pair.now
    envelope = env_mod.create(
        a.core.identity, a.device, b.pk, env_mod.TEXT, body, lamport=1, now=sent_at
    )
    data = b"d1:xi1ee" if mutate == "garbage" else env_mod.encode_envelope(envelope)
    device = os.urandom(16) if mutate == "other_device" else a.device
    sender = os.urandom(32) if mutate == "other_sender" else a.pk
    b.core.receive(sender, device, data, pair.now)
    pair.pump()
    (refused,) = b.of(conv.Refused)
    assert reason is None or reason in refused.reason
    assert b.of(conv.MessageStored) == [] and b.core.stats["refused"] == 1


class FailingStore:
    """A store whose commit of an incoming message fails (disk full, crash)."""

    def __init__(self, inner: Store) -> None:
        self.inner = inner

    def save_incoming(self, env: env_mod.Envelope, now: float) -> bool:
        raise OSError("disk full")

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


def test_no_receipt_before_the_message_is_committed(pair: Pair) -> None:
    pair.connect()
    pair.b.core.store = FailingStore(pair.b.store)
    pair.a.core.send_text(pair.b.pk, "must persist first", pair.now)
    (data,) = [e.data for e in drain_events(pair.a.core) if isinstance(e, conv.Transmit)]
    with pytest.raises(OSError):
        pair.b.core.receive(pair.a.pk, pair.a.device, data, pair.now)
    assert [e for e in drain_events(pair.b.core) if isinstance(e, conv.Transmit)] == []


def test_read_receipts_wait_for_a_session(pair: Pair) -> None:
    pair.connect()
    sent = pair.a.core.send_text(pair.b.pk, "read me", pair.now)
    pair.pump()
    pair.disconnect()
    assert pair.b.core.mark_read(pair.a.pk, None, pair.now) == 1
    pair.pump()
    assert state_of(pair.a, sent.id) == "delivered"
    pair.connect()
    assert state_of(pair.a, sent.id) == "read"
    assert pair.a.of(conv.ReceiptReceived)[-1].state == "read"


def test_presence_and_typing(pair: Pair) -> None:
    pair.connect()
    assert pair.b.of(conv.PresenceChanged)[0].status == "online"
    pair.a.core.set_presence("away", "lunch", pair.now)
    pair.a.core.send_typing(pair.b.pk, True, pair.now)
    pair.pump()
    assert pair.b.of(conv.PresenceChanged)[-1] == conv.PresenceChanged(
        pair.a.pk, "away", int(pair.now * 1000), "lunch"
    )
    assert pair.b.of(conv.Typing) == [conv.Typing(pair.a.pk, True)]
    with pytest.raises(ValueError):
        pair.a.core.set_presence("invisible", None, pair.now)


def test_unknown_types_go_to_the_shell(pair: Pair) -> None:
    pair.connect()
    assert pair.a.core.send_body(pair.b.pk, b"hold", {b"p": []}, pair.now)
    pair.pump()
    (unhandled,) = pair.b.of(conv.Unhandled)
    assert unhandled.envelope.type == b"hold" and unhandled.peer == pair.a.pk
    pair.disconnect()
    assert not pair.a.core.send_body(pair.b.pk, b"hold", {b"p": []}, pair.now)


def test_a_message_queued_past_the_receivers_window_is_resigned(pair: Pair) -> None:
    sent = pair.a.core.send_text(pair.b.pk, "sent before a long trip", pair.now)
    pair.pump()
    pair.now += 16 * 86400  # older than the 15-day window a receiver accepts
    pair.connect()
    stored = pair.b.store.get_message(sent.id)
    assert stored is not None and pair.b.of(conv.Refused) == []
    assert state_of(pair.a, sent.id) == "delivered"
    (envelope,) = [e.envelope for e in pair.b.of(conv.MessageStored)]
    assert envelope.id == sent.id and envelope.lamport == sent.lamport
    assert envelope.ts_ms > sent.ts_ms  # same id and order, fresh timestamp and signature


# ------------------------------------------------------------------ group commit


class CountingStore:
    """A store that counts outermost transactions (commits) and can fail one on commit."""

    def __init__(self, inner: Store) -> None:
        self.inner = inner
        self.commits = 0
        self.fail_commit = False

    @contextlib.contextmanager
    def transaction(self) -> Iterator[Any]:
        outer = not self.inner.db.in_transaction
        with self.inner.transaction() as conn:
            yield conn
            if outer and self.fail_commit:
                raise StoreError("disk I/O error")  # rolls the whole batch back
        self.commits += outer

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


def _texts_from_a(pair: Pair, n: int) -> list[bytes]:
    """``n`` texts A sent in one batch, as the bytes on the wire (not yet delivered)."""
    with pair.a.core.batch(pair.now):
        for i in range(n):
            pair.a.core.send_text(pair.b.pk, f"batched {i}", pair.now)
    return [e.data for e in drain_events(pair.a.core) if isinstance(e, conv.Transmit)]


def test_a_batch_of_texts_is_one_commit_then_one_receipt(pair: Pair) -> None:
    pair.connect()
    counting = CountingStore(pair.b.store)
    pair.b.core.store = counting
    wire = _texts_from_a(pair, 7)
    assert len(wire) == 7
    with pair.b.core.batch(pair.now):
        for data in wire:
            pair.b.core.receive(pair.a.pk, pair.a.device, data, pair.now)
        assert pair.b.core.next_event() is None  # nothing leaves before the commit
    assert counting.commits == 1
    events = list(drain_events(pair.b.core))
    receipts = [e for e in events if isinstance(e, conv.Transmit)]
    assert len(receipts) == 1 and len([e for e in events if isinstance(e, conv.MessageStored)]) == 7
    ids, state = env_mod.decode_receipt(env_mod.parse_envelope(receipts[0].data))
    sent = [env_mod.parse_envelope(d).id for d in wire]
    assert state == b"delivered" and list(ids) == sent
    # A applies the one receipt to all seven: delivered, and the outbox empty.
    pair.a.core.receive(pair.b.pk, pair.b.device, receipts[0].data, pair.now)
    assert [state_of(pair.a, i) for i in sent] == ["delivered"] * 7
    assert pair.a.store.pending_outbox(pair.b.pk) == []


def test_a_batch_that_fails_to_commit_acknowledges_nothing(pair: Pair) -> None:
    pair.connect()
    counting = CountingStore(pair.b.store)
    pair.b.core.store = counting
    wire = _texts_from_a(pair, 5)
    counting.fail_commit = True
    with pytest.raises(StoreError), pair.b.core.batch(pair.now):
        for data in wire:
            pair.b.core.receive(pair.a.pk, pair.a.device, data, pair.now)
    assert list(drain_events(pair.b.core)) == []  # no receipt, no "stored" notice
    assert texts(pair.b, pair.a) == []  # and nothing half-stored
    # The sender still has all five queued; the next session delivers them once.
    counting.fail_commit = False
    pair.disconnect()
    pair.connect()
    assert texts(pair.b, pair.a) == [f"batched {i}" for i in range(5)]
    assert pair.a.store.pending_outbox(pair.b.pk) == []


def test_a_save_failing_mid_batch_rolls_back_the_batch(pair: Pair) -> None:
    pair.connect()
    wire = _texts_from_a(pair, 4)
    failing = FailingStore(pair.b.store)
    calls = [0]

    def third_fails(env: env_mod.Envelope, now: float) -> bool:
        calls[0] += 1
        if calls[0] == 3:
            raise OSError("disk full")
        return pair.b.store.save_incoming(env, now)

    failing.save_incoming = third_fails  # type: ignore[method-assign]
    pair.b.core.store = failing
    with pytest.raises(OSError), pair.b.core.batch(pair.now):
        for data in wire:
            pair.b.core.receive(pair.a.pk, pair.a.device, data, pair.now)
    assert list(drain_events(pair.b.core)) == []
    assert texts(pair.b, pair.a) == []  # the first two were rolled back with it


def test_sending_a_batch_is_one_commit_and_sends_after_it(pair: Pair) -> None:
    pair.connect()
    counting = CountingStore(pair.a.store)
    pair.a.core.store = counting
    with pair.a.core.batch(pair.now):
        for i in range(10):
            pair.a.core.send_text(pair.b.pk, f"m{i}", pair.now)
        assert pair.a.core.next_event() is None
    assert counting.commits == 1
    pair.pump()
    assert texts(pair.b, pair.a) == [f"m{i}" for i in range(10)]
    assert pair.a.store.pending_outbox(pair.b.pk) == []


def test_a_batch_ticks_the_clock_as_one_envelope_at_a_time(pair: Pair) -> None:
    """PROTOCOL.md "Order": every envelope received sets max(local, lc) + 1, every one
    made takes local + 1, also when a batch keeps the clock in memory until its end."""
    pair.connect()
    a, b = pair.a, pair.b
    start = b.store.lamport(a.pk)
    wire = [
        env_mod.encode_envelope(
            env_mod.create(
                a.core.identity,
                a.device,
                b.pk,
                env_mod.TEXT,
                env_mod.text_body(f"lc {lc}"),
                lamport=lc,
                now=pair.now,
            )
        )
        for lc in (start + 5, start + 2, start + 9)
    ]
    with b.core.batch(pair.now):
        for data in wire:
            b.core.receive(a.pk, a.device, data, pair.now)
    expected = start
    for lc in (start + 5, start + 2, start + 9):
        expected = max(expected, lc) + 1
    (receipt,) = [e.data for e in drain_events(b.core) if isinstance(e, conv.Transmit)]
    assert env_mod.parse_envelope(receipt).lamport == expected + 1
    assert b.store.lamport(a.pk) == expected + 1  # written back with the batch
    assert b.store.next_lamport(a.pk, None) == expected + 2


def _written_elsewhere(side: Side, to: bytes, text: str, now: float) -> Envelope:
    """A message another device of ``side``'s identity wrote, synced and handed over."""
    env = env_mod.create(side.core.identity, b"o" * 16, to, env_mod.TEXT,
                         env_mod.text_body(text), lamport=side.store.next_lamport(to, None),
                         now=now)  # fmt: skip
    side.store.save_synced([MessageRow.of(env, "out", "sent", int(now * 1000))])
    assert side.store.adopt_outbox([env], int(now * 1000), 10) == [env]
    return env


def test_a_message_another_of_our_devices_wrote_is_offered_as_this_one(pair: Pair) -> None:
    away = _written_elsewhere(pair.a, pair.b.pk, "written on my desktop", pair.now)
    pair.now += 60
    pair.connect()  # offered and replayed by this device: signed again as this one
    assert pair.b.of(conv.Refused) == [] and state_of(pair.a, away.id) == "delivered"
    (got,) = [e.envelope for e in pair.b.of(conv.MessageStored)]
    assert (got.id, got.device, got.ts_ms) == (away.id, pair.a.device, away.ts_ms)
    # One handed over while the session is up is offered at once; the receiver has one
    # copy however many devices offer it.
    later = _written_elsewhere(pair.a, pair.b.pk, "and one more", pair.now)
    pair.a.core.offer(pair.b.pk, [later.id, away.id], pair.now)
    pair.pump()
    assert state_of(pair.a, later.id) == "delivered"
    assert texts(pair.b, pair.a) == ["written on my desktop", "and one more"]
