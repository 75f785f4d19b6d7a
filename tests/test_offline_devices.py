"""Every device of a person reads the DHT mailbox (packet v2, protocol 1.6), sans I/O.

One packet, a key per device: the sender encrypts the envelope once and wraps the key
for each listed device of the recipient, so a device reads it alone, with the mailbox
device off. Driven against the in-memory DHT of ``test_offline_mailbox``.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from test_offline_mailbox import N0, World, head_in_dht, pending_packet, texts

from btchat.codec.bencode import decode, encode
from btchat.identity.keys import Identity
from btchat.identity.rendezvous import pairwise_secret
from btchat.messaging.store import Store
from btchat.offline import packet as pk
from btchat.offline.mailbox import Mailbox, Received, Undecryptable
from btchat.offline.packet import OfflinePacket, PacketError
from btchat.offline.ratchet import PREKEY_SALT, Ratchet, device_prekey_salt
from btchat.offline.state import MailboxState


@dataclass
class Device:
    """One device of an identity (its own database and Olm account), as test_offline_mailbox's
    User; ``reader`` for a device that is not its identity's mailbox device."""

    name: str
    identity: Identity
    path: Path
    device_id: bytes
    reader: bool = False
    contacts: list[bytes] = field(default_factory=list)
    events: list[Any] = field(default_factory=list)
    delivered: list[Any] = field(default_factory=list)
    outcomes: list[Any] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.store = Store.open(self.path, None)
        self.state = MailboxState(self.store)
        self.mailbox = Mailbox(
            self.identity,
            self.state,
            Ratchet(self.identity, self.state),
            device_id=self.device_id,
            reader=self.reader,
        )

    @property
    def pk(self) -> bytes:
        return self.identity.public_key


def device(
    world: World,
    name: str,
    identity: Identity | None = None,
    *,
    reader: bool = False,
    publish: bool = True,
) -> Device:
    d = Device(
        name,
        identity or Identity.generate(),
        world.tmp_path / f"{name}.db",
        secrets.token_bytes(16),
        reader,
    )
    if publish:  # a 1.6 device publishes its own bundle (the mailbox device: both)
        for item in d.mailbox.bundle_items(world.now):
            assert world.dht.put(item)
    elif not reader:
        assert world.dht.put(d.mailbox.bundle_item(world.now))
    return d


@pytest.fixture
def world(tmp_path: Path) -> World:
    return World(tmp_path)


@pytest.fixture
def household(world: World) -> tuple[Device, Device, Device]:
    """Alice, and Bob's two devices: the laptop (mailbox device) and the desktop."""
    alice = device(world, "alice")
    bob = Identity.generate()
    laptop = device(world, "laptop", bob)
    desktop = device(world, "desktop", bob, reader=True)
    world.befriend(alice, laptop)  # type: ignore[arg-type]
    desktop.contacts.append(alice.pk)
    desktop.store.add_contact(alice.pk, "alice", int(world.now * 1000))
    alice.mailbox.devices_of = lambda peer: [laptop.device_id, desktop.device_id]
    return alice, laptop, desktop


def sent(alice: Device, peer: Device, n: int = N0) -> OfflinePacket:
    return OfflinePacket.parse(pending_packet(alice, peer, n))  # type: ignore[arg-type]


# -------------------------------------------------------------------------- tests


def test_each_device_reads_the_one_packet_alone(
    world: World, household: tuple[Device, Device, Device]
) -> None:
    alice, laptop, desktop = household
    msg_id = world.send(alice, laptop, "for both of you")  # type: ignore[arg-type]
    # One packet, its key wrapped for each device, from each device's own bundle.
    for d in (laptop, desktop):
        assert (laptop.pk, device_prekey_salt(d.device_id)) in world.dht.gets
    assert (laptop.pk, PREKEY_SALT) not in world.dht.gets  # v1's bundle: not needed
    packet = sent(alice, laptop)
    assert packet.version == 2 and alice.mailbox.stats["deposited_v2"] == 1
    assert [w[0] for w in packet.wraps] == [laptop.device_id, desktop.device_id]
    assert [w[1] for w in packet.wraps] == [0, 0]  # pre-key messages: new sessions
    assert alice.state.session_pickles(laptop.pk) == []  # no v1 session: one per device
    # The desktop, alone up (the laptop is off), reads it.
    events = world.tick(desktop)  # type: ignore[arg-type]
    assert [type(e) for e in events] == [Received]
    assert texts(desktop) == ["for both of you"]  # type: ignore[arg-type]
    # The laptop, back, reads its own wrap of the same packet.
    world.now += 60
    world.tick(laptop)  # type: ignore[arg-type]
    assert texts(laptop) == ["for both of you"]  # type: ignore[arg-type]
    row = laptop.store.get_message(msg_id)
    assert row is not None and row.text == "for both of you"
    # The next packet uses the sessions the first started: no bundle read again.
    gets = len(world.dht.gets)
    world.now += 60
    world.send(alice, laptop, "again")  # type: ignore[arg-type]
    assert len(world.dht.gets) == gets
    world.poll(desktop)  # type: ignore[arg-type]
    world.poll(laptop)  # type: ignore[arg-type]
    assert texts(desktop) == texts(laptop) == ["for both of you", "again"]  # type: ignore[arg-type]


def test_a_device_not_wrapped_cannot_read_and_does_not_fetch_again(
    world: World, household: tuple[Device, Device, Device]
) -> None:
    alice, laptop, _ = household
    phone = device(world, "phone", laptop.identity, reader=True)  # linked after alice read
    phone.contacts.append(alice.pk)
    world.send(alice, laptop, "not for the phone")  # type: ignore[arg-type]
    events = world.tick(phone)  # type: ignore[arg-type]
    assert not [e for e in events if isinstance(e, Received | Undecryptable)]
    assert phone.mailbox.stats["not_wrapped"] == 1 and texts(phone) == []  # type: ignore[arg-type]
    assert not phone.state.peer(alice.pk).has_received(N0)  # the laptop still may
    secret = pairwise_secret(phone.identity, alice.pk)
    chunk0 = pk.chunk_slot(secret, alice.pk, phone.pk, N0, 0).public_key
    fetched = world.dht.gets.count((chunk0, b""))
    world.now += 3600
    world.tick(phone)  # type: ignore[arg-type]
    assert world.dht.gets.count((chunk0, b"")) == fetched  # remembered as not ours


def test_a_revoked_device_gets_no_wrap_in_later_packets(
    world: World, household: tuple[Device, Device, Device]
) -> None:
    alice, laptop, desktop = household
    world.send(alice, laptop, "before")  # type: ignore[arg-type]
    world.tick(desktop)  # type: ignore[arg-type]
    # Bob revokes the desktop: alice's device list of Bob no longer names it.
    alice.mailbox.devices_of = lambda peer: [laptop.device_id]
    world.now += 60
    world.send(alice, laptop, "after")  # type: ignore[arg-type]
    later = sent(alice, laptop, N0 + 1)
    assert [w[0] for w in later.wraps] == [laptop.device_id]
    world.now += 60
    world.poll(desktop)  # type: ignore[arg-type]
    assert texts(desktop) == ["before"]  # type: ignore[arg-type]
    assert desktop.mailbox.stats["not_wrapped"] == 1
    world.tick(laptop)  # type: ignore[arg-type]
    assert texts(laptop) == ["before", "after"]  # type: ignore[arg-type]


def test_a_1_5_device_of_the_recipient_means_v1_which_a_reader_skips(world: World) -> None:
    alice = device(world, "alice")
    bob = Identity.generate()
    laptop = device(world, "laptop", bob)
    desktop = device(world, "desktop", bob, reader=True, publish=False)  # no own bundle
    world.befriend(alice, laptop)  # type: ignore[arg-type]
    desktop.contacts.append(alice.pk)
    alice.mailbox.devices_of = lambda peer: [laptop.device_id, desktop.device_id]
    world.send(alice, laptop, "old style")  # type: ignore[arg-type]
    packet = sent(alice, laptop)
    assert packet.version == 1 and alice.mailbox.stats["deposited_v2"] == 0
    assert (bob.public_key, PREKEY_SALT) in world.dht.gets
    events = world.tick(desktop)  # type: ignore[arg-type]
    assert not [e for e in events if isinstance(e, Received | Undecryptable)]
    assert desktop.mailbox.stats["v1_skipped"] == 1
    world.tick(laptop)  # type: ignore[arg-type]
    assert texts(laptop) == ["old style"]  # type: ignore[arg-type]


def _resigned(alice: Device, packet: OfflinePacket, **change: Any) -> bytes:
    fields = {**packet.__dict__, "signature": b"", **change}
    unsigned = OfflinePacket(**fields)
    return OfflinePacket(
        **{**unsigned.__dict__, "signature": alice.identity.sign(unsigned.signed_bytes())}
    ).encode()


def test_tampered_wraps_and_ciphertext_are_refused_and_counted(
    world: World, household: tuple[Device, Device, Device]
) -> None:
    alice, laptop, desktop = household
    world.send(alice, laptop, "intact")  # type: ignore[arg-type]
    packet = sent(alice, laptop)
    data = packet.encode()
    # Altered in transit: the signature covers wraps and ciphertext.
    for index in (data.index(packet.olm_body) + 3, data.index(packet.wraps[1][2]) + 40):
        flipped = data[:index] + bytes([data[index] ^ 1]) + data[index + 1 :]
        assert not desktop.mailbox.offer_packet(alice.pk, flipped, world.now)
    assert desktop.mailbox.stats["bad_packets"] == 2
    # Signed by the sender but broken: a ciphertext that is not the wrapped key's, a
    # wrap that is the laptop's. Counted, reported, and the counter is not taken.
    body = bytearray(packet.olm_body)
    body[5] ^= 1
    bad_body = _resigned(alice, packet, olm_body=bytes(body))
    (lap, _desk) = packet.wraps
    swapped = _resigned(alice, packet, wraps=(lap, (desktop.device_id, lap[1], lap[2])))
    for bad in (bad_body, swapped):
        assert not desktop.mailbox.offer_packet(alice.pk, bad, world.now)
    assert desktop.mailbox.stats["undecryptable"] == 2
    assert not desktop.state.peer(alice.pk).has_received(N0)
    # The intact packet still decrypts afterwards: nothing of the failures was kept.
    assert desktop.mailbox.offer_packet(alice.pk, data, world.now)
    assert desktop.mailbox.stats["received"] == 1


def test_at_most_five_devices_are_wrapped(world: World) -> None:
    alice = device(world, "alice")
    bob = Identity.generate()
    devices = [device(world, f"bob{i}", bob, reader=i > 0) for i in range(7)]
    world.befriend(alice, devices[0])  # type: ignore[arg-type]
    alice.mailbox.devices_of = lambda peer: [d.device_id for d in devices]
    world.send(alice, devices[0], "five")  # type: ignore[arg-type]
    packet = sent(alice, devices[0])
    assert [w[0] for w in packet.wraps] == [d.device_id for d in devices[:5]]
    asked = {salt for _, salt in world.dht.gets}
    assert device_prekey_salt(devices[6].device_id) not in asked  # not even looked up
    # A packet listing six is refused by every reader, and cannot be made.
    six = (*packet.wraps, (secrets.token_bytes(16), 0, b"x"))
    with pytest.raises(ValueError):
        OfflinePacket.create_v2(
            alice.identity, bob.public_key, 1, 1, packet.olm_key, list(six), packet.olm_body
        )
    fields = decode(packet.encode())
    fields[b"w"] = [list(w) for w in six]
    with pytest.raises(PacketError, match="1 to 5"):
        OfflinePacket.parse(encode(fields))


def test_a_reader_acknowledges_without_undoing_the_mailbox_devices_head(
    world: World, household: tuple[Device, Device, Device]
) -> None:
    alice, laptop, desktop = household
    # The laptop has a packet of its own pending for alice: its head lists it.
    laptop.mailbox.devices_of = lambda peer: [alice.device_id]
    world.send(laptop, alice, "from bob's laptop")  # type: ignore[arg-type]
    theirs = head_in_dht(world, laptop, alice)  # type: ignore[arg-type]
    assert (theirs.lo, theirs.hi) == (N0, N0 + 1)
    world.now += 1
    world.send(alice, laptop, "to bob")  # type: ignore[arg-type]
    world.now += 60
    world.tick(desktop)  # type: ignore[arg-type]
    assert texts(desktop) == ["to bob"]  # type: ignore[arg-type]
    # The desktop's head: the laptop's lo and hi, its own acknowledgement.
    merged = head_in_dht(world, laptop, alice)  # type: ignore[arg-type]
    assert (merged.lo, merged.hi, merged.ack) == (N0, N0 + 1, N0 + 1000)
    assert desktop.mailbox.stats["deposited"] == 0
    # Alice takes the acknowledgement, and still fetches what the laptop left her.
    world.now += 60
    world.tick(alice)  # type: ignore[arg-type]
    assert alice.state.pending() == []
    assert texts(alice) == ["from bob's laptop"]  # type: ignore[arg-type]


def test_a_reader_with_no_head_of_ours_writes_one_that_settles_nothing(
    world: World, household: tuple[Device, Device, Device]
) -> None:
    alice, laptop, desktop = household
    world.send(alice, laptop, "hi")  # type: ignore[arg-type]
    world.tick(desktop)  # type: ignore[arg-type]
    head = head_in_dht(world, laptop, alice)  # type: ignore[arg-type]
    assert (head.lo, head.hi, head.ack) == (0, 0, N0)
    world.now += 60
    world.tick(alice)  # type: ignore[arg-type]
    assert alice.state.pending() == []


def test_what_another_device_received_is_not_fetched_and_is_acknowledged(
    world: World, household: tuple[Device, Device, Device]
) -> None:
    alice, laptop, desktop = household
    world.send(alice, laptop, "read on the desktop")  # type: ignore[arg-type]
    world.tick(desktop)  # type: ignore[arg-type]
    (counter,) = desktop.state.received_counters()
    assert counter == (alice.pk, N0)
    # The laptop (the mailbox device) learns it by sync before it reads the mailbox.
    assert laptop.mailbox.learn_received(*counter, world.now)
    assert not laptop.mailbox.learn_received(alice.pk, N0 - 5, world.now)  # never back
    world.pump(laptop)  # type: ignore[arg-type]
    assert head_in_dht(world, laptop, alice).ack == N0  # type: ignore[arg-type]
    secret = pairwise_secret(laptop.identity, alice.pk)
    chunk0 = pk.chunk_slot(secret, alice.pk, laptop.pk, N0, 0).public_key
    fetched = world.dht.gets.count((chunk0, b""))  # by the desktop
    world.tick(laptop)  # type: ignore[arg-type]
    assert world.dht.gets.count((chunk0, b"")) == fetched and texts(laptop) == []  # type: ignore[arg-type]
    assert laptop.mailbox.stats["received"] == 0
    assert laptop.mailbox.stats["received_elsewhere"] == 1
    # A reader learning a counter moves its own mark, and writes no head for it.
    puts = len(world.dht.puts)
    assert desktop.mailbox.learn_received(alice.pk, N0 + 10, world.now)
    world.pump(desktop)  # type: ignore[arg-type]
    assert len(world.dht.puts) == puts
