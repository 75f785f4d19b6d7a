"""Bob's data directory sits on a small tmpfs that fills up while Alice writes to him.

Two real ``btchat up`` processes on a sandbox swarm (as in :mod:`test_messenger_e2e`).
Issue 14 item 9: a full disk made ~42 failed sessions a second and megabytes of
tracebacks, and ``status`` never said so. Here: Alice's messages stay in her outbox
(not "delivered") while Bob's disk is full, Bob's status says "disk full since ...",
his log holds a handful of lines, and once space is freed every message arrives once.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from test_messenger_e2e import Person, befriend, sandbox, wait_for  # noqa: F401
from test_storage_faults import _fill, _mount_tmpfs

pytestmark = pytest.mark.slow


@pytest.fixture
def full_bob(
    sandbox: tuple[str, dict[str, str]],  # noqa: F811
    tmp_path: Path,
) -> Iterator[tuple[Person, Person, Path]]:
    bootstrap, env = sandbox
    mnt = tmp_path / "small"
    _mount_tmpfs(mnt, "16m")
    alice = Person("alice", tmp_path, env, bootstrap)
    bob = Person("bob", mnt, env, bootstrap)
    try:
        yield alice, bob, mnt
    finally:
        for p in (alice, bob):
            if p.proc is not None:
                p.proc.kill()
                p.proc.wait(timeout=10)
        os.system(f"umount -l {mnt}")


def test_a_full_disk_holds_messages_in_the_outbox_and_delivers_them_once_freed(
    full_bob: tuple[Person, Person, Path],
) -> None:
    alice, bob, mnt = full_bob
    alice.up()
    bob.up()
    befriend(alice, bob)
    alice.cli("send", "bob", "before")
    wait_for(lambda: bob.texts("alice") == ["before"], 60, "the first message")
    assert bob.cli("status")["storage"] == "ok"

    filler = _fill(mnt)
    # SQLite's WAL reuses the room it already has: write until a message is not stored.
    sent: list[str] = []
    deadline = time.monotonic() + 90
    while bob.cli("status")["storage"] == "ok":
        assert time.monotonic() < deadline, "bob's disk never filled"
        for _ in range(10):
            text = f"while full {len(sent)} " + "x" * 15000
            alice.cli("send", "bob", text)
            sent.append(text)
        time.sleep(0.5)
    status = bob.cli("status")
    assert status["storage"].startswith("disk full since"), status["storage"]
    time.sleep(3)  # a storm, if there were one, would show in the counts below
    stuck = [m for m in alice.history("bob") if m["state"] not in ("delivered", "read")]
    assert stuck, "every message was acknowledged although bob's disk is full"

    filler.unlink()
    wait_for(lambda: bob.cli("status")["storage"] == "ok", 90, "bob's storage to clear")
    expected = ["before", *sent]
    wait_for(lambda: bob.texts("alice") == expected, 90, "every message after the disk freed")
    wait_for(
        lambda: all(m["state"] in ("delivered", "read") for m in alice.history("bob")),
        60,
        "every receipt",
    )
    ids = [m["id"] for m in bob.history("alice")]
    assert len(set(ids)) == len(ids) == len(expected)  # none twice
    detail = bob.cli("status")["storage_detail"]
    assert detail["conditions"] >= 1 and detail["cleared"] >= 1
    proc = bob.proc
    assert proc is not None and proc.stderr is not None
    bob.down(signal.SIGTERM)
    log_lines = proc.stderr.read().splitlines()
    # One line when the disk filled, one when it cleared, not a traceback per attempt.
    assert len(log_lines) <= 6, log_lines
    assert any("disk full" in line for line in log_lines), log_lines
