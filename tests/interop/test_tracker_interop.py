"""Our tracker clients against a real tracker: the npm package ``bittorrent-tracker``.

``tests/interop/js/tracker_server.js`` runs its ``Server`` (HTTP + UDP) on 127.0.0.1 with
ports this module picks; ``scripts/setup`` installs the package from the lock file. Two
of our clients announce one infohash and must see each other, over HTTP and over UDP;
``event=stopped`` must take a peer out of the swarm; the tracker's own refusal (its
``filter`` option) must come back as a TrackerError with its words.

These tests fail, not skip, when node or the package is missing: CI must run them.
"""

from __future__ import annotations

import contextlib
import json
import os
import selectors
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import pytest
from yarl import URL

from btchat.discovery.trackers import AnnounceResult, TrackerError, UdpTrackerClient, announce
from btchat.discovery.trackers.protocol import (
    AnnounceRequest,
    build_http_announce_url,
    parse_http_announce_response,
)

pytestmark = pytest.mark.interop

JS_DIR = Path(__file__).parent / "js"
SERVER_JS = JS_DIR / "tracker_server.js"
#: The interval (seconds) the tracker is told to hand out, to check we read it.
INTERVAL = 321
#: The infohash the tracker's filter refuses.
BLOCKED = bytes.fromhex("b10c" * 10)
STARTUP_TIMEOUT = 15.0


@dataclass
class Tracker:
    http_url: str
    udp_url: str
    version: str
    process: subprocess.Popen[str]
    output: list[str] = field(default_factory=list)

    def log(self) -> str:
        return "\n".join(self.output[-50:])


def _free_ports() -> tuple[int, int]:
    """A free TCP port and a free UDP port on 127.0.0.1 (the kernel's choice)."""
    with (
        socket.socket(socket.AF_INET, socket.SOCK_STREAM) as tcp,
        socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp,
    ):
        tcp.bind(("127.0.0.1", 0))
        udp.bind(("127.0.0.1", 0))
        return tcp.getsockname()[1], udp.getsockname()[1]


def _start(http_port: int, udp_port: int) -> Tracker:
    node = shutil.which("node")
    if node is None:
        pytest.fail("node is not installed; the tracker interop tests need it")
    if not (JS_DIR / "node_modules" / "bittorrent-tracker").is_dir():
        pytest.fail(f"bittorrent-tracker is not installed in {JS_DIR}; run scripts/setup")
    process = subprocess.Popen(
        [
            node,
            str(SERVER_JS),
            "--http-port",
            str(http_port),
            "--udp-port",
            str(udp_port),
            "--interval",
            str(INTERVAL),
            "--blocked",
            BLOCKED.hex(),
        ],
        cwd=JS_DIR,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, "NODE_ENV": "test"},
    )
    assert process.stdout is not None
    output: list[str] = []
    deadline = time.monotonic() + STARTUP_TIMEOUT
    with selectors.DefaultSelector() as selector:
        selector.register(process.stdout, selectors.EVENT_READ)
        while (remaining := deadline - time.monotonic()) > 0:
            if not selector.select(remaining):
                break
            line = process.stdout.readline()
            if not line:
                break  # the process exited
            output.append(line.rstrip())
            with contextlib.suppress(ValueError):
                ready = json.loads(line)
                if isinstance(ready, dict) and ready.get("listening"):
                    tracker = Tracker(
                        http_url=f"http://127.0.0.1:{ready['http']}/announce",
                        udp_url=f"udp://127.0.0.1:{ready['udp']}",
                        version=str(ready["version"]),
                        process=process,
                        output=output,
                    )
                    # Keep draining stdout so the tracker never blocks on a full pipe.
                    threading.Thread(target=_drain, args=(tracker,), daemon=True).start()
                    return tracker
    _stop(process)
    raise RuntimeError("bittorrent-tracker did not start:\n" + "\n".join(output))


def _drain(tracker: Tracker) -> None:
    assert tracker.process.stdout is not None
    for line in tracker.process.stdout:
        tracker.output.append(line.rstrip())


def _stop(process: subprocess.Popen[str]) -> None:
    if process.stdin is not None:
        with contextlib.suppress(OSError):
            process.stdin.close()  # the server exits when its stdin closes
    try:
        process.wait(timeout=5)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=5)


@pytest.fixture(scope="module")
def tracker() -> Iterator[Tracker]:
    failures: list[str] = []
    for _ in range(3):  # a port picked here may be taken before node binds it
        try:
            started = _start(*_free_ports())
        except RuntimeError as exc:
            failures.append(str(exc))
            continue
        yield started
        _stop(started.process)
        return
    pytest.fail("\n\n".join(failures))


def _peer_id(tag: bytes) -> bytes:
    return (b"-BC0001-" + tag + os.urandom(12))[:20]


def _info_hash() -> bytes:
    return os.urandom(20)  # a swarm of its own for every test


def _udp_client() -> UdpTrackerClient:
    return UdpTrackerClient(base_timeout=0.5, max_tries=3)


def test_version_is_pinned(tracker: Tracker) -> None:
    lock = json.loads((JS_DIR / "package-lock.json").read_text())
    assert tracker.version == lock["packages"]["node_modules/bittorrent-tracker"]["version"]


@pytest.mark.parametrize("transport", ["http", "udp"])
async def test_two_clients_see_each_other(tracker: Tracker, transport: str) -> None:
    url = tracker.http_url if transport == "http" else tracker.udp_url
    client = _udp_client()
    info_hash = _info_hash()
    alice = await announce(
        url, info_hash, _peer_id(b"A"), 7001, event="started", left=0, udp_client=client
    )
    bob = await announce(
        url, info_hash, _peer_id(b"B"), 7002, event="started", left=100, udp_client=client
    )
    assert alice.interval == INTERVAL and bob.interval == INTERVAL
    assert ("127.0.0.1", 7001) in alice.peers, tracker.log()
    assert sorted(bob.peers) == [("127.0.0.1", 7001), ("127.0.0.1", 7002)], tracker.log()
    assert (bob.complete, bob.incomplete) == (1, 1)  # alice has it all, bob not
    assert bob.warning is None
    # A regular announce (no event) sees the same swarm.
    again = await announce(url, info_hash, _peer_id(b"A"), 7001, udp_client=client)
    assert sorted(again.peers) == [("127.0.0.1", 7001), ("127.0.0.1", 7002)]


@pytest.mark.parametrize("transport", ["http", "udp"])
async def test_stopped_removes_a_peer(tracker: Tracker, transport: str) -> None:
    url = tracker.http_url if transport == "http" else tracker.udp_url
    client = _udp_client()
    info_hash = _info_hash()
    for tag, port in ((b"A", 7101), (b"B", 7102), (b"C", 7103)):
        await announce(url, info_hash, _peer_id(tag), port, event="started", udp_client=client)
    await announce(url, info_hash, _peer_id(b"B"), 7102, event="stopped", udp_client=client)
    result = await announce(url, info_hash, _peer_id(b"C"), 7103, udp_client=client)
    assert sorted(result.peers) == [("127.0.0.1", 7101), ("127.0.0.1", 7103)], tracker.log()
    assert (result.complete, result.incomplete) == (2, 0)


async def test_http_and_udp_share_the_swarm(tracker: Tracker) -> None:
    info_hash = _info_hash()
    await announce(tracker.udp_url, info_hash, _peer_id(b"U"), 7201, udp_client=_udp_client())
    result = await announce(tracker.http_url, info_hash, _peer_id(b"H"), 7202, numwant=1)
    assert len(result.peers) == 1  # numwant honoured
    result = await announce(tracker.http_url, info_hash, _peer_id(b"H"), 7202)
    assert sorted(result.peers) == [("127.0.0.1", 7201), ("127.0.0.1", 7202)]


async def test_http_non_compact_answer(tracker: Tracker) -> None:
    """compact=0: the tracker sends BEP 3 dictionaries (with peer ids); we parse them."""
    info_hash = _info_hash()
    await announce(tracker.http_url, info_hash, _peer_id(b"A"), 7301, event="started")
    request = AnnounceRequest(info_hash=info_hash, peer_id=_peer_id(b"B"), port=7302)
    url = build_http_announce_url(tracker.http_url, request, compact=False)
    async with (
        aiohttp.ClientSession() as session,
        session.get(URL(url, encoded=True)) as response,
    ):
        body = await response.read()
    # The list of dictionaries, not a packed string. (bittorrent-tracker 11.2.3 writes each
    # "peer id" as the UTF-8 of its bytes, 20 to 40 bytes long; we ignore peer ids.)
    assert b"5:peersld2:ip9:127.0.0.1" in body and b"7:peer id" in body
    result = parse_http_announce_response(body)
    assert isinstance(result, AnnounceResult)
    assert sorted(result.peers) == [("127.0.0.1", 7301), ("127.0.0.1", 7302)]


@pytest.mark.parametrize("transport", ["http", "udp"])
async def test_tracker_refusal_is_a_tracker_error(tracker: Tracker, transport: str) -> None:
    url = tracker.http_url if transport == "http" else tracker.udp_url
    with pytest.raises(TrackerError, match="infohash blocked by test"):
        await announce(url, BLOCKED, _peer_id(b"X"), 7401, udp_client=_udp_client())


async def test_udp_connection_id_is_reused(tracker: Tracker) -> None:
    client = _udp_client()
    info_hash = _info_hash()
    await announce(tracker.udp_url, info_hash, _peer_id(b"A"), 7501, udp_client=client)
    port = int(tracker.udp_url.rsplit(":", 1)[1])
    connection_id = client.connection_id(("127.0.0.1", port))
    assert connection_id is not None
    result = await announce(tracker.udp_url, info_hash, _peer_id(b"A"), 7501, udp_client=client)
    assert result.peers == [("127.0.0.1", 7501)]
    assert client.connection_id(("127.0.0.1", port)) == connection_id
