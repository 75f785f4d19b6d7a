"""Peering keeps one session per (identity, device), on loopback with no DHT at all."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from harness import PeerNode, peer_node, until

from btchat.discovery.rendezvous import Candidate
from btchat.identity.keys import DeviceCertificate, Identity
from btchat.net import dcutr
from btchat.net.dht_service import DhtError, DhtService
from btchat.net.transport import Address, ByteStream
from btchat.stream.frames import CAPS_UPGRADE


class NoDht:
    """Every DHT operation fails: the rendezvous finds nothing, we dial by hand."""

    async def announce(self, *args: Any, **kwargs: Any) -> None:
        raise DhtError("offline")

    async def get_peers(self, *args: Any) -> None:
        raise DhtError("offline")

    async def put_mutable(self, *args: Any, **kwargs: Any) -> None:
        raise DhtError("offline")

    async def get_mutable(self, *args: Any) -> None:
        raise DhtError("offline")


def node(identity: Identity, contacts: list[bytes], dht: DhtService | None = None) -> PeerNode:
    """A device on loopback; with a real ``dht``, sessions over QUIC on its socket too."""
    return peer_node(identity, contacts, dht=dht if dht is not None else NoDht())


@pytest.fixture
async def three() -> AsyncIterator[tuple[PeerNode, PeerNode, PeerNode]]:
    """Alice, and Bob on two devices (one identity, two device keys)."""
    alice_id, bob_id = Identity.generate(), Identity.generate()
    alice = node(alice_id, [bob_id.public_key])
    phone, laptop = node(bob_id, [alice_id.public_key]), node(bob_id, [alice_id.public_key])
    for n in (alice, phone, laptop):
        await n.peering.start()
    try:
        yield alice, phone, laptop
    finally:
        for n in (alice, phone, laptop):
            await n.peering.stop()


async def test_sessions_per_device_and_sending_to_all_of_them(
    three: tuple[PeerNode, PeerNode, PeerNode],
) -> None:
    alice, phone, laptop = three
    bob = phone.identity.public_key
    candidates = [Candidate(bob, d.cert, d.addr) for d in (phone, laptop)]
    assert await alice.peering.reach(candidates)
    await until(lambda: len(alice.peering.sessions) == 2, 5.0, "len(alice.peering.sessions) == 2")
    assert set(alice.peering.sessions) == {
        (bob, phone.device.device_id),
        (bob, laptop.device.device_id),
    }
    assert alice.up == [bob]  # the contact came online once, whatever its devices
    assert alice.peering.online_contacts() == {bob}

    assert alice.peering.send(bob, b"to every device")
    await until(lambda: bool(phone.data and laptop.data), 5.0, "bool(phone.data and laptop.data)")
    assert (
        phone.data
        == laptop.data
        == [(alice.identity.public_key, alice.device.device_id, b"to every device")]
    )

    # A device that goes away does not take the contact offline; the last one does.
    await phone.peering.stop()
    await until(lambda: len(alice.peering.sessions) == 1, 5.0, "len(alice.peering.sessions) == 1")
    assert alice.down == [] and alice.peering.is_online(bob)
    await laptop.peering.stop()
    await until(lambda: not alice.peering.sessions, 5.0, "not alice.peering.sessions")
    assert alice.down == [bob]


async def test_a_second_dial_to_a_connected_device_keeps_one_session(
    three: tuple[PeerNode, PeerNode, PeerNode],
) -> None:
    alice, phone, _ = three
    bob = phone.identity.public_key
    assert await alice.peering.dial(bob, phone.cert, phone.addr)
    await until(lambda: len(phone.peering.sessions) == 1, 5.0, "len(phone.peering.sessions) == 1")
    # Bob's phone dials back at the same time: both sides keep one and the same session.
    assert await phone.peering.dial(alice.identity.public_key, alice.cert, alice.addr)
    await asyncio.sleep(0.3)
    assert len(alice.peering.sessions) == 1 and len(phone.peering.sessions) == 1
    assert alice.up == [bob] and phone.up == [alice.identity.public_key]


class NoTcp:
    """A dialler whose TCP never connects (as to a home behind a NAT): UDP must carry it."""

    async def dial(self, address: Address) -> ByteStream:
        raise ConnectionRefusedError("no TCP here")


@pytest.fixture
async def udp_pair() -> AsyncIterator[tuple[PeerNode, PeerNode, PeerNode]]:
    """Alice and Bob with real DHT sockets (not joined: sessions only), and Mallory, a
    btchat node who is nobody's contact."""
    alice_id, bob_id = Identity.generate(), Identity.generate()
    made: list[PeerNode] = []
    for me, them in ((alice_id, bob_id), (bob_id, alice_id), (Identity.generate(), alice_id)):
        dht = await DhtService.start(host="127.0.0.1")
        made.append(node(me, [them.public_key], dht))
        await made[-1].peering.start()
    try:
        yield made[0], made[1], made[2]
    finally:
        for n in made:
            await n.peering.stop()
            n.dht.close()


async def test_the_tcp_listener_takes_the_dht_port_number(udp_pair) -> None:  # type: ignore[no-untyped-def]
    alice, bob, _ = udp_pair
    for n in (alice, bob):
        assert n.peering.port == n.dht.addr[1] and n.peering.quic is not None


async def test_a_session_over_quic_carries_messages_both_ways(udp_pair) -> None:  # type: ignore[no-untyped-def]
    alice, bob, _ = udp_pair
    alice.peering.dialer = NoTcp()
    bob_key, alice_key = bob.identity.public_key, alice.identity.public_key
    assert await alice.peering.reach([Candidate(bob_key, bob.cert, bob.dht.addr)])
    await until(lambda: bob.peering.is_online(alice_key), 5, "bob sees alice")
    assert alice.peering.path(bob_key) == ["udp"] and bob.peering.path(alice_key) == ["udp"]
    assert alice.peering.send(bob_key, b"over udp") and bob.peering.send(alice_key, b"back")
    await until(lambda: bool(alice.data and bob.data), 5, "a message each way")
    assert bob.data == [(alice_key, alice.device.device_id, b"over udp")]
    assert alice.data == [(bob_key, bob.device.device_id, b"back")]
    assert alice.peering.stats["sessions_udp"] == 1 and bob.peering.stats["sessions_udp"] == 1
    # The session ends cleanly over QUIC too: bob sees alice go.
    await alice.peering.stop()
    await until(lambda: bob.down == [alice_key], 10, "bob sees alice leave")


async def test_happy_eyeballs_keeps_one_session_of_tcp_and_quic(udp_pair) -> None:  # type: ignore[no-untyped-def]
    alice, bob, _ = udp_pair
    bob_key, alice_key = bob.identity.public_key, alice.identity.public_key
    assert await alice.peering.connect(bob_key, bob.cert, bob.dht.addr)
    await asyncio.sleep(1.0)  # let a second handshake, if any, finish and be closed
    assert len(alice.peering.sessions) == len(bob.peering.sessions) == 1
    assert alice.peering.path(bob_key) == bob.peering.path(alice_key)
    assert alice.up == [bob_key] and bob.up == [alice_key]
    assert alice.peering.send(bob_key, b"one session")
    await until(lambda: bool(bob.data), 5, "the message")


async def test_a_dial_to_the_wrong_address_makes_no_session(udp_pair) -> None:  # type: ignore[no-untyped-def]
    alice, bob, mallory = udp_pair
    alice.peering.dialer = NoTcp()
    bob_key = bob.identity.public_key
    # The rendezvous says bob is at mallory's address (forged, or a stale mapping now
    # someone else's): QUIC connects, but the Noise IK handshake is for bob's key, so
    # mallory cannot read it and learns nothing, and no session comes up either way.
    assert not await alice.peering.reach([Candidate(bob_key, bob.cert, mallory.dht.addr)])
    assert not alice.peering.sessions and not mallory.peering.sessions
    assert mallory.up == [] and alice.up == []
    assert mallory.dht.addr in alice.peering.quic.punching()  # punched, within its bounds


async def test_upgrade_payloads_on_a_direct_session_are_dropped_and_counted(udp_pair) -> None:  # type: ignore[no-untyped-def]
    alice, bob, _ = udp_pair
    bob_key, alice_key = bob.identity.public_key, alice.identity.public_key
    assert await alice.peering.reach([Candidate(bob_key, bob.cert, bob.dht.addr)])
    await until(lambda: bob.peering.is_online(alice_key), 5, "bob sees alice")
    # Both run the upgrade (QUIC on the DHT socket), but this session is direct already.
    live = alice.peering.sessions[(bob_key, bob.device.device_id)]
    assert live.conn.core.peer_caps & CAPS_UPGRADE and live.upgrade is None
    connect = dcutr.encode(dcutr.Message(dcutr.CONNECT, 0, (("203.0.113.9", 4000),)))
    assert alice.peering.send(bob_key, connect) and alice.peering.send(bob_key, b"after")
    await until(lambda: bool(bob.data), 5, "the message after it")
    assert bob.data == [(alice_key, alice.device.device_id, b"after")]  # never the payload
    assert bob.peering.stats["upgrade_dropped"] == 1 and bob.peering.stats["upgrades"] == 0
    assert not bob.peering.quic.punching()


async def test_the_tcp_listener_falls_back_when_the_dht_port_number_is_taken() -> None:
    dht = await DhtService.start(host="127.0.0.1")
    squatter = socket.create_server(("127.0.0.1", dht.addr[1]))
    n = node(Identity.generate(), [], dht)
    try:
        await n.peering.start()
        assert n.peering.port not in (0, dht.addr[1]) and n.peering.quic is not None
    finally:
        await n.peering.stop()
        squatter.close()
        dht.close()


async def test_a_session_replaced_by_the_one_both_keep_is_reported_on_both_sides(
    three: tuple[PeerNode, PeerNode, PeerNode],
) -> None:
    """The side whose dial is not kept dials first; then the other dials: both move to
    the newer session and say so (the daemon reconciles again), the contact still came
    online once, and data flows over the session kept."""
    alice, phone, _ = three
    a, b = alice.identity.public_key, phone.identity.public_key
    keeper, other = (alice, phone) if a < b else (phone, alice)
    assert await other.peering.dial(keeper.identity.public_key, keeper.cert, keeper.addr)
    await until(lambda: bool(alice.up and phone.up), 5.0, "both sessions up")
    first = alice.peering.sessions[(b, phone.device.device_id)].conn
    assert await keeper.peering.dial(other.identity.public_key, other.cert, other.addr)
    await until(lambda: bool(alice.switched and phone.switched), 5.0, "both switched")
    assert alice.switched == [b] and phone.switched == [a]
    assert alice.up == [b] and phone.up == [a] and alice.down == phone.down == []
    assert alice.peering.sessions[(b, phone.device.device_id)].conn is not first
    assert alice.peering.send(b, b"over the kept session")
    await until(lambda: bool(phone.data), 5.0, "data over the kept session")
    assert phone.data == [(a, alice.device.device_id, b"over the kept session")]


async def test_a_second_dial_that_is_not_kept_reports_nothing(
    three: tuple[PeerNode, PeerNode, PeerNode],
) -> None:
    alice, phone, _ = three
    a, b = alice.identity.public_key, phone.identity.public_key
    keeper, other = (alice, phone) if a < b else (phone, alice)
    assert await keeper.peering.dial(other.identity.public_key, other.cert, other.addr)
    await until(lambda: bool(alice.up and phone.up), 5.0, "both sessions up")
    assert await other.peering.dial(keeper.identity.public_key, keeper.cert, keeper.addr)
    await asyncio.sleep(0.3)
    assert alice.switched == phone.switched == []
    assert len(alice.peering.sessions) == len(phone.peering.sessions) == 1


async def test_a_daemon_reconciles_again_over_the_session_both_keep(tmp_path: Path) -> None:
    """Regression (bench pending_delivery, 1 run in 3): both daemons dialled at once, the
    outbox offer went over the session then closed as a duplicate and was lost, and the
    message waited for the offer's timeout or the next reconnect. Now the switch to the
    kept session reconciles again, so the message is delivered at once."""
    from btchat.messaging.conversation import SYNC_TIMEOUT
    from btchat.node.boot import start_node
    from btchat.node.config import Settings

    running = []
    try:
        for name in ("a", "b"):
            settings = Settings(
                data_dir=tmp_path / name,
                bootstrap=[("127.0.0.1", 9)],  # nobody there: we dial by hand
                host="127.0.0.1",
                dht_port=0,
                no_passphrase=True,
                channel_discovery="dht",
            )
            running.append(await start_node(settings, notice=lambda text: None))
        a, b = (node.daemon for node in running)
        await a.add_contact(b.keys.identity.public_key.hex(), "b")
        await b.add_contact(a.keys.identity.public_key.hex(), "a")
        sent = await a.send_message("b", "sent while b was away")  # in the outbox

        # Everything B receives over the first session is lost (as frames in flight on a
        # session being replaced are), then the dial both keep replaces it.
        lossy = [True]
        deliver = b.peering._on_data
        b.peering._on_data = lambda *args: None if lossy[0] else deliver(*args)
        keeper, other = sorted((a, b), key=lambda d: d.keys.identity.public_key)

        def addr(d: Any) -> tuple[str, int]:
            return ("127.0.0.1", d.peering.port)

        assert await other.peering.dial(
            keeper.keys.identity.public_key, keeper.keys.certificate, addr(keeper)
        )
        await until(lambda: a.peering.is_online(b.keys.identity.public_key), 5.0, "a sees b")
        await until(lambda: b.peering.is_online(a.keys.identity.public_key), 5.0, "b sees a")
        await asyncio.sleep(0.3)  # the outbox offer went out over the first session
        lossy[0] = False
        assert await keeper.peering.dial(
            other.keys.identity.public_key, other.keys.certificate, addr(other)
        )

        def delivered() -> bool:
            row = a.store.get_message(bytes.fromhex(sent["id"]))
            return row is not None and row.state in ("delivered", "read")

        await until(delivered, SYNC_TIMEOUT / 2, "the message delivered over the kept session")
        assert [m["text"] for m in await b.history("a", 10, None)] == ["sent while b was away"]
    finally:
        for node in running:
            await node.stop()


class OwnList:
    """Our identity's devices as a stand-in for ``OwnDevices``: listed and revoked."""

    def __init__(self, *certs: DeviceCertificate) -> None:
        self.listed = list(certs)
        self.gone: frozenset[bytes] = frozenset()
        self.this_revoked = False

    def certs(self) -> list[DeviceCertificate]:
        return [c for c in self.listed if c.device_id not in self.gone]

    def revoked(self) -> frozenset[bytes]:
        return self.gone

    def watch(self, callback: Any) -> None:
        pass

    def merge_published(self, *args: Any) -> bool:
        return False


async def test_a_dial_in_flight_makes_no_session_with_a_device_revoked_meanwhile() -> None:
    alice_id, bob_id = Identity.generate(), Identity.generate()
    alice = node(alice_id, [bob_id.public_key])
    phone, laptop = (peer_node(bob_id, [alice_id.public_key]) for _ in range(2))
    phone, laptop = (
        PeerNode(n.identity, n.device, n.cert, n.contacts, dht=NoDht(), own=OwnList(n.cert, o.cert))
        for n, o in ((phone, laptop), (laptop, phone))
    )
    for n in (alice, phone, laptop):
        await n.peering.start()
    try:
        bob, lost = bob_id.public_key, phone.device.device_id
        # Both read the phone's certificate before the revocation reached them (from
        # the DHT, a note of another device, ...); their dials complete after it did.
        alice.directory.revoked[bob] = frozenset({lost})
        laptop.own.gone = frozenset({lost})
        assert not await alice.peering.dial(bob, phone.cert, phone.addr)
        assert not await laptop.peering.dial(bob, phone.cert, phone.addr)
        await asyncio.sleep(0.3)
        assert alice.peering.sessions == {} and laptop.peering.sessions == {}
        assert alice.peering.stats["refused"] == laptop.peering.stats["refused"] == 1
        # Not revoked: the same dials make sessions.
        alice.directory.revoked[bob] = frozenset()
        laptop.own.gone = frozenset()
        assert await alice.peering.dial(bob, phone.cert, phone.addr)
        assert await laptop.peering.dial(bob, phone.cert, phone.addr)
    finally:
        for n in (alice, phone, laptop):
            await n.peering.stop()
