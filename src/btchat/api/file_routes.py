"""File transfer endpoints of the local API, each declared once (served, validated, documented).

Files are reached through the facade's typed ``Messenger.files`` part; a messenger
without it answers 501. Sending takes a path on the daemon's machine: the API listens on
loopback only and every call carries the token, so only the user's own programs can
ask the daemon to read a file. A client with bytes and no path (the web app) streams
them as the body of ``POST /v1/contacts/{contact}/files/upload``: read in chunks, never
whole, and copied to the daemon's disk before the offer goes out. ``GET /download``
streams a finished file (with range requests, through aiohttp's ``FileResponse``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from aiohttp import web

from btchat.api.facade import ApiError, Files
from btchat.api.routes import (
    RouteTable,
    bad_request,
    contact_param,
    ok,
    part,
    path_param,
    saved_file,
    streamed_upload,
)

if TYPE_CHECKING:  # the models load on first use (pydantic costs start-up time)
    from btchat.api import models as m

__all__ = ["ROUTES"]

ROUTES = RouteTable()
files = ROUTES.section("files")

_T = ("transfer",)
MAX_TRANSFER_REF = 32


def _files(request: web.Request) -> Files:
    return part(request, "files", "no_files", "this daemon does not transfer files")


def _transfer(request: web.Request) -> str:
    return path_param(request, "transfer", MAX_TRANSFER_REF)


@files(
    "POST /v1/contacts/{contact}/files",
    "sendFile",
    "Offer a file on this machine to a contact",
    {"201": ("Transfer", "The transfer; the offer is in the conversation."), "404": "NotFound"},
    body="NewFile",
    params=("contact",),
)
async def send_file(request: web.Request, body: m.NewFile) -> web.Response:
    return ok(await _files(request).send(contact_param(request), body.path), 201)


@files(
    "POST /v1/contacts/{contact}/files/upload",
    "uploadFile",
    "Offer a file whose bytes are the request body",
    {
        "201": ("Transfer", "The transfer; the offer is in the conversation."),
        "404": "NotFound",
        "411": "Error",
        "413": "Error",
        "507": "Error",
    },
    params=("contact", "uploadName"),
    raw_body="application/octet-stream",
    description="For clients that hold the bytes rather than a path on the daemon's "
    "machine (the web app). Content-Length is required; the body is streamed to the "
    "daemon's disk (it serves the pieces from there), and the copy is deleted once the "
    "transfer ends.",
)
async def upload_file(request: web.Request) -> web.Response:
    name, size, chunks = streamed_upload(request)
    part = _files(request)
    return ok(await part.upload(contact_param(request), name, size, chunks), 201)


@files(
    "PUT /v1/contacts/{contact}/files/limit",
    "setFileLimit",
    "Largest file a contact may offer you",
    {"200": ("FileLimitResult", "The limit."), "404": "NotFound"},
    body="FileLimit",
    params=("contact",),
)
async def set_file_limit(request: web.Request, body: m.FileLimit) -> web.Response:
    return ok(await _files(request).set_limit(contact_param(request), body.max_bytes))


@files(
    "GET /v1/files",
    "listTransfers",
    "File transfers, both ways, with progress",
    {"200": ("TransferList", "Transfers, oldest first.")},
)
async def list_transfers(request: web.Request) -> web.Response:
    return ok({"transfers": await _files(request).list()})


@files(
    "GET /v1/files/{transfer}",
    "getTransfer",
    "One transfer",
    {"200": ("Transfer", "The transfer."), "404": "NotFound"},
    params=_T,
)
async def get_transfer(request: web.Request) -> web.Response:
    return ok(await _files(request).get(_transfer(request)))


@files(
    "POST /v1/files/{transfer}",
    "actOnTransfer",
    "Accept, reject, cancel, pause or resume a transfer",
    {"200": ("Transfer", "The transfer."), "404": "NotFound", "409": "Conflict"},
    body="TransferAction",
    params=_T,
)
async def act_on_transfer(request: web.Request, body: m.TransferAction) -> web.Response:
    return ok(await _files(request).act(_transfer(request), body.action))


@files(
    "POST /upload",
    "upload",
    "Offer a file (the seed's name for sendFile)",
    {"201": ("Transfer", "The transfer."), "404": "NotFound"},
    body="UploadAlias",
)
async def upload(request: web.Request, body: m.UploadAlias) -> web.Response:
    return ok(await _files(request).send(body.to, body.path), 201)


@files(
    "GET /download",
    "download",
    "Fetch a received file (range requests supported)",
    {
        "200": {
            "description": "The file's bytes.",
            "content": {"application/octet-stream": {"schema": {"type": "string"}}},
        },
        "404": "NotFound",
        "409": "Conflict",
    },
    params=("fileId",),
)
async def download(request: web.Request) -> web.StreamResponse:
    tid = request.query.get("id", "")
    if not 6 <= len(tid) <= MAX_TRANSFER_REF:
        raise bad_request(f"id must be 6 to {MAX_TRANSFER_REF} characters")
    path = _files(request).file_path(tid)
    if not path.is_file():
        raise ApiError(404, "gone", "the finished file is no longer where it was saved")
    return saved_file(path)
