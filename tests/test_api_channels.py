"""The channel endpoints against the in-memory messenger: reached through the facade's
typed ``channels`` part, bodies validated by their models, responses matching the
published schemas, and 501 where a messenger runs no channels."""

from __future__ import annotations

from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer
from test_api_server import AUTH, TOKEN, Api, api, check, error_of  # noqa: F401

from btchat.api.fake import FakeMessenger
from btchat.api.server import make_app

BOB = "b0" * 32


async def test_channel_lifecycle(api: Api) -> None:  # noqa: F811
    client, fake = api
    resp = await client.post(
        "/v1/channels", json={"name": "room", "invite_only": True}, headers=AUTH
    )
    assert resp.status == 201
    room = await resp.json()
    check("Channel", room)
    assert room["name"] == "room" and room["invite_only"]

    resp = await client.get("/v1/channels", headers=AUTH)
    listed = await resp.json()
    check("ChannelList", listed)
    assert [c["id"] for c in listed["channels"]] == [room["id"]]
    resp = await client.get(f"/v1/channels/{room['id'][:8]}", headers=AUTH)
    check("Channel", await resp.json())

    resp = await client.post("/v1/channels/room/members", json={"add": [BOB]}, headers=AUTH)
    assert resp.status == 200, await resp.text()
    assert (await resp.json())["members"] == 2
    resp = await client.get("/v1/channels/room/members", headers=AUTH)
    members = await resp.json()
    check("ChannelMembers", members)
    assert {m["public_key"] for m in members["members"]} == {fake.public_key, BOB}

    resp = await client.post(
        "/v1/channels/room/messages", json={"text": "hi all", "to": [BOB]}, headers=AUTH
    )
    assert resp.status == 201
    posted = await resp.json()
    check("ChannelMessage", posted)
    assert posted["private"]
    resp = await client.get("/v1/channels/room/messages?limit=5", headers=AUTH)
    history = await resp.json()
    check("ChannelMessages", history)
    assert [m["text"] for m in history["messages"]] == ["hi all"]

    resp = await client.delete("/v1/channels/room", headers=AUTH)
    assert resp.status == 204
    resp = await client.post("/v1/channels/join", json={"chatfile": room["uri"]}, headers=AUTH)
    assert resp.status == 201
    resp = await client.post("/v1/channels/join", json={"chatfile": room["uri"]}, headers=AUTH)
    assert await error_of(resp, 409) == "joined"


async def test_channel_file_routes(api: Api) -> None:  # noqa: F811
    client, _ = api
    await client.post("/v1/channels", json={"name": "room"}, headers=AUTH)
    resp = await client.post(
        "/v1/channels/room/files", json={"path": "/tmp/a.bin", "name": "b.bin"}, headers=AUTH
    )
    assert resp.status == 201, await resp.text()
    posted = await resp.json()
    check("ChannelFile", posted)
    assert posted["name"] == "b.bin" and posted["mine"]
    resp = await client.get("/v1/channels/room/files", headers=AUTH)
    listed = await resp.json()
    check("ChannelFiles", listed)
    assert [f["id"] for f in listed["files"]] == [posted["id"]]
    resp = await client.post(
        f"/v1/channels/room/files/{posted['id'][:8]}", json={"action": "accept"}, headers=AUTH
    )
    assert await error_of(resp, 409) == "not_offered"  # ours, held whole
    resp = await client.post(
        "/v1/channels/room/files/abcdef", json={"action": "delete"}, headers=AUTH
    )
    assert await error_of(resp, 400) == "bad_action"
    resp = await client.put("/v1/channels/room/files/serving", json={"serve": False}, headers=AUTH)
    assert resp.status == 200
    result = await resp.json()
    check("ServingResult", result)
    assert result["serve"] is False
    resp = await client.put("/v1/channels/room/files/serving", json={"serve": "no"}, headers=AUTH)
    assert await error_of(resp, 400) == "bad_request"


async def test_channel_errors_pass_through(api: Api) -> None:  # noqa: F811
    client, _ = api
    resp = await client.get("/v1/channels/nowhere", headers=AUTH)
    assert await error_of(resp, 404) == "no_channel"
    resp = await client.post("/v1/channels/join", json={"chatfile": "junk"}, headers=AUTH)
    assert await error_of(resp, 400) == "bad_chatfile"


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/v1/channels", {}),
        ("/v1/channels", {"name": ""}),
        ("/v1/channels", {"name": "x" * 101}),
        ("/v1/channels", {"name": "room", "invite_only": "yes"}),
        ("/v1/channels", {"name": "room", "trackers": "udp://t"}),
        ("/v1/channels", {"name": "room", "trackers": [1]}),
        ("/v1/channels", {"name": "room", "colour": "red"}),
        ("/v1/channels/join", {}),
        ("/v1/channels/join", {"chatfile": "x" * 8193}),
        ("/v1/channels/room/members", {"add": ["k"] * 65}),
        ("/v1/channels/room/messages", {"text": ""}),
        ("/v1/channels/room/messages", {"text": "hi", "to": [""]}),
    ],
)
async def test_channel_bodies_are_validated(
    api: Api,  # noqa: F811
    path: str,
    body: dict[str, Any],
) -> None:
    client, _ = api
    await client.post("/v1/channels", json={"name": "room"}, headers=AUTH)
    resp = await client.post(path, json=body, headers=AUTH)
    assert await error_of(resp, 400) in ("bad_request", "bad_text")


async def test_channel_path_is_bounded(api: Api) -> None:  # noqa: F811
    client, _ = api
    resp = await client.get("/v1/channels/" + "x" * 201, headers=AUTH)
    assert await error_of(resp, 400) == "bad_request"


async def test_a_messenger_without_channels_answers_501() -> None:
    app = make_app(FakeMessenger(channels=False), TOKEN)
    async with TestClient(TestServer(app, host="127.0.0.1")) as client:
        resp = await client.get("/v1/channels", headers=AUTH)
        assert await error_of(resp, 501) == "no_channels"
