"""Snapshots of the terminal UI's main screens (pytest-textual-snapshot): the
conversation with ticks and hostile text, contact requests, file transfers, the
"daemon not reachable" state, and the dialogs: channels, a channel's invite and members,
search hits, a contact's safety number and settings, your profile and the help. A
change to what a screen shows fails here; after a deliberate one, look at the report
and run ``pytest tests/test_tui_snapshots.py --snapshot-update`` to commit the new
pictures (tests/__snapshots__/)."""

from __future__ import annotations

import asyncio
import random
import threading
from collections.abc import Coroutine, Iterator
from types import SimpleNamespace
from typing import Any, TypeVar

import pytest
from textual.pilot import Pilot
from textual.widgets import Input
from tui_harness import BOB, CAROL, DAVE, ERIN, ME, TOKEN, until

from btchat.api import fake as fake_module
from btchat.api.client import DaemonNotRunning
from btchat.api.fake import FakeMessenger
from btchat.api.server import start_api
from btchat.tui import screens, text
from btchat.tui.app import BtchatApp, ConvItem, MessageRow, Requests, TransferRow, Transfers
from btchat.tui.screens import (
    ChannelDetails,
    ChannelsDialog,
    ContactDetails,
    Help,
    Hit,
    Profile,
    Search,
)

pytest.importorskip("pytest_textual_snapshot")

T = TypeVar("T")
SIZE = (110, 30)


class Served:
    """The API over a fake messenger in a thread of its own (the snapshot runs the app
    with ``App.run``, in a loop of its own)."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.fake = FakeMessenger(ME, files=True)

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout=10)

    def serve(self) -> None:
        self.runner, port = self.run(start_api(self.fake, TOKEN))
        self.url = f"http://127.0.0.1:{port}"

    def close(self) -> None:
        self.run(self.runner.cleanup())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=10)
        self.loop.close()


@pytest.fixture
def served(monkeypatch: pytest.MonkeyPatch) -> Iterator[Served]:
    monkeypatch.setattr(text, "clock", lambda ms: "12:00")  # pictures without a clock
    monkeypatch.setattr(screens, "clock", lambda ms: "12:00")
    # Ids (a channel's shows in its invite) from a seeded stream: the same every run.
    seeded = random.Random(12)
    monkeypatch.setattr(
        fake_module, "secrets", SimpleNamespace(token_hex=lambda n: seeded.randbytes(n).hex())
    )
    s = Served()
    f = s.fake
    s.run(f.add_contact(BOB, "bob"))
    s.run(f.add_contact(CAROL, "carol"))
    s.run(f.add_contact(DAVE, "\x1b[31mdave[/] \u202egnp.exe"))
    f.contacts[BOB].update(online=True, presence="online", verified=True)
    f.contacts[CAROL].update(online=True, presence="away")
    f.receive("bob", "hi! lunch at noon?")
    for words, state in (("yes, see you there", "read"), ("bringing the [b]maps[/b]", "sent")):
        m = s.run(f.send_message("bob", words))
        next(x for x in f.messages if x["id"] == m["id"])["state"] = state
    f.receive(
        "bob", "\x1b[2J\x1b]0;pwned\x07 [bold red]not red[/] \u202eevil\u202c\rover\nbob: fake"
    )
    f.receive("bob", "W" * 300)
    f.receive("carol", "unread one")
    f.receive("carol", "unread two")
    assert f.channels is not None and f.files is not None
    s.run(f.channels.create("lobby", False, []))
    team = s.run(f.channels.create("team \x1b[5m[b]x[/b]", True, []))
    s.run(f.channels.change_members(team["id"], [BOB, CAROL], []))
    f.profile.update(name="Alice", status="on holiday until May")
    f.incoming_request(ERIN, note="met you at the [i]meetup[/i]")
    f.files.offer("bob", "photos.zip", 3 * 1024 * 1024)
    active = f.files.offer("carol", "song[1].mp3", 4096)
    s.run(f.files.act(active["id"], "accept"))
    f.files.advance(active["id"], 2048)
    s.serve()
    try:
        yield s
    finally:
        s.close()


def app_for(s: Served) -> BtchatApp:
    return BtchatApp(lambda: (s.url, TOKEN))


async def settle(pilot: Pilot) -> None:
    for box in pilot.app.query(Input):
        box.cursor_blink = False
    await pilot.pause(0.1)


async def conversation(pilot: Pilot) -> BtchatApp:
    app = pilot.app
    assert isinstance(app, BtchatApp)
    await until(pilot, lambda: app.connected and len(app.query(ConvItem)) == 5)
    await until(pilot, lambda: app.unread.get(CAROL) == 3)  # a file offer too
    await app.open("contact", BOB)
    await until(pilot, lambda: len(app.query(MessageRow)) == 6)
    app.query_one("#convs").index = 2  # bob
    app.query_one("#input").focus()
    await settle(pilot)
    return app


def test_snapshot_conversation(served: Served, snap_compare: Any) -> None:
    assert snap_compare(app_for(served), terminal_size=SIZE, run_before=conversation)


def test_snapshot_requests(served: Served, snap_compare: Any) -> None:
    async def run_before(pilot: Pilot) -> None:
        app = await conversation(pilot)
        await pilot.press("ctrl+r")
        await until(pilot, lambda: isinstance(app.screen, Requests))
        await until(pilot, lambda: len(app.screen.query("#request-list ListItem")) == 1)
        await settle(pilot)

    assert snap_compare(app_for(served), terminal_size=SIZE, run_before=run_before)


def test_snapshot_transfers(served: Served, snap_compare: Any) -> None:
    async def run_before(pilot: Pilot) -> None:
        app = await conversation(pilot)
        await pilot.press("ctrl+t")
        await until(pilot, lambda: isinstance(app.screen, Transfers))
        await until(pilot, lambda: len(app.screen.query(TransferRow)) == 2)
        await settle(pilot)

    assert snap_compare(app_for(served), terminal_size=SIZE, run_before=run_before)


def test_snapshot_daemon_not_reachable(snap_compare: Any) -> None:
    def nobody() -> tuple[str, str]:
        raise DaemonNotRunning()

    async def run_before(pilot: Pilot) -> None:
        await until(
            pilot, lambda: "no btchat daemon" in str(pilot.app.query_one("#banner").content)
        )
        await settle(pilot)

    assert snap_compare(BtchatApp(nobody), terminal_size=SIZE, run_before=run_before)


def test_snapshot_channels(served: Served, snap_compare: Any) -> None:
    async def run_before(pilot: Pilot) -> None:
        app = await conversation(pilot)
        await pilot.press("ctrl+g")
        await until(pilot, lambda: isinstance(app.screen, ChannelsDialog))
        await until(pilot, lambda: len(app.screen.query("#channel-list ListItem")) == 2)
        box = app.screen.query_one("#invite", Input)
        box.focus()
        await pilot.press(*"btchat:channel:nonsense", "enter")
        await until(
            pilot, lambda: "not a channel link" in str(app.screen.query_one("#status").content)
        )
        await settle(pilot)

    assert snap_compare(app_for(served), terminal_size=SIZE, run_before=run_before)


def test_snapshot_channel_details(served: Served, snap_compare: Any) -> None:
    async def run_before(pilot: Pilot) -> None:
        app = await conversation(pilot)
        team = next(k for k, c in app.channels.items() if c["invite_only"])
        await app.open("channel", team)
        await pilot.press("ctrl+s")
        await until(pilot, lambda: isinstance(app.screen, ChannelDetails))
        await until(pilot, lambda: len(app.screen.query("#member-list ListItem")) == 3)
        await settle(pilot)

    assert snap_compare(app_for(served), terminal_size=SIZE, run_before=run_before)


def test_snapshot_search(served: Served, snap_compare: Any) -> None:
    async def run_before(pilot: Pilot) -> None:
        app = await conversation(pilot)
        await pilot.press("ctrl+f")
        await until(pilot, lambda: isinstance(app.screen, Search))
        await pilot.press(*"not", "enter")
        await until(pilot, lambda: len(app.screen.query(Hit)) == 1)
        await settle(pilot)

    assert snap_compare(app_for(served), terminal_size=SIZE, run_before=run_before)


def test_snapshot_contact_details(served: Served, snap_compare: Any) -> None:
    async def run_before(pilot: Pilot) -> None:
        app = await conversation(pilot)
        await pilot.press("ctrl+s")
        await until(pilot, lambda: isinstance(app.screen, ContactDetails))
        await until(pilot, lambda: "…" not in str(app.screen.query_one("#safety").content))
        await settle(pilot)

    assert snap_compare(app_for(served), terminal_size=(110, 40), run_before=run_before)


def test_snapshot_profile(served: Served, snap_compare: Any) -> None:
    async def run_before(pilot: Pilot) -> None:
        app = await conversation(pilot)
        await pilot.press("f2")
        await until(pilot, lambda: isinstance(app.screen, Profile))
        await until(pilot, lambda: app.screen.query_one("#display-name", Input).value == "Alice")
        await settle(pilot)

    assert snap_compare(app_for(served), terminal_size=SIZE, run_before=run_before)


def test_snapshot_help(served: Served, snap_compare: Any) -> None:
    async def run_before(pilot: Pilot) -> None:
        app = await conversation(pilot)
        await pilot.press("f1")
        await until(pilot, lambda: isinstance(app.screen, Help))
        await settle(pilot)

    assert snap_compare(app_for(served), terminal_size=(110, 40), run_before=run_before)
