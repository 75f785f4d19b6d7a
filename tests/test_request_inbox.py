"""Contact-request slots that a stranger cannot keep squatted (issue 14 item 3).

A squatter reads the recipient's inbox from its profile and fills every slot with an
item at seq 2^63-1, which no later put can replace. The recipient sees the absurd seq,
moves to a fresh inbox and republishes its profile; the next honest request arrives.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import pytest

from btchat.codec.bencode import decode, encode
from btchat.dht import bep44
from btchat.dht.node import GetItemResult, PutResult
from btchat.identity.keys import DeviceKey, Identity
from btchat.messaging.store import Store
from btchat.net.dht_service import DhtError
from btchat.node import contact_requests as cr
from btchat.node import requests as creq
from btchat.node.profile import Profiles

TOP_SEQ = 2**63 - 1


class FakeDht:
    """BEP 44 storage as the DHT's nodes keep it: a put with a lower seq is refused."""

    def __init__(self) -> None:
        self.items: dict[bytes, bep44.MutableItem] = {}
        self.gets = 0

    async def get_mutable(self, public_key: bytes, salt: bytes = b"") -> GetItemResult:
        self.gets += 1
        item = self.items.get(public_key + salt)
        if item is None:
            return GetItemResult(None, None, None, None, 1)
        return GetItemResult(decode(item.v_bencoded), item.v_bencoded, item.seq, item.signature, 1)

    async def put_mutable(self, item: bep44.MutableItem, *, cas: int | None = None) -> PutResult:
        key = item.public_key + item.salt
        old = self.items.get(key)
        if old is not None and old.seq >= item.seq:
            raise DhtError("every node refused the put: 302 sequence number less than current")
        self.items[key] = item
        return PutResult(b"", 1, [], 1)


class Person:
    def __init__(self, tmp: Path, name: str) -> None:
        self.identity = Identity.generate()
        self.store = Store.open(tmp / f"{name}.db", None)
        self.events: list[dict[str, Any]] = []
        self.requests = cr.ContactRequests(
            self.identity,
            self.identity.certify(DeviceKey.generate(), int(time.time())),
            self.store,
            pow_bits=4,
            emit=self.events.append,
        )
        self.profiles = Profiles(self.identity, self.store)
        self.profiles.inbox = self.requests.inbox

    async def publish(self, dht: FakeDht) -> None:
        item = bep44.sign_mutable(
            self.identity.private_key,
            self.profiles._value(),
            time.time_ns() // 1000,
            b"btchat/profile",
        )
        await dht.put_mutable(item)

    def moved(self, inbox: bytes) -> None:
        self.profiles.inbox = inbox


async def squat(dht: FakeDht, victim: bytes) -> int:
    inbox = await cr.fetch_inbox(dht, victim)
    assert inbox is not None
    day = creq.day_of(time.time())
    for i in range(creq.SLOTS):
        key = creq.slot_key(victim, day, i, inbox)
        await dht.put_mutable(bep44.sign_mutable(key, encode(b"junk"), TOP_SEQ))
    return creq.SLOTS


async def test_squatted_slots_are_seen_and_left_for_fresh_ones(tmp_path: Path) -> None:
    dht = FakeDht()
    alice, bob = Person(tmp_path, "alice"), Person(tmp_path, "bob")
    await bob.publish(dht)
    first_inbox = bob.requests.inbox
    await squat(dht, bob.identity.public_key)

    with pytest.raises(DhtError, match="squatted"):  # a clear error, not a silent loss
        await alice.requests.send(dht, bob.identity.public_key, "hi", None)  # type: ignore[arg-type]

    await bob.requests.poll_once(dht, time.time(), on_rotate=bob.moved)  # type: ignore[arg-type]
    assert bob.requests.inbox != first_inbox
    assert bob.requests.stats["squatted_slots"] == creq.SLOTS
    assert bob.requests.stats["inbox_moves"] == 1
    assert bob.profiles.inbox == bob.requests.inbox
    assert bob.events == [{"type": "inbox_moved", "squatted": creq.SLOTS}]
    await bob.publish(dht)

    await alice.requests.send(dht, bob.identity.public_key, "hi again", None)  # type: ignore[arg-type]
    await bob.requests.poll_once(dht, time.time(), on_rotate=bob.moved)  # type: ignore[arg-type]
    [req] = bob.store.list_requests()
    assert req.pk == alice.identity.public_key and req.note == "hi again"


async def test_a_squatter_who_follows_the_move_does_not_make_us_thrash(tmp_path: Path) -> None:
    dht = FakeDht()
    bob = Person(tmp_path, "bob")
    await bob.publish(dht)
    await squat(dht, bob.identity.public_key)
    await bob.requests.poll_once(dht, time.time(), on_rotate=bob.moved)  # type: ignore[arg-type]
    await bob.publish(dht)
    await squat(dht, bob.identity.public_key)  # again, at once
    moved_to = bob.requests.inbox
    await bob.requests.poll_once(dht, time.time(), on_rotate=bob.moved)  # type: ignore[arg-type]
    assert bob.requests.inbox == moved_to and bob.requests.stats["inbox_moves"] == 1
    later = time.time() + cr.MIN_ROTATION + 1
    await bob.requests.poll_once(dht, later, on_rotate=bob.moved)  # type: ignore[arg-type]
    assert bob.requests.stats["inbox_moves"] == 2


async def test_requests_written_to_the_previous_inbox_still_arrive(tmp_path: Path) -> None:
    dht = FakeDht()
    alice, bob = Person(tmp_path, "alice"), Person(tmp_path, "bob")
    await bob.publish(dht)
    await alice.requests.send(dht, bob.identity.public_key, "before the move", None)  # type: ignore[arg-type]
    bob.requests._on_squatted(1, time.time(), bob.moved)  # moved for another reason
    await bob.requests.poll_once(dht, time.time(), on_rotate=bob.moved)  # type: ignore[arg-type]
    assert [r.note for r in bob.store.list_requests()] == ["before the move"]


@pytest.fixture
def quick_retries(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cr, "PROFILE_RETRY_AFTER", 0.01)
    monkeypatch.setattr(cr, "PROFILE_RETRY_WITHIN", 0.1)


async def test_no_profile_is_a_clear_error(tmp_path: Path, quick_retries: None) -> None:
    alice, dht = Person(tmp_path, "alice"), FakeDht()
    with pytest.raises(DhtError, match="profile"):
        await alice.requests.send(dht, Identity.generate().public_key, None, None)  # type: ignore[arg-type]
    assert 2 <= dht.gets <= 12  # looked again for a while, then gave up
    assert alice.store.list_requests() == []


async def test_a_profile_put_while_we_look_is_found(tmp_path: Path, quick_retries: None) -> None:
    """Bob has just come online: his profile lands a moment after Alice's first lookup."""
    dht = FakeDht()
    alice, bob = Person(tmp_path, "alice"), Person(tmp_path, "bob")
    sending = asyncio.ensure_future(
        alice.requests.send(dht, bob.identity.public_key, "hi", None)  # type: ignore[arg-type]
    )
    await asyncio.sleep(0.03)
    assert not sending.done()
    await bob.publish(dht)
    await sending
    await bob.requests.poll_once(dht, time.time(), on_rotate=bob.moved)  # type: ignore[arg-type]
    [req] = bob.store.list_requests()
    assert req.note == "hi"


def test_only_an_absurd_seq_counts_as_squatting() -> None:
    now = time.time()
    assert not creq.squatted(int(now * 1000), now)
    assert not creq.squatted(int(now * 1000) + 60_000, now)  # a minute of clock skew
    assert creq.squatted(TOP_SEQ, now)
