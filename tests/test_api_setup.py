"""The setup routes of a daemon started ``--in-browser`` (issue 12), over a real key
store: locked, every other route is 423; a weak new passphrase is refused unless taken
anyway; a wrong one is 403 and counted; an open daemon says ready and takes no attempt."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from aiohttp.test_utils import TestClient, TestServer

from btchat.api.fake import FakeMessenger
from btchat.api.routes import MessengerSlot
from btchat.api.server import make_app
from btchat.identity.keystore import KeyStore
from btchat.node import unlock as unlock_mod
from btchat.node.unlock import BrowserUnlock

TOKEN = "t" * 32
AUTH = {"Authorization": f"Bearer {TOKEN}"}


async def test_locked_create_then_ready(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(unlock_mod, "WRONG_PAUSE", 0.0)
    keystore = KeyStore(tmp_path, kdf_strength="interactive")
    unlock = BrowserUnlock(keystore, now=1_700_000_000)
    slot = MessengerSlot(None, unlock)
    async with TestClient(TestServer(make_app(slot, TOKEN), host="127.0.0.1")) as client:
        state = await (await client.get("/v1/setup", headers=AUTH)).json()
        assert state["state"] == "create" and "recover" in state["no_recovery"]
        resp = await client.get("/v1/contacts", headers=AUTH)
        assert resp.status == 423 and (await resp.json())["error"]["code"] == "locked"
        assert (await client.get("/v1/setup")).status == 401  # the token still guards it
        hint = await (
            await client.post("/v1/setup/strength", json={"passphrase": "abc"}, headers=AUTH)
        ).json()
        assert hint["ok"] is False and hint["line"].startswith("strength: very weak")
        weak = await client.post("/v1/setup", json={"passphrase": "abc"}, headers=AUTH)
        assert weak.status == 400 and (await weak.json())["error"]["code"] == "weak_passphrase"
        assert not keystore.exists()
        bad = await client.post("/v1/setup", json={"passphrase": ""}, headers=AUTH)
        assert bad.status == 400

        async def boot() -> None:  # what node/boot.py does once the keys are there
            await unlock.keys
            slot.current = FakeMessenger()
            unlock.ready.set()

        booting = asyncio.ensure_future(boot())
        made = await client.post(
            "/v1/setup", json={"passphrase": "abc", "weak_ok": True}, headers=AUTH
        )
        assert made.status == 200 and (await made.json())["state"] == "ready"
        await booting
        assert keystore.exists() and keystore.is_encrypted()
        assert (await client.get("/v1/contacts", headers=AUTH)).status == 200
        again = await client.post("/v1/setup", json={"passphrase": "abc"}, headers=AUTH)
        assert again.status == 409


async def test_a_wrong_passphrase_is_refused_and_counted(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(unlock_mod, "WRONG_PAUSE", 0.0)
    keystore = KeyStore(tmp_path, kdf_strength="interactive")
    keystore.create("right one", now=1_700_000_000)
    unlock = BrowserUnlock(keystore, now=1_700_000_000)
    async with TestClient(
        TestServer(make_app(MessengerSlot(None, unlock), TOKEN), host="127.0.0.1")
    ) as client:
        assert (await (await client.get("/v1/setup", headers=AUTH)).json())["state"] == "unlock"
        wrong = await client.post("/v1/setup", json={"passphrase": "wrong one"}, headers=AUTH)
        assert wrong.status == 403 and (await wrong.json())["error"]["code"] == "wrong_passphrase"
        assert unlock.stats["wrong"] == 1 and not unlock.keys.done()


async def test_an_open_daemon_says_ready() -> None:
    async with TestClient(TestServer(make_app(FakeMessenger(), TOKEN), host="127.0.0.1")) as client:
        assert (await (await client.get("/v1/setup", headers=AUTH)).json()) == {"state": "ready"}
        assert (
            await client.post("/v1/setup", json={"passphrase": "x"}, headers=AUTH)
        ).status == 409
