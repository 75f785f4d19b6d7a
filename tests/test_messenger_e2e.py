"""Daemons in separate processes find each other through the DHT rendezvous and chat.

Everything runs on 127.0.0.1: a private sandbox swarm (``btchat sandbox``), and one
``btchat up`` process per person, each knowing the others only by their IDs.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Awaitable, Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest

from btchat.api.client import ApiClient, read_api_files

pytestmark = pytest.mark.slow

BTCHAT = [sys.executable, "-m", "btchat.cli"]


def base_env(tmp: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("BTCHAT_")}
    env["HOME"] = str(tmp / "home")
    env["XDG_CONFIG_HOME"] = str(tmp / "home" / "config")
    env["XDG_DATA_HOME"] = str(tmp / "home" / "data")
    env["BTCHAT_CONFIG"] = str(tmp / "config.toml")
    (tmp / "config.toml").write_text('[dht]\nbootstrap = ["127.0.0.1:9"]\n')
    return env


def wait_for(pred: Callable[[], Any], timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = pred()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


class Person:
    """One data directory and (while running) one ``btchat up`` process; ``wrap`` prefixes
    every command (``ip netns exec NS``: a person in a NAT-lab home)."""

    def __init__(
        self,
        name: str,
        root: Path,
        env: dict[str, str],
        bootstrap: str,
        wrap: Sequence[str] = (),
        *,
        init: bool = True,
    ) -> None:
        self.name = name
        self.wrap = list(wrap)
        self.dir = root / name
        self.env = env
        self.bootstrap = bootstrap
        self.proc: subprocess.Popen[str] | None = None
        if init:  # else the caller puts a key file in place (another device of someone)
            self.cli("init", "--no-passphrase")
        self.id = self.cli("id")["id"] if init else ""

    def cli(self, *args: str, check: bool = True, stdin: str | None = None) -> Any:
        out = subprocess.run(
            [*self.wrap, *BTCHAT, *args, "--data-dir", str(self.dir), "--json"],
            env=self.env,
            input=stdin,
            capture_output=True,
            text=True,
            timeout=60,
        )
        if check:
            assert out.returncode == 0, f"{self.name}: btchat {' '.join(args)}: {out.stderr}"
            return json.loads(out.stdout.splitlines()[-1]) if out.stdout.strip() else None
        return out

    def up(self, *extra: str) -> dict[str, Any]:
        self.proc = subprocess.Popen(
            [
                *self.wrap,
                *BTCHAT,
                "up",
                "--data-dir",
                str(self.dir),
                "--bootstrap",
                self.bootstrap,
                "--host",
                "127.0.0.1",
                "--dht-port",
                "0",
                "--json",
                *extra,
            ],
            env=self.env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line:
            err = self.proc.stderr.read() if self.proc.stderr else ""
            raise AssertionError(f"{self.name}: daemon died: {err}")
        return json.loads(line)

    def down(self, sig: int = signal.SIGTERM) -> None:
        if self.proc is not None:
            self.proc.send_signal(sig)
            self.proc.wait(timeout=20)
            self.proc = None

    def kill(self) -> None:
        """Stop the daemon at once (a test's cleanup: no goodbye needed)."""
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait(timeout=10)

    def history(self, other: str) -> list[dict[str, Any]]:
        return self.cli("history", other)["messages"]

    def texts(self, other: str) -> list[str]:
        return [m["text"] for m in self.history(other)]


# ------------------------------------------------------ async forms for asyncio tests


async def cli(p: Person, *args: str) -> Any:
    """``p.cli`` off the event loop (the NAT-lab tests drive peers from asyncio)."""
    return await asyncio.to_thread(p.cli, *args)


async def until_true(pred: Callable[[], Awaitable[bool]], timeout: float, what: str) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not await pred():
        assert asyncio.get_running_loop().time() < deadline, f"timed out: {what}"
        await asyncio.sleep(0.5)


async def online(p: Person, other: str) -> bool:
    contacts = (await cli(p, "contacts"))["contacts"]
    return any(c["name"] == other and c["online"] for c in contacts)


async def texts(p: Person, other: str) -> list[str]:
    return [m["text"] for m in (await cli(p, "history", other))["messages"]]


@pytest.fixture(scope="module")
def sandbox(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, dict[str, str]]]:
    tmp = tmp_path_factory.mktemp("e2e")
    env = base_env(tmp)
    proc = subprocess.Popen(
        [*BTCHAT, "sandbox", "--nodes", "40", "--json"], env=env, stdout=subprocess.PIPE, text=True
    )
    assert proc.stdout is not None
    bootstrap = json.loads(proc.stdout.readline())["bootstrap"]
    try:
        yield bootstrap, env
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=20)


@pytest.fixture
def people(sandbox: tuple[str, dict[str, str]], tmp_path: Path) -> Iterator[dict[str, Person]]:
    bootstrap, env = sandbox
    folks = {n: Person(n, tmp_path, env, bootstrap) for n in ("alice", "bob", "carol")}
    try:
        yield folks
    finally:
        for p in folks.values():
            p.kill()


def befriend(a: Person, b: Person) -> None:
    a.cli("contact", "add", b.id, b.name)
    b.cli("contact", "add", a.id, a.name)


def test_two_strangers_by_id_then_a_third(people: dict[str, Person]) -> None:
    alice, bob, carol = people["alice"], people["bob"], people["carol"]
    for p in (alice, bob, carol):
        p.up()
    befriend(alice, bob)
    sent = alice.cli("send", "bob", "hello bob")
    assert sent["text"] == "hello bob"
    wait_for(lambda: bob.texts("alice") == ["hello bob"], 60, "bob to receive")
    wait_for(
        lambda: alice.history("bob")[0]["state"] in ("delivered", "read"),
        30,
        "the delivered receipt",
    )
    bob.cli("send", "alice", "hi alice")
    wait_for(lambda: alice.texts("bob") == ["hello bob", "hi alice"], 30, "alice to receive")
    bob.cli("read", "alice")
    wait_for(lambda: alice.history("bob")[0]["state"] == "read", 30, "the read receipt")

    befriend(carol, alice)
    befriend(carol, bob)
    carol.cli("send", "alice", "carol to alice")
    carol.cli("send", "bob", "carol to bob")
    wait_for(lambda: alice.texts("carol") == ["carol to alice"], 60, "alice <- carol")
    wait_for(lambda: bob.texts("carol") == ["carol to bob"], 60, "bob <- carol")
    contacts = {c["name"]: c for c in carol.cli("contacts")["contacts"]}
    assert contacts["alice"]["online"] and contacts["bob"]["online"]
    assert contacts["alice"]["path"] and set(contacts["alice"]["path"]) <= {"tcp", "udp"}
    status = alice.cli("status")
    assert status["dht"]["joined"] and status["contacts_online"] == 2

    # Alice's profile, published in the DHT under her identity key, reaches her contacts.
    alice.cli("profile", "--name", "Alice Liddell", "--status", "down the rabbit hole")
    assert alice.cli("profile")["name"] == "Alice Liddell"

    alice.down()
    alice.up()  # she republishes at start; carol fetches it when the session comes back
    seen = wait_for(
        lambda: next(
            (
                c["profile"]
                for c in carol.cli("contacts")["contacts"]
                if c["name"] == "alice" and c["profile"]["name"] == "Alice Liddell"
            ),
            None,
        ),
        60,
        "carol to see alice's profile",
    )
    assert seen["status"] == "down the rabbit hole"


def test_restart_mid_conversation_loses_and_duplicates_nothing(people: dict[str, Person]) -> None:
    alice, bob = people["alice"], people["bob"]
    alice.up()
    bob.up()
    befriend(alice, bob)
    alice.cli("send", "bob", "one")
    wait_for(lambda: bob.texts("alice") == ["one"], 60, "first message")
    bob.down()  # clean stop
    alice.cli("send", "bob", "two")
    alice.cli("send", "bob", "three")
    bob.up()
    wait_for(lambda: bob.texts("alice") == ["one", "two", "three"], 60, "queued messages")
    bob.cli("send", "alice", "four")
    wait_for(lambda: alice.texts("bob") == ["one", "two", "three", "four"], 30, "reply")
    alice.down(signal.SIGKILL)  # a crash
    bob.cli("send", "alice", "five")
    alice.up()
    wait_for(lambda: alice.texts("bob")[-1:] == ["five"], 60, "message after a crash")
    expected = ["one", "two", "three", "four", "five"]
    assert alice.texts("bob") == expected
    assert bob.texts("alice") == expected  # same order on both sides, no duplicates
    ids_a = [m["id"] for m in alice.history("bob")]
    ids_b = [m["id"] for m in bob.history("alice")]
    assert ids_a == ids_b and len(set(ids_a)) == 5


def test_clear_errors(people: dict[str, Person]) -> None:
    alice = people["alice"]
    out = alice.cli("status", check=False)
    assert out.returncode == 1 and "no btchat daemon is running" in out.stderr
    alice.up()
    out = alice.cli("send", "nobody", "hi", check=False)
    assert out.returncode == 1 and "nobody" in out.stderr
    out = alice.cli("contact", "add", "btnotanid", check=False)
    assert out.returncode == 1


def test_the_cli_as_a_front_end(people: dict[str, Person], tmp_path: Path) -> None:
    """Text from standard input or a file; blank and oversized messages refused with the
    limit named; files and history name people by petname; history pages back, and
    reads the database when the daemon is down."""
    alice, bob = people["alice"], people["bob"]
    alice.up()
    bob.up()
    befriend(alice, bob)
    assert alice.cli("send", "bob", "-", stdin="from a pipe\n")["text"] == "from a pipe"
    note = tmp_path / "note.txt"
    note.write_text("line one\nline two\n")
    assert alice.cli("send", "bob", "--file", str(note))["text"] == "line one\nline two"
    for blank in (" ", "\n\t "):
        out = alice.cli("send", "bob", blank, check=False)
        assert out.returncode == 1 and "not only white space" in out.stderr
    out = alice.cli("send", "bob", "-", stdin="x" * 20_000, check=False)
    assert out.returncode == 1 and "20,000 bytes" in out.stderr and "16,384" in out.stderr
    out = alice.cli("send", "bob", check=False)
    assert out.returncode == 1 and "standard input" in out.stderr
    for i in range(3):
        alice.cli("send", "bob", f"numbered {i}")
    wait_for(lambda: len(bob.texts("alice")) == 5, 60, "bob to receive all five")

    photo = tmp_path / "photo.bin"
    photo.write_bytes(os.urandom(3 << 20))
    alice.cli("send-file", "bob", str(photo))
    listing = subprocess.run(
        [*BTCHAT, "files", "--data-dir", str(alice.dir)],
        env=alice.env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert re.search(r"to bob: photo\.bin \(3\.0 MiB\) offered", listing.stdout), listing

    # watch names people and says typing in words; it exits 1 when the daemon goes.
    watch = subprocess.Popen(
        [*BTCHAT, "watch", "--data-dir", str(bob.dir)],
        env=bob.env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    seen: list[str] = []
    assert watch.stdout is not None
    reader = threading.Thread(target=lambda: seen.extend(watch.stdout or []), daemon=True)
    reader.start()
    alice_api = ApiClient(*read_api_files(alice.dir))
    sent_at = [0.0]

    def typing_shown() -> bool:  # watch prints nothing until it is subscribed: say it again
        if time.monotonic() - sent_at[0] > 1.0:
            sent_at[0] = time.monotonic()
            alice_api.send_typing("bob", True)
        return any("alice is typing" in line for line in seen)

    wait_for(typing_shown, 30, "the typing line")
    alice.cli("send", "bob", "watched")
    wait_for(lambda: any("alice: watched" in line for line in seen), 30, "the watched line")
    assert not any(alice.id[:12].lower() in line.lower() for line in seen), seen

    bob.down()
    assert watch.wait(timeout=30) == 1
    assert watch.stderr is not None and "daemon went away" in watch.stderr.read()
    offline = [*BTCHAT, "history", "alice", "--data-dir", str(bob.dir), "--limit", "2"]
    page = subprocess.run(offline, env=bob.env, capture_output=True, text=True, timeout=60)
    assert page.returncode == 0, page.stderr
    lines = page.stdout.splitlines()
    texts = [line.split(": ", 1)[1] for line in lines]
    assert texts[0] == "[file] photo.bin (3145728 bytes)" and texts[1] == "watched", texts
    assert all(" alice: " in line for line in lines)
    older = re.search(r"--before (\d+)", page.stderr)
    assert older, page.stderr
    rest = bob.cli("history", "alice", "--before", older.group(1))["messages"]
    assert [m["text"] for m in rest][-2:] == ["numbered 1", "numbered 2"]
    assert rest[0]["text"] == "from a pipe"


def test_contact_request_from_a_stranger(people: dict[str, Person]) -> None:
    """Alice knows Bob's ID; Bob knows nothing of Alice. Her request reaches him through
    the DHT (sealed, with proof-of-work); once he accepts, they talk, her request says
    "accepted", and the contact she added by bare ID takes the name Bob gave himself."""
    alice, bob = people["alice"], people["bob"]
    alice.up()
    bob.up("--request-poll", "1")
    wait_for(lambda: alice.cli("status")["dht"]["joined"], 30, "alice to join the DHT")
    wait_for(lambda: bob.cli("status")["dht"]["joined"], 30, "bob to join the DHT")
    bob.cli("profile", "--name", "Bob \u202eB")  # a bidi override: dropped when adopted
    sent = alice.cli("request", "send", bob.id, "--note", "we met at the conference")
    assert sent["direction"] == "out" and sent["state"] == "pending"
    incoming = wait_for(lambda: bob.cli("requests")["requests"], 60, "the request to arrive")
    [req] = incoming
    assert req["direction"] == "in" and req["note"] == "we met at the conference"
    assert req["contact_id"] == alice.id
    assert bob.cli("contacts")["contacts"] == []  # nothing happens until Bob decides
    bob.cli("request", "accept", req["id"], "--name", "alice")
    name_for_bob = alice.cli("contacts")["contacts"][0]["name"]
    alice.cli("send", name_for_bob, "thanks for accepting")
    wait_for(lambda: bob.texts("alice") == ["thanks for accepting"], 60, "the first message")
    states = lambda: [r["state"] for r in alice.cli("requests")["requests"]]  # noqa: E731
    wait_for(lambda: states() == ["accepted"], 30, "alice's request to say accepted")
    names = lambda: [c["name"] for c in alice.cli("contacts")["contacts"]]  # noqa: E731
    wait_for(lambda: names() == ["Bob B"], 30, "bob's own name to replace the ID prefix")
