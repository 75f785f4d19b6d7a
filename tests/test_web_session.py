"""The web app's session cookie (issue 12's security list): the page trades the token
from its URL fragment, once, for an HttpOnly, SameSite=Strict cookie, and from then on
the token is in no URL and no storage of the page. The cookie counts only on requests
from the page's own origin: a page of the same host on another port gets it sent too
(a "site" ignores ports), so Fetch Metadata or the Origin must say same-origin."""

from __future__ import annotations

from collections.abc import AsyncIterator
from http.cookies import SimpleCookie

import aiohttp
import pytest
from aiohttp.test_utils import TestClient, TestServer

from btchat.api.fake import FakeMessenger
from btchat.api.server import make_app
from btchat.api.web_routes import cookie_name, session_value

TOKEN = "s3cret-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
SAME = {"Sec-Fetch-Site": "same-origin"}


@pytest.fixture
async def client() -> AsyncIterator[TestClient]:
    async with TestClient(TestServer(make_app(FakeMessenger(), TOKEN), host="127.0.0.1")) as c:
        yield c


async def signed_in(client: TestClient) -> dict[str, str]:
    """The Cookie header the page's browser would send after signing in."""
    resp = await client.post("/v1/web/session", headers=AUTH)
    assert resp.status == 204
    morsel = SimpleCookie(resp.headers["Set-Cookie"])[cookie_name(client.port)]
    return {"Cookie": f"{morsel.key}={morsel.value}"}


async def test_sign_in_sets_an_httponly_strict_session_cookie(client: TestClient) -> None:
    resp = await client.post("/v1/web/session", headers=AUTH)
    assert resp.status == 204
    raw = resp.headers["Set-Cookie"]
    morsel = SimpleCookie(raw)[f"btchat_session_{client.port}"]
    assert morsel["httponly"] is True
    assert morsel["samesite"] == "Strict"
    assert morsel["path"] == "/"
    assert not morsel["max-age"] and not morsel["expires"]  # this browser session only
    assert TOKEN not in raw  # derived from the token, not the token
    assert morsel.value == session_value(TOKEN.encode()).decode()


async def test_sign_in_needs_the_token(client: TestClient) -> None:
    for headers in ({}, {"Authorization": "Bearer nope"}):
        resp = await client.post("/v1/web/session", headers=headers)
        assert resp.status == 401
        assert "Set-Cookie" not in resp.headers


async def test_the_cookie_signs_same_origin_requests_in(client: TestClient) -> None:
    cookie = await signed_in(client)
    assert (await client.get("/v1/status", headers={**cookie, **SAME})).status == 200
    origin = {"Origin": f"http://127.0.0.1:{client.port}"}  # a browser without Fetch Metadata
    resp = await client.post("/v1/contacts", json={"ref": "a1" * 32}, headers={**cookie, **origin})
    assert resp.status == 201
    async with client.ws_connect("/v1/events", headers={**cookie, **origin}) as ws:
        assert (await ws.receive_json())["type"] == "ready"


@pytest.mark.parametrize(
    "headers",
    [
        {},  # neither Fetch Metadata nor Origin: not known to come from the page
        {"Sec-Fetch-Site": "same-site"},  # the same host on another port
        {"Sec-Fetch-Site": "cross-site"},
        {"Sec-Fetch-Site": "none"},  # typed into the address bar
    ],
)
async def test_the_cookie_does_not_count_from_elsewhere(
    client: TestClient, headers: dict[str, str]
) -> None:
    cookie = await signed_in(client)
    resp = await client.get("/v1/status", headers={**cookie, **headers})
    assert resp.status == 401


async def test_a_wrong_or_other_ports_cookie_is_refused(client: TestClient) -> None:
    good = session_value(TOKEN.encode()).decode()
    for cookie in (
        f"{cookie_name(client.port)}=nope",
        f"{cookie_name(client.port + 1)}={good}",  # another daemon's name
        f"{cookie_name(client.port)}={session_value(b'other run').decode()}",
    ):
        resp = await client.get("/v1/status", headers={"Cookie": cookie, **SAME})
        assert resp.status == 401, cookie


async def test_a_foreign_origin_with_the_cookie_is_refused(client: TestClient) -> None:
    cookie = await signed_in(client)
    evil = {"Origin": f"http://127.0.0.1:{client.port + 1}", "Sec-Fetch-Site": "same-site"}
    resp = await client.post("/v1/contacts", json={"ref": "a1" * 32}, headers={**cookie, **evil})
    assert resp.status == 403
    with pytest.raises(aiohttp.WSServerHandshakeError) as info:
        await client.ws_connect("/v1/events", headers={**cookie, **evil})
    assert info.value.status == 403


async def test_sign_out_clears_the_cookie(client: TestClient) -> None:
    cookie = await signed_in(client)
    resp = await client.delete("/v1/web/session", headers={**cookie, **SAME})
    assert resp.status == 204
    morsel = SimpleCookie(resp.headers["Set-Cookie"])[cookie_name(client.port)]
    assert morsel.value == "" and morsel["max-age"] == "0"
