"""Rendezvous scheduling: each contact on its own, a bounded number at once (issue 10)."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from btchat.codec.bencode import decode
from btchat.dht.node import GetPeersResult, PutResult
from btchat.discovery.rendezvous import (
    Candidate,
    FixedDirectory,
    Rendezvous,
    RendezvousConfig,
    decode_device_list,
    encode_device_list,
    put_again_in,
)
from btchat.identity.keys import DeviceCertificate, DeviceKey, Identity
from btchat.identity.rendezvous import lookup_targets, pairwise_secret
from btchat.messaging.store import Store
from btchat.net.dht_service import DhtError
from btchat.node.devices import OwnDevices
from btchat.node.tasks import TaskOwner


class FakeDht:
    """Lookups for the contacts in ``hang`` never answer; the others find nothing at
    their first lookup (not announced yet), then one address."""

    def __init__(self, targets: dict[bytes, bytes], hang: set[bytes]) -> None:
        self.targets = targets  # infohash -> contact
        self.hang = hang
        self.calls: dict[bytes, int] = {}
        self.in_flight = 0
        self.most_in_flight = 0
        self.implied: list[bool] = []

    async def announce(self, infohash: bytes, port: int, *, implied_port: bool = False) -> None:
        self.implied.append(implied_port)

    async def get_peers(self, infohash: bytes) -> GetPeersResult:
        self.in_flight += 1
        self.most_in_flight = max(self.most_in_flight, self.in_flight)
        try:
            contact = self.targets.get(infohash, b"")
            if contact in self.hang:
                await asyncio.Event().wait()
            self.calls[contact] = self.calls.get(contact, 0) + 1
            if self.calls[contact] <= self.per_look(contact):  # the whole first lookup
                return GetPeersResult([], 1, 1)
            return GetPeersResult([("127.0.0.1", 9)], 1, 1)
        finally:
            self.in_flight -= 1

    def per_look(self, contact: bytes) -> int:
        return sum(1 for c in self.targets.values() if c == contact)

    async def put_mutable(self, item: object) -> None:
        raise DhtError("not joined")

    async def get_mutable(self, public_key: bytes, salt: bytes = b"") -> None:
        raise DhtError("not joined")


class Reacher:
    def __init__(self) -> None:
        self.reached: dict[bytes, float] = {}

    def connected(self, contact: bytes) -> bool:
        return contact in self.reached

    async def reach(self, candidates: list[Candidate]) -> bool:
        self.reached[candidates[0].identity] = time.monotonic()
        return True


def _cert(identity: Identity) -> DeviceCertificate:
    return identity.certify(DeviceKey.generate(), int(time.time()))


async def _run(hang_count: int, fast_count: int, max_lookups: int) -> tuple[FakeDht, Reacher]:
    me = Identity.generate()
    slow = [Identity.generate() for _ in range(hang_count)]
    fast = [Identity.generate() for _ in range(fast_count)]
    certs = {c.public_key: _cert(c) for c in slow + fast}
    targets = {
        ih: c.public_key
        for c in slow + fast
        for ih in lookup_targets(
            pairwise_secret(me, c.public_key), me.public_key, c.public_key, time.time()
        )
    }
    dht = FakeDht(targets, {c.public_key for c in slow})
    reacher = Reacher()
    rendezvous = Rendezvous(
        me,
        _cert(me),
        dht,  # type: ignore[arg-type]
        RendezvousConfig(max_lookups=max_lookups),
        reacher,
        FixedDirectory([c.public_key for c in slow + fast], {pk: [c] for pk, c in certs.items()}),
    )
    tasks = TaskOwner()
    tasks.spawn(rendezvous.run(4000, tasks.spawn))
    deadline = time.monotonic() + 5
    while len(reacher.reached) < fast_count and time.monotonic() < deadline:
        await asyncio.sleep(0.01)
    await asyncio.sleep(0.1)
    await tasks.cancel_all()
    return dht, reacher


async def test_an_unreachable_contact_does_not_delay_the_others() -> None:
    # A round that waited for every contact would never retry the reachable ones.
    start = time.monotonic()
    dht, reacher = await _run(hang_count=3, fast_count=2, max_lookups=8)
    assert len(reacher.reached) == 2
    assert all(dht.calls[c] > dht.per_look(c) for c in reacher.reached)  # found at a retry
    assert max(reacher.reached.values()) - start < 2.0
    # Announced with implied_port: the address found is our DHT socket's NAT mapping.
    assert dht.implied and all(dht.implied)


async def test_lookups_at_once_are_bounded() -> None:
    dht, reacher = await _run(hang_count=6, fast_count=0, max_lookups=2)
    assert dht.most_in_flight == 2 and reacher.reached == {}


def test_only_the_identitys_valid_certificates_are_kept() -> None:
    alice, bob = Identity.generate(), Identity.generate()
    good = alice.certify(DeviceKey.generate(), 100)
    forged = bytearray(alice.certify(DeviceKey.generate(), 200).encode())
    forged[-1] ^= 1  # the signature no longer verifies
    items = [good.encode(), bytes(forged), bob.certify(DeviceKey.generate(), 1).encode(), 7, b"x"]
    assert DeviceCertificate.all_of(alice.public_key, items) == [good]
    assert DeviceCertificate.all_of(alice.public_key, {b"certs": items}) == []  # not a list
    listed = encode_device_list([good, bob.certify(DeviceKey.generate(), 2)])
    assert decode_device_list(listed, alice.public_key) == [good]


class ThinPutDht(FakeDht):
    """The first device-list put lands on 2 of the 8 closest (6 time out), later ones
    on all 8; the routing table knows 20 nodes."""

    def __init__(self) -> None:
        super().__init__({}, set())
        self.puts: list[float] = []
        self.routing_size, self.bucket_size = 20, 8

    async def put_mutable(self, item: object) -> PutResult:  # type: ignore[override]
        self.puts.append(time.monotonic())
        if len(self.puts) == 1:
            return PutResult(b"t" * 20, 2, ["timeout"] * 6, 30)
        return PutResult(b"t" * 20, 8, [], 30)


async def test_a_device_list_on_too_few_nodes_is_put_again_soon() -> None:
    # Regression: one storing node counted as success, and the next put was 30 min later.
    me = Identity.generate()
    dht = ThinPutDht()
    rendezvous = Rendezvous(
        me,
        _cert(me),
        dht,  # type: ignore[arg-type]
        RendezvousConfig(),
        Reacher(),
        FixedDirectory([]),
    )
    tasks = TaskOwner()
    tasks.spawn(rendezvous.run(4000, tasks.spawn))
    deadline = time.monotonic() + 3
    while len(dht.puts) < 2 and time.monotonic() < deadline:
        await asyncio.sleep(0.02)
    await asyncio.sleep(0.2)
    await tasks.cancel_all()
    assert len(dht.puts) == 2  # once again after the thin put, then not again (8 stored)
    assert dht.puts[1] - dht.puts[0] < 1.5
    assert rendezvous.stats["device_list_stored_at"] == 8


def test_put_again_in_asks_for_most_of_the_k_closest_but_not_more_than_exist() -> None:
    config = RendezvousConfig()
    assert put_again_in(5, 3, 50, 8, 1, config) == config.republish
    assert put_again_in(4, 4, 50, 8, 1, config) == config.reput_first
    assert put_again_in(4, 4, 50, 8, 3, config) == config.reput_first * 4  # backing off
    assert put_again_in(1, 0, 50, 8, 40, config) == config.republish  # bounded
    # A three-node swarm that stored it everywhere is not asked again and again.
    assert put_again_in(3, 0, 3, 8, 1, config) == config.republish


class PutDht(FakeDht):
    """Keeps every device-list put; each lands on all 8 closest nodes."""

    def __init__(self) -> None:
        super().__init__({}, set())
        self.puts: list[tuple[int, bytes]] = []
        self.routing_size, self.bucket_size = 20, 8

    async def put_mutable(self, item: object) -> PutResult:  # type: ignore[override]
        self.puts.append((item.seq, item.v_bencoded))  # type: ignore[attr-defined]
        return PutResult(b"t" * 20, 8, [], 30)


async def test_adding_a_device_republishes_the_list_at_once(tmp_path: Path) -> None:
    me = Identity.generate()
    own = OwnDevices(Store.open(tmp_path / "m.db", None), _cert(me))
    dht = PutDht()
    rendezvous = Rendezvous(
        me, own.certificate, dht,  # type: ignore[arg-type]
        RendezvousConfig(), Reacher(), FixedDirectory([]), own,
    )  # fmt: skip
    tasks = TaskOwner()
    tasks.spawn(rendezvous.run(4000, tasks.spawn))
    try:
        deadline = time.monotonic() + 3
        while not dht.puts and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        assert decode_device_list(dht.puts[0][1], me.public_key) == [own.certificate]
        other = me.certify(DeviceKey.generate(), 200)
        own.add(other)  # the next put would be 30 minutes away without the poke
        while len(dht.puts) < 2 and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
    finally:
        await tasks.cancel_all()
    assert len(dht.puts) == 2
    assert decode_device_list(dht.puts[1][1], me.public_key) == [own.certificate, other]
    assert dht.puts[1][0] > dht.puts[0][0]  # a newer seq, even within the same second
    assert len(decode(dht.puts[1][1])[b"certs"]) == 2
