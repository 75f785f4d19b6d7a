"""What the TUI tests share: the real API server over a fake messenger (``Daemon`` and
its ``daemon`` fixture, bob and carol already contacts) and the pilot steps (``until``,
``started``, ``choose``) and readers (``text_of``, ``row_texts``, ``item_text``).

A test module imports the fixture ``daemon`` from here, so pytest finds it.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from rich.text import Text
from textual.pilot import Pilot
from textual.widgets import ListView, Static

from btchat.api.client import DaemonNotRunning, new_token
from btchat.api.fake import FakeMessenger
from btchat.api.server import start_api
from btchat.tui.app import BtchatApp, Conversation, ConvItem, MessageRow

__all__ = [
    "BOB",
    "CAROL",
    "DAVE",
    "ERIN",
    "ME",
    "TOKEN",
    "Daemon",
    "choose",
    "daemon_fixture",
    "item",
    "item_text",
    "row_texts",
    "started",
    "text_of",
    "until",
]

ME = "e0" * 32
BOB = "b0" * 32
CAROL = "c0" * 32
DAVE = "d0" * 32
ERIN = "f0" * 32
TOKEN = new_token()


class Daemon:
    """The API over a fake messenger, served in the test's own loop; ``locate`` is what
    the app calls to find it (it fails while the daemon is "down")."""

    def __init__(self) -> None:
        self.fake = FakeMessenger(ME, files=True)
        self.runner: Any = None
        self.url: str | None = None

    async def up(self) -> None:
        self.runner, port = await start_api(self.fake, TOKEN)
        self.url = f"http://127.0.0.1:{port}"

    async def down(self) -> None:
        self.url = None
        await self.runner.cleanup()

    def locate(self) -> tuple[str, str]:
        if self.url is None:
            raise DaemonNotRunning()
        return self.url, TOKEN


@pytest.fixture(name="daemon")
async def daemon_fixture() -> AsyncIterator[Daemon]:
    """The fixture ``daemon`` (imported under this name, so a test's ``daemon`` parameter
    shadows nothing)."""
    d = Daemon()
    await d.fake.add_contact(BOB, "bob")
    await d.fake.add_contact(CAROL, "carol")
    await d.up()
    try:
        yield d
    finally:
        if d.url is not None:
            await d.down()


async def until(pilot: Pilot, cond: Callable[[], Any], timeout: float = 10.0) -> None:
    """Let the app run until ``cond()`` holds."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not cond():
        if loop.time() > deadline:
            raise AssertionError(f"timed out waiting for {cond}")
        await pilot.pause(0.02)


def text_of(widget: Static) -> str:
    content = widget.content
    return content.plain if isinstance(content, Text) else str(content)


def row_texts(app: BtchatApp) -> list[str]:
    return [text_of(r) for r in app.query_one("#log", Conversation).query(MessageRow)]


def item(app: BtchatApp, key: str) -> ConvItem:
    return next(i for i in app.query_one("#convs", ListView).query(ConvItem) if i.key == key)


def item_text(app: BtchatApp, key: str) -> str:
    return text_of(item(app, key).query_one("Label", Static))


async def started(pilot: Pilot) -> BtchatApp:
    app = pilot.app
    assert isinstance(app, BtchatApp)
    await until(pilot, lambda: app.connected and list(app.query(ConvItem)))
    return app


async def choose(pilot: Pilot, key: str) -> None:
    app = pilot.app
    view = app.query_one("#convs", ListView)
    view.focus()
    view.index = view.children.index(item(app, key))  # type: ignore[arg-type, union-attr]
    await pilot.press("enter")
    await until(pilot, lambda: app.current is not None and app.current[1] == key)  # type: ignore[attr-defined]
