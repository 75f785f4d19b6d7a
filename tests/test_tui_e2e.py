"""The TUI against real daemons: Bob's is started by the TUI's own launcher, Alice's by
``btchat up``, both on a loopback sandbox swarm; Alice writes with the CLI, Bob reads
and answers in the TUI, and Alice sees his reply and the read receipt. Then the dialogs
against the real API's shapes: Bob finds her message by search, compares the safety
number with hers and marks her verified, makes an invite-only channel and invites her,
and she joins it with the invite that reached her as a message."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from pathlib import Path

import pytest
from test_messenger_e2e import Person, befriend, sandbox, wait_for  # noqa: F401
from tui_harness import choose, item_text, row_texts, started, text_of, until

from btchat.api.client import ApiClient, read_api_files
from btchat.identity.keystore import KeyStore
from btchat.tui.app import BtchatApp, Conversation, ConvItem, MessageRow
from btchat.tui.launch import ensure_daemon
from btchat.tui.screens import ChannelDetails, ChannelsDialog, ContactDetails, Search, safety_lines

pytestmark = pytest.mark.slow

LOOPBACK = ["--host", "127.0.0.1", "--dht-port", "0", "--no-upnp", "--no-lan"]


def stop(pid: int | None) -> None:
    if pid is not None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)


async def test_a_message_from_the_cli_reaches_the_tui_and_back(
    sandbox: tuple[str, dict[str, str]],  # noqa: F811
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    bootstrap, env = sandbox
    for key, value in env.items():  # the launcher's daemon inherits this environment
        monkeypatch.setenv(key, value)
    alice = Person("alice", tmp_path, env, bootstrap)
    bob = Person("bob", tmp_path, env, bootstrap)
    alice.up("--no-upnp", "--no-lan")
    started_bob = await asyncio.to_thread(
        ensure_daemon, bob.dir, up_args=["--bootstrap", bootstrap, *LOOPBACK]
    )
    try:
        assert started_bob.pid is not None  # the launcher started it, detached
        befriend(alice, bob)
        async with BtchatApp(lambda: read_api_files(bob.dir)).run_test(size=(110, 32)) as pilot:
            app = await started(pilot)
            pk = next(i.key for i in app.query(ConvItem) if i.kind == "contact")
            await asyncio.to_thread(alice.cli, "send", "bob", "hello from the [b]CLI[/b]")
            await until(pilot, lambda: "(1)" in item_text(app, pk), timeout=90)
            await choose(pilot, pk)
            assert row_texts(app)[-1].endswith("alice: hello from the [b]CLI[/b]")
            await pilot.press(*"hi alice, from the TUI", "enter")
            await asyncio.to_thread(
                wait_for,
                lambda: "hi alice, from the TUI" in alice.texts("bob"),
                60,
                "alice to receive the TUI's reply",
            )
            await until(pilot, lambda: "✓✓" in row_texts(app)[-1], timeout=60)  # delivered
            # Bob's TUI marked Alice's message read when it showed it: she sees the tick.
            await asyncio.to_thread(
                wait_for,
                lambda: alice.history("bob")[0]["state"] == "read",
                60,
                "the read receipt",
            )
    finally:
        stop(started_bob.pid)
        alice.down()


@pytest.mark.skipif(
    not Path("/proc/self/environ").exists(),
    reason="no /proc here: the test reads the started daemon's argv and environment from it",
)
def test_the_launcher_hands_a_typed_passphrase_over_a_pipe(
    sandbox: tuple[str, dict[str, str]],  # noqa: F811
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    bootstrap, env = sandbox
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    monkeypatch.delenv("BTCHAT_PASSPHRASE", raising=False)
    KeyStore(tmp_path).create("open sesame", now=0)
    got = ensure_daemon(
        tmp_path, up_args=["--bootstrap", bootstrap, *LOOPBACK], ask=lambda new: "open sesame"
    )
    try:
        assert got.pid is not None
        with open(f"/proc/{got.pid}/cmdline", "rb") as f:
            assert b"open sesame" not in f.read()  # not in argv
        with open(f"/proc/{got.pid}/environ", "rb") as f:
            assert b"open sesame" not in f.read()  # nor in the environment
    finally:
        stop(got.pid)


async def test_search_safety_number_and_a_channel_invite_against_real_daemons(
    sandbox: tuple[str, dict[str, str]],  # noqa: F811
    tmp_path: Path,
) -> None:
    bootstrap, env = sandbox
    alice = Person("alice", tmp_path, env, bootstrap)
    bob = Person("bob", tmp_path, env, bootstrap)
    alice.up("--no-upnp", "--no-lan")
    bob.up("--no-upnp", "--no-lan")
    try:
        befriend(alice, bob)
        alice_api = ApiClient(*read_api_files(alice.dir))
        async with BtchatApp(lambda: read_api_files(bob.dir)).run_test(size=(110, 40)) as pilot:
            app = await started(pilot)
            pk = next(i.key for i in app.query(ConvItem) if i.kind == "contact")
            await asyncio.to_thread(alice.cli, "send", "bob", "the password is swordfish")
            await until(pilot, lambda: "(1)" in item_text(app, pk), timeout=90)

            await pilot.press("ctrl+f")
            await until(pilot, lambda: isinstance(app.screen, Search))
            await pilot.press(*"swordfish", "enter")
            await until(pilot, lambda: "1 match(es)" in text_of(app.screen.query_one("#status")))
            await pilot.press("enter")
            await until(pilot, lambda: app.current == ("contact", pk))
            log = app.query_one("#log", Conversation)
            await until(pilot, lambda: any(r.has_class("found") for r in log.query(MessageRow)))
            assert row_texts(app)[-1].endswith("alice: the password is swordfish")

            await pilot.press("ctrl+s")
            await until(pilot, lambda: isinstance(app.screen, ContactDetails))
            theirs = (await asyncio.to_thread(alice_api.safety_number, "bob"))["safety_number"]
            safety = app.screen.query_one("#safety")
            await until(pilot, lambda: text_of(safety) == safety_lines(theirs))
            await pilot.press("ctrl+y")
            await until(pilot, lambda: app.contacts[pk]["verified"])
            await pilot.press("escape")

            await pilot.press("ctrl+g")
            await until(pilot, lambda: isinstance(app.screen, ChannelsDialog))
            app.screen.query_one("#invite-only").value = True
            app.screen.query_one("#new-name").focus()
            await pilot.press(*"team", "enter")
            await until(pilot, lambda: app.current is not None and app.current[0] == "channel")
            await pilot.press("ctrl+s")
            await until(pilot, lambda: isinstance(app.screen, ChannelDetails))
            await pilot.press(*"alice", "enter")
            await until(
                pilot,
                lambda: "invited alice" in text_of(app.screen.query_one("#status")),
                timeout=30,
            )
            await until(pilot, lambda: len(app.screen.query("#member-list ListItem")) == 2)
        invite = await asyncio.to_thread(
            wait_for,
            lambda: next((t for t in alice.texts("bob") if "btchat:" in t), None),
            60,
            "the invite to reach alice",
        )
        link = invite.rsplit(" ", 1)[-1]
        joined = await asyncio.to_thread(alice_api.join_channel, link)
        assert joined["name"] == "team" and joined["invite_only"]
    finally:
        alice.down()
        bob.down()
