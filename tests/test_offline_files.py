"""A small file to a contact who is offline, on a simulated swarm of real DHT nodes.

Alice sends Bob a file of MAX_INLINE bytes with the longest name while Bob is offline,
and goes offline herself once her mailbox items are stored: Bob, back, finds it in the
DHT mailbox and has the file, done, without Alice. Then the same through a friend:
Erin's file to Frank is handed to Carol, Erin goes offline for longer than the DHT keeps
items, and Frank gets it from Carol. The mailbox cost of such a file is what
docs/PROTOCOL.md "Inline files" says.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import time
import types
from pathlib import Path

import pytest

from btchat.node import files as files_mod
from btchat.node.files import Files, FilesConfig
from btchat.offline import packet as pk
from btchat.sim.dht_swarm import SimSwarm
from btchat.sim.offline_world import LONG_RUN_CONFIG, OfflineWorld, SimUser
from btchat.transfer.manifest import MAX_INLINE

pytestmark = pytest.mark.slow

HOUR = 3600.0
#: The longest name an offer may carry (255 UTF-8 bytes), ending in an extension.
LONG_NAME = "n" * 251 + ".png"


def files_of(world: OfflineWorld, user: SimUser, to: SimUser, root: Path) -> Files:
    """A user's file shell over the user's own store and conversation core."""
    return Files(
        FilesConfig(save_dir=root / user.name / "files", state_dir=root / user.name / "t"),
        user.store,
        user.conversations,
        resolve=lambda c: to.pk,
        drive=world._converse,
        emit=lambda e: None,
    )


def test_a_small_file_reaches_an_offline_contact(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    world = OfflineWorld(SimSwarm(200, seed=3, config=LONG_RUN_CONFIG), tmp_path)
    # The file shell signs with the wall clock: give it the world's virtual one.
    clock = types.SimpleNamespace(time=lambda: world.now, monotonic=time.monotonic)
    monkeypatch.setattr(files_mod, "time", clock)
    names = ("alice", "bob", "erin", "frank", "carol")
    u = {name: world.add_user(name) for name in names}
    world.befriend(u["alice"], u["bob"])
    for a, b in (("erin", "frank"), ("erin", "carol"), ("frank", "carol")):
        world.befriend(u[a], u[b])
    world.link(u["erin"], u["carol"])
    world.link(u["frank"], u["carol"])
    world.settle()
    world.run_for(60)
    world.go_offline(u["bob"])
    world.go_offline(u["frank"])
    receivers = {
        name: files_of(world, u[name], u[peer], tmp_path)
        for name, peer in (("bob", "alice"), ("frank", "erin"))
    }
    data = os.urandom(MAX_INLINE)

    # Alice's file to Bob goes through the DHT mailbox (Alice offline too when Bob comes
    # back); Erin's to Frank through Carol (the DHT has forgotten it by then).
    alice_files = files_of(world, u["alice"], u["bob"], tmp_path)
    erin_files = files_of(world, u["erin"], u["frank"], tmp_path)
    src = tmp_path / "photo.png"
    src.write_bytes(data)
    sent = asyncio.run(alice_files.send("bob", str(src), name=LONG_NAME))
    assert sent["state"] == "done" and sent["inline"]
    small = tmp_path / "note.txt"
    small.write_bytes(data[:777])
    sent_erin = asyncio.run(erin_files.send("frank", str(small)))
    world._sessions_changed(u["erin"])  # the daemon hands backups after a deposit
    world.settle()  # the prekey bundles fetched, the packets sealed and put
    (queued,) = u["alice"].state.pending(u["bob"].pk)
    chunks = len(pk.split_chunks(queued.packet))
    puts = u["alice"].mailbox.stats["puts"]
    assert u["alice"].mailbox.stats["puts_ok"] == puts
    # The cost in docs/PROTOCOL.md: one packet of 20 chunks, and the day's head.
    assert len(queued.packet) <= pk.MAX_PACKET and chunks == 20
    assert puts == chunks + 1
    assert len(u["carol"].state.held_for(u["frank"].pk)) == 1
    world.go_offline(u["alice"])
    world.go_offline(u["erin"])
    world.run_for(HOUR)
    world.go_online(u["bob"])
    world.run_for(HOUR)
    assert u["bob"].mailbox.stats["received"] == 1, (u["bob"].mailbox.stats, world.now)
    got = receivers["bob"].json(receivers["bob"].transfers[bytes.fromhex(sent["id"])])
    assert got["state"] == "done" and got["inline"] and got["media_type"] == "image/png"
    assert Path(got["path"]).name == LONG_NAME
    assert hashlib.sha256(Path(got["path"]).read_bytes()).digest() == hashlib.sha256(data).digest()
    assert u["bob"].mailbox.stats["received"] == 1

    world.run_for(2 * HOUR)  # four hours on: Erin's DHT items are gone
    world.go_online(u["frank"])
    world.run_for(HOUR / 2)
    frank = receivers["frank"]
    got = frank.json(frank.transfers[bytes.fromhex(sent_erin["id"])])
    assert got["state"] == "done" and Path(got["path"]).read_bytes() == data[:777]
    assert u["frank"].mailbox.stats["received"] == 1
    assert u["carol"].state.held_for(u["frank"].pk) == []  # released once taken
