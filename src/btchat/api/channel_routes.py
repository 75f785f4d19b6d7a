"""Channel endpoints of the local API, each declared once (served, validated, documented).

Channels are reached through the facade's typed ``Messenger.channels`` part; a
messenger without channels answers 501.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from aiohttp import web

from btchat.api.facade import MAX_CHANNEL_REF, ApiError, Channels
from btchat.api.routes import (
    RouteTable,
    no_content,
    ok,
    part,
    path_param,
    query_limit,
    saved_file,
    streamed_upload,
)

if TYPE_CHECKING:  # the models load on first use (pydantic costs start-up time)
    from btchat.api import models as m

__all__ = ["ROUTES"]

ROUTES = RouteTable()
channels = ROUTES.section("channels")

_CH = ("channel",)


def _channels(request: web.Request) -> Channels:
    return part(request, "channels", "no_channels", "this daemon does not run channels")


def _channel(request: web.Request) -> str:
    return path_param(request, "channel", MAX_CHANNEL_REF)


@channels(
    "GET /v1/channels", "listChannels", "Joined channels", {"200": ("ChannelList", "Channels.")}
)
async def list_channels(request: web.Request) -> web.Response:
    return ok({"channels": await _channels(request).list()})


@channels(
    "POST /v1/channels",
    "createChannel",
    "Create a channel (you own it)",
    {"201": ("Channel", "The channel, with its .chat file.")},
    body="NewChannel",
)
async def create_channel(request: web.Request, body: m.NewChannel) -> web.Response:
    channel = await _channels(request).create(body.name, bool(body.invite_only), body.trackers)
    return ok(channel, 201)


@channels(
    "POST /v1/channels/join",
    "joinChannel",
    "Join a channel from its link or .chat file",
    {"201": ("Channel", "The channel."), "409": "Error"},
    body="JoinChannel",
)
async def join_channel(request: web.Request, body: m.JoinChannel) -> web.Response:
    return ok(await _channels(request).join(body.chatfile), 201)


@channels(
    "GET /v1/channels/{channel}",
    "getChannel",
    "One channel, with its .chat file to share",
    {"200": ("Channel", "The channel."), "404": "NotFound"},
    params=_CH,
)
async def get_channel(request: web.Request) -> web.Response:
    return ok(await _channels(request).get(_channel(request)))


@channels(
    "DELETE /v1/channels/{channel}",
    "leaveChannel",
    "Leave a channel",
    {"204": {"description": "Left."}, "404": "NotFound"},
    params=_CH,
)
async def leave_channel(request: web.Request) -> web.Response:
    await _channels(request).leave(_channel(request))
    return no_content()


@channels(
    "GET /v1/channels/{channel}/members",
    "listChannelMembers",
    "Members with presence",
    {"200": ("ChannelMembers", "Members.")},
    params=_CH,
)
async def list_members(request: web.Request) -> web.Response:
    return ok({"members": await _channels(request).members(_channel(request))})


@channels(
    "POST /v1/channels/{channel}/members",
    "changeChannelMembers",
    "Invite or remove members (owner/admin of an invite-only channel)",
    {"200": ("Channel", "The channel.")},
    body="MemberChange",
    params=_CH,
)
async def change_members(request: web.Request, body: m.MemberChange) -> web.Response:
    result = await _channels(request).change_members(_channel(request), body.add, body.remove)
    return ok(result)


@channels(
    "POST /v1/channels/{channel}/dial",
    "dialChannelMember",
    "Link to a member at an address given by hand (Tor mode has no discovery)",
    {"202": ("Channel", "The channel; the link comes up (or not) in the background.")},
    body="Dial",
    params=_CH,
)
async def dial_member(request: web.Request, body: m.Dial) -> web.Response:
    return ok(await _channels(request).dial(_channel(request), body.address), 202)


@channels(
    "GET /v1/channels/{channel}/messages",
    "channelHistory",
    "Messages you can read, oldest first",
    {"200": ("ChannelMessages", "Messages.")},
    params=(*_CH, "limit"),
)
async def channel_history(request: web.Request) -> web.Response:
    messages = await _channels(request).history(_channel(request), query_limit(request))
    return ok({"messages": messages})


@channels(
    "POST /v1/channels/{channel}/messages",
    "postChannelMessage",
    "Post to everyone, or privately to chosen members",
    {
        "201": ("ChannelMessage", "The message."),
        "403": "Error",  # removed: the owner took us off the member list
        "409": "Error",  # no_key: no grant from the owner yet
    },
    body="NewChannelMessage",
    params=_CH,
)
async def post_message(request: web.Request, body: m.NewChannelMessage) -> web.Response:
    message = await _channels(request).post(_channel(request), body.text, body.to)
    return ok(message, 201)


_FILE = ("channel", "channelFile")
MAX_FILE_REF = 32


@channels(
    "GET /v1/channels/{channel}/files",
    "listChannelFiles",
    "Files offered in a channel, with progress",
    {"200": ("ChannelFiles", "Files, oldest first."), "404": "NotFound"},
    params=_CH,
)
async def list_files(request: web.Request) -> web.Response:
    return ok({"files": await _channels(request).list_files(_channel(request))})


@channels(
    "POST /v1/channels/{channel}/files",
    "sendChannelFile",
    "Post a file on this machine in a channel (members fetch it from whoever holds it)",
    {
        "201": ("ChannelFile", "The file; its message is in the channel."),
        "403": "Error",
        "404": "NotFound",
        "409": "Error",
    },
    body="NewChannelFile",
    params=_CH,
)
async def send_file(request: web.Request, body: m.NewChannelFile) -> web.Response:
    result = await _channels(request).send_file(_channel(request), body.path, body.name)
    return ok(result, 201)


@channels(
    "POST /v1/channels/{channel}/files/upload",
    "uploadChannelFile",
    "Post a file whose bytes are the request body in a channel",
    {
        "201": ("ChannelFile", "The file; its message is in the channel."),
        "403": "Error",
        "404": "NotFound",
        "409": "Error",
        "411": "Error",
        "413": "Error",
        "507": "Error",
    },
    params=("channel", "uploadName"),
    raw_body="application/octet-stream",
    description="For clients that hold the bytes rather than a path on the daemon's "
    "machine (the web app). Content-Length is required; the body is streamed to the "
    "daemon's disk, and that copy is what members fetch from us.",
)
async def upload_channel_file(request: web.Request) -> web.Response:
    name, size, chunks = streamed_upload(request)
    return ok(await _channels(request).upload_file(_channel(request), name, size, chunks), 201)


@channels(
    "GET /v1/channels/{channel}/files/{file}/content",
    "channelFileContent",
    "The bytes of a channel file held whole here (range requests supported)",
    {
        "200": {
            "description": "The file's bytes.",
            "content": {"application/octet-stream": {"schema": {"type": "string"}}},
        },
        "404": "NotFound",
        "409": "Conflict",
    },
    params=_FILE,
)
async def channel_file_content(request: web.Request) -> web.StreamResponse:
    fid = path_param(request, "file", MAX_FILE_REF)
    path = await _channels(request).file_path(_channel(request), fid)
    if not path.is_file():
        raise ApiError(404, "gone", "the file is no longer where it was")
    return saved_file(path)


@channels(
    "POST /v1/channels/{channel}/files/{file}",
    "actOnChannelFile",
    "Accept (fetch), reject, cancel, pause or resume a channel file",
    {"200": ("ChannelFile", "The file."), "404": "NotFound", "409": "Conflict"},
    body="ChannelFileAction",
    params=_FILE,
)
async def act_on_file(request: web.Request, body: m.ChannelFileAction) -> web.Response:
    fid = path_param(request, "file", MAX_FILE_REF)
    return ok(await _channels(request).file_action(_channel(request), fid, body.action))


@channels(
    "PUT /v1/channels/{channel}/files/serving",
    "setChannelServing",
    "Whether we serve this channel's files to its members (default: yes)",
    {"200": ("ServingResult", "The setting."), "404": "NotFound"},
    body="Serving",
    params=_CH,
)
async def set_serving(request: web.Request, body: m.Serving) -> web.Response:
    return ok(await _channels(request).set_serving(_channel(request), body.serve))
