"""Own devices and contacts' devices: lists merge, revocations are for good, old lists
are ignored (issue 13 items 2 and 4; hostile: forged, replayed and rolled-back lists)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from btchat.dht import bep44
from btchat.dht.node import GetItemResult, PutResult
from btchat.discovery.rendezvous import Candidate, FixedDirectory, Rendezvous, RendezvousConfig
from btchat.errors import ApiError, UsageError
from btchat.identity.devices import (
    DEVICES_SALT,
    MAX_REVOKED,
    REVOKED_SALT,
    DeviceSet,
    decode_device_list,
    decode_revoked,
    encode_device_list,
    encode_revoked,
)
from btchat.identity.keys import DeviceCertificate, DeviceKey, Identity
from btchat.messaging.store import Store
from btchat.node.contacts import ContactBook
from btchat.node.device_lists import DeviceLists
from btchat.node.devices import OwnDevices
from btchat.node.profile import Profiles


def _cert(identity: Identity, created: int = 100) -> DeviceCertificate:
    return identity.certify(DeviceKey.generate(), created)


def test_device_sets_merge_the_same_whichever_way_round() -> None:
    me = Identity.generate()
    a, b, c = (_cert(me, t) for t in (1, 2, 3))
    left = DeviceSet((a, b))
    right = DeviceSet((c,), frozenset({b.device_id}))
    one, other = left.merged(right), right.merged(left)
    assert set(one.ids()) == set(other.ids()) == {a.device_id, c.device_id}
    assert one.revoked == other.revoked == {b.device_id}
    assert one.merged(right) == one  # idempotent
    # A newer certificate of the same device replaces the older one.
    newer = me.certify(DeviceKey.from_bytes(b"k" * 32, a.device_id), 50)
    assert DeviceSet((a,)).merged(DeviceSet((newer,))).certs == (newer,)
    assert not one.allows(b) and one.allows(c)


def test_revocation_lists_skip_junk_and_are_bounded() -> None:
    ids = [bytes([i]) * 16 for i in range(3)]
    assert decode_revoked(encode_revoked(ids)) == frozenset(ids)
    assert decode_revoked(b"d3:revl1:x4:abcdi5ee" + b"e") == frozenset()
    assert decode_revoked(b"not bencode") == frozenset()
    assert decode_revoked(b"d3:rev" + b"l" + b"16:" + ids[0] + b"i7ee" + b"e") == {ids[0]}
    many = [i.to_bytes(16, "big") for i in range(MAX_REVOKED)]
    assert len(encode_revoked(many)) <= bep44.MAX_VALUE_SIZE
    with pytest.raises(ValueError):
        encode_revoked([*many, b"z" * 16])


def test_revocations_are_sticky_and_old_lists_are_ignored(tmp_path: Path) -> None:
    store = Store.open(tmp_path / "m.db", None)
    lists = DeviceLists(store)
    pk, dev = b"p" * 32, b"d" * 16
    assert lists.learn(pk, list_seq=10, revoked_seq=10, revoked=frozenset({dev})).newly_revoked
    assert not lists.learn(pk, list_seq=9).list_current  # rollback
    # An older revocation list without it, or a newer one: still revoked.
    lists.learn(pk, revoked_seq=5, revoked=frozenset())
    lists.learn(pk, revoked_seq=20, revoked=frozenset())
    store.close()
    reopened = DeviceLists(Store.open(tmp_path / "m.db", None))
    assert reopened.is_revoked(pk, dev)
    assert reopened.learn(pk, list_seq=10).list_current  # the same list again is fine


class ListDht:
    """Serves one identity's two BEP 44 items, signed as a real node would verify them."""

    def __init__(self) -> None:
        self.items: dict[bytes, GetItemResult] = {}

    def publish(self, identity: Identity, salt: bytes, value: bytes, seq: int) -> None:
        item = bep44.sign_mutable(identity.private_key, value, seq, salt)
        self.items[salt] = GetItemResult(None, item.v_bencoded, seq, item.signature, 1)

    async def get_mutable(self, public_key: bytes, salt: bytes = b"") -> GetItemResult:
        return self.items.get(salt, GetItemResult(None, None, None, None, 1))


class Reacher:
    def __init__(self) -> None:
        self.ended: list[frozenset[bytes]] = []

    def connected(self, contact: bytes) -> bool:
        return False

    async def reach(self, candidates: list[Candidate]) -> bool:
        return False

    def revoked(self, contact: bytes, device_ids: frozenset[bytes]) -> None:
        self.ended.append(device_ids)


def _rendezvous(me: Identity, dht: Any, directory: Any, reacher: Reacher) -> Rendezvous:
    return Rendezvous(me, _cert(me), dht, RendezvousConfig(), reacher, directory)


@pytest.mark.parametrize("book_kind", ["fixed", "contact_book"])
def test_a_revoked_device_is_dropped_and_stays_dropped(tmp_path: Path, book_kind: str) -> None:
    me, alice = Identity.generate(), Identity.generate()
    laptop, phone = _cert(alice, 1), _cert(alice, 2)
    directory: Any
    if book_kind == "fixed":
        directory = FixedDirectory([alice.public_key])
    else:
        store = Store.open(tmp_path / "m.db", None)
        store.add_contact(alice.public_key, "alice", 0)
        directory = ContactBook(me.public_key, store, Profiles(me, store))
    dht, reacher = ListDht(), Reacher()
    rendezvous = _rendezvous(me, dht, directory, reacher)
    refresh = lambda: asyncio.run(rendezvous.refresh_devices(alice.public_key))  # noqa: E731

    dht.publish(alice, DEVICES_SALT, encode_device_list([laptop, phone]), 100)
    refresh()
    assert directory.certs_of(alice.public_key) == [laptop, phone]

    dht.publish(alice, DEVICES_SALT, encode_device_list([laptop]), 200)
    dht.publish(alice, REVOKED_SALT, encode_revoked([phone.device_id]), 200)
    refresh()
    assert directory.certs_of(alice.public_key) == [laptop]
    assert reacher.ended == [frozenset({phone.device_id})]

    # A stale node replays the old list: ignored, and the phone stays revoked anyway.
    dht.publish(alice, DEVICES_SALT, encode_device_list([laptop, phone]), 100)
    dht.items.pop(REVOKED_SALT)
    refresh()
    assert directory.certs_of(alice.public_key) == [laptop]
    # Even a newer list naming it again (a thief with the seed) does not bring it back.
    dht.publish(alice, DEVICES_SALT, encode_device_list([laptop, phone]), 300)
    refresh()
    assert directory.certs_of(alice.public_key) == [laptop]
    assert directory.revoked_devices(alice.public_key) == {phone.device_id}
    assert len(reacher.ended) == 1


def test_a_list_signed_by_someone_else_does_not_verify() -> None:
    # Forgery: the DHT node checks every item against the identity key (BEP 44), so a
    # revocation list signed by another key is never returned for this identity.
    alice, mallory = Identity.generate(), Identity.generate()
    item = bep44.sign_mutable(mallory.private_key, encode_revoked([b"x" * 16]), 5, REVOKED_SALT)
    forged = bep44.MutableItem(
        alice.public_key, item.salt, item.seq, item.v_bencoded, item.signature
    )
    assert item.verify() and not forged.verify()


class SharedDht(ListDht):
    """One identity's items as every one of its devices reads and puts them."""

    def __init__(self) -> None:
        super().__init__()
        self.node = SimpleNamespace(routing=[object()] * 20, config=SimpleNamespace(k=8))

    async def put_mutable(self, item: bep44.MutableItem) -> PutResult:
        old = self.items.get(item.salt)
        assert item.verify() and (old is None or item.seq > old.seq)  # as BEP 44 nodes do
        self.items[item.salt] = GetItemResult(None, item.v_bencoded, item.seq, item.signature, 1)
        return PutResult(b"t" * 20, 8, [], 30)


def _own(tmp_path: Path, name: str, me: Identity, dht: SharedDht) -> tuple[OwnDevices, Any]:
    own = OwnDevices(Store.open(tmp_path / f"{name}.db", None), _cert(me))
    rendezvous = Rendezvous(
        me, own.certificate, dht, RendezvousConfig(), Reacher(), FixedDirectory([]), own
    )  # type: ignore[arg-type]

    return own, lambda: asyncio.run(rendezvous._publish_own())


def test_own_devices_converge_on_links_and_revocations(tmp_path: Path) -> None:
    me, dht = Identity.generate(), SharedDht()
    laptop, publish_laptop = _own(tmp_path, "laptop", me, dht)
    desktop, publish_desktop = _own(tmp_path, "desktop", me, dht)
    phone, publish_phone = _own(tmp_path, "phone", me, dht)
    laptop.add(desktop.certificate)
    desktop.add(laptop.certificate)
    publish_laptop()
    laptop.add(phone.certificate)  # linked on the laptop only
    publish_laptop()
    publish_desktop()  # reads the laptop's list back: learns of the phone
    assert {c.device_id for c in desktop.certs()} == {
        c.device_id for c in (laptop.certificate, desktop.certificate, phone.certificate)
    }
    # The phone is lost: revoked on the desktop; the laptop learns at its next round.
    desktop.revoke(desktop.find(phone.certificate.device_id.hex()[:6]).device_id)
    publish_desktop()
    publish_laptop()
    assert phone.certificate.device_id in laptop.revoked()
    assert phone.certificate not in laptop.certs()
    assert decode_device_list(dht.items[DEVICES_SALT].v_bencoded, me.public_key) == laptop.certs()
    # The phone reads the lists: it knows it is cut off, and cannot be added back.
    publish_phone()
    assert phone.this_revoked
    # ...and it neither revokes nor links devices any more, nor puts a list.
    with pytest.raises(ApiError) as cut_off:
        phone.revoke(laptop.certificate.device_id)
    assert cut_off.value.code == "this_revoked"
    before = dict(dht.items)
    publish_phone()
    assert dht.items == before
    with pytest.raises(UsageError):
        laptop.add(phone.certificate)


def test_revoking_needs_an_existing_other_device(tmp_path: Path) -> None:
    me = Identity.generate()
    own = OwnDevices(Store.open(tmp_path / "m.db", None), _cert(me))
    with pytest.raises(ApiError) as this:
        own.find(own.certificate.device_id.hex())
    assert this.value.code == "this_device"
    with pytest.raises(ApiError) as unknown:
        own.find("abcd")
    assert unknown.value.code == "unknown_device"
    with pytest.raises(ApiError) as bad:
        own.find("xyz")
    assert bad.value.code == "bad_device"
