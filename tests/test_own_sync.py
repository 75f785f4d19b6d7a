"""History sync between one identity's devices (issue 13 item 3): every message once,
in the same order, after any outage; bad payloads dropped and counted."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from btchat.codec.bencode import decode, encode
from btchat.identity.keys import Identity
from btchat.messaging import envelope as env_mod
from btchat.messaging.messages import MessageRow
from btchat.messaging.own_sync import (
    BATCH_ROWS,
    CARRIED_MAX,
    ContactChange,
    ContactsNote,
    SyncError,
    decode_sync,
    encode_batch,
    encode_contacts,
    encode_devices,
    encode_read,
    encode_received,
    encode_state,
)
from btchat.messaging.store import Store
from btchat.node.contact_sync import ContactSync
from btchat.node.own_sync import OwnSync


class Device:
    """One of our devices: a store and its sync, wired to the others by hand."""

    def __init__(self, tmp: Path, name: str, me: Identity) -> None:
        self.me = me
        self.id = name.encode().ljust(16, b".")
        self.store = Store.open(tmp / f"{name}.db", None)
        self.wire: dict[bytes, Device] = {}  # device id -> the peer, while "up"
        self.events: list[dict[str, Any]] = []
        self.sync = OwnSync(self.store, self._send, self._emit)
        self.sync.me = me.public_key

    def _send(self, device: bytes, payload: bytes) -> bool:
        peer = self.wire.get(device)
        if peer is None:
            return False
        peer.inbox.append((self.id, payload))
        return True

    inbox: list[tuple[bytes, bytes]]

    def _emit(self, event: dict[str, Any]) -> None:
        self.events.append(event)
        self.sync.changed()  # as the daemon does: a new row wakes the other syncs

    def send_text(self, to: bytes, text: str) -> None:
        env = env_mod.create(
            self.me, self.id, to, env_mod.TEXT, env_mod.text_body(text),
            lamport=self.store.next_lamport(to, None), now=time.time(),
        )  # fmt: skip
        self.store.save_outgoing(env, time.time(), sent=True)
        self._emit({"type": "message"})

    def history(self, peer: bytes) -> list[tuple[bytes, str | None]]:
        rows = self.store.history(peer, limit=100_000)
        return [(r.id, r.text) for r in rows]


def connect(a: Device, b: Device) -> None:
    a.wire[b.id], b.wire[a.id] = b, a
    a.sync.device_up(b.id)
    b.sync.device_up(a.id)


def disconnect(a: Device, b: Device) -> None:
    a.wire.pop(b.id, None)
    b.wire.pop(a.id, None)
    a.sync.device_down(b.id)
    b.sync.device_down(a.id)


def pump(*devices: Device, limit: int = 100_000) -> int:
    """Deliver queued payloads until none are left; returns how many moved."""
    moved = 0
    while moved < limit:
        queued = [(d, d.inbox.pop(0)) for d in devices if d.inbox]
        if not queued:
            return moved
        for device, (source, payload) in queued:
            device.sync.receive(source, payload)
            moved += 1
    raise AssertionError("sync did not settle")


def three(tmp_path: Path) -> list[Device]:
    me = Identity.generate()
    devices = [Device(tmp_path, n, me) for n in ("laptop", "desktop", "phone")]
    for d in devices:
        d.inbox = []
    return devices


def test_a_device_back_after_a_long_outage_catches_up_once_in_order(tmp_path: Path) -> None:
    laptop, desktop, phone = three(tmp_path)
    friend = Identity.generate().public_key
    connect(laptop, desktop)
    for i in range(3 * BATCH_ROWS + 7):  # several batches while the phone is away
        (laptop if i % 3 else desktop).send_text(friend, f"m{i}")
        pump(laptop, desktop)
    assert laptop.history(friend) == desktop.history(friend)
    connect(phone, laptop)
    connect(phone, desktop)  # two sources at once: still every row once
    pump(laptop, desktop, phone)
    assert phone.history(friend) == laptop.history(friend)
    assert len(phone.history(friend)) == 3 * BATCH_ROWS + 7
    assert len({i for i, _ in phone.history(friend)}) == 3 * BATCH_ROWS + 7
    # A message sent on the phone now reaches both others at once.
    phone.send_text(friend, "from the phone")
    pump(laptop, desktop, phone)
    assert laptop.history(friend)[-1][1] == desktop.history(friend)[-1][1] == "from the phone"
    # The phone's clock moved past the copies: its message sorts last everywhere.
    assert laptop.history(friend) == desktop.history(friend) == phone.history(friend)


def test_a_batch_lost_with_its_session_is_sent_again(tmp_path: Path) -> None:
    laptop, desktop, _ = three(tmp_path)
    friend = Identity.generate().public_key
    for i in range(5):
        laptop.send_text(friend, f"m{i}")
    connect(laptop, desktop)
    desktop.inbox.clear()  # the session dies with the batch in flight
    disconnect(laptop, desktop)
    assert desktop.history(friend) == []
    connect(laptop, desktop)
    pump(laptop, desktop)
    assert desktop.history(friend) == laptop.history(friend)
    assert laptop.sync.cursor(desktop.id) == laptop.store.last_seq()


def test_malformed_sync_payloads_are_dropped_and_counted(tmp_path: Path) -> None:
    laptop, desktop, _ = three(tmp_path)
    friend = Identity.generate().public_key
    laptop.send_text(friend, "hi")
    rows = laptop.store.rows_after(0, 10)
    good, _ = encode_batch(rows)
    bad = [
        b"not bencode",
        b"d1:t4:sync1:ui1ee",  # no rows
        good.replace(b"3:out", b"3:sid"),  # a direction that is not one
        b"d1:ml" + b"le" * (BATCH_ROWS + 1) + b"e1:t4:sync1:ui1ee",  # too many rows
    ]
    for payload in bad:
        desktop.sync.receive(laptop.id, payload)
    assert desktop.sync.stats["malformed"] == len(bad)
    assert desktop.history(friend) == []
    desktop.sync.receive(laptop.id, good)
    assert [t for _, t in desktop.history(friend)] == ["hi"]


class Book:
    """One device's contact book and its contact sync, notes carried by hand."""

    def __init__(self, tmp: Path, name: str) -> None:
        self.store = Store.open(tmp / f"{name}-book.db", None)
        self.out: list[bytes] = []
        self.applied: list[tuple[bytes, str]] = []
        self.sync = ContactSync(
            self.store, name.encode().ljust(16, b"."), self.out.append,
            lambda pk, action: self.applied.append((pk, action)),
        )  # fmt: skip

    def deliver_to(self, other: Book) -> None:
        for payload in self.out:
            note = decode_sync(payload, 0)
            assert isinstance(note, ContactsNote)
            other.sync.merge(note)
        self.out.clear()

    def names(self) -> dict[bytes, str]:
        return {c.pk: c.name for c in self.store.list_contacts()}


def test_contact_books_converge_last_writer_wins(tmp_path: Path, monkeypatch: Any) -> None:
    laptop, desktop = Book(tmp_path, "laptop"), Book(tmp_path, "desktop")
    bob, carol = Identity.generate().public_key, Identity.generate().public_key
    clock = iter(range(1_000_000, 2_000_000, 1000))
    monkeypatch.setattr("btchat.node.contact_sync.time.time", lambda: next(clock) / 1000)
    laptop.store.add_contact(bob, "bob", 1)
    laptop.sync.record(bob)
    laptop.deliver_to(desktop)
    assert desktop.names() == {bob: "bob"} and desktop.applied == [(bob, "added")]
    # Both rename bob before hearing of the other: the later change wins on both.
    laptop.store.rename_contact(bob, "bobby")
    laptop.sync.record(bob)
    desktop.store.rename_contact(bob, "robert")
    desktop.sync.record(bob)
    laptop.deliver_to(desktop)
    desktop.deliver_to(laptop)
    assert laptop.names() == desktop.names() == {bob: "robert"}
    # An old note replayed changes nothing.
    stale = encode_contacts([ContactChange(5, b"x" * 16, bob, "old", False, False, False)])
    laptop.sync.merge(decode_sync(stale, 0))  # type: ignore[arg-type]
    assert laptop.names()[bob] == "robert" and laptop.sync.stats["stale"] == 1
    # A petname taken there by another contact: kept, with the key prefix added.
    desktop.store.add_contact(carol, "carol", 1)
    laptop.store.add_contact(carol, "carol", 1)
    laptop.store.rename_contact(carol, "robert")  # "robert" is bob's on the desktop too
    laptop.store.rename_contact(bob, "bob")
    laptop.sync.record(bob)
    laptop.sync.record(carol)
    laptop.deliver_to(desktop)
    assert desktop.names() == {bob: "bob", carol: "robert"}
    # Blocked and removed travel too; a device coming up gets the whole book.
    desktop.store.set_blocked(carol, True)
    desktop.sync.record(carol)
    desktop.sync.record(bob, removing=True)
    desktop.store.remove_contact(bob)
    phone = Book(tmp_path, "phone")
    for payload in desktop.sync.payloads():
        phone.sync.merge(decode_sync(payload, 0))  # type: ignore[arg-type]
    desktop.deliver_to(laptop)
    assert laptop.names() == phone.names() == {carol: "robert"}
    assert laptop.store.get_contact(carol).blocked  # type: ignore[union-attr]
    assert (bob, "removed") in laptop.applied


def test_bad_contact_notes_are_refused() -> None:
    good = ContactChange(1, b"d" * 16, b"k" * 32, "ok", False, False, False)
    payload = encode_contacts([good])
    with pytest.raises(SyncError):
        decode_sync(payload.replace(b"2:ok", b"0:"), 0)  # an empty name
    with pytest.raises(SyncError):
        decode_sync(b"d1:cl" + b"i1e" + b"e1:t8:contactse", 0)
    assert decode_sync(payload, 0) == ContactsNote([good])


def test_read_on_one_device_is_read_on_the_others(tmp_path: Path) -> None:
    laptop, desktop, _ = three(tmp_path)
    friend = Identity.generate()
    envs = [
        env_mod.create(friend, b"f" * 16, laptop.me.public_key, env_mod.TEXT,
                       env_mod.text_body(f"hello {i}"), lamport=i + 1, now=time.time())
        for i in range(3)
    ]  # fmt: skip
    for env in envs:
        assert laptop.store.save_incoming(env, time.time())
    laptop._emit({"type": "message"})
    connect(laptop, desktop)
    pump(laptop, desktop)
    ids = [e.id for e in envs]
    assert {desktop.store.get_message(i).state for i in ids} == {"delivered"}  # type: ignore[union-attr]
    # Read the first two on the laptop: the desktop follows, and says so once.
    laptop.store.mark_state(ids[:2], "read")
    for payload in encode_read(friend.public_key, ids[:2]):
        laptop.sync.send_to_all(payload)
    pump(laptop, desktop)
    states = [desktop.store.get_message(i).state for i in ids]  # type: ignore[union-attr]
    assert states == ["read", "read", "delivered"]
    read = [e for e in desktop.events if e["type"] == "read"]
    assert len(read) == 1 and read[0]["contact"] == friend.public_key.hex()
    assert set(read[0]["ids"]) == {i.hex() for i in ids[:2]}
    # The same note again (or one naming other people's messages) changes nothing.
    for payload in encode_read(friend.public_key, ids[:2]) + encode_read(b"x" * 32, ids):
        desktop.sync.receive(laptop.id, payload)
    assert len([e for e in desktop.events if e["type"] == "read"]) == 1
    with pytest.raises(SyncError):
        decode_sync(encode_read(friend.public_key, [b"short"])[0], 0)
    assert len(encode_read(friend.public_key, [b"i" * 16] * 1200)) == 3


# ------------------------------------------- 1.5: pending envelopes and receipts travel


def handing_over(tmp_path: Path) -> tuple[Device, Device, bytes, list[list[object]]]:
    """The laptop (which runs offline delivery) and the desktop, both knowing our
    identity; ``adopted`` records what the laptop's sync hands to offline delivery."""
    laptop, desktop, _ = three(tmp_path)
    adopted: list[list[object]] = []
    laptop.sync.on_adopted = adopted.append
    return laptop, desktop, Identity.generate().public_key, adopted


def test_a_pending_message_is_handed_to_the_other_devices_once(tmp_path: Path) -> None:
    laptop, desktop, friend, adopted = handing_over(tmp_path)
    desktop.send_text(friend, "for when you are back")
    (blob,) = desktop.store.pending_outbox(friend)
    connect(laptop, desktop)
    pump(laptop, desktop)
    # The laptop queued the desktop's own signed envelope: it deposits and offers it.
    assert laptop.store.pending_outbox(friend) == [blob]
    assert [[e.id for e in envs] for envs in adopted] == [[env_mod.parse_envelope(blob).id]]
    # Again on a new session, and back from the laptop's own copy: still once.
    disconnect(laptop, desktop)
    connect(laptop, desktop)
    pump(laptop, desktop)
    assert laptop.store.pending_outbox(friend) == [blob] and len(adopted) == 1
    assert laptop.sync.stats["envelopes_adopted"] == 1
    # One the contact has acknowledged is not handed over (nothing left to deposit).
    disconnect(laptop, desktop)
    desktop.send_text(friend, "delivered at once")
    msg_id = desktop.history(friend)[-1][0]
    desktop.store.mark_state([msg_id], "delivered")
    desktop.store.ack_outbox([msg_id])
    connect(laptop, desktop)
    pump(laptop, desktop)
    assert laptop.history(friend) == desktop.history(friend)
    assert len(laptop.store.pending_outbox(friend)) == 1 and len(adopted) == 1


def test_handed_over_envelopes_that_are_not_ours_are_dropped_and_counted(
    tmp_path: Path, monkeypatch: Any
) -> None:
    laptop, desktop, friend, adopted = handing_over(tmp_path)
    desktop.send_text(friend, "mine")
    (row_seq, row), *_ = desktop.store.rows_after(0, 10)
    (blob,) = desktop.store.pending_outbox(friend)
    mine = env_mod.parse_envelope(blob)
    thief = Identity.generate()
    forged = env_mod.create(thief, desktop.id, friend, env_mod.TEXT, env_mod.text_body("mine"),
                            lamport=mine.lamport, now=time.time(), msg_id=mine.id)  # fmt: skip
    other_text = env_mod.create(desktop.me, desktop.id, friend, env_mod.TEXT,
                                env_mod.text_body("x"), lamport=mine.lamport + 5,
                                now=time.time(), msg_id=mine.id)  # fmt: skip
    elsewhere = env_mod.create(desktop.me, desktop.id, b"o" * 32, env_mod.TEXT,
                               env_mod.text_body("mine"), lamport=mine.lamport,
                               now=time.time(), msg_id=mine.id)  # fmt: skip
    bad = [env_mod.encode_envelope(e) for e in (forged, other_text, elsewhere)] + [b"junk"]
    for env in bad:
        payload, _ = encode_batch([(row_seq, row)], {row.id: env})
        laptop.sync.receive(desktop.id, payload)
    assert laptop.sync.stats["envelopes_refused"] == len(bad)
    assert laptop.store.pending_outbox(friend) == [] and adopted == []
    assert laptop.history(friend) == desktop.history(friend)  # the row itself is stored
    # A batch whose envelopes are not a list of byte strings, or more than its rows: dropped.
    good, _ = encode_batch([(row_seq, row)], {row.id: blob})
    for broken in (good.replace(b"1:el", b"1:ei0el"), good.replace(b"1:el", b"1:el0:")):
        with pytest.raises(SyncError):
            decode_sync(broken, 0)
    # Bounded: no more is adopted once the outbox holds ADOPT_LIMIT messages.
    monkeypatch.setattr("btchat.node.own_sync.ADOPT_LIMIT", 0)
    laptop.sync.receive(desktop.id, good)
    assert laptop.store.pending_outbox(friend) == []
    monkeypatch.setattr("btchat.node.own_sync.ADOPT_LIMIT", 1)
    laptop.sync.receive(desktop.id, good)
    assert laptop.store.pending_outbox(friend) == [blob]


def receipt(device: Device, friend: bytes, state: str, ids: list[bytes]) -> None:
    """The contact's receipt reached ``device``: as the daemon does, then a state note."""
    device.store.mark_state(ids, state)
    device.store.ack_outbox(ids)
    for payload in encode_state(friend, state, ids):
        device.sync.send_to_all(payload)


def test_receipts_reach_every_device_forward_only(tmp_path: Path) -> None:
    laptop, desktop, friend, _ = handing_over(tmp_path)
    phone = Device(tmp_path, "phone2", laptop.me)
    phone.inbox = []
    acked: list[list[bytes]] = []
    desktop.sync.on_acknowledged = acked.append
    laptop.send_text(friend, "one")
    laptop.send_text(friend, "two")
    connect(laptop, desktop)
    connect(laptop, phone)
    pump(laptop, desktop, phone)
    ids = [i for i, _ in laptop.history(friend)]
    assert len(desktop.store.pending_outbox(friend)) == 2  # the desktop offers them too
    disconnect(laptop, phone)  # the phone is away when the receipts come
    receipt(laptop, friend, "read", ids[:1])
    receipt(laptop, friend, "delivered", ids)
    pump(laptop, desktop, phone)

    def states(d: Device) -> list[str]:
        return [d.store.get_message(i).state for i in ids]  # type: ignore[union-attr]

    assert states(desktop) == ["read", "delivered"]  # a later "delivered" does not undo "read"
    assert desktop.store.pending_outbox(friend) == []  # nothing left to offer or deposit
    assert acked == [ids[:1], ids]
    shown = [e for e in desktop.events if e["type"] == "receipt"]
    assert [(e["state"], e["ids"]) for e in shown] == [
        ("read", [ids[0].hex()]),
        ("delivered", [ids[1].hex()]),
    ]
    # The same note again changes nothing and shows nothing.
    for payload in encode_state(friend, "delivered", ids):
        desktop.sync.receive(laptop.id, payload)
    assert len([e for e in desktop.events if e["type"] == "receipt"]) == 2
    # The phone, back, gets the receipts it missed when the session comes up.
    connect(laptop, phone)
    pump(laptop, phone)
    assert states(phone) == ["read", "delivered"]
    # Malformed notes: dropped and counted.
    good = {b"t": b"state", b"p": friend, b"s": b"read", b"i": ids}
    bad = [
        {**good, b"s": b"sent"},  # not a receipt state: notes only move forward
        {**good, b"p": friend[:31]},
        {**good, b"i": [b"i" * 16] * 501},
        {**good, b"i": [b"short"]},
        {b"t": b"state", b"p": friend, b"i": ids},
    ]
    for value in bad:
        phone.sync.receive(laptop.id, encode(value))
    assert phone.sync.stats["malformed"] == len(bad)
    with pytest.raises(ValueError):
        encode_state(friend, "sent", ids)


def test_received_counters_go_to_every_device_and_to_one_coming_up(tmp_path: Path) -> None:
    laptop, desktop, _ = three(tmp_path)
    friend, other = Identity.generate().public_key, Identity.generate().public_key
    learned: list[list[tuple[bytes, int]]] = []
    laptop.sync.on_received = lambda note: learned.append(note.counters)
    desktop.sync.received_payloads = lambda: encode_received([(friend, 7), (other, 2**53 - 1)])
    connect(laptop, desktop)
    pump(laptop, desktop)
    assert learned == [[(friend, 7), (other, 2**53 - 1)]]
    counters = [(bytes([i]) * 32, i) for i in range(250)]
    assert len(encode_received(counters)) == 2  # in pieces of 200
    good = {b"t": b"received", b"c": [[friend, 8]]}
    bad = [
        {**good, b"c": [[friend, -1]]},
        {**good, b"c": [[friend, 2**53]]},
        {**good, b"c": [[friend[:31], 1]]},
        {**good, b"c": [[friend, b"1"]]},
        {**good, b"c": [[friend, 1, 2]]},
        {**good, b"c": [[friend, 1]] * 201},
        {b"t": b"received"},
    ]
    for value in bad:
        laptop.sync.receive(desktop.id, encode(value))
    assert laptop.sync.stats["malformed"] == len(bad) and len(learned) == 1
    laptop.sync.receive(desktop.id, encode(good))
    assert learned[-1] == [(friend, 8)]


def test_a_revoked_device_gets_nothing_more_however_we_learned_it(tmp_path: Path) -> None:
    laptop, desktop, phone = three(tmp_path)
    friend = Identity.generate().public_key
    revoked = frozenset({phone.id})
    note = encode_devices([], revoked)
    for d in (laptop, desktop):  # what each knows of our devices once the phone is revoked
        d.sync = OwnSync(d.store, d._send, d._emit, devices=lambda: note)
        d.sync.me = d.me.public_key
    for a, b in ((laptop, desktop), (laptop, phone), (desktop, phone)):
        connect(a, b)
    pump(laptop, desktop, phone)
    laptop.send_text(friend, "before")
    pump(laptop, desktop, phone)
    # Revoked on the laptop: the note goes to every device first, the phone's included.
    laptop.sync.devices_changed(revoked)
    assert desktop.inbox == [(laptop.id, note)] and phone.inbox == [(laptop.id, note)]
    # The desktop learns it (from that note, the phone's own, or the DHT) and acts alike.
    pump(desktop, phone)
    desktop.sync.devices_changed(revoked)
    phone.inbox.clear()
    laptop.send_text(friend, "after")
    desktop.send_text(friend, "after, from the desktop")
    pump(laptop, desktop)
    assert phone.inbox == []
    assert {"after", "after, from the desktop"} <= {t for _, t in desktop.history(friend)}
    # A session with it that comes up later (a dial that was in flight) carries nothing,
    # and what it still sends is dropped and counted.
    laptop.sync.device_up(phone.id)
    laptop.sync.changed()
    assert phone.inbox == []
    phone.send_text(friend, "from the lost phone")
    payload, _ = encode_batch(phone.store.rows_after(0, 10))
    laptop.sync.receive(phone.id, payload)
    assert "from the lost phone" not in [t for _, t in laptop.history(friend)]
    assert laptop.sync.stats["from_revoked"] == 1


def test_an_envelope_too_large_to_carry_is_left_out() -> None:
    me, friend = Identity.generate(), Identity.generate().public_key
    env = env_mod.create(me, b"d" * 16, friend, env_mod.TEXT, env_mod.text_body("hi"),
                         lamport=1, now=time.time())  # fmt: skip
    row = MessageRow.of(env, "out", "sent", 0)
    small, _ = encode_batch([(1, row)], {env.id: b"x" * CARRIED_MAX})
    large, _ = encode_batch([(1, row)], {env.id: b"x" * (CARRIED_MAX + 1)})
    assert decode_sync(small, 0).envelopes == (b"x" * CARRIED_MAX,)  # type: ignore[union-attr]
    assert decode_sync(large, 0).envelopes == ()  # type: ignore[union-attr]
    too_large = {**decode(small), b"e": [b"x" * (CARRIED_MAX + 1)]}
    with pytest.raises(SyncError):
        decode_sync(encode(too_large), 0)
