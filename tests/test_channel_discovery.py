"""Channel members find each other on one discovery path at a time, with no manual dial.

Each test turns on exactly one of the three ways a :class:`ChannelService` looks for
members and checks that the channel forms from nothing: every member linked to every
other one, and a message posted by one shown by all the others exactly once.

* **trackers only**: the real npm ``bittorrent-tracker`` (HTTP and UDP) on 127.0.0.1,
  started by the fixture of ``tests/interop/test_tracker_interop.py``;
* **DHT only**: a sandbox swarm of real DHT nodes on 127.0.0.1 in this process;
* **LAN only**: BEP 14 multicast on the loopback of a network namespace this test
  creates (``unshare --net``, as ``tests/test_lsd.py`` does), never on a real network.

And a member of another channel (same name, other secret) who dials a member directly
gets no link.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from harness import wait_for
from interop.test_tracker_interop import Tracker, tracker  # noqa: F401
from test_lsd import netns  # noqa: F401

from btchat.channels.chatfile import ChatFile
from btchat.channels.engine import Event, Shown
from btchat.channels.service import ChannelConfig, ChannelService
from btchat.channels.store import ChannelStore
from btchat.identity.keys import Identity
from btchat.messaging.store import Store
from btchat.net.dht_service import DhtService
from btchat.sandbox import SANDBOX_CONFIG, start_swarm

pytestmark = pytest.mark.slow

#: Discovery on one path must form the channel well within the services' 15 s
#: re-announce while alone: every path finds the earlier members on its first round.
FORM_TIMEOUT = 12.0


@dataclass
class Member:
    service: ChannelService
    store: Store
    shown: list[str] = field(default_factory=list)

    @property
    def key(self) -> bytes:
        return self.service.identity.public_key


@asynccontextmanager
async def members(
    chat: ChatFile,
    n: int,
    root: Path,
    config: ChannelConfig,
    dhts: list[DhtService] | None = None,
) -> AsyncIterator[list[Member]]:
    """``n`` members of ``chat``, each with its own identity and database, started."""
    out: list[Member] = []
    try:
        for i in range(n):
            store = Store.open(root / f"{chat.channel_id.hex()[:8]}-{i}.db", None)
            cstore = ChannelStore(store)
            cstore.add_channel(chat.channel_id, chat.to_bytes(), 0)
            shown: list[str] = []

            def on_event(c: ChatFile, e: Event | dict[str, Any], shown: list[str] = shown) -> None:
                if isinstance(e, Shown) and e.message.text is not None:
                    shown.append(e.message.text)

            service = ChannelService(
                chat,
                Identity.generate(),
                cstore,
                dhts[i] if dhts else None,
                config,
                on_event=on_event,
            )
            out.append(Member(service, store, shown))
            await service.start()
        yield out
    finally:
        for m in out:
            await m.service.stop()
            m.store.close()


def full_mesh(group: list[Member]) -> bool:
    """Every member linked to every other one (links are keyed by identity)."""
    keys = {m.key for m in group}
    return all(set(m.service.links) == keys - {m.key} for m in group)


def describe(group: list[Member]) -> str:
    return "; ".join(
        f"#{i}: {len(m.service.links)} link(s), found {m.service.stats}"
        for i, m in enumerate(group)
    )


async def assert_channel_forms(group: list[Member]) -> None:
    """The mesh forms by discovery alone; a post reaches everyone else exactly once."""
    assert await wait_for(lambda: full_mesh(group), FORM_TIMEOUT), describe(group)
    for i, author in enumerate(group):
        text = f"hello from #{i}"
        author.service.post(text)
        others = [m for m in group if m is not author]

        def arrived(text: str = text, others: list[Member] = others) -> bool:
            return all(text in m.shown for m in others)

        assert await wait_for(arrived, 5.0), [m.shown for m in group]
    await asyncio.sleep(0.3)  # a duplicate would have arrived by now
    for i, m in enumerate(group):
        expected = sorted(f"hello from #{j}" for j in range(len(group)) if j != i)
        assert sorted(m.shown) == expected, (i, m.shown)


# ------------------------------------------------------------------ trackers only


@pytest.mark.interop
@pytest.mark.parametrize("transport", ["http", "udp"])
async def test_trackers_only_form_the_channel(
    tracker: Tracker,  # noqa: F811
    transport: str,
    tmp_path: Path,
) -> None:
    url = tracker.http_url if transport == "http" else tracker.udp_url
    chat = ChatFile.create(f"tracked-{transport}", trackers=[url], now=time.time())
    config = ChannelConfig(host="127.0.0.1", dht=False, lsd=False, trackers=True)
    async with members(chat, 4, tmp_path, config) as group:
        await assert_channel_forms(group)
        assert sum(m.service.stats["tracker_found"] for m in group) >= 3, describe(group)
        for m in group:
            assert m.service.stats["dht_found"] == m.service.stats["lsd_found"] == 0


@pytest.mark.interop
async def test_tracker_of_another_channel_is_not_a_path(
    tracker: Tracker,  # noqa: F811
    tmp_path: Path,
) -> None:
    """Two channels on one tracker: each member only ever links within its own."""
    one = ChatFile.create("same", trackers=[tracker.http_url], now=time.time())
    two = ChatFile.create("same", trackers=[tracker.http_url], now=time.time())
    config = ChannelConfig(host="127.0.0.1", dht=False, lsd=False, trackers=True)
    async with (
        members(one, 2, tmp_path, config) as a,
        members(two, 2, tmp_path, config) as b,
    ):
        assert await wait_for(lambda: full_mesh(a) and full_mesh(b), FORM_TIMEOUT), describe(a + b)
        await asyncio.sleep(0.5)
        assert all(len(m.service.links) == 1 for m in a + b), describe(a + b)


# ------------------------------------------------------------------ DHT only


async def test_dht_only_forms_the_channel(tmp_path: Path) -> None:
    swarm = await start_swarm(16, seed=7)
    dhts: list[DhtService] = []
    try:
        for _ in range(3):
            dht = await DhtService.start(host="127.0.0.1", config=SANDBOX_CONFIG)
            dhts.append(dht)
            await dht.bootstrap([swarm.bootstrap_addr])
        chat = ChatFile.create("over the dht", now=time.time())
        config = ChannelConfig(host="127.0.0.1", dht=True, trackers=False, lsd=False)
        async with members(chat, 3, tmp_path, config, dhts) as group:
            await assert_channel_forms(group)
            assert sum(m.service.stats["dht_found"] for m in group) >= 2, describe(group)
            for m in group:
                assert m.service.stats["tracker_found"] == m.service.stats["lsd_found"] == 0
    finally:
        for dht in dhts:
            dht.close()
        swarm.close()


# ------------------------------------------------------------------ LAN only


def test_lan_only_forms_the_channel(netns: list[str]) -> None:  # noqa: F811
    proc = subprocess.run(
        [*netns, sys.executable, os.path.abspath(__file__), "scenario", "lan"],
        capture_output=True,
        text=True,
        timeout=40,
    )
    assert proc.returncode == 0, f"scenario failed:\n{proc.stdout}\n{proc.stderr}"
    r = json.loads(proc.stdout.strip().splitlines()[-1])
    assert r["mesh"], r
    n = len(r["shown"])
    for i, shown in enumerate(r["shown"]):
        assert sorted(shown) == sorted(f"hello from #{j}" for j in range(n) if j != i), r
    assert all(s["dht_found"] == s["tracker_found"] == 0 for s in r["stats"]), r
    assert sum(s["lsd_found"] for s in r["stats"]) >= n - 1, r


async def _scenario_lan() -> dict[str, Any]:
    """Runs inside the namespace: multicast on its loopback only."""
    for args in (
        ("link", "set", "lo", "up"),
        ("link", "set", "lo", "multicast", "on"),
        # With a source address, because 127.0.0.1 has host scope and would not be picked.
        ("route", "add", "224.0.0.0/4", "dev", "lo", "src", "127.0.0.1"),
    ):
        subprocess.run(["ip", *args], check=True, capture_output=True)
    chat = ChatFile.create("on the lan", now=time.time())
    config = ChannelConfig(
        host="127.0.0.1",
        dht=False,
        trackers=False,
        lsd=True,
        lsd_options={"interface": "127.0.0.1", "loopback": True},
    )
    with tempfile.TemporaryDirectory() as tmp:
        async with members(chat, 3, Path(tmp), config) as group:
            try:
                await assert_channel_forms(group)
                mesh = True
            except AssertionError as exc:
                print(exc, file=sys.stderr)
                mesh = False
            return {
                "mesh": mesh,
                "shown": [m.shown for m in group],
                "stats": [dict(m.service.stats) for m in group],
            }


# ------------------------------------------------------------------ wrong secret


async def test_wrong_secret_dialled_directly_gets_no_link(tmp_path: Path) -> None:
    chat = ChatFile.create("room", now=time.time())
    impostor_chat = ChatFile.create("room", now=time.time())  # same name, other secret
    config = ChannelConfig(host="127.0.0.1", dht=False, trackers=False, lsd=False)
    async with (
        members(chat, 2, tmp_path, config) as group,
        members(impostor_chat, 1, tmp_path, config) as [impostor],
    ):
        a, b = group
        b.service.dial(("127.0.0.1", a.service.port))
        assert await wait_for(lambda: full_mesh(group), 5.0), describe(group)
        target = ("127.0.0.1", a.service.port)
        impostor.service.dial(target)
        # The dial runs to its end (handshake refused) and is marked failed.
        assert await wait_for(lambda: target in impostor.service._failed, 5.0)
        assert impostor.service.links == {}
        assert set(a.service.links) == {b.key} and set(b.service.links) == {a.key}
        # The channel still works, and nothing of it reached the impostor.
        a.service.post("members only")
        assert await wait_for(lambda: b.shown == ["members only"], 5.0)
        await asyncio.sleep(0.2)
        assert impostor.shown == [] and impostor.service.engine is not None
        assert impostor.service.engine.stats["received"] == 0
        # And the other way round: a member dialling the impostor gets no link either.
        b.service.dial(("127.0.0.1", impostor.service.port))
        assert await wait_for(
            lambda: ("127.0.0.1", impostor.service.port) in b.service._failed, 5.0
        )
        assert set(b.service.links) == {a.key} and impostor.service.links == {}


# ------------------------------------------------------------------ scenario entry


def _main() -> None:
    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers(dest="mode", required=True)
    sc = sub.add_parser("scenario")
    sc.add_argument("name", choices=["lan"])
    parser.parse_args()
    # Refuse to run outside a namespace we made: never multicast on a real network.
    links = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True).stdout
    if any(line.split(":")[1].strip() != "lo" for line in links.splitlines()):
        sys.exit(f"refusing to run: this network namespace has real interfaces:\n{links}")
    print(json.dumps(asyncio.run(_scenario_lan())), flush=True)


if __name__ == "__main__":
    _main()
