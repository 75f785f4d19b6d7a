"""The CLI's synchronous client and discovery files, against a live server on loopback."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import stat
import subprocess
import sys
import threading
from collections.abc import AsyncIterator, Coroutine, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest

from btchat.api.client import (
    API_FILE,
    TOKEN_FILE,
    ApiClient,
    ApiClientError,
    DaemonNotRunning,
    new_token,
    read_api_files,
    remove_api_files,
    watch_events,
    write_api_files,
)
from btchat.api.fake import FakeMessenger
from btchat.api.server import start_api
from btchat.cli.main import main as cli_main
from btchat.messaging.contacts import ContactChange

T = TypeVar("T")
TOKEN = new_token()
ALICE = "a1" * 32
BOB = "b0" * 32
NOT_RUNNING = "no btchat daemon is running (start it with `btchat up`)"


class LiveServer:
    """``start_api`` on port 0 in a background thread's event loop, as a daemon would run."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.fake = FakeMessenger()
        self.runner, self.port = self.run(start_api(self.fake, TOKEN))
        self.url = f"http://127.0.0.1:{self.port}"

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout=10)

    def close(self) -> None:
        self.run(self.runner.cleanup())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=10)
        self.loop.close()


@pytest.fixture
def live() -> Iterator[LiveServer]:
    server = LiveServer()
    try:
        yield server
    finally:
        server.close()


@pytest.fixture
def api(live: LiveServer) -> ApiClient:
    return ApiClient(live.url, TOKEN)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


# ------------------------------------------------------------------ every method


def test_status_and_identity(api: ApiClient, live: LiveServer) -> None:
    assert api.status()["public_key"] == live.fake.public_key
    assert api.identity()["uri"] == f"btchat:{live.fake.public_key}"


def test_contacts(api: ApiClient) -> None:
    assert api.list_contacts() == []
    alice = api.add_contact(ALICE, "alice")
    assert alice["name"] == "alice"
    assert api.add_contact(f"btchat:{BOB}?name=bob")["name"] == "bob"
    assert [c["name"] for c in api.list_contacts()] == ["alice", "bob"]
    assert api.get_contact(alice["id"])["public_key"] == ALICE
    assert api.update_contact("alice", ContactChange(verified=True))["verified"] is True
    changed = api.update_contact("alice", ContactChange(name="a/b 50% é", blocked=True))
    assert (changed["name"], changed["verified"], changed["blocked"]) == ("a/b 50% é", True, True)
    assert api.get_contact("a/b 50% é")["public_key"] == ALICE
    assert api.safety_number("a/b 50% é")["contact"]["public_key"] == ALICE
    assert api.remove_contact("a/b 50% é") is None
    assert [c["name"] for c in api.list_contacts()] == ["bob"]


def test_messages(api: ApiClient, live: LiveServer) -> None:
    api.add_contact(ALICE, "alice")
    sent = api.send_message("alice", "hello ✓")
    assert (sent["text"], sent["direction"]) == ("hello ✓", "out")
    incoming = [live.fake.receive("alice", f"reply {i}") for i in range(3)]
    assert [m["text"] for m in api.history("alice")] == ["hello ✓", "reply 0", "reply 1", "reply 2"]
    assert [m["text"] for m in api.history("alice", limit=1)] == ["reply 2"]
    older = api.history("alice", limit=2, before=incoming[2]["lamport"])
    assert [m["text"] for m in older] == ["reply 0", "reply 1"]
    assert len(api.search("reply")) == 3
    assert [m["text"] for m in api.search("reply", contact="alice", limit=1)] == ["reply 0"]
    assert api.mark_read("alice", up_to=incoming[0]["id"])["marked"] == 1
    assert api.mark_read("alice")["marked"] == 2
    assert api.send_typing("alice", True) is None
    assert live.fake.typing == [(ALICE, True)]


def test_presence_and_requests(api: ApiClient, live: LiveServer) -> None:
    assert api.set_presence("busy", "in a meeting") == {"status": "busy", "note": "in a meeting"}
    assert api.set_presence("online") == {"status": "online", "note": None}
    sent = api.send_request(BOB, note="hi")
    assert sent["public_key"] == BOB
    incoming = live.fake.incoming_request(ALICE)
    assert {r["id"] for r in api.list_requests()} == {sent["id"], incoming["id"]}
    assert api.answer_request(incoming["id"], True, name="al")["name"] == "al"
    assert api.answer_request(sent["id"], False)["state"] == "declined"
    assert api.list_requests() == []


# ------------------------------------------------------------------ errors


def test_errors_carry_status_code_and_message(api: ApiClient) -> None:
    with pytest.raises(ApiClientError) as info:
        api.get_contact("nobody")
    assert (info.value.status, info.value.code) == (404, "unknown_contact")
    assert "nobody" in info.value.message
    api.add_contact(ALICE, "alice")
    with pytest.raises(ApiClientError) as info:
        api.add_contact(ALICE)
    assert (info.value.status, info.value.code) == (409, "exists")
    with pytest.raises(ApiClientError) as info:
        api.send_message("alice", "")
    assert (info.value.status, info.value.code) == (400, "bad_text")
    with pytest.raises(ApiClientError) as info:
        api.history("alice", limit=0)
    assert info.value.status == 400
    with pytest.raises(ApiClientError) as info:
        api.set_presence("asleep")
    assert info.value.code == "bad_presence"


def test_wrong_token_is_401(live: LiveServer) -> None:
    with pytest.raises(ApiClientError) as info:
        ApiClient(live.url, "wrong").status()
    assert (info.value.status, info.value.code) == (401, "unauthorized")


def test_proxy_settings_are_ignored(api: ApiClient, monkeypatch: pytest.MonkeyPatch) -> None:
    """The token must never go to a proxy named in the environment."""
    for var in ("http_proxy", "HTTP_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.setenv(var, f"http://127.0.0.1:{free_port()}")
    for var in ("no_proxy", "NO_PROXY"):
        monkeypatch.delenv(var, raising=False)
    assert api.list_contacts() == []


def test_daemon_not_running_when_nothing_listens() -> None:
    client = ApiClient(f"http://127.0.0.1:{free_port()}", TOKEN)
    with pytest.raises(DaemonNotRunning) as info:
        client.status()
    assert str(info.value) == NOT_RUNNING


# ------------------------------------------------------------------ discovery files


def test_api_files_round_trip(tmp_path: Path) -> None:
    data_dir = tmp_path / "new" / "data"
    token = new_token()
    write_api_files(data_dir, "http://127.0.0.1:1234", token)
    assert read_api_files(data_dir) == ("http://127.0.0.1:1234", token)
    info = json.loads((data_dir / API_FILE).read_text())
    assert info == {"url": "http://127.0.0.1:1234", "pid": os.getpid()}
    assert stat.S_IMODE((data_dir / TOKEN_FILE).stat().st_mode) == 0o600
    write_api_files(data_dir, "http://127.0.0.1:5678", "second")  # replaces atomically
    assert read_api_files(data_dir) == ("http://127.0.0.1:5678", "second")
    assert sorted(p.name for p in data_dir.iterdir()) == [API_FILE, TOKEN_FILE]  # no temp files
    remove_api_files(data_dir)
    assert list(data_dir.iterdir()) == []
    remove_api_files(data_dir)  # idempotent


def test_missing_files_mean_not_running(tmp_path: Path) -> None:
    with pytest.raises(DaemonNotRunning) as info:
        read_api_files(tmp_path)
    assert str(info.value) == NOT_RUNNING
    write_api_files(tmp_path, "http://127.0.0.1:1", "t")
    (tmp_path / TOKEN_FILE).unlink()
    with pytest.raises(DaemonNotRunning):
        read_api_files(tmp_path)


def test_dead_pid_means_not_running(tmp_path: Path) -> None:
    write_api_files(tmp_path, "http://127.0.0.1:1", "t")
    (tmp_path / API_FILE).write_text(json.dumps({"url": "http://127.0.0.1:1", "pid": dead_pid()}))
    with pytest.raises(DaemonNotRunning) as info:
        read_api_files(tmp_path)
    assert str(info.value) == NOT_RUNNING


@pytest.mark.parametrize(
    "content", ["", "{", "[]", '{"url": "x"}', '{"pid": 1}', '{"url": 5, "pid": 1}']
)
def test_garbled_api_json_means_not_running(tmp_path: Path, content: str) -> None:
    write_api_files(tmp_path, "http://127.0.0.1:1", "t")
    (tmp_path / API_FILE).write_text(content)
    with pytest.raises(DaemonNotRunning):
        read_api_files(tmp_path)


def test_remove_leaves_another_live_daemons_files(tmp_path: Path) -> None:
    write_api_files(tmp_path, "http://127.0.0.1:1", "t")
    (tmp_path / API_FILE).write_text(json.dumps({"url": "http://127.0.0.1:1", "pid": os.getppid()}))
    remove_api_files(tmp_path)
    assert (tmp_path / API_FILE).exists()


def test_stale_files_with_live_pid_but_no_listener(tmp_path: Path) -> None:
    """Our own pid is alive but nothing listens on the port: still "not running"."""
    write_api_files(tmp_path, f"http://127.0.0.1:{free_port()}", TOKEN)
    url, token = read_api_files(tmp_path)
    with pytest.raises(DaemonNotRunning):
        ApiClient(url, token).list_contacts()


def test_new_token_is_random_and_long() -> None:
    tokens = {new_token() for _ in range(20)}
    assert len(tokens) == 20
    assert all(len(t) >= 43 for t in tokens)


# ------------------------------------------------------------------ events


async def wait_for_subscribers(fake: FakeMessenger, n: int) -> None:
    for _ in range(500):
        if fake.subscribers == n:
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"{fake.subscribers} subscribers, expected {n}")


async def test_watch_events_in_order_until_closed() -> None:
    fake = FakeMessenger()
    runner, port = await start_api(fake, TOKEN)
    try:
        events: AsyncIterator[dict[str, Any]] = watch_events(f"http://127.0.0.1:{port}", TOKEN)
        first = asyncio.ensure_future(anext(events))
        await wait_for_subscribers(fake, 1)
        for i in range(5):
            fake.emit({"type": "dht", "joined": True, "nodes": i})
        got = [await asyncio.wait_for(first, 5)]
        got += [await asyncio.wait_for(anext(events), 5) for _ in range(4)]
        assert [e["nodes"] for e in got] == [0, 1, 2, 3, 4]  # "ready" was swallowed
        await events.aclose()  # type: ignore[attr-defined]
        await wait_for_subscribers(fake, 0)
    finally:
        await runner.cleanup()


async def test_watch_events_ends_when_the_daemon_stops() -> None:
    fake = FakeMessenger()
    runner, port = await start_api(fake, TOKEN)
    events = watch_events(f"http://127.0.0.1:{port}", TOKEN)
    pending = asyncio.ensure_future(anext(events))
    await wait_for_subscribers(fake, 1)
    await asyncio.wait_for(runner.cleanup(), 10)
    with pytest.raises(StopAsyncIteration):
        await asyncio.wait_for(pending, 5)


async def test_watch_events_wrong_token() -> None:
    fake = FakeMessenger()
    runner, port = await start_api(fake, TOKEN)
    try:
        with pytest.raises(ApiClientError) as info:
            await anext(watch_events(f"http://127.0.0.1:{port}", "wrong"))
        assert info.value.status == 401
    finally:
        await runner.cleanup()


async def test_watch_events_not_running() -> None:
    with pytest.raises(DaemonNotRunning):
        await anext(watch_events(f"http://127.0.0.1:{free_port()}", TOKEN))


async def test_start_api_binds_loopback_only() -> None:
    runner, port = await start_api(FakeMessenger(), TOKEN)
    try:
        assert port > 0
        assert [addr[0] for addr in runner.addresses] == ["127.0.0.1"]
    finally:
        await runner.cleanup()


def test_cli_contact_commands_send_one_change(
    live: LiveServer, api: ApiClient, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``btchat contact verify/block/retention`` each change one field through the API."""
    api.add_contact(ALICE, "alice")
    write_api_files(tmp_path, live.url, TOKEN)
    for command in (["verify", "alice"], ["block", "alice"], ["retention", "alice", "5"]):
        assert cli_main(["contact", *command, "--data-dir", str(tmp_path), "--json"]) == 0
    out = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [(c["verified"], c["blocked"], c["retention_days"]) for c in out] == [
        (True, False, 2),
        (True, True, 2),
        (True, True, 5),
    ]
