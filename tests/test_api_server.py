"""The local HTTP + WebSocket API against the in-memory messenger.

Every endpoint's happy path (responses checked against the OpenAPI schemas), the guards
(token, Origin, Host, body size) and the error mapping.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import quote

import aiohttp
import pytest
from aiohttp.test_utils import TestClient, TestServer
from jsonschema import Draft202012Validator
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

from btchat.api.facade import ApiError
from btchat.api.fake import FakeMessenger
from btchat.api.openapi import openapi_document
from btchat.api.server import ALL_ROUTES, MAX_BODY, make_app

TOKEN = "s3cret-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
ALICE = "a1" * 32
BOB = "b0" * 32
DOC_URI = "urn:btchat:openapi"
REGISTRY = Registry().with_resource(
    DOC_URI, Resource.from_contents(openapi_document(ALL_ROUTES), default_specification=DRAFT202012)
)


def check(name: str, instance: Any) -> None:
    """Fail unless ``instance`` matches the named OpenAPI component schema."""
    schema = {"$ref": f"{DOC_URI}#/components/schemas/{name}"}
    Draft202012Validator(schema, registry=REGISTRY).validate(instance)


Api = tuple[TestClient, FakeMessenger]


@pytest.fixture
async def api() -> AsyncIterator[Api]:
    fake = FakeMessenger()
    async with TestClient(TestServer(make_app(fake, TOKEN), host="127.0.0.1")) as client:
        yield client, fake


async def error_of(resp: aiohttp.ClientResponse, status: int) -> str:
    """Assert the uniform error shape and return its code."""
    assert resp.status == status, await resp.text()
    body = await resp.json()
    check("Error", body)
    return body["error"]["code"]


async def add(client: TestClient, ref: str = ALICE, name: str | None = "alice") -> dict:
    resp = await client.post("/v1/contacts", json={"ref": ref, "name": name}, headers=AUTH)
    assert resp.status == 201, await resp.text()
    return await resp.json()


# ------------------------------------------------------------------ happy paths


async def test_status_and_identity(api: Api) -> None:
    client, fake = api
    resp = await client.get("/v1/status", headers=AUTH)
    assert resp.status == 200
    body = await resp.json()
    check("Status", body)
    assert body["public_key"] == fake.public_key
    resp = await client.get("/v1/identity", headers=AUTH)
    check("Identity", await resp.json())


async def test_contacts_lifecycle(api: Api) -> None:
    client, fake = api
    resp = await client.get("/v1/contacts", headers=AUTH)
    assert await resp.json() == {"contacts": []}
    alice = await add(client)
    check("Contact", alice)
    assert alice["name"] == "alice"
    resp = await client.get("/v1/contacts", headers=AUTH)
    body = await resp.json()
    check("ContactList", body)
    assert [c["public_key"] for c in body["contacts"]] == [ALICE]

    for ref in ("alice", alice["id"], ALICE):
        resp = await client.get(f"/v1/contacts/{ref}", headers=AUTH)
        assert (await resp.json())["public_key"] == ALICE

    resp = await client.patch(
        "/v1/contacts/alice", json={"name": "Alice L", "verified": True}, headers=AUTH
    )
    assert resp.status == 200
    body = await resp.json()
    check("Contact", body)
    assert (body["name"], body["verified"], body["blocked"]) == ("Alice L", True, False)
    resp = await client.patch(
        f"/v1/contacts/{quote('Alice L')}", json={"blocked": True}, headers=AUTH
    )
    assert (await resp.json())["blocked"] is True

    resp = await client.get("/v1/contacts/Alice%20L/safety-number", headers=AUTH)
    body = await resp.json()
    check("SafetyNumber", body)
    assert body["contact"]["public_key"] == ALICE

    resp = await client.delete("/v1/contacts/Alice%20L", headers=AUTH)
    assert resp.status == 204
    assert fake.contacts == {}
    resp = await client.get("/v1/contacts/Alice%20L", headers=AUTH)
    assert await error_of(resp, 404) == "unknown_contact"


async def test_contact_path_is_url_decoded(api: Api) -> None:
    client, _ = api
    name = "a/b 50% é?#"
    await add(client, name=name)
    resp = await client.get(f"/v1/contacts/{quote(name, safe='')}", headers=AUTH)
    assert resp.status == 200
    assert (await resp.json())["name"] == name
    resp = await client.post(
        f"/v1/contacts/{quote(name, safe='')}/messages", json={"text": "hi"}, headers=AUTH
    )
    assert resp.status == 201


async def test_messages_history_search_read_typing(api: Api) -> None:
    client, fake = api
    await add(client)
    resp = await client.post("/v1/contacts/alice/messages", json={"text": "hello"}, headers=AUTH)
    assert resp.status == 201
    sent = await resp.json()
    check("Message", sent)
    assert (sent["direction"], sent["text"], sent["peer"]) == ("out", "hello", ALICE)
    received = [fake.receive("alice", f"reply {i}") for i in range(3)]

    resp = await client.get("/v1/contacts/alice/messages", headers=AUTH)
    body = await resp.json()
    check("MessageList", body)
    assert [m["text"] for m in body["messages"]] == ["hello", "reply 0", "reply 1", "reply 2"]
    resp = await client.get(
        "/v1/contacts/alice/messages",
        params={"limit": "2", "before": str(received[2]["lamport"])},
        headers=AUTH,
    )
    assert [m["text"] for m in (await resp.json())["messages"]] == ["reply 0", "reply 1"]

    resp = await client.get("/v1/search", params={"q": "REPLY", "limit": "2"}, headers=AUTH)
    body = await resp.json()
    check("MessageList", body)
    assert [m["text"] for m in body["messages"]] == ["reply 0", "reply 1"]
    resp = await client.get("/v1/search", params={"q": "hello", "contact": "alice"}, headers=AUTH)
    assert len((await resp.json())["messages"]) == 1

    resp = await client.post(
        "/v1/contacts/alice/read", json={"up_to": received[1]["id"]}, headers=AUTH
    )
    body = await resp.json()
    check("ReadResult", body)
    assert body["marked"] == 2
    resp = await client.post("/v1/contacts/alice/read", headers=AUTH)  # empty body: all
    assert (await resp.json())["marked"] == 1

    resp = await client.post("/v1/contacts/alice/typing", json={"on": True}, headers=AUTH)
    assert resp.status == 204
    assert fake.typing == [(ALICE, True)]


async def test_presence(api: Api) -> None:
    client, fake = api
    resp = await client.put("/v1/presence", json={"status": "away", "note": "lunch"}, headers=AUTH)
    body = await resp.json()
    check("PresenceResult", body)
    assert body == {"status": "away", "note": "lunch"} == fake.presence
    resp = await client.put("/v1/presence", json={"status": "asleep"}, headers=AUTH)
    assert await error_of(resp, 400) == "bad_presence"
    resp = await client.put(
        "/v1/presence", json={"status": "busy", "note": "x" * 141}, headers=AUTH
    )
    assert await error_of(resp, 400) == "bad_note"


async def test_requests(api: Api) -> None:
    client, fake = api
    resp = await client.get("/v1/requests", headers=AUTH)
    assert await resp.json() == {"requests": []}
    resp = await client.post("/v1/requests", json={"ref": BOB, "note": "hi, it's me"}, headers=AUTH)
    assert resp.status == 201
    check("ContactRequest", await resp.json())
    incoming = fake.incoming_request(ALICE, "hello")
    resp = await client.get("/v1/requests", headers=AUTH)
    body = await resp.json()
    check("RequestList", body)
    assert len(body["requests"]) == 2
    resp = await client.post(
        f"/v1/requests/{incoming['id']}", json={"accept": True, "name": "al"}, headers=AUTH
    )
    assert resp.status == 200
    assert (await resp.json())["name"] == "al"
    assert fake.contacts[ALICE]["name"] == "al"
    resp = await client.post(f"/v1/requests/{incoming['id']}", json={"accept": False}, headers=AUTH)
    assert await error_of(resp, 404) == "unknown_request"


# ------------------------------------------------------------------ error mapping


async def test_conflict_and_domain_errors(api: Api) -> None:
    client, _ = api
    await add(client)
    resp = await client.post("/v1/contacts", json={"ref": ALICE}, headers=AUTH)
    assert await error_of(resp, 409) == "exists"
    resp = await client.post("/v1/contacts", json={"ref": BOB, "name": "alice"}, headers=AUTH)
    assert await error_of(resp, 409) == "name_taken"
    resp = await client.post("/v1/contacts", json={"ref": "nonsense"}, headers=AUTH)
    assert await error_of(resp, 400) == "bad_id"
    resp = await client.post("/v1/contacts/nobody/messages", json={"text": "x"}, headers=AUTH)
    assert await error_of(resp, 404) == "unknown_contact"


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("POST", "/v1/contacts", {}),  # ref missing
        ("POST", "/v1/contacts", {"ref": 5}),
        ("POST", "/v1/contacts", {"ref": ALICE, "nickname": "x"}),  # unknown field
        ("PATCH", "/v1/contacts/alice", {"verified": "yes"}),
        ("PATCH", "/v1/contacts/alice", {"name": ""}),
        ("POST", "/v1/contacts/alice/messages", {}),
        ("POST", "/v1/contacts/alice/messages", {"text": ""}),
        ("POST", "/v1/contacts/alice/messages", {"text": "é" * 8193}),  # 16386 bytes
        ("POST", "/v1/contacts/alice/messages", {"text": ["hi"]}),
        ("POST", "/v1/contacts/alice/typing", {}),
        ("POST", "/v1/contacts/alice/typing", {"on": 1}),
        ("PUT", "/v1/presence", {}),
        ("POST", "/v1/requests/abc", {"name": "x"}),  # accept missing
        ("POST", "/send", {"text": "hi"}),  # to missing
    ],
)
async def test_validation_400(api: Api, method: str, path: str, body: dict) -> None:
    client, _ = api
    await add(client)
    resp = await client.request(method, path, json=body, headers=AUTH)
    assert await error_of(resp, 400) in ("bad_request", "bad_text", "bad_presence")


async def test_text_limit_is_in_bytes(api: Api) -> None:
    client, _ = api
    await add(client)
    resp = await client.post("/v1/contacts/alice/messages", json={"text": "é" * 8192}, headers=AUTH)
    assert resp.status == 201
    resp = await client.post(
        "/v1/contacts/alice/messages", json={"text": "x" * 16385}, headers=AUTH
    )
    assert await error_of(resp, 400) == "bad_text"


@pytest.mark.parametrize(
    "query",
    [{"limit": "0"}, {"limit": "501"}, {"limit": "ten"}, {"before": "-1"}, {"before": "x"}],
)
async def test_query_validation(api: Api, query: dict[str, str]) -> None:
    client, _ = api
    await add(client)
    resp = await client.get("/v1/contacts/alice/messages", params=query, headers=AUTH)
    assert await error_of(resp, 400) == "bad_request"
    if "limit" in query:
        resp = await client.get("/v1/search", params={"q": "x", **query}, headers=AUTH)
        assert await error_of(resp, 400) == "bad_request"


async def test_limit_bounds_accepted(api: Api) -> None:
    client, _ = api
    await add(client)
    for limit in ("1", "500"):
        resp = await client.get(
            "/v1/contacts/alice/messages", params={"limit": limit}, headers=AUTH
        )
        assert resp.status == 200


async def test_search_needs_q(api: Api) -> None:
    client, _ = api
    resp = await client.get("/v1/search", headers=AUTH)
    assert await error_of(resp, 400) == "bad_request"


DEEP = b'{"a": ' + b"[" * 20_000 + b"]" * 20_000 + b"}"


@pytest.mark.parametrize(
    "raw", [b"{not json", b"[1, 2]", b'"text"', b"\xff\xfe", b'{"a": NaN}', DEEP, DEEP[:9000]]
)
async def test_malformed_json_400(api: Api, raw: bytes) -> None:
    client, _ = api
    resp = await client.post(
        "/v1/contacts", data=raw, headers={**AUTH, "Content-Type": "application/json"}
    )
    assert await error_of(resp, 400) == "bad_json"


async def test_body_over_64k_is_413(api: Api) -> None:
    client, _ = api
    await add(client)
    big = json.dumps({"text": "x" * MAX_BODY}).encode()
    resp = await client.post("/v1/contacts/alice/messages", data=big, headers=AUTH)
    assert await error_of(resp, 413) == "too_large"

    async def chunks() -> AsyncIterator[bytes]:  # no Content-Length: the reader must stop it
        for _ in range(5):
            yield b" " * (MAX_BODY // 4)
        yield b"{}"

    resp = await client.post("/v1/contacts/alice/messages", data=chunks(), headers=AUTH)
    assert await error_of(resp, 413) == "too_large"


async def test_unexpected_failure_is_500_without_details(api: Api) -> None:
    client, fake = api

    async def broken() -> dict:
        raise RuntimeError("secret internals")

    fake.status = broken  # type: ignore[method-assign]
    resp = await client.get("/v1/status", headers=AUTH)
    assert await error_of(resp, 500) == "internal"
    assert "secret" not in await resp.text()


async def test_api_error_status_passes_through(api: Api) -> None:
    client, fake = api

    async def teapot() -> list:
        raise ApiError(418, "teapot", "short and stout")

    fake.list_requests = teapot  # type: ignore[method-assign]
    resp = await client.get("/v1/requests", headers=AUTH)
    assert await error_of(resp, 418) == "teapot"
    assert (await resp.json())["error"]["message"] == "short and stout"


async def test_unknown_route_and_method(api: Api) -> None:
    client, _ = api
    resp = await client.get("/v1/nothing", headers=AUTH)
    assert await error_of(resp, 404) == "not_found"
    resp = await client.delete("/v1/status", headers=AUTH)
    assert await error_of(resp, 405) == "method_not_allowed"
    assert "GET" in resp.headers["Allow"]


# ------------------------------------------------------------------ auth and browser guards


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Authorization": "Bearer wrong"},
        {"Authorization": f"Bearer {TOKEN}x"},
        {"Authorization": f"Basic {TOKEN}"},
        {"Authorization": "Bearer"},
        {"Authorization": "Bearer ünïcode".encode().decode("latin-1")},
    ],
)
async def test_401_without_the_token(api: Api, headers: dict[str, str]) -> None:
    client, _ = api
    for method, path in (
        ("GET", "/v1/status"),
        ("GET", "/v1/contacts"),
        ("POST", "/send"),
        ("GET", "/receive"),
        ("GET", "/nowhere"),
        ("POST", "/upload"),
    ):
        resp = await client.request(method, path, headers=headers)
        assert await error_of(resp, 401) == "unauthorized"


async def test_a_token_in_the_query_is_refused(api: Api) -> None:
    client, _ = api
    resp = await client.get("/v1/status", params={"token": TOKEN})
    assert resp.status == 401


async def test_openapi_needs_no_token(api: Api) -> None:
    client, _ = api
    resp = await client.get("/openapi.json")
    assert resp.status == 200
    doc = await resp.json()
    assert doc["openapi"].startswith("3.1")
    assert doc["servers"][0]["variables"]["port"]["default"] == str(client.port)


@pytest.mark.parametrize(
    "origin",
    [
        "http://evil.example",
        "https://127.0.0.1:{port}",
        "http://127.0.0.1:1",
        "http://localhost",
        "null",
        "http://127.0.0.1:{port}.evil.example",
        "http://user@127.0.0.1:{port}",
    ],
)
async def test_foreign_origin_is_403(api: Api, origin: str) -> None:
    client, _ = api
    headers = {**AUTH, "Origin": origin.format(port=client.port)}
    resp = await client.get("/v1/status", headers=headers)
    assert await error_of(resp, 403) == "forbidden_origin"
    resp = await client.get("/openapi.json", headers=headers)
    assert resp.status == 403
    resp = await client.post("/v1/contacts", json={"ref": ALICE}, headers=headers)
    assert resp.status == 403


@pytest.mark.parametrize(
    "origin", ["http://127.0.0.1:{port}", "http://localhost:{port}", "HTTP://LOCALHOST:{port}"]
)
async def test_own_origin_is_allowed(api: Api, origin: str) -> None:
    client, _ = api
    resp = await client.get(
        "/v1/status", headers={**AUTH, "Origin": origin.format(port=client.port)}
    )
    assert resp.status == 200


@pytest.mark.parametrize(
    "host",
    [
        "evil.example",
        "evil.example:{port}",
        "127.0.0.2",
        "192.168.1.5:{port}",
        "localhost.evil.example",
    ],
)
async def test_foreign_host_is_403(api: Api, host: str) -> None:
    client, _ = api
    headers = {**AUTH, "Host": host.format(port=client.port)}
    resp = await client.get("/v1/status", headers=headers)
    assert await error_of(resp, 403) == "forbidden_host"
    resp = await client.get("/openapi.json", headers=headers)
    assert resp.status == 403


@pytest.mark.parametrize(
    "host", ["127.0.0.1:{port}", "localhost:{port}", "LocalHost", "[::1]:{port}"]
)
async def test_loopback_host_is_allowed(api: Api, host: str) -> None:
    client, _ = api
    resp = await client.get("/v1/status", headers={**AUTH, "Host": host.format(port=client.port)})
    assert resp.status == 200


async def test_extra_allowed_host() -> None:
    app = make_app(FakeMessenger(), TOKEN, allowed_hosts=["box.lan"])
    async with TestClient(TestServer(app)) as client:
        resp = await client.get("/v1/status", headers={**AUTH, "Host": "box.lan:9"})
        assert resp.status == 200


def test_make_app_refuses_empty_token() -> None:
    with pytest.raises(ValueError):
        make_app(FakeMessenger(), "")


# ------------------------------------------------------------------ aliases


async def test_send_alias(api: Api) -> None:
    client, fake = api
    await add(client)
    resp = await client.post("/send", json={"to": "alice", "text": "via alias"}, headers=AUTH)
    assert resp.status == 201
    check("Message", await resp.json())
    assert fake.messages[-1]["text"] == "via alias"


async def wait_for_subscribers(fake: FakeMessenger, n: int) -> None:
    for _ in range(200):
        if fake.subscribers == n:
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"{fake.subscribers} subscribers, expected {n}")


async def test_receive_returns_the_next_incoming_message(api: Api) -> None:
    client, fake = api
    await add(client)
    poll = asyncio.create_task(client.get("/receive", params={"timeout": "5"}, headers=AUTH))
    await wait_for_subscribers(fake, 1)
    await fake.send_message("alice", "mine, not received")
    fake.receive("alice", "for you")
    resp = await poll
    assert resp.status == 200
    body = await resp.json()
    check("MessageEvent", body)
    assert body["message"]["text"] == "for you"
    await wait_for_subscribers(fake, 0)


async def test_receive_times_out_with_204(api: Api) -> None:
    client, fake = api
    resp = await client.get("/receive", params={"timeout": "0.05"}, headers=AUTH)
    assert resp.status == 204
    assert await resp.read() == b""
    assert fake.subscribers == 0


@pytest.mark.parametrize("timeout", ["-1", "301", "soon", "nan"])
async def test_receive_bad_timeout(api: Api, timeout: str) -> None:
    client, _ = api
    resp = await client.get("/receive", params={"timeout": timeout}, headers=AUTH)
    assert await error_of(resp, 400) == "bad_request"


async def test_file_routes_answer_501_without_file_transfer(api: Api) -> None:
    """The fake transfers no files; the real routes are tested in test_node_files.py."""
    client, _ = api
    resp = await client.post("/upload", json={"to": "bob", "path": "/tmp/x"}, headers=AUTH)
    assert await error_of(resp, 501) == "no_files"
    resp = await client.get("/download", params={"id": "abcdef"}, headers=AUTH)
    assert await error_of(resp, 501) == "no_files"
    resp = await client.get("/v1/files", headers=AUTH)
    assert await error_of(resp, 501) == "no_files"
    resp = await client.post("/upload", data=b"file", headers=AUTH)
    assert resp.status == 400


class UploadOnlyFiles:
    """A files part that records what an upload streamed to it."""

    def __init__(self) -> None:
        self.got: list[tuple[str, str, int, bytes]] = []

    async def upload(self, c: str, name: str, size: int, chunks: AsyncIterator[bytes]) -> dict:
        data = b"".join([chunk async for chunk in chunks])
        self.got.append((c, name, size, data))
        return {"id": "ab" * 16, "name": name, "size": len(data)}


async def test_upload_streams_a_body_beyond_the_json_limit(api: Api) -> None:
    client, fake = api
    files = UploadOnlyFiles()
    fake.files = files  # type: ignore[assignment]
    data = bytes(range(256)) * (4 * MAX_BODY // 256)
    url = "/v1/contacts/bob/files/upload"
    resp = await client.post(url, params={"name": "ü <b>.bin"}, data=data, headers=AUTH)
    assert resp.status == 201, await resp.text()
    assert (await resp.json())["size"] == len(data)
    assert files.got == [("bob", "ü <b>.bin", len(data), data)]
    resp = await client.post(url, data=b"x", headers=AUTH)
    assert await error_of(resp, 400) == "bad_request"  # no name

    async def chunked() -> AsyncIterator[bytes]:
        yield b"no length"

    resp = await client.post(url, params={"name": "a"}, data=chunked(), headers=AUTH)
    assert await error_of(resp, 411) == "length_required"
    assert len(files.got) == 1


# ------------------------------------------------------------------ WebSocket events


async def receive_event(ws: aiohttp.ClientWebSocketResponse) -> dict:
    msg = await ws.receive(timeout=5)
    assert msg.type == aiohttp.WSMsgType.TEXT, msg
    event = json.loads(msg.data)
    check("Event", event)
    return event


async def test_events_in_order(api: Api) -> None:
    client, fake = api
    async with client.ws_connect("/v1/events", headers=AUTH) as ws:
        assert await receive_event(ws) == {"type": "ready"}
        assert fake.subscribers == 1
        await add(client)
        for i in range(20):
            fake.receive("alice", f"m{i}")
        fake.emit(
            {"type": "presence", "contact": ALICE, "status": "away", "note": None, "last_seen": 1}
        )
        fake.emit({"type": "typing", "contact": ALICE, "on": True})
        fake.emit({"type": "receipt", "contact": ALICE, "ids": ["00" * 16], "state": "read"})
        fake.emit({"type": "dht", "joined": True, "nodes": 8})
        events = [await receive_event(ws) for _ in range(25)]
        assert events[0]["type"] == "contact"
        assert [e["message"]["text"] for e in events[1:21]] == [f"m{i}" for i in range(20)]
        assert [e["type"] for e in events[21:]] == ["presence", "typing", "receipt", "dht"]

        await ws.send_json({"type": "ping"})
        assert await receive_event(ws) == {"type": "pong"}
        for junk in ("not json", "[" * 20_000 + "]" * 20_000):  # deep: refused, not closed
            await ws.send_str(junk)
            err = await receive_event(ws)
            assert err["type"] == "error"
            assert err["error"]["code"] == "bad_frame"
        await ws.send_json({"type": "ping", "id": 7})
        assert await receive_event(ws) == {"type": "pong", "id": 7}
    await wait_for_subscribers(fake, 0)


async def test_two_subscribers_get_the_same_events(api: Api) -> None:
    client, fake = api
    async with (
        client.ws_connect("/v1/events", headers=AUTH) as a,
        client.ws_connect("/v1/events", headers=AUTH) as b,
    ):
        assert (await receive_event(a))["type"] == (await receive_event(b))["type"] == "ready"
        fake.emit({"type": "dht", "joined": False})
        assert await receive_event(a) == await receive_event(b) == {"type": "dht", "joined": False}


async def test_events_refuse_a_token_in_the_url(api: Api) -> None:
    # A URL lands in logs and histories: the right token there still does not count.
    client, fake = api
    with pytest.raises(aiohttp.WSServerHandshakeError) as info:
        await client.ws_connect("/v1/events", params={"token": TOKEN})
    assert info.value.status == 401
    assert fake.subscribers == 0


@pytest.mark.parametrize(
    "kwargs", [{}, {"headers": {"Authorization": "Bearer nope"}}, {"params": {"token": "nope"}}]
)
async def test_events_need_the_token(api: Api, kwargs: dict) -> None:
    client, fake = api
    with pytest.raises(aiohttp.WSServerHandshakeError) as info:
        await client.ws_connect("/v1/events", **kwargs)
    assert info.value.status == 401
    assert fake.subscribers == 0


async def test_events_refuse_browser_origin(api: Api) -> None:
    client, _ = api
    with pytest.raises(aiohttp.WSServerHandshakeError) as info:
        await client.ws_connect("/v1/events", headers={**AUTH, "Origin": "http://evil.example"})
    assert info.value.status == 403


async def test_events_without_upgrade_is_400(api: Api) -> None:
    client, _ = api
    resp = await client.get("/v1/events", headers=AUTH)
    assert await error_of(resp, 400) == "websocket_required"


async def test_shutdown_closes_websockets_and_long_polls() -> None:
    fake = FakeMessenger()
    server = TestServer(make_app(fake, TOKEN))
    client = TestClient(server)
    await client.start_server()
    try:
        ws = await client.ws_connect("/v1/events", headers=AUTH)
        assert (await receive_event(ws))["type"] == "ready"
        poll = asyncio.create_task(client.get("/receive", params={"timeout": "60"}, headers=AUTH))
        await wait_for_subscribers(fake, 2)
        await asyncio.wait_for(server.close(), 10)
        msg = await ws.receive(timeout=5)
        assert msg.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED)
        resp = await asyncio.wait_for(poll, 5)
        assert resp.status == 503
        assert fake.subscribers == 0
    finally:
        await client.close()
