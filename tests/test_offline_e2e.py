"""Offline delivery between daemons in separate processes, through a loopback DHT.

Alice writes while Bob is down, then Alice goes down too (killed): Bob, coming back,
finds the messages in the private DHT mailbox. When Alice returns, both show the same
messages in the same order, each once, and Alice sees them delivered. The same for a
small file (inline: its bytes in the message), sent with ``send-file``.
"""

from __future__ import annotations

import hashlib
import os
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from test_messenger_e2e import Person, befriend, sandbox, wait_for  # noqa: F401

pytestmark = pytest.mark.slow


@pytest.fixture
def pair(sandbox: tuple[str, dict[str, str]], tmp_path: Path) -> Iterator[tuple[Person, Person]]:  # noqa: F811
    bootstrap, env = sandbox
    alice, bob = Person("alice", tmp_path, env, bootstrap), Person("bob", tmp_path, env, bootstrap)
    try:
        yield alice, bob
    finally:
        for p in (alice, bob):
            if p.proc is not None:
                p.proc.kill()
                p.proc.wait(timeout=10)


def in_the_dht(p: Person, pending: int, puts: int | None = None) -> bool:
    """``p``'s mailbox holds ``pending`` packets and has made ``puts`` DHT puts (by
    default a chunk and a head each: short texts)."""
    mailbox = p.cli("status")["mailbox"]
    want = 2 * pending if puts is None else puts
    stats = mailbox["stats"]
    # Every put made so far done too: how many chunks a packet takes depends on its
    # version (v2 carries the key wrapped per device), so the count alone may be short.
    done = stats.get("puts_ok", 0) + stats.get("puts_failed", 0) >= stats.get("puts", 0)
    return mailbox["pending"] == pending and stats.get("puts_ok", 0) >= want and done


def test_messages_sent_while_down_arrive_through_the_dht(pair: tuple[Person, Person]) -> None:
    alice, bob = pair
    alice.up()
    bob.up()
    befriend(alice, bob)
    alice.cli("send", "bob", "one")
    wait_for(lambda: bob.texts("alice") == ["one"], 60, "first message by session")
    bob.down()
    for text in ("two", "three", "four"):
        alice.cli("send", "bob", text)
    # Queued in the mailbox and written to the DHT before Alice is killed.
    wait_for(lambda: in_the_dht(alice, 3), 60, "alice's mailbox items to be stored")
    alice.down(signal.SIGKILL)
    bob.up()
    wait_for(
        lambda: bob.texts("alice") == ["one", "two", "three", "four"],
        60,
        "bob to fetch the messages from the DHT mailbox with alice offline",
    )
    assert bob.cli("status")["mailbox"]["stats"]["received"] == 3
    alice.up()
    wait_for(
        lambda: all(m["state"] in ("delivered", "read") for m in alice.history("bob")),
        60,
        "alice to see them delivered",
    )
    # Nothing is sent twice: either Bob's DHT head acknowledged them before the session
    # came up (nothing left to offer), or Alice offered the three ids and Bob had them.
    sync = alice.cli("status")["sync"]
    assert sync.get("offered", 0) in (0, 3) and sync.get("resent", 0) == 0, sync
    assert bob.cli("status")["sync"].get("duplicates_received", 0) == 0
    bob.cli("send", "alice", "five")
    expected = ["one", "two", "three", "four", "five"]
    wait_for(lambda: alice.texts("bob") == expected, 60, "the reply")
    assert bob.texts("alice") == expected
    ids_a = [m["id"] for m in alice.history("bob")]
    ids_b = [m["id"] for m in bob.history("alice")]
    assert ids_a == ids_b and len(set(ids_a)) == 5


def test_a_small_file_sent_while_down_arrives_through_the_dht(
    pair: tuple[Person, Person], tmp_path: Path
) -> None:
    alice, bob = pair
    alice.up()
    bob.up()
    befriend(alice, bob)
    alice.cli("send", "bob", "a voice note follows")
    wait_for(lambda: bob.texts("alice") == ["a voice note follows"], 60, "the text by session")
    bob.down()
    data = os.urandom(12000)
    src = tmp_path / "voice.ogg"
    src.write_bytes(data)
    sent = alice.cli("send-file", "bob", str(src))
    assert sent["inline"] and sent["state"] == "done" and sent["media_type"] == "audio/ogg"
    wait_for(  # 15 or 16 chunks (v1 or v2: the key wrapped for bob's device) and the head
        lambda: in_the_dht(alice, 1, puts=16), 60, "alice's mailbox items to be stored"
    )
    alice.down(signal.SIGKILL)
    bob.up()

    def received() -> dict[str, Any] | None:
        rows = [t for t in bob.cli("files")["transfers"] if t["id"] == sent["id"]]
        return rows[0] if rows and rows[0]["state"] == "done" else None

    wait_for(lambda: received() is not None, 120, "bob to have the file from the DHT mailbox")
    got = received()
    assert got is not None and got["inline"] and got["direction"] == "in"
    assert hashlib.sha256(Path(got["path"]).read_bytes()).digest() == hashlib.sha256(data).digest()
    assert Path(got["path"]).name == "voice.ogg"
    assert bob.texts("alice")[-1] == f"[file] voice.ogg ({len(data)} bytes)"
    alice.up()
    wait_for(
        lambda: alice.history("bob")[-1]["state"] in ("delivered", "read"),
        60,
        "alice to see it delivered",
    )
