"""The TUI against real daemons: Bob's is started by the TUI's own launcher, Alice's by
``btchat up``, both on a loopback sandbox swarm; Alice writes with the CLI, Bob reads
and answers in the TUI, and Alice sees his reply and the read receipt."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from pathlib import Path

import pytest
from test_messenger_e2e import Person, befriend, sandbox, wait_for  # noqa: F401
from test_tui import choose, item_text, row_texts, started, until

from btchat.api.client import read_api_files
from btchat.identity.keystore import KeyStore
from btchat.tui.app import BtchatApp, ConvItem
from btchat.tui.launch import ensure_daemon

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
