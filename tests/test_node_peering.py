"""Peering keeps one session per (identity, device), on loopback with no DHT at all."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from harness import ContactList, until

from btchat.discovery.rendezvous import Candidate
from btchat.identity.keys import DeviceCertificate, DeviceKey, Identity
from btchat.net.dht_service import DhtError
from btchat.node.peering import Peering, PeeringConfig


class NoDht:
    """Every DHT operation fails: the rendezvous finds nothing, we dial by hand."""

    async def announce(self, *args: Any) -> None:
        raise DhtError("offline")

    async def get_peers(self, *args: Any) -> None:
        raise DhtError("offline")

    async def put_mutable(self, *args: Any, **kwargs: Any) -> None:
        raise DhtError("offline")

    async def get_mutable(self, *args: Any) -> None:
        raise DhtError("offline")


@dataclass
class Node:
    identity: Identity
    device: DeviceKey
    cert: DeviceCertificate
    contacts: list[bytes]
    up: list[bytes] = field(default_factory=list)
    down: list[bytes] = field(default_factory=list)
    data: list[tuple[bytes, bytes, bytes]] = field(default_factory=list)
    peering: Peering = field(init=False)

    def __post_init__(self) -> None:
        self.peering = Peering(
            self.identity,
            self.device,
            self.cert,
            NoDht(),  # type: ignore[arg-type]
            PeeringConfig(host="127.0.0.1", round_interval=3600.0),
            contacts=ContactList(self.contacts),
            on_established=self.up.append,
            on_closed=lambda pk, reason: self.down.append(pk),
            on_data=lambda pk, device, payload: self.data.append((pk, device, payload)),
        )

    @property
    def addr(self) -> tuple[str, int]:
        return ("127.0.0.1", self.peering.port)


def node(identity: Identity, contacts: list[bytes]) -> Node:
    device = DeviceKey.generate()
    return Node(identity, device, identity.certify(device, int(time.time())), contacts)


@pytest.fixture
async def three() -> AsyncIterator[tuple[Node, Node, Node]]:
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
    three: tuple[Node, Node, Node],
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
    three: tuple[Node, Node, Node],
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
