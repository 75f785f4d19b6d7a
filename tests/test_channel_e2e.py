"""Channels between daemons in separate processes, found through the DHT only.

Three ``btchat up`` processes on a private sandbox swarm (the fixture of
``test_messenger_e2e``), with ``--channel-discovery dht``: nobody tells anyone an
address; the channel's infohash in the DHT is the only meeting point. Everything is
driven by the ``btchat channel ...`` commands; the local API is only polled while
waiting.
"""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from test_messenger_e2e import Person, sandbox, wait_for  # noqa: F401

from btchat.api.client import ApiClient, read_api_files

pytestmark = pytest.mark.slow


def api(p: Person) -> ApiClient:
    return ApiClient(*read_api_files(p.dir))


def channel(p: Person, name: str) -> dict[str, Any] | None:
    return next((c for c in api(p).list_channels() if c["name"] == name), None)


def links(p: Person, name: str) -> int:
    c = channel(p, name)
    return c["links"] if c else -1


def texts(p: Person, name: str) -> list[str]:
    return [m["text"] for m in api(p).channel_history(name)]


@pytest.fixture(scope="module")
def trio(
    sandbox: tuple[str, dict[str, str]],  # noqa: F811
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[dict[str, Person]]:
    bootstrap, env = sandbox
    root = tmp_path_factory.mktemp("channels")
    folks = {n: Person(n, root, env, bootstrap) for n in ("alice", "bob", "carol")}
    try:
        for p in folks.values():
            p.up("--channel-discovery", "dht")
        for p in folks.values():
            wait_for(lambda p=p: api(p).status()["dht"]["joined"], 30, f"{p.name} in the DHT")
        yield folks
    finally:
        for p in folks.values():
            p.kill()


def test_open_channel_by_file_and_link(trio: dict[str, Person], tmp_path: Path) -> None:
    alice, bob, carol = trio["alice"], trio["bob"], trio["carol"]
    created = alice.cli("channel", "create", "room", "--out", str(tmp_path))
    chatfile = Path(created["file"])
    assert chatfile.is_file() and created["uri"].startswith("btchat:channel?d=")
    assert not created["invite_only"]
    bob.cli("channel", "join", str(chatfile))
    carol.cli("channel", "join", created["uri"])
    for p in (alice, bob, carol):
        wait_for(lambda p=p: links(p, "room") == 2, 30, f"{p.name} linked to the other two")
        assert channel(p, "room")["discovery"]["dht_found"] >= 1  # type: ignore[index]

    for p in (alice, bob, carol):
        p.cli("channel", "send", "room", f"{p.name} says hi")
    everything = sorted(f"{p.name} says hi" for p in (alice, bob, carol))
    for p in (alice, bob, carol):
        wait_for(lambda p=p: sorted(texts(p, "room")) == everything, 20, f"{p.name}'s history")
    time.sleep(0.5)  # a duplicate would have arrived by now

    histories = {p.name: p.cli("channel", "history", "room")["messages"] for p in trio.values()}
    ids = {name: [m["id"] for m in h] for name, h in histories.items()}
    assert ids["alice"] == ids["bob"] == ids["carol"], histories  # same messages, same order
    assert len(set(ids["alice"])) == 3
    assert sorted(m["text"] for m in histories["alice"]) == everything
    authors = {m["text"]: m["author"] for m in histories["carol"]}
    for p in trio.values():
        assert authors[f"{p.name} says hi"] == p.cli("id")["public_key"]

    rows = carol.cli("channel", "members", "room")["members"]
    assert sorted(r["id"] for r in rows) == sorted(p.id for p in trio.values())
    assert all(r["online"] for r in rows), rows
    assert [r["id"] for r in rows if r["me"]] == [carol.id]
    listed = {c["name"]: c for c in bob.cli("channels")["channels"]}
    assert listed["room"]["members_online"] == 3 and listed["room"]["links"] == 2


def test_invite_only_admits_invited_and_drops_removed(
    trio: dict[str, Person], tmp_path: Path
) -> None:
    alice, bob, carol = trio["alice"], trio["bob"], trio["carol"]
    created = alice.cli("channel", "create", "club", "--invite-only", "--out", str(tmp_path))
    assert created["invite_only"]
    invited = alice.cli("channel", "invite", "club", bob.id)
    assert invited["members"] == 2
    bob.cli("channel", "join", created["file"])
    carol.cli("channel", "join", created["file"])  # holds the file, but was not invited

    wait_for(lambda: links(alice, "club") == 1 and links(bob, "club") == 1, 30, "alice-bob link")
    alice.cli("channel", "send", "club", "members only")
    wait_for(lambda: texts(bob, "club") == ["members only"], 20, "bob to read alice")
    bob.cli("channel", "send", "club", "thanks")
    wait_for(lambda: texts(alice, "club") == ["members only", "thanks"], 20, "alice to read bob")

    # Carol found them (she is in the DHT swarm of the channel) but is refused by both.
    assert channel(carol, "club")["discovery"]["dht_found"] >= 1  # type: ignore[index]
    assert links(carol, "club") == 0 and links(alice, "club") == 1
    assert carol.cli("channel", "history", "club")["messages"] == []
    owner_view = {r["id"]: r for r in alice.cli("channel", "members", "club")["members"]}
    assert set(owner_view) == {alice.id, bob.id}
    assert owner_view[alice.id]["role"] == "owner" and owner_view[bob.id]["online"]

    assert channel(bob, "club")["removed"] is False  # type: ignore[index]
    alice.cli("channel", "remove", "club", bob.id)
    wait_for(lambda: links(alice, "club") == 0 and links(bob, "club") == 0, 20, "bob dropped")
    # Bob is told, and what he posts now is refused instead of reporting "sent".
    wait_for(lambda: channel(bob, "club")["removed"], 20, "bob told")  # type: ignore[index]
    refused = bob.cli("channel", "send", "club", "anyone there?", check=False)
    assert refused.returncode == 1 and "removed you" in refused.stderr
    owner_view = {r["id"]: r for r in alice.cli("channel", "members", "club")["members"]}
    assert set(owner_view) == {alice.id}
    alice.cli("channel", "send", "club", "after bob left")
    assert texts(alice, "club") == ["members only", "thanks", "after bob left"]
    time.sleep(3)  # messages between linked daemons arrive in well under a second
    assert [m["text"] for m in bob.cli("channel", "history", "club")["messages"]] == [
        "members only",
        "thanks",
    ]
    assert texts(carol, "club") == []
    assert links(bob, "club") == 0 and links(carol, "club") == 0


def test_file_posted_in_a_channel_is_fetched_by_the_commands(
    trio: dict[str, Person], tmp_path: Path
) -> None:
    alice, bob = trio["alice"], trio["bob"]
    created = alice.cli("channel", "create", "media", "--out", str(tmp_path))
    bob.cli("channel", "join", created["uri"])
    wait_for(lambda: links(alice, "media") >= 1 and links(bob, "media") >= 1, 30, "a link")
    src = tmp_path / "clip.bin"
    src.write_bytes(os.urandom(700_000))
    posted = alice.cli("channel", "send-file", "media", str(src))
    assert posted["name"] == "clip.bin" and posted["state"] == "done"

    def offer() -> list[dict[str, Any]]:
        return [f for f in bob.cli("channel", "files", "media")["files"] if f["state"] == "offered"]

    wait_for(lambda: bool(offer()), 20, "the offer at bob")
    history = bob.cli("channel", "history", "media")["messages"]
    assert history[-1]["file"]["size"] == 700_000
    bob.cli("channel", "accept-file", "media", posted["id"][:12])

    def done() -> dict[str, Any] | None:
        rows = bob.cli("channel", "files", "media")["files"]
        return next((f for f in rows if f["state"] == "done"), None)

    wait_for(lambda: done() is not None, 30, "bob's download")
    got = done()
    assert got is not None
    assert (
        hashlib.sha256(Path(got["path"]).read_bytes()).digest()
        == hashlib.sha256(src.read_bytes()).digest()
    )
    assert bob.cli("channel", "serve", "media", "off")["serve"] is False
