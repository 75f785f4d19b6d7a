"""The event loop choice (net/eventloop.py): uvloop when installed, the stdlib loop on
request, and what the daemon needs from a loop working on both."""

from __future__ import annotations

import asyncio
import logging
import random
import sys
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from harness import skip_unless_ci

from btchat.net import eventloop
from btchat.net.dht_service import DhtService

LOOPS = ["asyncio", "uvloop"]


def _uvloop() -> Any:
    """The uvloop module, or a skip saying it is missing (a failure under CI, where the
    test extra installs it)."""
    try:
        import uvloop
    except ImportError:
        skip_unless_ci("uvloop is not installed (pip install -e '.[test]' brings it)")
    return uvloop


def _setting(loop: str) -> str:
    if loop == "uvloop":
        _uvloop()
        return "1"
    return "0"


def test_zero_means_the_stdlib_loop(monkeypatch: pytest.MonkeyPatch) -> None:
    for value in ("0", "false", " OFF ", "no"):
        monkeypatch.setenv(eventloop.ENV, value)
        assert eventloop.loop_factory() is None
        assert eventloop.run(_loop_name()) == "asyncio"


def test_unset_means_uvloop_when_installed(monkeypatch: pytest.MonkeyPatch) -> None:
    uvloop = _uvloop()
    monkeypatch.delenv(eventloop.ENV, raising=False)
    assert eventloop.loop_factory() is uvloop.new_event_loop
    assert eventloop.run(_loop_name()) == "uvloop"


def test_asked_for_but_missing_falls_back_and_says_so(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setitem(sys.modules, "uvloop", None)  # import uvloop raises ImportError
    with caplog.at_level(logging.WARNING, logger="btchat.net.eventloop"):
        assert eventloop.loop_factory("1") is None
        assert eventloop.loop_factory("") is None
    assert [r.getMessage() for r in caplog.records] == [
        "BTCHAT_UVLOOP=1 but uvloop is not installed: using the stdlib loop"
    ]
    assert eventloop.run(_loop_name(), setting="1") == "asyncio"


def test_an_unknown_value_is_said_and_read_as_unset(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="btchat.net.eventloop"):
        eventloop.loop_factory("maybe")
    assert "is not 0 or 1" in caplog.text


async def _loop_name() -> str:
    return eventloop.loop_name()


async def _dht_ping_and_lookup() -> tuple[str, bytes, int]:
    """Two real DHT services on loopback: the UDP transports and the protocol glue."""
    a = await DhtService.start(host="127.0.0.1", rng=random.Random(1))
    b = await DhtService.start(host="127.0.0.1", rng=random.Random(2))
    try:
        answered_by = await a.ping(b.addr)
        found = await a.find_node(b.node_id)
        return eventloop.loop_name(), answered_by, sum(n.node_id == b.node_id for n in found)
    finally:
        a.close()
        b.close()


@pytest.mark.parametrize("loop", LOOPS)
def test_dht_services_talk_on_both_loops(loop: str) -> None:
    setting = _setting(loop)
    name, answered_by, found = eventloop.run(_dht_ping_and_lookup(), setting=setting)
    assert name == loop
    assert len(answered_by) == 20
    assert found == 1


async def _http_and_subprocess() -> tuple[str, dict[str, Any], str]:
    """What else the daemon asks of its loop: an aiohttp server and client, a subprocess."""
    app = web.Application()

    async def hello(request: web.Request) -> web.Response:
        return web.json_response({"path": request.path})

    app.router.add_get("/hello", hello)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        port = runner.addresses[0][1]
        async with (
            aiohttp.ClientSession() as session,
            session.get(f"http://127.0.0.1:{port}/hello") as resp,
        ):
            body = await resp.json()
    finally:
        await runner.cleanup()
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", "print('child')", stdout=asyncio.subprocess.PIPE
    )
    out, _ = await proc.communicate()
    return eventloop.loop_name(), body, out.decode().strip()


@pytest.mark.parametrize("loop", LOOPS)
def test_http_and_subprocesses_on_both_loops(loop: str) -> None:
    setting = _setting(loop)
    name, body, child = eventloop.run(_http_and_subprocess(), setting=setting)
    assert (name, body, child) == (loop, {"path": "/hello"}, "child")
