"""Files in channels on loopback: real member links, the daemon's channel manager.

Members link by direct dial (discovery has its own tests); the file's bytes travel on
the links' transfer substreams, from whichever members hold them.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from harness import until

from btchat.channels.service import ChannelConfig
from btchat.errors import ApiError
from btchat.identity.keys import Identity
from btchat.messaging.store import Store
from btchat.node.channel_files import ChannelFilesConfig
from btchat.node.channels import ChannelManager

pytestmark = pytest.mark.slow

SIZE = 3 * 1024 * 1024 + 12345  # 13 pieces of 256 KiB


class Person:
    def __init__(self, root: Path, name: str) -> None:
        self.serve_per_minute = 4800
        self.name = name
        self.dir = root / name
        self.dir.mkdir()
        self.identity = Identity.generate()
        self.events: list[dict[str, Any]] = []
        self.manager: ChannelManager | None = None

    async def up(self) -> ChannelManager:
        self.store = Store.open(self.dir / "db", None)
        self.manager = ChannelManager(
            self.identity,
            self.store,
            None,
            ChannelConfig(host="127.0.0.1", dht=False, trackers=False, lsd=False),
            self.events.append,
            files=ChannelFilesConfig(
                save_dir=self.dir / "files",
                state_dir=self.dir / "state",
                serve_per_minute=self.serve_per_minute,
            ),
        )
        await self.manager.start()
        return self.manager

    async def down(self) -> None:
        assert self.manager is not None
        await self.manager.stop()
        self.store.close()
        self.manager = None

    @property
    def m(self) -> ChannelManager:
        assert self.manager is not None
        return self.manager

    def port(self) -> int:
        return next(iter(self.m.services.values())).port

    def links(self) -> int:
        return len(next(iter(self.m.services.values())).links)

    async def files(self) -> list[dict[str, Any]]:
        return await self.m.list_files("room")


@pytest.fixture
async def people(tmp_path: Path) -> AsyncIterator[dict[str, Person]]:
    folks = {n: Person(tmp_path, n) for n in ("alice", "bob", "carol", "dave")}
    try:
        yield folks
    finally:
        for p in folks.values():
            if p.manager is not None:
                await p.down()


def sha(path: str | Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


async def linked(a: Person, b: Person) -> None:
    await a.m.dial("room", f"127.0.0.1:{b.port()}")
    await until(lambda: a.links() >= 1 and b.links() >= 1, 20, f"{a.name} linked to {b.name}")


async def offered(p: Person) -> dict[str, Any]:
    box: list[dict[str, Any]] = []

    def seen() -> bool:
        box[:] = [f for f in p.m.files.list(next(iter(p.m.services)))]  # type: ignore[union-attr]
        return bool(box)

    await until(seen, 20, f"the offer at {p.name}")
    return box[0]


async def fetched(p: Person, fid: str, *, accept: bool = True) -> dict[str, Any]:
    if accept:
        await p.m.file_action("room", fid, "accept")

    def done() -> bool:
        return any(f["id"] == fid and f["state"] == "done" for f in p.m.files.list(cid(p)))  # type: ignore[union-attr]

    await until(done, 40, f"{p.name}'s download")
    return next(f for f in p.m.files.list(cid(p)) if f["id"] == fid)  # type: ignore[union-attr]


def cid(p: Person) -> bytes:
    return next(iter(p.m.services))


async def setup(
    people: dict[str, Person], tmp_path: Path, size: int = SIZE
) -> tuple[Person, Person, Path]:
    alice, bob = people["alice"], people["bob"]
    await alice.up()
    await bob.up()
    created = await alice.m.create("room", False, [])
    await bob.m.join(created["uri"])
    people["carol"].uri = created["uri"]  # type: ignore[attr-defined]
    await linked(bob, alice)
    src = tmp_path / "holiday.bin"
    src.write_bytes(os.urandom(size))
    return alice, bob, src


async def test_posted_file_fetched_then_served_on_by_a_member_with_the_poster_gone(
    people: dict[str, Person], tmp_path: Path
) -> None:
    alice, bob, src = await setup(people, tmp_path)
    posted = await alice.m.send_file("room", str(src), None)
    assert posted["state"] == "done" and posted["mine"] and posted["pieces"] == 13
    history = await bob.m.history("room", 10)
    await until(lambda: bool(bob.m.store.history(cid(bob), 10)), 10, "the message at bob")
    history = await bob.m.history("room", 10)
    assert history[-1]["file"]["name"] == "holiday.bin"
    assert history[-1]["file"]["size"] == SIZE and history[-1]["text"] == "holiday.bin"
    offer = await offered(bob)
    assert offer["state"] == "offered" and offer["id"] == posted["id"]
    got = await fetched(bob, offer["id"])
    assert sha(got["path"]) == sha(src)
    assert got["stats"]["verified"] == 13 and not got["stats"].get("bad")

    await alice.down()  # the poster goes offline: bob holds the file now
    carol = people["carol"]
    await carol.up()
    await carol.m.join(carol.uri)  # type: ignore[attr-defined]
    await linked(carol, bob)
    offer = await offered(carol)  # a late joiner: the offer came with the history
    got = await fetched(carol, offer["id"])
    assert sha(got["path"]) == sha(src)
    assert got["stats"]["verified"] == 13
    bobs = next(f for f in await bob.files() if f["id"] == offer["id"])
    assert bobs["served"] >= 13  # every piece carol has came from bob
    assert any(e["type"] == "channel_file_done" for e in carol.events)


async def test_a_corrupting_member_is_detected_and_the_file_comes_from_an_honest_one(
    people: dict[str, Person], tmp_path: Path
) -> None:
    alice, bob, src = await setup(people, tmp_path)
    posted = await alice.m.send_file("room", str(src), None)
    await offered(bob)
    await fetched(bob, posted["id"])
    files = bob.m.files
    assert files is not None
    honest = files._read

    def flipping(f: Any, index: int) -> bytes | None:
        data = honest(f, index)
        if index < 0 or data is None:
            return data  # the layer stays right: only pieces lie
        return data[:-1] + bytes([data[-1] ^ 0xFF])

    files._read = flipping  # type: ignore[method-assign]
    carol = people["carol"]
    await carol.up()
    await carol.m.join(carol.uri)  # type: ignore[attr-defined]
    await linked(carol, bob)
    await carol.m.dial("room", f"127.0.0.1:{alice.port()}")
    await until(lambda: carol.links() == 2, 20, "carol linked to both")
    offer = await offered(carol)
    got = await fetched(carol, offer["id"])
    assert sha(got["path"]) == sha(src)
    assert got["stats"]["bad_piece"] >= 1  # bob's pieces were refused...
    assert got["stats"]["verified"] == 13  # ...and every piece came verified from alice


async def test_a_member_who_does_not_serve_is_not_asked(
    people: dict[str, Person], tmp_path: Path
) -> None:
    alice, bob, src = await setup(people, tmp_path)
    posted = await alice.m.send_file("room", str(src), None)
    await offered(bob)
    await fetched(bob, posted["id"])
    assert (await bob.m.set_serving("room", False))["serve"] is False
    await alice.down()
    carol = people["carol"]
    await carol.up()
    await carol.m.join(carol.uri)  # type: ignore[attr-defined]
    await linked(carol, bob)
    offer = await offered(carol)
    await carol.m.file_action("room", offer["id"], "accept")
    files = carol.m.files
    assert files is not None and bob.m.files is not None
    f = files.files[bytes.fromhex(offer["id"])]
    fid = f.id
    links = bob.m.files._links.values()
    # Bob heard carol ask (her empty BITFIELD) and stays silent: she has no source.
    await until(lambda: any(fid in k.heard for k in links), 10, "bob heard carol")
    assert f.swarm is not None and not f.swarm.sources and f.held == 0
    bobs = next(x for x in await bob.files() if x["id"] == offer["id"])
    assert bobs["served"] == 0
    with pytest.raises(ApiError):
        await carol.m.file_action("room", offer["id"], "accept")  # already active
    await carol.m.file_action("room", offer["id"], "cancel")
    assert not (carol.dir / "files" / f".btchat-{offer['id']}.part").exists()
    again = await carol.m.file_action("room", offer["id"], "accept")  # from scratch
    assert again["state"] == "active"


async def test_a_poster_whose_file_changed_says_so_instead_of_serving_it(
    people: dict[str, Person], tmp_path: Path
) -> None:
    alice, bob, src = await setup(people, tmp_path)
    posted = await alice.m.send_file("room", str(src), None)
    src.write_bytes(os.urandom(SIZE))  # edited after posting: no longer the offered file
    os.utime(src, ns=(1, 1))
    await offered(bob)
    await bob.m.file_action("room", posted["id"], "accept")
    assert alice.m.files is not None and bob.m.files is not None
    f = bob.m.files.files[bytes.fromhex(posted["id"])]
    await until(lambda: alice.m.files.stats["serve_changed"] >= 1, 10, "alice noticed")  # type: ignore[union-attr]
    await until(lambda: f.swarm is not None and not f.swarm.sources, 10, "alice dropped")
    assert f.held == 0 and f.state == "active"
    mine = next(x for x in await alice.files() if x["id"] == posted["id"])
    assert "changed" in mine["error"]


async def test_a_download_resumes_after_a_restart_without_fetching_a_piece_twice(
    people: dict[str, Person], tmp_path: Path
) -> None:
    alice, bob = people["alice"], people["bob"]
    alice.serve_per_minute = 60  # 8 pieces at once, then one a second: time to restart
    alice, bob, src = await setup(people, tmp_path)
    posted = await alice.m.send_file("room", str(src), None)
    await offered(bob)
    await bob.m.file_action("room", posted["id"], "accept")
    fid = bytes.fromhex(posted["id"])

    def held() -> int:
        assert bob.m.files is not None
        return bob.m.files.files[fid].held

    await until(lambda: held() >= 8, 20, "bob's first pieces")
    paused = await bob.m.file_action("room", posted["id"], "pause")
    assert paused["state"] == "paused"
    before = held()
    await asyncio.sleep(2.5)  # alice sends one a second: none is asked for now
    assert held() == before < 13
    await bob.down()
    await bob.up()
    assert held() >= before  # the saved bitmap
    await linked(bob, alice)  # a new port: no discovery here to find it
    assert (await bob.files())[0]["state"] == "paused"  # a pause outlives a restart
    await bob.m.file_action("room", posted["id"], "resume")
    got = await fetched(bob, posted["id"], accept=False)
    assert sha(got["path"]) == sha(src)
    assert got["stats"]["verified"] == 13  # across both runs: no piece twice
    assert not got["stats"].get("duplicate")
    assert any(e["type"] == "channel_file_done" for e in bob.events)


async def test_fetched_from_three_members_at_once_one_leaving_midway(
    people: dict[str, Person], tmp_path: Path
) -> None:
    alice, bob, src = await setup(people, tmp_path, size=40 * 262144)
    carol, dave = people["carol"], people["dave"]
    await carol.up()
    await carol.m.join(carol.uri)  # type: ignore[attr-defined]
    await linked(carol, alice)
    posted = await alice.m.send_file("room", str(src), None)
    for p in (bob, carol):
        await offered(p)
        await fetched(p, posted["id"])

    async def served(p: Person) -> int:
        return next(x for x in await p.files() if x["id"] == posted["id"])["served"]

    before = {p.name: await served(p) for p in (alice, bob, carol)}
    for p in (alice, bob, carol):  # now slow: one piece a second each, after 8 at once
        assert p.m.files is not None
        p.m.files.config = replace(p.m.files.config, serve_per_minute=60)
    await dave.up()
    await dave.m.join(carol.uri)  # type: ignore[attr-defined]
    for p in (alice, bob, carol):
        await dave.m.dial("room", f"127.0.0.1:{p.port()}")
    await until(lambda: dave.links() == 3, 20, "dave linked to all three")
    offer = await offered(dave)
    await dave.m.file_action("room", offer["id"], "accept")
    assert dave.m.files is not None
    f = dave.m.files.files[bytes.fromhex(offer["id"])]
    await until(lambda: f.swarm is not None and len(f.swarm.sources) == 3, 10, "three sources")
    await until(lambda: f.held >= 20, 20, "dave's first pieces")
    assert f.held < 40
    await bob.down()  # one source leaves mid-way
    got = await fetched(dave, offer["id"], accept=False)
    assert sha(got["path"]) == sha(src)
    assert got["stats"]["verified"] == 40 and not got["stats"].get("duplicate")
    to_dave = {p.name: await served(p) - before[p.name] for p in (alice, carol)}
    assert all(n > 0 for n in to_dave.values()), to_dave  # pieces came from each
    assert sum(to_dave.values()) < 40  # and the rest from bob, before he left


def test_offers_tracked_per_channel_are_bounded_oldest_idle_first(tmp_path: Path) -> None:
    from btchat.channels.store import StoredMessage
    from btchat.node.channel_files import ChannelFiles
    from btchat.transfer.manifest import Manifest

    events: list[dict[str, Any]] = []
    files = ChannelFiles(
        ChannelFilesConfig(save_dir=tmp_path / "f", state_dir=tmp_path / "s", max_files=2),
        serving=lambda _c: True,
        emit=events.append,
    )
    room = b"c" * 32
    m = Manifest("a.bin", 5, "application/octet-stream", 262144, b"r" * 32)

    def offer(i: int, size: int = 5) -> bytes:
        mid = bytes([i]) * 16
        manifest = Manifest(m.name, size, m.media_type, m.piece_size, m.root)
        files.on_message(
            StoredMessage(room, mid, b"a" * 32, i, 0, False, "a.bin", (), b"", manifest)
        )
        return mid

    first, second = offer(1), offer(2)
    files.act(room, first.hex(), "accept")  # fetching: never dropped
    third = offer(3)  # the oldest idle offer (second) makes room
    assert set(files.files) == {first, third}
    assert files.stats["offers_forgotten"] == 1
    assert not (tmp_path / "s" / f"{second.hex()}.json").exists()
    files.act(room, third.hex(), "accept")
    offer(4)  # nothing idle to forget: not recorded
    assert set(files.files) == {first, third} and files.stats["over_max_files"] == 1
    huge = offer(5, size=5 * 1024**3)  # over max_size: recorded as rejected, so idle
    assert huge not in files.files  # no room: both others are being fetched
    # Records persist: a new instance reads them back, the downloads still active.
    again = ChannelFiles(files.config, serving=lambda _c: True, emit=events.append)
    assert {f.state for f in again.files.values()} == {"active"}
    for x in (files, again):
        for f in x.files.values():
            if f.fd is not None:
                os.close(f.fd)


async def test_a_full_disk_pauses_the_download_and_resume_finishes_it(
    people: dict[str, Person], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from btchat.node import channel_files

    alice, bob, src = await setup(people, tmp_path)
    posted = await alice.m.send_file("room", str(src), None)
    await offered(bob)
    files = bob.m.files
    assert files is not None
    monkeypatch.setattr(channel_files, "DISK_CHECK_EVERY", 1)  # check at every piece
    await bob.m.file_action("room", posted["id"], "accept")
    roomy = files.config
    files.config = replace(roomy, disk_margin=1 << 60)  # the disk "fills up" meanwhile
    f = files.files[bytes.fromhex(posted["id"])]
    await until(lambda: f.state == "paused", 20, "the pause")
    assert f.error == "disk_full" and f.held < 13
    with pytest.raises(ApiError) as info:
        await bob.m.file_action("room", posted["id"], "resume")  # still full
    assert info.value.status == 507
    files.config = roomy
    await bob.m.file_action("room", posted["id"], "resume")
    got = await fetched(bob, posted["id"], accept=False)
    assert sha(got["path"]) == sha(src) and got["stats"]["verified"] == 13
