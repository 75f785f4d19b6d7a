"""Linking a device through the asyncio shell over loopback TCP (``--addr``): what the
new data directory holds after a link, and what a wrong code leaves (issue 13)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from btchat.errors import ApiError
from btchat.identity.keys import DeviceKey, Identity
from btchat.identity.keystore import KeyStore
from btchat.identity.linking import parse_code
from btchat.messaging.store import Store, StoreError
from btchat.node import linking as node_linking
from btchat.node.devices import OwnDevices
from btchat.node.linking import DeviceLinking, JoinError, join_device
from btchat.node.profile import Profiles
from btchat.node.tasks import TaskOwner


class Linker:
    """An old device's linking part over a real store, without the rest of a daemon."""

    def __init__(self, root: Path) -> None:
        self.identity = Identity.generate()
        self.cert = self.identity.certify(DeviceKey.generate(), 100)
        self.store = Store.open(root / "old.db", None)
        self.own = OwnDevices(self.store, self.cert)
        self.friend = Identity.generate()
        self.store.add_contact(self.friend.public_key, "bob", 1234)
        self.store.set_verified(self.friend.public_key, True)
        self.store.set_certs(self.friend.public_key, [self.friend.certify(DeviceKey.generate(), 7)])
        profiles = Profiles(self.identity, self.store)
        profiles.set_mine("Alice", "here", None)
        self.events: list[dict[str, Any]] = []
        self.tasks = TaskOwner()
        self.linking = DeviceLinking(
            self.identity, self.store, self.own, profiles,
            host="127.0.0.1", emit=self.events.append, spawn=self.tasks.spawn,
        )  # fmt: skip

    def kinds(self) -> list[str]:
        return [e["type"] for e in self.events]


@pytest.fixture
async def linker(tmp_path: Path) -> Any:
    old = Linker(tmp_path)
    yield old
    await old.linking.close()
    await old.tasks.cancel_all()
    old.store.close()


async def test_a_device_links_with_the_right_code(linker: Linker, tmp_path: Path) -> None:
    offer = await linker.linking.link()
    new_dir = tmp_path / "new"
    result = await join_device(new_dir, offer["code"], None, addr=("127.0.0.1", offer["port"]))
    keys = KeyStore(new_dir).load(None)
    assert keys.identity.public_key == linker.identity.public_key
    assert keys.device.device_id != linker.cert.device_id and result.contacts == 1
    # The old device lists the new one (persisted) and said so.
    assert [c.device_id for c in linker.own.certs()] == [
        linker.cert.device_id, keys.device.device_id,
    ]  # fmt: skip
    assert linker.kinds() == ["device_link_waiting", "device_linked"]
    assert linker.events[-1]["device_id"] == keys.device.device_id.hex()
    with Store.open(new_dir / "messages.db", None) as store:
        bob = store.get_contact(linker.friend.public_key)
        assert bob is not None and bob.name == "bob" and bob.verified and len(bob.certs) == 1
        own = OwnDevices(store, keys.certificate)
        assert [c.device_id for c in own.certs()] == [keys.device.device_id, linker.cert.device_id]
        assert Profiles(keys.identity, store).of(keys.identity.public_key)["name"] == "Alice"
    with pytest.raises(ApiError, match="no link offer"):
        await linker.linking.cancel_link()  # the offer is over


async def test_a_wrong_code_fails_on_both_sides_and_writes_nothing(
    linker: Linker, tmp_path: Path
) -> None:
    offer = await linker.linking.link()
    code = parse_code(offer["code"])
    wrong = f"{code.nameplate}-{code.words[0]}-{'zebra' if code.words[1] != 'zebra' else 'acorn'}"
    new_dir = tmp_path / "new"
    with pytest.raises(JoinError) as failed:
        await join_device(new_dir, wrong, None, addr=("127.0.0.1", offer["port"]))
    assert failed.value.reason == "wrong_code"
    assert not KeyStore(new_dir).exists() and not (new_dir / "messages.db").exists()
    for _ in range(50):
        if "device_link_failed" in linker.kinds():
            break
        await asyncio.sleep(0.02)
    assert linker.events[-1] == {"type": "device_link_failed", "reason": "wrong_code"}
    assert len(linker.own.certs()) == 1
    # The right code is too late now: one guess per offer.
    with pytest.raises(JoinError):
        await join_device(new_dir, offer["code"], None, addr=("127.0.0.1", offer["port"]))
    assert not KeyStore(new_dir).exists()


async def test_one_offer_at_a_time_and_cancel(linker: Linker) -> None:
    await linker.linking.link()
    with pytest.raises(ApiError, match="already open"):
        await linker.linking.link()
    await linker.linking.cancel_link()
    assert linker.events[-1] == {"type": "device_link_failed", "reason": "cancelled"}
    again = await linker.linking.link()  # a new offer, a new code
    assert again["code"]
    await linker.linking.cancel_link()
    linker.own.this_revoked = True  # another of our devices revoked this one
    with pytest.raises(ApiError) as revoked:
        await linker.linking.link()
    assert revoked.value.code == "this_revoked"


async def test_join_refuses_a_data_directory_in_use(tmp_path: Path) -> None:
    KeyStore(tmp_path).create(None, now=1)
    with pytest.raises(JoinError, match="already exists"):
        await join_device(tmp_path, "37-cobalt-tiger", None, addr=("127.0.0.1", 9))


async def test_an_offer_expires_and_a_second_caller_waits_outside(tmp_path: Path) -> None:
    old = Linker(tmp_path)
    old.linking.lifetime = 0.6
    try:
        offer = await old.linking.link()
        # One attempt holds the offer; a second connection is closed at once, unanswered.
        _, writer1 = await asyncio.open_connection("127.0.0.1", offer["port"])
        await asyncio.sleep(0.05)
        reader2, writer2 = await asyncio.open_connection("127.0.0.1", offer["port"])
        assert await asyncio.wait_for(reader2.read(100), 2) == b""
        assert old.linking.stats["refused"] == 1
        writer1.close()
        writer2.close()
        for _ in range(100):
            if "device_link_failed" in old.kinds():
                break
            await asyncio.sleep(0.02)
        assert old.events[-1] == {"type": "device_link_failed", "reason": "expired"}
        with pytest.raises(JoinError):  # the listener is gone
            await join_device(tmp_path / "new", offer["code"], None,
                              addr=("127.0.0.1", offer["port"]))  # fmt: skip
    finally:
        await old.linking.close()
        await old.tasks.cancel_all()
        old.store.close()


async def test_a_passphrase_seals_the_linked_key_file_and_history(
    linker: Linker, tmp_path: Path
) -> None:
    offer = await linker.linking.link()
    new_dir = tmp_path / "new"
    await join_device(new_dir, offer["code"], "correct horse", addr=("127.0.0.1", offer["port"]))
    store = KeyStore(new_dir)
    assert store.is_encrypted()
    keys = store.load("correct horse")
    assert keys.db_key is not None and keys.identity.public_key == linker.identity.public_key
    with Store.open(new_dir / "messages.db", keys.db_key) as history:  # SQLCipher, keyed
        assert [c.name for c in history.list_contacts()] == ["bob"]
    with pytest.raises(StoreError):
        Store.open(new_dir / "messages.db", None)


async def test_a_silent_caller_is_dropped_and_the_offer_stays_open(
    linker: Linker, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(node_linking, "PAKE_TIMEOUT", 0.2)
    offer = await linker.linking.link()
    reader, writer = await asyncio.open_connection("127.0.0.1", offer["port"])
    assert await asyncio.wait_for(reader.read(100), 3) == b""  # closed, unanswered
    writer.close()
    assert linker.linking.offer is not None and linker.linking.offer.state == "waiting"
    result = await join_device(tmp_path / "new", offer["code"], None,
                               addr=("127.0.0.1", offer["port"]))  # fmt: skip
    assert result.devices == 2
