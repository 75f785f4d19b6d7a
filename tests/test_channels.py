"""Channels on loopback: real member links (TCP + Noise), many members in one process.

Discovery is by direct dial to one member plus peer exchange (the DHT, tracker and LAN
paths have their own tests), so these tests are about what happens inside a channel.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from harness import until

from btchat.channels.chatfile import ChatFile
from btchat.channels.engine import Shown
from btchat.channels.service import ChannelConfig, ChannelService
from btchat.channels.store import ChannelStore
from btchat.identity.keys import Identity
from btchat.messaging.store import Store

pytestmark = pytest.mark.slow


class Member:
    def __init__(self, service: ChannelService, identity: Identity) -> None:
        self.service = service
        self.identity = identity
        self.shown: list[Any] = []

    @property
    def pk(self) -> bytes:
        return self.identity.public_key

    @property
    def texts(self) -> list[str]:
        return [m.text for m in self.shown]


class Net:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.members: list[Member] = []

    async def add(
        self,
        chat: ChatFile,
        identity: Identity | None = None,
        blocked: frozenset[bytes] = frozenset(),
        device: bytes | None = None,
    ) -> Member:
        identity = identity or Identity.generate()
        store = ChannelStore(Store.open(self.root / f"{len(self.members)}.db", None))
        store.add_channel(chat.channel_id, chat.to_bytes(), 0)
        member: Member

        def on_event(_chat: ChatFile, event: Any) -> None:
            if isinstance(event, Shown):
                member.shown.append(event.message)

        config = ChannelConfig(
            host="127.0.0.1", dht=False, trackers=False, lsd=False, blocked=blocked
        )
        service = ChannelService(
            chat, identity, store, None, config, on_event=on_event, device_id=device
        )
        member = Member(service, identity)
        await service.start()
        self.members.append(member)
        return member

    async def stop(self) -> None:
        for m in self.members:
            await m.service.stop()


@pytest.fixture
async def net(tmp_path: Path) -> AsyncIterator[Net]:
    n = Net(tmp_path)
    try:
        yield n
    finally:
        await n.stop()


def dial(a: Member, b: Member) -> None:
    a.service.dial(("127.0.0.1", b.service.port))


async def test_both_dialling_at_once_leaves_the_link_the_smaller_key_dialled(net: Net) -> None:
    chat = ChatFile.create("crossed", now=time.time())
    a, b = sorted([await net.add(chat), await net.add(chat)], key=lambda m: m.pk)
    dial(a, b)
    dial(b, a)
    await until(lambda: b.pk in a.service.links and a.pk in b.service.links, 20, "linked")
    await asyncio.sleep(0.5)  # the crossed dial settles
    assert a.service.links[b.pk][1] is True  # a, the smaller key, dialled the one kept
    assert b.service.links[a.pk][1] is False
    a.service.post("over the one link")
    await until(lambda: b.texts == ["over the one link"], 10, "the post")


async def test_twenty_members_every_message_exactly_once(net: Net) -> None:
    chat = ChatFile.create("twenty", now=time.time())
    members = [await net.add(chat) for _ in range(20)]
    for m in members[1:]:
        dial(m, members[0])  # everyone knows one address; peer exchange does the rest
    await until(lambda: all(len(m.service.links) == 19 for m in members), 60, "a full mesh")
    await asyncio.sleep(1.0)  # link sets settle (relays are then rare)
    for i, m in enumerate(members):
        m.service.post(f"message {i}")
    await until(
        lambda: all(len(m.shown) == 19 for m in members), 30, "every message at every member"
    )
    await asyncio.sleep(0.5)  # anything extra (a duplicate) would show up by now
    for i, m in enumerate(members):
        assert sorted(m.texts) == sorted(f"message {j}" for j in range(20) if j != i)
        assert len(m.shown) == 19  # exactly once each
    histories = [[r.id for r in m.service.store.history(chat.channel_id, 100)] for m in members]
    assert all(h == histories[0] for h in histories) and len(histories[0]) == 20
    dupes = sum(m.service.engine.stats["duplicates"] for m in members)  # type: ignore[union-attr]
    relayed = sum(m.service.engine.stats["relayed"] for m in members)  # type: ignore[union-attr]
    print(f"\n  20 members, 20 messages: {relayed} relays, {dupes} duplicate copies dropped")


async def test_ten_people_on_two_devices_each_every_message_exactly_once(net: Net) -> None:
    chat = ChatFile.create("devices", now=time.time())
    people = [Identity.generate() for _ in range(10)]
    members = [
        await net.add(chat, person, device=bytes([n, d]) * 8)
        for n, person in enumerate(people)
        for d in (1, 2)
    ]
    for m in members[1:]:
        dial(m, members[0])
    await until(lambda: all(len(m.service.links) == 19 for m in members), 60, "a full mesh")
    await asyncio.sleep(1.0)
    for i, m in enumerate(members):
        m.service.post(f"message {i}")
    await until(lambda: all(len(m.shown) == 19 for m in members), 30, "every message")
    await asyncio.sleep(0.5)
    for i, m in enumerate(members):
        assert sorted(m.texts) == sorted(f"message {j}" for j in range(20) if j != i)
    view = members[0].service.engine.member_view(time.time())  # type: ignore[union-attr]
    assert len(view) == 10 and all(v["online"] for v in view)  # each person once
    dupes = sum(m.service.engine.stats["duplicates"] for m in members)  # type: ignore[union-attr]
    relayed = sum(m.service.engine.stats["relayed"] for m in members)  # type: ignore[union-attr]
    print(f"\n  10 people x 2 devices, 20 messages: {relayed} relays, {dupes} duplicates dropped")


async def test_member_that_reaches_only_one_other_gets_everything(net: Net) -> None:
    chat = ChatFile.create("partial", now=time.time())
    ids = [Identity.generate() for _ in range(6)]
    lonely, bridge = ids[0], ids[1]
    others = frozenset(i.public_key for i in ids[2:])
    members = [await net.add(chat, lonely, blocked=others)]
    members.append(await net.add(chat, bridge))
    for identity in ids[2:]:
        members.append(await net.add(chat, identity, blocked=frozenset({lonely.public_key})))
    for m in members[1:]:
        dial(m, members[1])
    dial(members[0], members[1])
    await until(
        lambda: (
            len(members[0].service.links) == 1
            and all(len(m.service.links) == 4 for m in members[2:])
        ),
        30,
        "the partial mesh",
    )
    members[0].service.post("from the edge")
    members[3].service.post("to the edge")
    await until(
        lambda: (
            members[0].texts == ["to the edge"]
            and all("from the edge" in m.texts for m in members[1:])
        ),
        20,
        "messages across the bridge",
    )
    await asyncio.sleep(0.5)
    assert members[0].texts == ["to the edge"]
    for m in members[1:]:
        assert m.texts.count("from the edge") == 1
    assert len(members[0].service.links) == 1  # it never linked with anyone else


async def test_late_joiner_gets_recent_history_and_private_messages_stay_private(
    net: Net,
) -> None:
    chat = ChatFile.create("history", now=time.time())
    a, b, c = [await net.add(chat) for _ in range(3)]
    dial(b, a)
    dial(c, a)
    await until(lambda: all(len(m.service.links) == 2 for m in (a, b, c)), 20, "mesh")
    a.service.post("one")
    b.service.post("two")
    a.service.post("just for c", to=[c.pk])
    await until(lambda: len(c.shown) == 3 and len(b.shown) == 1, 10, "delivery")
    assert "just for c" not in b.texts  # b relayed nothing readable to itself
    d = await net.add(chat)
    dial(d, b)
    await until(lambda: sorted(d.texts) == ["one", "two"], 10, "history for the late joiner")
    await until(lambda: len(d.service.links) == 3, 10, "the late joiner in the mesh")


async def test_invite_only_refuses_strangers_and_removed_members_read_nothing_new(
    net: Net,
) -> None:
    owner_id, bob_id, carol_id, mallory_id = (Identity.generate() for _ in range(4))
    chat = ChatFile.create("private", invite_only=True, owner=owner_id, now=time.time())
    owner = await net.add(chat, owner_id)
    assert owner.service.engine is not None
    owner.service.engine.start_invite_only(time.time())
    owner.service.change_members(add=[bob_id.public_key, carol_id.public_key])
    bob = await net.add(chat, bob_id)
    carol = await net.add(chat, carol_id)
    mallory = await net.add(chat, mallory_id)  # has the .chat file, was never invited
    dial(bob, owner)
    dial(carol, owner)
    await until(lambda: len(owner.service.links) == 2, 20, "members linked")
    await until(lambda: len(bob.service.links) == 2, 20, "bob and carol linked by PEX")
    dial(mallory, owner)
    dial(mallory, bob)
    await asyncio.sleep(1.0)
    assert mallory.service.links == {} and len(owner.service.links) == 2
    owner.service.post("welcome")
    await until(lambda: bob.texts == ["welcome"] and carol.texts == ["welcome"], 10, "welcome")
    assert mallory.shown == []

    owner.service.change_members(remove=[bob_id.public_key])
    await until(lambda: bob.pk not in carol.service.links, 10, "carol to drop bob")
    await until(lambda: bob.service.links == {}, 10, "bob cut off")
    owner.service.post("after bob left")
    await until(lambda: carol.texts[-1:] == ["after bob left"], 10, "carol gets it")
    await asyncio.sleep(0.5)
    assert bob.texts == ["welcome"]
    # Even holding the bytes, bob cannot read the new generation.
    latest = owner.service.store.history(chat.channel_id, 1)[0]
    assert bob.service.engine is not None
    bob.service.engine.receive_wire(latest.wire, time.time(), via=None)
    assert bob.texts == ["welcome"]
    stored = [m for m in bob.service.store.recent(chat.channel_id, 10) if m.id == latest.id]
    assert stored and stored[0].text is None


async def test_a_member_who_leaves_is_shown_offline_at_once(net: Net) -> None:
    """Regression (issue 14 item 10): a leaving member showed online for the presence
    window (150 s) at members who heard it only through relays. Now its goodbye, relayed
    like presence, takes it offline everywhere before its links close."""
    chat = ChatFile.create("goodbye", now=time.time())
    a_id, b_id, c_id = Identity.generate(), Identity.generate(), Identity.generate()
    a = await net.add(chat, a_id, blocked=frozenset({c_id.public_key}))
    b = await net.add(chat, b_id)
    c = await net.add(chat, c_id, blocked=frozenset({a_id.public_key}))
    dial(a, b)
    dial(c, b)
    await until(lambda: len(b.service.links) == 2, 10, "b linked to both")
    c.service.post("hello from c")
    await until(lambda: a.texts == ["hello from c"], 10, "a hears c through b")

    def c_online_at_a() -> bool:
        assert a.service.engine is not None
        view = a.service.engine.member_view(time.time())
        return any(m["public_key"] == c.pk.hex() and m["online"] for m in view)

    assert c_online_at_a()  # heard through b, within the presence window
    await c.service.stop()
    net.members.remove(c)
    await until(lambda: not c_online_at_a(), 3, "a to show c offline")
