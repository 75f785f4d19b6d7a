"""The sans-I/O mailbox engine against an in-memory DHT and a fake clock."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import pytest

from btchat.codec.bencode import decode, encode
from btchat.dht import bep44
from btchat.identity.keys import Identity
from btchat.identity.rendezvous import pairwise_secret
from btchat.messaging import envelope as env_mod
from btchat.messaging.store import Store
from btchat.offline import packet as pk
from btchat.offline.inbox import apply_outcome, drain_inbox
from btchat.offline.mailbox import (
    ACK_MARGIN_MS,
    EXPIRY_GRACE_MS,
    Acked,
    Expired,
    Get,
    Mailbox,
    MailboxConfig,
    Put,
    Received,
    Undecryptable,
)
from btchat.offline.packet import OfflinePacket
from btchat.offline.ratchet import PREKEY_SALT, Ratchet
from btchat.offline.state import MailboxState
from btchat.sansio import drain_events

DAY = 86400
#: 06:00 UTC on day 20000: far from a day boundary, so only today's heads are read.
START = 20000 * DAY + 6 * 3600.0
#: The first counter of a direction whose first packet goes out at START (Unix ms).
N0 = int(START * 1000)


class FakeDht:
    """BEP 44 storage as public nodes do it: signatures checked, seq never lowered, an
    equal seq keeps the stored item; items can be dropped to model expiry."""

    def __init__(self) -> None:
        self.items: dict[tuple[bytes, bytes], bep44.MutableItem] = {}
        self.tampered: dict[tuple[bytes, bytes], object] = {}
        self.puts: list[bep44.MutableItem] = []
        self.gets: list[tuple[bytes, bytes]] = []

    def put(self, item: bep44.MutableItem) -> bool:
        bep44.check_mutable(item)
        self.puts.append(item)
        key = (item.public_key, item.salt)
        current = self.items.get(key)
        if current is not None and item.seq <= current.seq:
            return item.seq == current.seq
        self.items[key] = item
        return True

    def get(self, public_key: bytes, salt: bytes) -> object | None:
        key = (public_key, salt)
        self.gets.append(key)
        if key in self.tampered:
            return self.tampered[key]
        item = self.items.get(key)
        return None if item is None else decode(item.v_bencoded)

    def expire(self, keep: Callable[[bytes, bytes], bool] = lambda k, s: False) -> None:
        self.items = {key: v for key, v in self.items.items() if keep(*key)}


@dataclass
class User:
    name: str
    identity: Identity
    path: Path
    config: MailboxConfig
    store: Store = field(init=False)
    state: MailboxState = field(init=False)
    mailbox: Mailbox = field(init=False)
    contacts: list[bytes] = field(default_factory=list)
    events: list[Any] = field(default_factory=list)
    delivered: list[env_mod.Envelope] = field(default_factory=list)
    outcomes: list[tuple[str, tuple[bytes, ...]]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.open()

    def open(self) -> None:
        """Start (or restart) from the database, as the daemon does."""
        self.store = Store.open(self.path, None)
        self.state = MailboxState(self.store)
        self.mailbox = Mailbox(
            self.identity, self.state, Ratchet(self.identity, self.state), self.config
        )

    @property
    def pk(self) -> bytes:
        return self.identity.public_key


class World:
    def __init__(self, tmp_path: Path) -> None:
        self.tmp_path = tmp_path
        self.dht = FakeDht()
        self.now = START

    def user(self, name: str, config: MailboxConfig | None = None) -> User:
        user = User(
            name, Identity.generate(), self.tmp_path / f"{name}.db", config or MailboxConfig()
        )
        assert self.dht.put(user.mailbox.bundle_item(self.now))
        return user

    def befriend(self, *users: User) -> None:
        for a in users:
            for b in users:
                if a is not b and b.pk not in a.contacts:
                    a.contacts.append(b.pk)
                    a.store.add_contact(b.pk, b.name, int(self.now * 1000))

    def send(self, a: User, b: User, text: str) -> bytes:
        envelope = env_mod.create(
            a.identity,
            bytes(16),
            b.pk,
            env_mod.TEXT,
            env_mod.text_body(text),
            lamport=a.store.next_lamport(b.pk, None),
            now=self.now,
        )
        a.store.save_outgoing(envelope, self.now)
        a.mailbox.deposit(b.pk, envelope.id, env_mod.encode_envelope(envelope), self.now)
        self.pump(a)
        return envelope.id

    def pump(self, user: User, *, handle: bool = True) -> list[Any]:
        """Carry out the mailbox's requests (and those they cause) against the DHT."""
        events = []
        for event in drain_events(user.mailbox):
            if isinstance(event, Get):
                value = self.dht.get(event.public_key, event.salt)
                user.mailbox.on_get(event.token, value, self.now)
            elif isinstance(event, Put):
                user.mailbox.on_put(event.token, self.dht.put(event.item))
            else:
                events.append(event)
        user.events.extend(events)
        if handle:
            self.handle(user, events)
        return events

    def handle(self, user: User, events: list[Any]) -> None:
        for event in events:
            state = apply_outcome(user.store, event)
            if state is not None:
                user.outcomes.append((state, event.msg_ids))
            elif isinstance(event, Received):
                self.deliver(user)

    def deliver(self, user: User) -> None:
        for envelope, fresh in drain_inbox(user.state, user.store, user.pk, self.now):
            if fresh:
                user.delivered.append(envelope)

    def tick(self, user: User, *, handle: bool = True) -> list[Any]:
        user.mailbox.set_contacts(user.contacts)
        user.mailbox.handle_timer(self.now)
        return self.pump(user, handle=handle)

    def poll(self, user: User, *, handle: bool = True) -> list[Any]:
        user.mailbox.set_contacts(user.contacts)
        user.mailbox.poll(self.now)
        return self.pump(user, handle=handle)


@pytest.fixture
def world(tmp_path: Path) -> World:
    return World(tmp_path)


def texts(user: User) -> list[str]:
    return [env_mod.decode_text(e) for e in user.delivered]


def chunk_key(a: User, b: User, n: int, part: int = 0) -> bytes:
    return pk.chunk_slot(pairwise_secret(a.identity, b.pk), a.pk, b.pk, n, part).public_key


def head_slot(a: User, b: User, now: float) -> pk.Slot:
    return pk.head_slot(pairwise_secret(a.identity, b.pk), a.pk, b.pk, int(now // DAY))


def head_in_dht(world: World, a: User, b: User) -> pk.Head:
    slot = head_slot(a, b, world.now)
    return pk.Head.from_payload(pk.open_item(slot, world.dht.get(slot.public_key, b"")))


def pending_packet(user: User, peer: User, n: int = N0) -> bytes:
    (out,) = [p for p in user.state.pending(peer.pk) if p.n == n]
    return out.packet


# ------------------------------------------------------------------ deposit and ack


def test_deposit_poll_receive_and_ack(world: World) -> None:
    alice, bob = world.user("alice"), world.user("bob")
    world.befriend(alice, bob)
    msg_id = world.send(alice, bob, "hello bob")
    # No session yet: the bundle was fetched from the DHT, then the packet queued.
    assert (bob.pk, PREKEY_SALT) in world.dht.gets
    assert alice.mailbox.stats["deposited"] == 1
    (out,) = alice.state.pending(bob.pk)
    assert (out.n, out.msg_id, out.expires_ms) == (N0, msg_id, int((world.now + 2 * DAY) * 1000))
    assert head_in_dht(world, alice, bob) == pk.Head(N0, N0 + 1, -1)

    world.now += 60
    events = world.tick(bob)
    assert [type(e) for e in events] == [Received]
    assert (events[0].peer, events[0].n) == (alice.pk, N0)
    assert texts(bob) == ["hello bob"]
    row = bob.store.get_message(msg_id)
    assert row is not None and (row.direction, row.state, row.text) == (
        "in",
        "delivered",
        "hello bob",
    )
    assert bob.state.inbox() == []
    assert bob.mailbox.stats["received"] == 1
    # Bob's own head acknowledges packet 0.
    assert head_in_dht(world, bob, alice) == pk.Head(0, 0, N0)

    world.now += 60
    assert alice.store.get_message(msg_id).state == "pending"  # type: ignore[union-attr]
    events = world.tick(alice)
    assert events == [Acked(bob.pk, (msg_id,))]
    assert alice.outcomes == [("delivered", (msg_id,))]
    assert alice.store.get_message(msg_id).state == "delivered"  # type: ignore[union-attr]
    assert alice.store.pending_outbox(bob.pk) == []
    assert alice.state.pending() == []
    assert alice.state.peer(bob.pk).their_ack == N0

    # Acknowledged packets are not republished: after the items expire, nothing comes back.
    world.dht.expire()
    world.dht.puts.clear()
    world.now += 2 * 3600
    world.tick(alice)
    assert chunk_key(alice, bob, N0) not in {p.public_key for p in world.dht.puts}
    world.tick(bob)
    assert texts(bob) == ["hello bob"] and bob.mailbox.stats["received"] == 1


def test_unacknowledged_packets_are_republished_until_fetched(world: World) -> None:
    alice, bob = world.user("alice"), world.user("bob")
    world.befriend(alice, bob)
    world.send(alice, bob, "one")
    for _ in range(5):
        world.dht.expire(lambda k, s: s == PREKEY_SALT)  # public nodes forget the items
        world.now += 3600
        world.tick(alice)
    world.tick(bob)
    assert texts(bob) == ["one"]


def test_two_messages_in_one_millisecond_are_both_announced_and_acked(world: World) -> None:
    """Several heads written at the same time must not be dropped as an equal seq."""
    alice, bob = world.user("alice"), world.user("bob")
    world.befriend(alice, bob)
    ids = [world.send(alice, bob, t) for t in ("first", "second", "third")]
    assert head_in_dht(world, alice, bob) == pk.Head(N0, N0 + 3, -1)
    world.now += 1
    world.tick(bob)
    assert texts(bob) == ["first", "second", "third"]
    assert head_in_dht(world, bob, alice) == pk.Head(0, 0, N0 + 2)
    world.now += 1
    world.tick(alice)
    assert alice.outcomes == [("delivered", tuple(ids))]
    assert alice.state.pending() == []


def test_long_message_is_cut_into_chunks_and_reassembled(world: World) -> None:
    alice, bob = world.user("alice"), world.user("bob")
    world.befriend(alice, bob)
    text = "".join(chr(0x41 + i % 26) for i in range(10 * 1024))
    msg_id = world.send(alice, bob, text)
    packet = pending_packet(alice, bob)
    chunks = math.ceil(len(packet) / pk.CHUNK_DATA)
    assert chunks >= 12
    stored = {k for k, _ in world.dht.items}
    assert {chunk_key(alice, bob, N0, i) for i in range(chunks)} <= stored
    assert chunk_key(alice, bob, N0, chunks) not in stored
    # Every item in the DHT has the same size, whatever it carries.
    mailbox_items = [i for (k, s), i in world.dht.items.items() if s != PREKEY_SALT]
    assert len(mailbox_items) == chunks + 1
    assert {len(i.v_bencoded) for i in mailbox_items} == {984}
    world.tick(bob)
    assert texts(bob) == [text]
    assert bob.store.get_message(msg_id).text == text  # type: ignore[union-attr]


def test_missing_chunk_is_retried_at_the_next_poll(world: World) -> None:
    alice, bob = world.user("alice"), world.user("bob")
    world.befriend(alice, bob)
    world.send(alice, bob, "y" * 3000)
    lost = chunk_key(alice, bob, N0, 2)
    saved = world.dht.items.pop((lost, b""))
    world.tick(bob)
    assert texts(bob) == [] and bob.mailbox.stats["chunks_missing"] == 1
    world.dht.items[(lost, b"")] = saved
    world.now += 900
    world.tick(bob)
    assert texts(bob) == ["y" * 3000]


def test_a_look_that_misses_just_after_start_is_repeated_within_minutes(world: World) -> None:
    # Just after start a lookup may miss the storing nodes (a thin routing table): the
    # message is found at the next of the start polls, not a whole poll interval later.
    alice, bob = world.user("alice"), world.user("bob")
    world.befriend(alice, bob)
    world.send(alice, bob, "are you there?")
    stored = dict(world.dht.items)
    world.dht.items.clear()
    start = world.now
    world.tick(bob)
    assert texts(bob) == []
    assert bob.mailbox.get_timer() == start + 20  # not start + 900
    world.dht.items.update(stored)
    world.now = start + 20
    world.tick(bob)
    assert texts(bob) == ["are you there?"]
    for due in (start + 60, start + 180):  # the rest of the start polls
        assert bob.mailbox.get_timer() == due
        world.now = due
        world.tick(bob)
    assert (bob.mailbox.get_timer() or 0) > start + 180 + 60  # then the interval


# -------------------------------------------------------------------- friend backup


def test_dht_first_then_backup_is_stored_once(world: World) -> None:
    alice, bob, carol = world.user("alice"), world.user("bob"), world.user("carol")
    world.befriend(alice, bob, carol)
    msg_id = world.send(alice, bob, "via two paths")
    packets = alice.mailbox.backup_for(carol.pk, world.now)
    assert packets == [pending_packet(alice, bob)]
    assert alice.mailbox.backup_for(carol.pk, world.now) == []  # handed over already
    assert alice.mailbox.backup_for(bob.pk, world.now) == []  # never to the recipient
    assert carol.mailbox.accept_hold(alice.pk, packets, set(carol.contacts), world.now) == 1
    held = carol.mailbox.held_for(bob.pk)
    assert held == packets and carol.mailbox.held_for(alice.pk) == []

    world.tick(bob)
    assert texts(bob) == ["via two paths"]
    release = bob.mailbox.take_held(carol.pk, held, world.now)
    world.pump(bob)
    assert release == [(alice.pk, N0)]
    assert bob.mailbox.stats["duplicates"] == 1 and bob.mailbox.stats["received"] == 1
    assert carol.mailbox.release_held(bob.pk, release) == 1
    assert carol.mailbox.held_for(bob.pk) == []
    assert texts(bob) == ["via two paths"]
    assert [m.id for m in bob.store.history(alice.pk)] == [msg_id]


def test_backup_first_then_dht_is_stored_once(world: World) -> None:
    alice, bob, carol = world.user("alice"), world.user("bob"), world.user("carol")
    world.befriend(alice, bob, carol)
    msg_id = world.send(alice, bob, "backup wins")
    packets = alice.mailbox.backup_for(carol.pk, world.now)
    assert carol.mailbox.accept_hold(alice.pk, packets, set(carol.contacts), world.now) == 1
    release = bob.mailbox.take_held(carol.pk, carol.mailbox.held_for(bob.pk), world.now)
    events = world.pump(bob)
    assert [type(e) for e in events] == [Received]
    assert release == [(alice.pk, N0)]
    assert texts(bob) == ["backup wins"]
    # The DHT copy is now known as received: not even fetched.
    world.dht.gets.clear()
    world.tick(bob)
    assert (chunk_key(alice, bob, N0), b"") not in world.dht.gets
    assert texts(bob) == ["backup wins"] and bob.mailbox.stats["received"] == 1
    # Alice learns of it from Bob's head, although it came by Carol.
    world.tick(alice)
    assert alice.outcomes == [("delivered", (msg_id,))]


def test_sender_offline_for_good_backup_delivers(world: World) -> None:
    alice, bob, carol = world.user("alice"), world.user("bob"), world.user("carol")
    world.befriend(alice, bob, carol)
    world.send(alice, bob, "last words")
    world.send(alice, bob, "really")
    assert (
        carol.mailbox.accept_hold(
            alice.pk, alice.mailbox.backup_for(carol.pk, world.now), set(carol.contacts), world.now
        )
        == 2
    )
    world.now += 3 * 3600
    world.dht.expire(lambda k, s: s == PREKEY_SALT)  # Alice stopped republishing
    world.tick(bob)
    assert texts(bob) == []
    release = bob.mailbox.take_held(carol.pk, carol.mailbox.held_for(bob.pk), world.now)
    world.pump(bob)
    assert texts(bob) == ["last words", "really"]
    assert carol.mailbox.release_held(bob.pk, release) == 2
    assert carol.state.held_for(bob.pk) == []


def test_hold_quotas(world: World) -> None:
    config = MailboxConfig(backup_per_sender=2, backup_total=3)
    alice, bob, carol = world.user("alice"), world.user("bob"), world.user("carol", config)
    dave = world.user("dave")
    world.befriend(alice, bob, carol, dave)
    for i in range(3):
        world.send(alice, bob, f"a{i}")
    for i in range(2):
        world.send(dave, bob, f"d{i}")
    from_alice = alice.mailbox.backup_for(carol.pk, world.now)
    from_dave = dave.mailbox.backup_for(carol.pk, world.now)
    assert (len(from_alice), len(from_dave)) == (3, 2)
    contacts = set(carol.contacts)
    assert carol.mailbox.accept_hold(alice.pk, from_alice, contacts, world.now) == 2
    assert carol.mailbox.stats["backup_quota"] == 1
    assert carol.mailbox.accept_hold(dave.pk, from_dave, contacts, world.now) == 1
    assert carol.mailbox.stats["backup_quota"] == 2
    assert len(carol.state.held_for(bob.pk)) == 3
    # Handing an already held packet again is not a new entry and not over quota.
    assert carol.mailbox.accept_hold(alice.pk, from_alice[:1], contacts, world.now) == 1
    assert carol.mailbox.stats["backup_quota"] == 2
    assert len(carol.state.held_for(bob.pk)) == 3
    # Releasing makes room again.
    assert carol.mailbox.release_held(bob.pk, [(alice.pk, N0)]) == 1
    assert carol.mailbox.accept_hold(alice.pk, from_alice[2:], contacts, world.now) == 1
    assert sorted((h.sender, h.n) for h in carol.state.held_for(bob.pk)) == sorted(
        [(alice.pk, N0 + 1), (alice.pk, N0 + 2), (dave.pk, N0)]
    )


def test_hold_only_for_own_contacts_and_signed_by_the_friend(world: World) -> None:
    alice, bob, carol, dave = (world.user(n) for n in ("alice", "bob", "carol", "dave"))
    world.befriend(alice, bob)
    world.befriend(alice, carol)
    world.befriend(alice, dave)
    world.befriend(dave, carol)
    world.send(alice, bob, "for bob")
    world.send(alice, carol, "for carol")
    world.send(alice, dave, "for dave")
    to_bob, to_carol = pending_packet(alice, bob), pending_packet(alice, carol)
    to_dave = pending_packet(alice, dave)
    contacts = set(carol.contacts)
    assert bob.pk not in contacts
    # Bob is not Carol's contact; a packet for Carol herself is not "held".
    assert carol.mailbox.accept_hold(alice.pk, [to_bob, to_carol], contacts, world.now) == 0
    assert carol.mailbox.stats["bad_packets"] == 0
    # Dave hands Alice's packet as if it were his: refused (not signed by him).
    assert carol.mailbox.accept_hold(dave.pk, [to_dave], contacts, world.now) == 0
    assert carol.mailbox.stats["bad_packets"] == 1
    # Garbage and a tampered signature.
    parsed = OfflinePacket.parse(to_dave)
    tampered = replace(parsed, n=parsed.n + 1).encode()
    assert carol.mailbox.accept_hold(alice.pk, [b"junk", tampered], contacts, world.now) == 0
    assert carol.mailbox.stats["bad_packets"] == 3
    # Expired packets are not held.
    world.now += 3 * DAY
    assert carol.mailbox.accept_hold(alice.pk, [to_dave], contacts, world.now) == 0
    world.now -= 3 * DAY
    assert carol.state.held_for(bob.pk) == [] and carol.state.held_for(dave.pk) == []
    assert carol.mailbox.accept_hold(alice.pk, [to_dave], contacts, world.now) == 1
    assert carol.mailbox.held_for(dave.pk) == [to_dave]
    # Held packets go when they expire.
    world.now += 3 * DAY
    world.tick(carol)
    assert carol.mailbox.held_for(dave.pk) == []


def test_take_held_refuses_garbage_and_forgeries(world: World) -> None:
    alice, bob, carol = world.user("alice"), world.user("bob"), world.user("carol")
    world.befriend(alice, bob, carol)
    world.send(alice, bob, "genuine")
    genuine = pending_packet(alice, bob)
    parsed = OfflinePacket.parse(genuine)
    forged = replace(parsed, olm_body=parsed.olm_body[:-1] + b"\x00").encode()
    release = bob.mailbox.take_held(carol.pk, [b"junk", forged, genuine], world.now)
    world.pump(bob)
    assert release == [(alice.pk, N0)]
    assert bob.mailbox.stats["bad_packets"] == 2
    assert texts(bob) == ["genuine"]


# ---------------------------------------------------------------------- expiry


def test_expiry_is_reported_and_marks_failed(world: World) -> None:
    alice, bob, dave = world.user("alice"), world.user("bob"), world.user("dave")
    world.befriend(alice, bob)
    world.befriend(alice, dave)
    alice.state.set_retention(dave.pk, DAY)
    alice.state.set_retention(bob.pk, 4 * DAY)
    assert alice.mailbox.retention_of(dave.pk) == DAY
    assert alice.mailbox.retention_of(bob.pk) == 4 * DAY
    to_dave = world.send(alice, dave, "short-lived")
    to_bob = world.send(alice, bob, "long-lived")
    assert {p.msg_id: p.expires_ms for p in alice.state.pending()} == {
        to_dave: int((world.now + DAY) * 1000),
        to_bob: int((world.now + 4 * DAY) * 1000),
    }
    start = world.now
    world.now = start + DAY  # exactly at expiry: still pending
    world.tick(alice)
    assert alice.outcomes == [] and len(alice.state.pending()) == 2
    world.now = start + DAY + 1  # past expiry, but Dave may take it in the grace
    world.tick(alice)
    assert alice.outcomes == [] and len(alice.state.pending()) == 2
    # Reported once a look at Dave's head, begun after the grace, found no ack.
    world.now = start + DAY + (EXPIRY_GRACE_MS + ACK_MARGIN_MS) / 1000 + 1
    world.poll(alice)
    events = world.tick(alice)
    assert events == [Expired(dave.pk, (to_dave,))]
    assert alice.outcomes == [("failed", (to_dave,))]
    assert alice.store.get_message(to_dave).state == "failed"  # type: ignore[union-attr]
    assert alice.store.pending_outbox(dave.pk) == []
    assert [p.msg_id for p in alice.state.pending()] == [to_bob]
    assert alice.mailbox.stats["expired"] == 1
    world.now = start + 4 * DAY + (EXPIRY_GRACE_MS + ACK_MARGIN_MS) / 1000 + 1
    world.poll(alice)
    world.tick(alice)
    assert alice.outcomes[-1] == ("failed", (to_bob,))
    assert alice.state.pending() == []


def test_expired_packet_is_refused_by_the_recipient(world: World) -> None:
    alice, bob = world.user("alice"), world.user("bob")
    world.befriend(alice, bob)
    alice.state.set_retention(bob.pk, DAY)
    world.send(alice, bob, "late")
    data = pending_packet(alice, bob)
    expires_ms = OfflinePacket.parse(data).expires_ms
    world.now = (expires_ms + EXPIRY_GRACE_MS) / 1000 + 1
    assert not bob.mailbox.offer_packet(alice.pk, data, world.now)
    assert bob.mailbox.stats["expired_refused"] == 1
    world.now -= 2  # within the clock-skew grace: accepted
    assert bob.mailbox.offer_packet(alice.pk, data, world.now)


def test_default_retention_and_config(world: World) -> None:
    alice = world.user("alice", MailboxConfig(retention=3 * DAY))
    bob = world.user("bob")
    assert alice.mailbox.retention_of(bob.pk) == 3 * DAY
    alice.state.set_retention(bob.pk, 5 * DAY)
    assert alice.mailbox.retention_of(bob.pk) == 5 * DAY
    alice.state.set_retention(bob.pk, None)
    assert alice.mailbox.retention_of(bob.pk) == 3 * DAY


# ------------------------------------------------------------------ hostile input


def _sealed_garbage(slot: pk.Slot, payload: dict[bytes, Any]) -> object:
    return decode(pk.seal_item(slot, payload))


def test_garbage_at_mailbox_slots_is_counted_and_does_not_block(world: World) -> None:
    alice, bob = world.user("alice"), world.user("bob")
    world.befriend(alice, bob)
    world.send(alice, bob, "x" * 2000)  # three chunks
    head = head_slot(alice, bob, world.now)
    chunk0 = (chunk_key(alice, bob, N0, 0), b"")
    chunk1 = (chunk_key(alice, bob, N0, 1), b"")
    secret = pairwise_secret(alice.identity, bob.pk)
    slot0 = pk.chunk_slot(secret, alice.pk, bob.pk, N0, 0)
    cases: list[tuple[tuple[bytes, bytes], object, str]] = [
        ((head.public_key, b""), b"short", "bad_items"),
        ((head.public_key, b""), 12345, "bad_items"),
        ((head.public_key, b""), {b"lo": 0}, "bad_items"),
        ((head.public_key, b""), bytes(980), "bad_items"),
        # Authentic encryption, nonsense head.
        ((head.public_key, b""), _sealed_garbage(head, {b"lo": 2, b"hi": 1, b"a": 0}), "bad_items"),
        # Another slot's sealed value replayed here.
        (chunk0, world.dht.get(*chunk1), "bad_items"),
        (chunk0, [b"list"], "bad_items"),
        (chunk0, _sealed_garbage(slot0, {b"c": 99, b"i": 0, b"d": b"x"}), "bad_items"),
        (chunk0, _sealed_garbage(slot0, {b"c": 1, b"i": 0, b"d": b"not a packet"}), "bad_packets"),
        (
            chunk1,
            _sealed_garbage(
                pk.chunk_slot(secret, alice.pk, bob.pk, N0, 1), {b"c": 2, b"i": 1, b"d": b"x"}
            ),
            "bad_items",
        ),
    ]
    for i, (key, value, stat) in enumerate(cases):
        world.dht.tampered = {key: value}
        before = bob.mailbox.stats[stat]
        world.now += 900
        assert world.tick(bob) == [], i
        assert bob.mailbox.stats[stat] == before + 1, i
        assert texts(bob) == [], i
    world.dht.tampered = {}
    world.now += 900
    world.tick(bob)
    assert texts(bob) == ["x" * 2000]
    assert bob.mailbox.stats["bad_items"] == 9 and bob.mailbox.stats["bad_packets"] == 1


def test_packet_from_someone_else_at_the_slot_is_refused(world: World) -> None:
    alice, bob, carol = world.user("alice"), world.user("bob"), world.user("carol")
    world.befriend(alice, bob, carol)
    world.send(carol, bob, "from carol")
    carols = pending_packet(carol, bob)
    assert not bob.mailbox.offer_packet(alice.pk, carols, world.now)
    assert bob.mailbox.stats["bad_packets"] == 1
    world.send(alice, carol, "for carol")
    assert not bob.mailbox.offer_packet(alice.pk, pending_packet(alice, carol), world.now)
    assert bob.mailbox.stats["bad_packets"] == 2
    assert bob.state.inbox() == [] and bob.mailbox.stats["received"] == 0


def test_a_replayed_packet_is_not_decrypted_twice(world: World) -> None:
    alice, bob = world.user("alice"), world.user("bob")
    world.befriend(alice, bob)
    world.send(alice, bob, "once")
    data = pending_packet(alice, bob)
    assert bob.mailbox.offer_packet(alice.pk, data, world.now)
    assert not bob.mailbox.offer_packet(alice.pk, data, world.now)
    # A different packet reusing counter 0 is not even decrypted (no Undecryptable).
    parsed = OfflinePacket.parse(data)
    other = OfflinePacket.create(
        alice.identity, bob.pk, N0, parsed.expires_ms, parsed.olm_key, 1, b"other body"
    )
    assert not bob.mailbox.offer_packet(alice.pk, other.encode(), world.now)
    events = [e for e in drain_events(bob.mailbox) if not isinstance(e, Get | Put)]
    assert [type(e) for e in events] == [Received]
    assert bob.mailbox.stats["duplicates"] == 2 and bob.mailbox.stats["received"] == 1
    world.deliver(bob)
    assert texts(bob) == ["once"]


def test_undecryptable_packet_is_reported(tmp_path: Path, world: World) -> None:
    alice, bob = world.user("alice"), world.user("bob")
    world.befriend(alice, bob)
    world.send(alice, bob, "before the loss")
    # Bob loses his database: a new one under the same identity.
    bob.store.close()
    bob.path = tmp_path / "bob-new.db"
    bob.open()
    events = world.tick(bob)
    assert [type(e) for e in events] == [Undecryptable]
    assert events[0].peer == alice.pk and events[0].n == N0
    assert bob.mailbox.stats["undecryptable"] == 1
    assert not bob.state.peer(alice.pk).has_received(N0)
    assert texts(bob) == []


# ----------------------------------------------------------------- crash safety


def test_received_packet_survives_a_crash_before_it_is_stored(world: World) -> None:
    alice, bob = world.user("alice"), world.user("bob")
    world.befriend(alice, bob)
    msg_id = world.send(alice, bob, "durable")
    events = world.tick(bob, handle=False)  # crash before drain_inbox
    assert [type(e) for e in events] == [Received]
    assert bob.store.get_message(msg_id) is None
    bob.store.close()
    bob.open()  # restart from the same database
    assert [(p, n) for p, n, _ in bob.state.inbox()] == [(alice.pk, N0)]
    world.deliver(bob)
    assert texts(bob) == ["durable"]
    assert bob.store.get_message(msg_id).state == "delivered"  # type: ignore[union-attr]
    assert bob.state.inbox() == []
    world.deliver(bob)
    assert texts(bob) == ["durable"]
    # The restarted mailbox knows packet 0 was received: no second copy from the DHT.
    world.now += 900
    assert world.tick(bob) == []
    assert bob.mailbox.stats["duplicates"] == 0 and bob.mailbox.stats["received"] == 0
    assert texts(bob) == ["durable"]
    # And Alice's next message continues the same ratchet.
    world.send(alice, bob, "after restart")
    world.now += 900
    world.tick(bob)
    assert texts(bob) == ["durable", "after restart"]


def test_drain_inbox_drops_invalid_envelopes(world: World) -> None:
    alice, bob, carol = world.user("alice"), world.user("bob"), world.user("carol")
    world.befriend(alice, bob, carol)
    # An envelope addressed to Carol, sent to Bob's mailbox by Alice.
    envelope = env_mod.create(
        alice.identity,
        bytes(16),
        carol.pk,
        env_mod.TEXT,
        env_mod.text_body("misdirected"),
        lamport=1,
        now=world.now,
    )
    alice.mailbox.deposit(bob.pk, envelope.id, env_mod.encode_envelope(envelope), world.now)
    world.pump(alice)
    world.tick(bob)
    assert bob.mailbox.stats["received"] == 1
    assert texts(bob) == [] and bob.state.inbox() == []
    assert bob.store.get_message(envelope.id) is None


def test_a_message_that_came_by_session_is_not_stored_twice(world: World) -> None:
    alice, bob = world.user("alice"), world.user("bob")
    world.befriend(alice, bob)
    msg_id = world.send(alice, bob, "both ways")
    blob = alice.store.pending_outbox(bob.pk)[0]
    assert bob.store.save_incoming(env_mod.parse_envelope(blob), world.now)  # by session
    world.tick(bob)
    assert bob.mailbox.stats["received"] == 1 and texts(bob) == []
    assert [m.id for m in bob.store.history(alice.pk)] == [msg_id]


def test_acknowledged_over_a_session_stops_republishing(world: World) -> None:
    alice, bob = world.user("alice"), world.user("bob")
    world.befriend(alice, bob)
    first = world.send(alice, bob, "one")
    second = world.send(alice, bob, "two")
    assert alice.mailbox.is_queued(first) and alice.mailbox.is_queued(second)
    alice.mailbox.acknowledged([first])
    assert not alice.mailbox.is_queued(first) and alice.mailbox.is_queued(second)
    assert [p.n for p in alice.state.pending()] == [N0 + 1]
    world.now += 3600
    world.dht.expire(lambda k, s: s == PREKEY_SALT)
    world.tick(alice)
    assert head_in_dht(world, alice, bob) == pk.Head(N0 + 1, N0 + 2, -1)
    assert (chunk_key(alice, bob, N0), b"") not in world.dht.items
    world.tick(bob)
    assert texts(bob) == ["two"]
    assert bob.state.peer(alice.pk).received == N0 + 1  # counter N0 settled by lo
    world.now += 900
    world.tick(alice)
    assert alice.outcomes == [("delivered", (second,))]


def test_encoded_sizes(world: World) -> None:
    alice, bob = world.user("alice"), world.user("bob")
    world.befriend(alice, bob)
    world.send(alice, bob, "z" * env_mod.MAX_TEXT)
    packet = pending_packet(alice, bob)
    assert len(packet) <= pk.MAX_PACKET
    assert len(encode(bob.mailbox.ratchet.bundle(0).encode())) < 1000
    world.tick(bob)
    assert texts(bob) == ["z" * env_mod.MAX_TEXT]


def test_yesterdays_head_is_read_early_in_the_day(world: World) -> None:
    alice, bob = world.user("alice"), world.user("bob")
    world.befriend(alice, bob)
    midnight = 20001 * DAY
    world.now = midnight - 600
    world.send(alice, bob, "late at night")
    # Ten minutes into the new day Alice has not written today's head yet.
    world.now = midnight + 600
    world.tick(bob)
    assert texts(bob) == ["late at night"]


def test_yesterdays_head_is_not_read_late_in_the_day(world: World) -> None:
    alice, bob = world.user("alice"), world.user("bob")
    world.befriend(alice, bob)
    midnight = 20001 * DAY
    world.now = midnight - 600
    world.send(alice, bob, "late at night")
    world.now = midnight + 4 * 3600
    world.tick(bob)
    assert texts(bob) == []
    # Alice's republish at the new day writes today's head: found at the next poll.
    world.tick(alice)
    world.now += 900
    world.tick(bob)
    assert texts(bob) == ["late at night"]


def test_both_sides_start_a_session_at_once(world: World) -> None:
    alice, bob = world.user("alice"), world.user("bob")
    world.befriend(alice, bob)
    world.send(alice, bob, "a0")
    world.send(bob, alice, "b0")
    sent = {"alice": ["a0"], "bob": ["b0"]}
    for i in range(1, 4):
        world.now += 900
        world.tick(alice)
        world.tick(bob)
        world.send(alice, bob, f"a{i}")
        world.send(bob, alice, f"b{i}")
        sent["alice"].append(f"a{i}")
        sent["bob"].append(f"b{i}")
    world.now += 900
    world.tick(alice)
    world.tick(bob)
    assert sorted(texts(bob)) == sent["alice"]
    assert sorted(texts(alice)) == sent["bob"]
    assert not [e for u in (alice, bob) for e in u.events if isinstance(e, Undecryptable)]


def test_deposit_is_idempotent_per_message(world: World) -> None:
    alice, bob = world.user("alice"), world.user("bob")
    world.befriend(alice, bob)
    msg_id = world.send(alice, bob, "once")
    blob = alice.store.pending_outbox(bob.pk)[0]
    assert alice.mailbox.deposit(bob.pk, msg_id, blob, world.now)
    world.pump(alice)
    assert [p.n for p in alice.state.pending()] == [N0]
    assert alice.state.peer(bob.pk).next_out == N0 + 1
    assert alice.mailbox.is_queued(msg_id)


def test_deposit_waits_for_prekeys(world: World) -> None:
    alice = world.user("alice")
    bob = User("bob", Identity.generate(), world.tmp_path / "bob.db", MailboxConfig())
    world.befriend(alice, bob)
    msg_id = world.send(alice, bob, "waiting")  # Bob's bundle is not in the DHT
    assert alice.state.pending() == [] and alice.mailbox.is_queued(msg_id)
    world.now += 3600
    world.tick(alice)
    assert alice.state.pending() == []
    assert world.dht.put(bob.mailbox.bundle_item(world.now))
    world.now += 3600
    world.tick(alice)  # the republish asks for the bundle again
    assert [p.msg_id for p in alice.state.pending()] == [msg_id]
    world.tick(bob)
    assert texts(bob) == ["waiting"]


def test_sender_database_loss_does_not_lose_new_messages(world: World, tmp_path: Path) -> None:
    alice, bob = world.user("alice"), world.user("bob")
    world.befriend(alice, bob)
    world.send(alice, bob, "one")
    world.send(alice, bob, "two")
    world.tick(bob)
    assert texts(bob) == ["one", "two"]
    # Alice's database is lost: a new one under the same identity.
    alice.store.close()
    alice.path = tmp_path / "alice-new.db"
    alice.open()
    alice.store.add_contact(bob.pk, "bob", 0)
    world.now += 60  # restoring a database and starting again takes a while
    new = world.send(alice, bob, "after the loss")
    world.now += 900
    world.tick(bob)
    world.now += 900
    world.tick(alice)
    # Counters start at the time of the first packet, so the new ones are above the
    # old: Bob takes it for new (not a copy of "one"), and only then acknowledges it.
    assert texts(bob) == ["one", "two", "after the loss"]
    assert alice.store.get_message(new).state == "delivered"  # type: ignore[union-attr]
