"""1:1 file transfer between two real daemons (``btchat up`` processes) on loopback.

A multi-megabyte file is offered, accepted and arrives byte-identical; a transfer cut
by a receiver restart and then a sender crash (SIGKILL) resumes with no piece fetched
twice; a chat message sent during a bulk transfer arrives promptly.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import signal
import time
import urllib.request
from pathlib import Path

import pytest
from test_messenger_e2e import Person, befriend, people, sandbox, wait_for  # noqa: F401

from btchat.api.client import ApiClient, read_api_files

pytestmark = pytest.mark.slow


def transfer_of(p: Person, tid: str) -> dict:
    return p.cli("files")["transfers"][[t["id"] for t in p.cli("files")["transfers"]].index(tid)]


def have(p: Person, tid: str) -> int:
    """Pieces held now, asked of the daemon in-process (a CLI call takes too long)."""
    try:
        return ApiClient(*read_api_files(p.dir), timeout=2).get_transfer(tid)["have"]
    except Exception:
        return -1


def record(p: Person, tid: str) -> dict:
    return json.loads((p.dir / "transfers" / f"{tid}.json").read_text())


def wait_fast(pred: object, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not pred():  # type: ignore[operator]
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.005)


def online(a: Person, b: Person) -> None:
    wait_for(
        lambda: any(c["online"] for c in a.cli("contacts")["contacts"] if c["name"] == b.name),
        60,
        f"{a.name} to see {b.name} online",
    )


def offer(alice: Person, bob: Person, path: Path) -> str:
    sent = alice.cli("send-file", "bob", str(path))
    assert sent["state"] == "offered" and sent["size"] == path.stat().st_size
    tid = sent["id"]
    got = wait_for(
        lambda: [t for t in bob.cli("files")["transfers"] if t["id"] == tid], 60, "the offer"
    )
    assert got[0]["direction"] == "in" and got[0]["state"] == "offered"
    assert got[0]["root"] == sent["root"]
    # The offer is a message of the conversation on both sides.
    assert any(m["type"] == "file" for m in bob.history("alice"))
    return tid


def test_send_accept_verify(people: dict[str, Person], tmp_path: Path) -> None:  # noqa: F811
    alice, bob = people["alice"], people["bob"]
    alice.up()
    bob.up()
    befriend(alice, bob)
    online(alice, bob)
    src = tmp_path / "holiday photos.bin"
    src.write_bytes(os.urandom(6 * 1024 * 1024 + 123))
    tid = offer(alice, bob, src)
    bob.cli("accept-file", tid)
    start = time.monotonic()
    alice.cli("send", "bob", "did it arrive?")
    wait_for(lambda: "did it arrive?" in bob.texts("alice"), 10, "chat during the transfer")
    chat_latency = time.monotonic() - start
    done = wait_for(lambda: (t := transfer_of(bob, tid))["state"] == "done" and t, 120, "the file")
    saved = Path(done["path"])
    assert saved.parent == bob.dir / "files" and saved.name == "holiday photos.bin"
    assert hashlib.sha256(saved.read_bytes()).digest() == hashlib.sha256(src.read_bytes()).digest()
    assert done["stats"].get("bad", 0) == 0 and done["stats"].get("duplicate", 0) == 0
    assert chat_latency < 5
    # The seed's GET /download serves it, with range requests.
    url, token = read_api_files(bob.dir)
    req = urllib.request.Request(
        f"{url}/download?id={tid}",
        headers={"Authorization": f"Bearer {token}", "Range": "bytes=100-199"},
    )
    with urllib.request.urlopen(req, timeout=10) as resp:
        assert resp.status == 206 and resp.read() == src.read_bytes()[100:200]
        # Always a download, never a page of the API's origin.
        assert resp.headers["Content-Type"] == "application/octet-stream"
        assert resp.headers["Content-Disposition"] == (
            "attachment; filename=\"holiday photos.bin\"; filename*=UTF-8''holiday%20photos.bin"
        )
        assert resp.headers["X-Content-Type-Options"] == "nosniff"
        assert "sandbox" in resp.headers["Content-Security-Policy"]
    wait_for(lambda: transfer_of(alice, tid)["state"] == "done", 30, "the sender to hear")
    assert not list((bob.dir / "files").glob(".btchat-*.part"))


def test_resume_after_receiver_restart_and_sender_crash(
    people: dict[str, Person],  # noqa: F811
    tmp_path: Path,
) -> None:
    alice, bob = people["alice"], people["bob"]
    alice.up()
    bob.up()
    befriend(alice, bob)
    online(alice, bob)
    src = tmp_path / "big.bin"
    with src.open("wb") as f:
        for _ in range(24):
            f.write(os.urandom(16 * 1024 * 1024))
    tid = offer(alice, bob, src)
    pieces = transfer_of(bob, tid)["pieces"]
    bob.cli("accept-file", tid)
    wait_fast(lambda: have(bob, tid) >= pieces // 5, 120, "a fifth of the file")
    bob.down()  # a clean stop cuts the connection mid-transfer
    before = record(bob, tid)
    have_before_n = sum(bin(b).count("1") for b in base64.b64decode(before["have"]))
    assert 0 < have_before_n < pieces, "the transfer should be cut in the middle"
    bob.up()
    online(bob, alice)
    wait_fast(lambda: have(bob, tid) >= pieces // 2, 120, "half the file")
    alice.down(signal.SIGKILL)  # the sender crashes
    alice.up()
    done = wait_for(
        lambda: (t := transfer_of(bob, tid))["state"] == "done" and t, 180, "the whole file"
    )
    assert (
        hashlib.sha256(Path(done["path"]).read_bytes()).digest()
        == hashlib.sha256(src.read_bytes()).digest()
    )
    stats = done["stats"]
    assert stats["verified"] == pieces and stats.get("duplicate", 0) == 0
    assert stats.get("bad", 0) == 0
    # After the restart, only the pieces missing at the stop were asked for (pieces in
    # flight when the sender crashed are asked again; none had arrived).
    asked_after = stats["requested"] - before["stats"]["requested"]
    assert asked_after >= pieces - have_before_n
    assert asked_after <= pieces - have_before_n + 16  # at most one window lost in the crash
