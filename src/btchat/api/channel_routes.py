"""Channel endpoints of the local API, and their part of the OpenAPI document."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from btchat.api.facade import ApiError

__all__ = ["PARAMETERS", "SCHEMAS", "add_routes", "paths"]

MAX_CHANNEL_REF = 200
MAX_RECIPIENTS = 64


def _manager(request: web.Request) -> Any:
    from btchat.api.server import _messenger

    manager = getattr(_messenger(request), "channels", None)
    if manager is None:
        raise ApiError(501, "no_channels", "this daemon does not run channels")
    return manager


def _channel(request: web.Request) -> str:
    value = request.match_info["channel"]
    if not value or len(value) > MAX_CHANNEL_REF:
        raise ApiError(400, "bad_request", f"channel must be 1 to {MAX_CHANNEL_REF} characters")
    return value


def _str_list(data: dict[str, Any], key: str) -> list[str]:
    value = data.get(key) or []
    if not isinstance(value, list) or len(value) > MAX_RECIPIENTS:
        raise ApiError(400, "bad_request", f"{key} must be a list of at most {MAX_RECIPIENTS}")
    if not all(isinstance(v, str) and 0 < len(v) <= 300 for v in value):
        raise ApiError(400, "bad_request", f"{key} must hold IDs as strings")
    return value


async def list_channels(request: web.Request) -> web.Response:
    from btchat.api.server import ok

    return ok({"channels": await _manager(request).list()})


async def create_channel(request: web.Request) -> web.Response:
    from btchat.api.server import ok, opt_bool, read_json, req_str

    data = await read_json(request, ("name", "invite_only", "trackers"))
    result = await _manager(request).create(
        req_str(data, "name", max_chars=100),
        bool(opt_bool(data, "invite_only")),
        _str_list(data, "trackers"),
    )
    return ok(result, 201)


async def join_channel(request: web.Request) -> web.Response:
    from btchat.api.server import ok, read_json, req_str

    data = await read_json(request, ("chatfile",))
    return ok(await _manager(request).join(req_str(data, "chatfile", max_chars=8192)), 201)


async def get_channel(request: web.Request) -> web.Response:
    from btchat.api.server import ok

    return ok(await _manager(request).get(_channel(request)))


async def leave_channel(request: web.Request) -> web.Response:
    from btchat.api.server import no_content

    await _manager(request).leave(_channel(request))
    return no_content()


async def list_members(request: web.Request) -> web.Response:
    from btchat.api.server import ok

    return ok({"members": await _manager(request).members(_channel(request))})


async def change_members(request: web.Request) -> web.Response:
    from btchat.api.server import ok, read_json

    data = await read_json(request, ("add", "remove"))
    result = await _manager(request).change_members(
        _channel(request), _str_list(data, "add"), _str_list(data, "remove")
    )
    return ok(result)


async def channel_history(request: web.Request) -> web.Response:
    from btchat.api.server import ok, query_limit

    messages = await _manager(request).history(_channel(request), query_limit(request))
    return ok({"messages": messages})


async def post_message(request: web.Request) -> web.Response:
    from btchat.api.server import ok, read_json, text_field

    data = await read_json(request, ("text", "to"))
    message = await _manager(request).post(
        _channel(request), text_field(data), _str_list(data, "to")
    )
    return ok(message, 201)


def add_routes(r: web.UrlDispatcher) -> None:
    r.add_get("/v1/channels", list_channels, allow_head=False)
    r.add_post("/v1/channels", create_channel)
    r.add_post("/v1/channels/join", join_channel)
    r.add_get("/v1/channels/{channel}", get_channel, allow_head=False)
    r.add_delete("/v1/channels/{channel}", leave_channel)
    r.add_get("/v1/channels/{channel}/members", list_members, allow_head=False)
    r.add_post("/v1/channels/{channel}/members", change_members)
    r.add_get("/v1/channels/{channel}/messages", channel_history, allow_head=False)
    r.add_post("/v1/channels/{channel}/messages", post_message)


# ----------------------------------------------------------------------- OpenAPI

_ID_LIST = {"type": "array", "maxItems": MAX_RECIPIENTS, "items": {"type": "string"}}

SCHEMAS: dict[str, Any] = {
    "Channel": {
        "type": "object",
        "properties": {
            "id": {"type": "string", "description": "Channel id (hex)."},
            "name": {"type": "string"},
            "invite_only": {"type": "boolean"},
            "owner": {"type": ["string", "null"]},
            "trackers": {"type": "array", "items": {"type": "string"}},
            "uri": {"type": "string", "description": "The btchat:channel link to share."},
            "chatfile": {"type": "string", "description": "The .chat file, base64."},
            "port": {"type": "integer"},
            "members": {"type": "integer"},
            "members_online": {"type": "integer"},
            "links": {"type": "integer"},
            "discovery": {"type": "object"},
        },
        "required": ["id", "name", "invite_only", "uri"],
    },
    "ChannelList": {
        "type": "object",
        "properties": {
            "channels": {"type": "array", "items": {"$ref": "#/components/schemas/Channel"}}
        },
        "required": ["channels"],
    },
    "NewChannel": {
        "type": "object",
        "properties": {
            "name": {"type": "string", "minLength": 1, "maxLength": 100},
            "invite_only": {"type": ["boolean", "null"]},
            "trackers": _ID_LIST,
        },
        "required": ["name"],
        "additionalProperties": False,
    },
    "JoinChannel": {
        "type": "object",
        "properties": {
            "chatfile": {
                "type": "string",
                "description": "A btchat:channel link or the .chat file in base64.",
            }
        },
        "required": ["chatfile"],
        "additionalProperties": False,
    },
    "ChannelMember": {
        "type": "object",
        "properties": {
            "public_key": {"type": "string"},
            "id": {"type": "string"},
            "role": {"type": ["string", "null"]},
            "online": {"type": "boolean"},
            "linked": {"type": "boolean"},
            "me": {"type": "boolean"},
            "last_heard": {"type": ["integer", "null"]},
        },
    },
    "ChannelMembers": {
        "type": "object",
        "properties": {
            "members": {"type": "array", "items": {"$ref": "#/components/schemas/ChannelMember"}}
        },
    },
    "MemberChange": {
        "type": "object",
        "properties": {"add": _ID_LIST, "remove": _ID_LIST},
        "additionalProperties": False,
    },
    "ChannelMessage": {
        "type": "object",
        "properties": {
            "channel": {"type": "string"},
            "id": {"type": "string"},
            "author": {"type": "string"},
            "lamport": {"type": "integer"},
            "ts": {"type": "integer"},
            "private": {"type": "boolean"},
            "recipients": {"type": "array", "items": {"type": "string"}},
            "text": {"type": ["string", "null"]},
        },
    },
    "ChannelMessages": {
        "type": "object",
        "properties": {
            "messages": {"type": "array", "items": {"$ref": "#/components/schemas/ChannelMessage"}}
        },
    },
    "NewChannelMessage": {
        "type": "object",
        "properties": {
            "text": {"type": "string", "minLength": 1},
            "to": {
                **_ID_LIST,
                "description": "Members for a private or group message; empty = everyone.",
            },
        },
        "required": ["text"],
        "additionalProperties": False,
    },
}

PARAMETERS: dict[str, Any] = {
    "channel": {
        "name": "channel",
        "in": "path",
        "required": True,
        "schema": {"type": "string", "minLength": 1, "maxLength": MAX_CHANNEL_REF},
        "description": "Channel name, or at least 8 hex digits of its id.",
    }
}


def paths(op: Any, json: Any, ref: Any, r: Any) -> dict[str, Any]:
    """The channel paths, built with openapi.py's helpers (passed in to avoid a cycle)."""
    ch = ["channel"]
    return {
        "/v1/channels": {
            "get": op(
                "listChannels",
                "channels",
                "Joined channels",
                {"200": json(ref("ChannelList"), "Channels.")},
            ),
            "post": op(
                "createChannel",
                "channels",
                "Create a channel (you own it)",
                {"201": json(ref("Channel"), "The channel, with its .chat file.")},
                body="NewChannel",
            ),
        },
        "/v1/channels/join": {
            "post": op(
                "joinChannel",
                "channels",
                "Join a channel from its link or .chat file",
                {"201": json(ref("Channel"), "The channel."), "409": r("Error")},
                body="JoinChannel",
            ),
        },
        "/v1/channels/{channel}": {
            "get": op(
                "getChannel",
                "channels",
                "One channel, with its .chat file to share",
                {"200": json(ref("Channel"), "The channel."), "404": r("NotFound")},
                params=ch,
            ),
            "delete": op(
                "leaveChannel",
                "channels",
                "Leave a channel",
                {"204": {"description": "Left."}, "404": r("NotFound")},
                params=ch,
            ),
        },
        "/v1/channels/{channel}/members": {
            "get": op(
                "listChannelMembers",
                "channels",
                "Members with presence",
                {"200": json(ref("ChannelMembers"), "Members.")},
                params=ch,
            ),
            "post": op(
                "changeChannelMembers",
                "channels",
                "Invite or remove members (owner/admin of an invite-only channel)",
                {"200": json(ref("Channel"), "The channel.")},
                body="MemberChange",
                params=ch,
            ),
        },
        "/v1/channels/{channel}/messages": {
            "get": op(
                "channelHistory",
                "channels",
                "Messages you can read, oldest first",
                {"200": json(ref("ChannelMessages"), "Messages.")},
                params=[*ch, "limit"],
            ),
            "post": op(
                "postChannelMessage",
                "channels",
                "Post to everyone, or privately to chosen members",
                {"201": json(ref("ChannelMessage"), "The message.")},
                body="NewChannelMessage",
                params=ch,
            ),
        },
    }
