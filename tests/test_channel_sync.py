"""Channels on every device of one person (issue 13 items 2 and 3): membership synced
last-writer-wins between our own devices, links per device, each message once."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from harness import until

from btchat.channels.chatfile import MAX_CHATFILE, ChatFile
from btchat.channels.members import MAX_MEMBER_LIST
from btchat.channels.service import ChannelConfig
from btchat.channels.store import ChannelStore
from btchat.identity.keys import Identity
from btchat.messaging.own_sync import (
    CHANNEL_KEYS,
    CHATFILE_MAX,
    MEMBER_LIST_MAX,
    ChannelChange,
    ChannelsNote,
    SyncError,
    decode_sync,
    encode_channels,
)
from btchat.messaging.store import Store
from btchat.node.channel_sync import ChannelSync
from btchat.node.channels import ChannelManager
from btchat.node.own_sync import OwnSync


def test_the_format_bounds_what_the_channel_formats_bound() -> None:
    assert (CHATFILE_MAX, MEMBER_LIST_MAX) == (MAX_CHATFILE, MAX_MEMBER_LIST)


# ----------------------------------------------------------------------- the format

CHAT = ChatFile.create("team", now=1_700_000_000)
GOOD = ChannelChange(5, b"d" * 16, CHAT.channel_id, True, CHAT.to_bytes(), ((0, b"k" * 32),))


def test_a_change_round_trips_and_a_big_set_goes_in_pieces() -> None:
    (payload,) = encode_channels([GOOD])
    assert decode_sync(payload, 0) == ChannelsNote([GOOD])
    left = ChannelChange(6, b"e" * 16, b"c" * 32, False)
    many = encode_channels([GOOD] * 30 + [left] * 100)
    assert len(many) > 1
    got = [c for p in many for c in decode_sync(p, 0).changes]  # type: ignore[union-attr]
    assert got == [GOOD] * 30 + [left] * 100
    # Only the newest generation secrets travel.
    keys = tuple((g, bytes([g]) * 32) for g in range(CHANNEL_KEYS + 5))
    (payload,) = encode_channels([ChannelChange(1, b"d" * 16, b"c" * 32, True, b"x", keys)])
    (change,) = decode_sync(payload, 0).changes  # type: ignore[union-attr]
    assert [g for g, _ in change.keys] == list(range(CHANNEL_KEYS + 4, 4, -1))


def _item(**over: object) -> list[object]:
    fields = {"id": b"c" * 32, "flags": 1, "ms": 5, "dev": b"d" * 16, "chat": b"x" * 10,
              "keys": [[0, b"k" * 32]], "ml": b""}  # fmt: skip
    fields.update(over)
    return list(fields.values())


@pytest.mark.parametrize(
    "item",
    [
        _item(id=b"short"),
        _item(flags=2),
        _item(ms=-1),
        _item(dev=b"d" * 15),
        _item(chat=b"x" * (CHATFILE_MAX + 1)),
        _item(flags=1, chat=b""),  # a join without its file
        _item(flags=0),  # a leave carrying one
        _item(keys=[[0, b"short"]]),
        _item(keys=[[-1, b"k" * 32]]),
        _item(keys=[[0, b"k" * 32]] * (CHANNEL_KEYS + 1)),
        _item(ml=b"m" * (MEMBER_LIST_MAX + 1)),
        _item()[:6],
        b"not a list",
    ],
)
def test_a_malformed_channel_change_is_refused(item: object) -> None:
    from btchat.codec.bencode import encode

    with pytest.raises(SyncError):
        decode_sync(encode({b"t": b"channels", b"c": [item]}), 0)


def test_malformed_channel_notes_are_dropped_and_counted(tmp_path: Path) -> None:
    from btchat.codec.bencode import encode

    got: list[ChannelsNote] = []
    sync = OwnSync(Store.open(tmp_path / "s.db", None), lambda d, p: True, lambda e: None)
    sync.attach_channels(lambda: [], got.append)
    for bad in (
        encode({b"t": b"channels", b"c": [_item()] * 65}),  # too many in one note
        encode({b"t": b"channels", b"c": b"x"}),
        encode({b"t": b"channels", b"c": [_item(dev=b"")]}),
    ):
        sync.receive(b"o" * 16, bad)
    assert sync.stats["malformed"] == 3 and got == []
    sync.receive(b"o" * 16, encode_channels([GOOD])[0])
    assert got == [ChannelsNote([GOOD])]


# ----------------------------------------------------------------- last writer wins


class Device:
    """One device's channel table and its channel sync; notes carried by hand. What a
    won change does (joining, leaving) is ChannelManager's: here it is only recorded."""

    def __init__(self, tmp: Path, name: str, clock: list[float]) -> None:
        self.channels = ChannelStore(Store.open(tmp / f"{name}.db", None))
        self.out: list[bytes] = []
        self.applied: list[tuple[bool, bytes]] = []
        self.sync = ChannelSync(
            self.channels, name.encode().ljust(16, b"."), self.out.append, self._apply,
            clock=lambda: clock[0],
        )  # fmt: skip

    def _apply(self, change: ChannelChange, chat: ChatFile | None) -> None:
        self.applied.append((change.joined, change.channel))
        if change.joined:
            assert chat is not None and chat.channel_id == change.channel
            self.channels.add_channel(change.channel, change.chatfile, change.changed_ms)
        else:
            self.channels.remove_channel(change.channel)

    def join(self, chat: ChatFile) -> None:
        self.channels.add_channel(chat.channel_id, chat.to_bytes(), 0)
        self.sync.record(chat.channel_id, joined=True)

    def leave(self, chat: ChatFile) -> None:
        self.channels.remove_channel(chat.channel_id)
        self.sync.record(chat.channel_id, joined=False)

    def deliver_to(self, other: Device) -> None:
        for payload in self.out:
            other.sync.merge(decode_sync(payload, 0))  # type: ignore[arg-type]
        self.out.clear()

    def ids(self) -> set[bytes]:
        return {row.id for row in self.channels.channels()}


def test_memberships_converge_last_writer_wins(tmp_path: Path) -> None:
    clock = [1_000.0]
    laptop, desktop = Device(tmp_path, "laptop", clock), Device(tmp_path, "desktop", clock)
    a, b = ChatFile.create("a", now=1), ChatFile.create("b", now=1)
    laptop.join(a)
    laptop.deliver_to(desktop)
    assert desktop.ids() == {a.channel_id}
    # Both act before hearing of the other: the laptop leaves later, so a is left.
    clock[0] += 1
    desktop.sync.record(a.channel_id, joined=True)  # e.g. a member change there
    clock[0] += 1
    laptop.leave(a)
    desktop.deliver_to(laptop)
    laptop.deliver_to(desktop)
    assert laptop.ids() == desktop.ids() == set()
    assert desktop.applied[-1] == (False, a.channel_id)
    # A replayed old join changes nothing, and is counted.
    stale = ChannelChange(1, b"z" * 16, a.channel_id, True, a.to_bytes())
    desktop.sync.merge(ChannelsNote([stale]))
    assert desktop.ids() == set() and desktop.sync.stats["stale"] == 1
    # A tie on the clock goes to the higher device id, on both.
    clock[0] += 1
    laptop.join(b)
    desktop.join(b)
    laptop.leave(b)  # at the same ms+1 as ...
    desktop.sync.record(b.channel_id, joined=True)  # ... this, by "desktop" < "laptop"
    laptop.deliver_to(desktop)
    desktop.deliver_to(laptop)
    assert laptop.ids() == desktop.ids() == set()
    # Joining again later wins over the leave; a device coming up gets the whole set,
    # leaves included.
    clock[0] += 10
    desktop.join(a)
    desktop.deliver_to(laptop)
    assert laptop.ids() == {a.channel_id}
    phone = Device(tmp_path, "phone", clock)
    phone.channels.add_channel(b.channel_id, b.to_bytes(), 0)  # joined before it was linked
    for payload in desktop.sync.payloads():
        phone.sync.merge(decode_sync(payload, 0))  # type: ignore[arg-type]
    assert phone.ids() == {a.channel_id}  # b's leave is later than the phone's join


def test_a_join_carrying_another_channels_file_is_refused(tmp_path: Path) -> None:
    device = Device(tmp_path, "d", [1.0])
    a, b = ChatFile.create("a", now=1), ChatFile.create("b", now=1)
    device.sync.merge(ChannelsNote([ChannelChange(5, b"x" * 16, a.channel_id, True, b.to_bytes())]))
    device.sync.merge(ChannelsNote([ChannelChange(5, b"x" * 16, a.channel_id, True, b"d1:xe")]))
    assert device.ids() == set() and device.sync.stats["refused"] == 2


def test_an_invite_only_join_carries_the_secrets_and_list(tmp_path: Path) -> None:
    me = Identity.generate()
    chat = ChatFile.create("ours", invite_only=True, owner=me, now=1)
    device = Device(tmp_path, "laptop", [5.0])
    device.channels.add_channel(chat.channel_id, chat.to_bytes(), 0)
    device.channels.save_key(chat.channel_id, 0, b"0" * 32)
    device.channels.save_key(chat.channel_id, 1, b"1" * 32)
    device.channels.set_member_list(chat.channel_id, b"a list")
    device.sync.record(chat.channel_id, joined=True)
    (change,) = decode_sync(device.out[0], 0).changes  # type: ignore[union-attr]
    assert change.keys == ((1, b"1" * 32), (0, b"0" * 32))
    assert change.member_list == b"a list" and change.chatfile == chat.to_bytes()


# ---------------------------------------------------- two devices and a friend, live


class Mesh:
    """Our laptop and desktop (one identity, two devices, their own-device sync wired
    by hand) and Bob, each a ChannelManager with real links on loopback and no
    discovery: addresses are dialled by hand, then peer exchange does the rest."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.me, self.bob_id = Identity.generate(), Identity.generate()
        self.config = ChannelConfig(host="127.0.0.1", dht=False, trackers=False, lsd=False)
        self.events: dict[str, list[dict[str, Any]]] = {"laptop": [], "desktop": [], "bob": []}
        self.syncs: dict[bytes, OwnSync] = {}
        self.laptop = self._manager("laptop", self.me, b"L" * 16)
        self.desktop = self._manager("desktop", self.me, b"D" * 16)
        self.bob = self._manager("bob", self.bob_id, b"B" * 16, own=False)

    def _manager(self, name: str, who: Identity, device: bytes, own: bool = True) -> ChannelManager:
        store = Store.open(self.tmp / f"{name}.db", None)
        sync = None
        if own:
            loop = asyncio.get_running_loop()

            def send(to: bytes, payload: bytes) -> bool:
                loop.call_soon(self.syncs[to].receive, device, payload)
                return True

            sync = self.syncs[device] = OwnSync(store, send, lambda e: None)
        return ChannelManager(who, store, None, self.config, self.events[name].append,
                              device_id=device, own_sync=sync)  # fmt: skip

    async def start(self) -> None:
        for m in (self.laptop, self.desktop, self.bob):
            await m.start()
        self.syncs[b"L" * 16].device_up(b"D" * 16)
        self.syncs[b"D" * 16].device_up(b"L" * 16)

    async def stop(self) -> None:
        for m in (self.laptop, self.desktop, self.bob):
            await m.stop()


def texts(manager: ChannelManager, name: str) -> list[str | None]:
    service = manager._service(name)
    return [m.text for m in manager.store.history(service.chat.channel_id, 100)]


@pytest.mark.slow
async def test_two_devices_of_one_person_and_a_friend_in_one_channel(tmp_path: Path) -> None:
    mesh = Mesh(tmp_path)
    await mesh.start()
    try:
        # Created (invite-only, so we own it) on the laptop: the desktop joins too, with
        # the generation secret the owner never grants itself.
        created = await mesh.laptop.create("team", True, [])
        await until(lambda: len(mesh.desktop.services) == 1, 10, "the desktop joining")
        cid = bytes.fromhex(created["id"])
        joined = {"type": "channel_joined", "channel": cid.hex(), "name": "team"}
        assert mesh.events["desktop"] == [joined]
        assert mesh.desktop.store.keys(cid) == mesh.laptop.store.keys(cid) != {}
        await mesh.laptop.change_members("team", [mesh.bob_id.public_key.hex()], [])
        await mesh.bob.join(created["uri"])
        bob = mesh.bob.services[cid]
        laptop, desktop = mesh.laptop.services[cid], mesh.desktop.services[cid]
        # The desktop adopts the list with Bob on it (from the laptop's note or a link).
        await until(
            lambda: (
                desktop.engine is not None
                and desktop.engine.members is not None
                and mesh.bob_id.public_key in desktop.engine.members
            ),
            10,
            "the desktop holding the new member list",
        )
        bob.dial(("127.0.0.1", laptop.port))
        desktop.dial(("127.0.0.1", bob.port))  # peer exchange links it to the laptop
        await until(
            lambda: all(len(s.links) == 2 for s in (laptop, desktop, bob)), 20, "a mesh of three"
        )
        assert set(bob.links) == {mesh.me.public_key + b"L" * 16, mesh.me.public_key + b"D" * 16}
        laptop.post("from the laptop")
        desktop.post("from the desktop")
        bob.post("from bob")
        want = ["from bob", "from the desktop", "from the laptop"]
        for manager in (mesh.laptop, mesh.desktop, mesh.bob):
            await until(lambda m=manager: sorted(texts(m, "team")) == want, 10, "every post")  # type: ignore[misc]
        await asyncio.sleep(0.3)
        assert all(len(texts(m, "team")) == 3 for m in (mesh.laptop, mesh.desktop, mesh.bob))
        # Bob sees one person with two devices: one member besides himself, online.
        view = await mesh.bob.members("team")
        assert [v["public_key"] for v in view if not v["me"]] == [mesh.me.public_key.hex()]
        assert [v["online"] for v in view] == [True, True]
        # The owner is the person, not the laptop: the desktop removes Bob, and the new
        # generation's secret (which the owner grants nobody but the members) reaches
        # the laptop, whose next post the desktop reads and Bob cannot.
        await mesh.desktop.change_members("team", [], [mesh.bob_id.public_key.hex()])
        await until(lambda: 1 in mesh.laptop.store.keys(cid), 10, "the new secret on the laptop")
        await until(lambda: bob.engine is not None and bob.engine.removed, 10, "bob told")
        await until(lambda: len(laptop.links) == 1, 10, "the laptop dropping bob")
        laptop.post("after bob")
        await until(lambda: "after bob" in texts(mesh.desktop, "team"), 10, "the desktop reads it")
        assert "after bob" not in texts(mesh.bob, "team")
        # Left on the desktop: left on the laptop too; Bob keeps the channel.
        await mesh.desktop.leave("team")
        await until(lambda: not mesh.laptop.services, 10, "the laptop leaving")
        assert mesh.laptop.store.channel(cid) is None
        assert {"type": "channel_removed", "channel": cid.hex()} in mesh.events["laptop"]
        await until(lambda: not bob.links, 10, "bob's links to us closing")
    finally:
        await mesh.stop()


@pytest.mark.slow
async def test_a_device_joining_late_gets_the_history_and_ourselves_is_not_a_link(
    tmp_path: Path,
) -> None:
    mesh = Mesh(tmp_path)
    for m in (mesh.laptop, mesh.desktop, mesh.bob):
        await m.start()
    try:
        created = await mesh.bob.create("open", False, [])
        cid = bytes.fromhex(created["id"])
        await mesh.laptop.join(created["uri"])
        bob, laptop = mesh.bob.services[cid], mesh.laptop.services[cid]
        laptop.dial(("127.0.0.1", bob.port))
        await until(lambda: len(bob.links) == 1, 10, "the laptop linked")
        bob.post("before the desktop")
        laptop.post("also before")
        await until(lambda: len(texts(mesh.laptop, "open")) == 2, 10, "delivery")
        # The desktop comes up now: it joins through sync, and its links bring history.
        mesh.syncs[b"L" * 16].device_up(b"D" * 16)
        mesh.syncs[b"D" * 16].device_up(b"L" * 16)
        await until(lambda: cid in mesh.desktop.services, 10, "the desktop joining")
        desktop = mesh.desktop.services[cid]
        desktop.dial(("127.0.0.1", laptop.port))
        await until(
            lambda: sorted(texts(mesh.desktop, "open")) == ["also before", "before the desktop"],
            10,
            "history on the desktop",
        )
        # Dialling our own address makes no link, and the address is backed off.
        desktop.dial(("127.0.0.1", desktop.port))
        await until(lambda: ("127.0.0.1", desktop.port) in desktop._failed, 10, "the back-off")
        assert mesh.me.public_key + b"D" * 16 not in desktop.links
    finally:
        await mesh.stop()


# ------------------------------------------------------------- relaying, by device


def _engine(tmp: Path, name: str, chat: ChatFile, who: Identity, device: bytes) -> Any:
    from btchat.channels.engine import ChannelEngine

    store = ChannelStore(Store.open(tmp / f"{name}.db", None))
    store.add_channel(chat.channel_id, chat.to_bytes(), 0)
    return ChannelEngine(chat, who, store, listen_port=4000, now=0.0, device_id=device)


def test_relaying_tells_the_posting_device_from_its_siblings(tmp_path: Path) -> None:
    from btchat.channels.engine import Send
    from btchat.codec.bencode import decode, encode
    from btchat.sansio import drain_events

    chat = ChatFile.create("relay", now=1)
    me = Identity.generate()
    a1 = _engine(tmp_path, "a1", chat, me, b"1" * 16)
    a2 = _engine(tmp_path, "a2", chat, me, b"2" * 16)
    a2_key = me.public_key + b"2" * 16
    old_b = Identity.generate().public_key  # keys links by identity, lists identities
    c_key = Identity.generate().public_key + b"c" * 16
    d_key = Identity.generate().public_key + b"d" * 16
    for key in (a2_key, old_b, c_key, d_key):
        a1.link_up(key, "192.0.2.1", 0.0)
    a1.on_payload(old_b, encode({b"t": b"links", b"links": [me.public_key]}), 0.0)
    a1.on_payload(c_key, encode({b"t": b"links", b"links": [], b"ll": [a2_key]}), 0.0)
    a1.on_payload(d_key, encode({b"t": b"links", b"links": [], b"ll": []}), 0.0)
    list(drain_events(a1))
    a2.link_up(me.public_key + b"1" * 16, "192.0.2.2", 0.0)
    list(drain_events(a2))
    a2.post("from my other device", 1.0)
    (posted,) = [e for e in drain_events(a2) if isinstance(e, Send)]
    frame = decode(posted.payload)
    assert frame[b"o"] == a2_key
    a1.on_payload(a2_key, posted.payload, 1.0)
    relayed = {e.member for e in drain_events(a1) if isinstance(e, Send)}
    # b's one link to our identity is this one, so it needs the copy; c has it from a2.
    assert relayed == {old_b, d_key}
    assert a1.store.history(chat.channel_id, 10)[0].author == me.public_key
    # The same message again (another path) is stored once and relayed no further.
    a1.on_payload(d_key, posted.payload, 2.0)
    assert not [e for e in drain_events(a1) if isinstance(e, Send)]
    assert len(a1.store.history(chat.channel_id, 10)) == 1
    # An origin naming another identity's device is not taken: relayed as before.
    a2.post("again", 3.0)
    (posted,) = [e for e in drain_events(a2) if isinstance(e, Send)]
    forged = encode({**decode(posted.payload), b"o": c_key})
    a1.on_payload(a2_key, forged, 3.0)
    relayed = {e.member for e in drain_events(a1) if isinstance(e, Send)}
    assert relayed == {old_b, d_key}  # not c: it reaches a2 (via), not sent to a2 back


def test_secrets_from_our_other_device_open_what_arrived_before_them(tmp_path: Path) -> None:
    from btchat.channels.engine import Send, Shown
    from btchat.sansio import drain_events

    me = Identity.generate()
    chat = ChatFile.create("ours", invite_only=True, owner=me, now=1)
    laptop = _engine(tmp_path, "l", chat, me, b"1" * 16)
    laptop.start_invite_only(0.0)
    desktop = _engine(tmp_path, "d", chat, me, b"2" * 16)
    desktop.offer_member_list(laptop.members.to_bytes(), 0.0)
    laptop.link_up(me.public_key + b"2" * 16, "192.0.2.2", 0.0)
    desktop.link_up(me.public_key + b"1" * 16, "192.0.2.1", 0.0)
    list(drain_events(laptop))
    list(drain_events(desktop))
    laptop.post("owner's words", 1.0)
    (sent,) = [e for e in drain_events(laptop) if isinstance(e, Send)]
    desktop.on_payload(me.public_key + b"1" * 16, sent.payload, 1.0)
    assert not [e for e in drain_events(desktop) if isinstance(e, Shown)]  # no secret yet
    for generation, key in laptop.store.keys(chat.channel_id).items():
        desktop.store.save_key(chat.channel_id, generation, key)
    desktop.keys_added({0})
    (shown,) = [e for e in drain_events(desktop) if isinstance(e, Shown)]
    assert shown.message.text == "owner's words"


@pytest.mark.slow
async def test_a_link_whose_member_never_says_hello_is_closed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from btchat.channels import service as svc

    monkeypatch.setattr(svc, "HELLO_TIMEOUT", 0.5)
    chat = ChatFile.create("quiet", now=1)
    config = ChannelConfig(host="127.0.0.1", dht=False, trackers=False, lsd=False)
    made = []
    for name, device in (("honest", b"h" * 16), ("mute", b"m" * 16)):
        store = ChannelStore(Store.open(tmp_path / f"{name}.db", None))
        store.add_channel(chat.channel_id, chat.to_bytes(), 0)
        service = svc.ChannelService(chat, Identity.generate(), store, None, config,
                                     on_event=lambda c, e: None, device_id=device)  # fmt: skip
        await service.start()
        made.append(service)
    honest, mute = made
    try:
        assert mute.engine is not None
        # Its hello is too large to send, and nothing else it says goes out: it answers
        # PINGs and sends no DATA.
        monkeypatch.setattr(mute.engine, "hello", lambda exclude=None: b"x" * 70_000)
        monkeypatch.setattr(mute.engine, "_send_encoded", lambda peer, data: None)
        mute.dial(("127.0.0.1", honest.port))
        await until(lambda: len(mute.links) == 1, 10, "the mute side keying our hello")
        assert not honest.links and len(honest._greeting) == 1  # waiting for its hello
        await until(lambda: not mute.links and not honest._greeting, 10, "the link closed")
        assert not honest.links
    finally:
        for service in made:
            await service.stop()


def test_a_change_not_carried_out_wins_again_when_sent_again(tmp_path: Path) -> None:
    device = Device(tmp_path, "d", [1.0])
    chat = ChatFile.create("a", now=1)
    note = ChannelsNote([ChannelChange(5, b"x" * 16, chat.channel_id, True, chat.to_bytes())])
    device.sync.merge(note)
    device.channels.remove_channel(chat.channel_id)  # as if the join had failed here
    device.sync.undo(chat.channel_id)
    device.sync.merge(note)  # the next session's whole set
    assert device.sync.stats == {"applied": 2, "stale": 0, "refused": 0}
    assert device.ids() == {chat.channel_id}


async def test_a_note_after_stop_starts_nothing_and_is_taken_next_time(tmp_path: Path) -> None:
    store = Store.open(tmp_path / "m.db", None)
    own = OwnSync(store, lambda d, p: True, lambda e: None)
    config = ChannelConfig(host="127.0.0.1", dht=False, trackers=False, lsd=False)
    manager = ChannelManager(Identity.generate(), store, None, config, lambda e: None,
                             device_id=b"m" * 16, own_sync=own)  # fmt: skip
    await manager.start()
    await manager.stop()
    chat = ChatFile.create("late", now=1)
    (payload,) = encode_channels(
        [ChannelChange(5, b"x" * 16, chat.channel_id, True, chat.to_bytes())]
    )
    own.receive(b"x" * 16, payload)
    assert not manager.services and manager.store.channel(chat.channel_id) is None
    assert manager.sync is not None and manager.sync.current(chat.channel_id) is None


def test_notes_before_the_channels_start_are_applied_when_they_do(tmp_path: Path) -> None:
    sent: list[tuple[bytes, bytes]] = []
    sync = OwnSync(
        Store.open(tmp_path / "s.db", None), lambda d, p: sent.append((d, p)) or True,
        lambda e: None,
    )  # fmt: skip
    sync.device_up(b"o" * 16)
    (payload,) = encode_channels([GOOD])
    sync.receive(b"o" * 16, payload)  # the other device's whole set, before we attach
    got: list[ChannelsNote] = []
    sync.attach_channels(lambda: [b"our set"], got.append)
    assert got == [ChannelsNote([GOOD])]
    assert (b"o" * 16, b"our set") in sent  # and ours goes to the device already up
