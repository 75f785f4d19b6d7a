"""One description per route: it registers the handler, validates input, documents itself.

How this works: a handler module keeps a :class:`RouteTable` and declares each
endpoint with ``@table.route(...)``: method, path, the OpenAPI words (operation id,
tag, summary, responses) and the name of the :class:`~btchat.api.models.Body` model of
its JSON body, if any. :meth:`RouteTable.add_to` puts the routes on an aiohttp router;
a route with a body has it read (at most ``MAX_BODY``, JSON objects only) and validated
by the model before the handler runs, which gets it typed. Models are named, not
imported: pydantic and the models load on the first request that needs them
(:func:`model`), not on the daemon's start-up path, where they would cost more than the
rest of the API server. :meth:`RouteTable.paths` emits the
OpenAPI ``paths`` part from the same declarations. The module also holds the small
input helpers (query integers, path segments) and the app keys handlers share, so
handler modules need nothing from ``server.py`` (no import circle).
"""

from __future__ import annotations

import asyncio
import functools
import weakref
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol
from urllib.parse import quote

from aiohttp import web

from btchat.api.facade import DEFAULT_LIMIT, MAX_LIMIT, MAX_REF_CHARS, ApiError, Messenger
from btchat.codec import json_limits

if TYPE_CHECKING:
    from pydantic import BaseModel

__all__ = [
    "MAX_BODY",
    "MESSENGER",
    "MessengerSlot",
    "Route",
    "RouteTable",
    "Unlock",
    "contact_param",
    "messenger",
    "model",
    "models_loaded",
    "no_content",
    "ok",
    "preload",
    "query_int",
    "query_limit",
]

#: Largest request body (and WebSocket frame) accepted.
MAX_BODY = 64 * 1024


class Unlock(Protocol):
    """What a locked daemon offers before its identity is open (``node/unlock.py``):
    its state (``{state: "create" | "unlock" | "starting" | "ready", ...}``), a strength
    hint for a new passphrase, and the attempt that creates or opens the identity."""

    def state(self) -> dict[str, Any]: ...

    async def hint(self, passphrase: str) -> dict[str, Any]: ...

    async def submit(self, passphrase: str, *, weak_ok: bool = False) -> dict[str, Any]: ...


class MessengerSlot:
    """The messenger the API serves, or none yet: a daemon started ``--in-browser``
    serves the page before its identity is unlocked, and only ``/v1/setup`` answers."""

    def __init__(self, current: Messenger | None = None, unlock: Unlock | None = None) -> None:
        self.current = current
        self.unlock = unlock


MESSENGER = web.AppKey("messenger", MessengerSlot)
STOPPING = web.AppKey("stopping", asyncio.Event)
SOCKETS = web.AppKey("sockets", weakref.WeakSet)

Schema = dict[str, Any]
#: A response: a components/responses name, ``(model name or schema, description)``, or
#: as is.
ResponseSpec = str | tuple[str | Schema, str] | Schema
Handler = Callable[..., Awaitable[web.StreamResponse]]


def preload() -> None:
    """Import pydantic and build the request and event models (about 0.1 s of CPU).

    Nothing on the way to a listening API needs them: a daemon runs this in a thread
    once its API answers, while it waits for the network.
    """
    from btchat.api import events, models  # noqa: F401


_loaded = False


async def models_loaded() -> None:
    """Return once :func:`preload` has run, running it in a thread the first time, so
    the event loop (sessions, the DHT) keeps going while the first request waits."""
    global _loaded
    if not _loaded:
        await asyncio.to_thread(preload)
        _loaded = True


def model(name: str) -> type[BaseModel]:
    """The model called ``name`` in ``models.py`` (imported here if not yet loaded)."""
    from btchat.api import models

    found = getattr(models, name)
    assert isinstance(found, type), name
    return found


def schema_ref(name: str) -> Schema:
    return {"$ref": f"#/components/schemas/{name}"}


def response_ref(name: str) -> Schema:
    return {"$ref": f"#/components/responses/{name}"}


def _json_content(schema: Schema, description: str) -> Schema:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


@dataclass(frozen=True)
class Route:
    """One endpoint, as served and as documented."""

    method: str
    path: str
    handler: Handler
    op_id: str
    tag: str
    summary: str
    responses: dict[str, ResponseSpec]
    #: The name of the body's model in ``models.py`` (a :class:`~btchat.api.models.Body`).
    body: str | None = None
    body_required: bool = True
    params: tuple[str, ...] = ()
    description: str | None = None
    public: bool = False
    #: The media type of a body the handler streams itself (not JSON, no model).
    raw_body: str | None = None

    def endpoint(self) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
        """The aiohttp handler: the body read and validated first, when there is one."""
        handler, body = self.handler, self.body
        if body is None:
            return handler

        async def validated(request: web.Request) -> web.StreamResponse:
            data = await read_json(request)
            await models_loaded()
            return await handler(request, model(body).parse(data))  # type: ignore[attr-defined]

        return validated

    def operation(self) -> Schema:
        """The OpenAPI operation; every one can fail with the shared error responses."""
        op: Schema = {"operationId": self.op_id, "tags": [self.tag], "summary": self.summary}
        if self.description:
            op["description"] = self.description
        if self.params:
            op["parameters"] = [{"$ref": f"#/components/parameters/{p}"} for p in self.params]
        responses = {status: _response(spec) for status, spec in self.responses.items()}
        if self.body is not None:
            op["requestBody"] = {
                "required": self.body_required,
                "content": {"application/json": {"schema": schema_ref(self.body)}},
            }
            responses["400"] = response_ref("BadRequest")
        elif self.raw_body is not None:
            op["requestBody"] = {
                "required": True,
                "content": {self.raw_body: {"schema": {"type": "string", "format": "binary"}}},
            }
            responses["400"] = response_ref("BadRequest")
        if self.public:
            op["security"] = []
        else:
            responses["401"] = response_ref("Unauthorized")
        op["responses"] = {
            **responses,
            "403": response_ref("Forbidden"),
            "default": response_ref("Error"),
        }
        return op


def _response(spec: ResponseSpec) -> Schema:
    if isinstance(spec, str):
        return response_ref(spec)
    if isinstance(spec, tuple):
        shape, description = spec
        schema = shape if isinstance(shape, dict) else schema_ref(shape)
        return _json_content(schema, description)
    return spec


class RouteTable:
    """The routes of one handler module, in registration order (aiohttp matches in order)."""

    def __init__(self) -> None:
        self.routes: list[Route] = []

    def route(
        self,
        spec: str,
        op_id: str,
        summary: str,
        responses: dict[str, ResponseSpec],
        *,
        tag: str,
        **extra: Any,
    ) -> Callable[[Handler], Handler]:
        """Declare the decorated handler as ``spec`` ("GET /v1/status"); ``extra`` is
        :class:`Route`'s optional fields."""
        method, _, path = spec.partition(" ")

        def register(handler: Handler) -> Handler:
            self.routes.append(
                Route(method.upper(), path, handler, op_id, tag, summary, responses, **extra)
            )
            return handler

        return register

    def section(self, tag: str) -> Callable[..., Callable[[Handler], Handler]]:
        """:meth:`route` with the OpenAPI tag filled in, for a group of endpoints."""
        return functools.partial(self.route, tag=tag)

    def add_to(self, router: web.UrlDispatcher) -> None:
        for r in self.routes:
            router.add_route(r.method, r.path, r.endpoint())

    def paths(self) -> dict[str, Any]:
        paths: dict[str, Any] = {}
        for r in self.routes:
            paths.setdefault(r.path, {})[r.method.lower()] = r.operation()
        return paths

    def models(self) -> list[str]:
        """The names of the models the routes' bodies and responses name, in order."""
        names = [r.body for r in self.routes if r.body is not None]
        for r in self.routes:
            names += [
                s[0] for s in r.responses.values() if isinstance(s, tuple) and isinstance(s[0], str)
            ]
        return list(dict.fromkeys(names))


def join_tables(tables: Sequence[RouteTable]) -> RouteTable:
    joined = RouteTable()
    for table in tables:
        joined.routes.extend(table.routes)
    return joined


# ------------------------------------------------------------------ input


def bad_request(message: str) -> ApiError:
    return ApiError(400, "bad_request", message)


async def read_json(request: web.Request) -> dict[str, Any]:
    """The body as a JSON object; an empty body is ``{}`` (fields are the model's job)."""
    if request.content_length is not None and request.content_length > MAX_BODY:
        raise ApiError(413, "too_large", f"request body is over {MAX_BODY // 1024} KiB")
    raw = await request.read()  # client_max_size enforces the limit for chunked bodies
    if not raw.strip():
        return {}
    try:
        data = json_limits.loads(raw)
    except json_limits.JsonError as exc:
        raise ApiError(400, "bad_json", f"the body is not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise ApiError(400, "bad_json", "the body must be a JSON object")
    return data


def query_int(
    request: web.Request, key: str, default: int | None, lo: int, hi: int | None = None
) -> int | None:
    raw = request.query.get(key)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise bad_request(f"{key} must be an integer") from None
    if value < lo or (hi is not None and value > hi):
        bound = f"{lo} to {hi}" if hi is not None else f"at least {lo}"
        raise bad_request(f"{key} must be {bound}")
    return value


def query_limit(request: web.Request) -> int:
    value = query_int(request, "limit", DEFAULT_LIMIT, 1, MAX_LIMIT)
    assert value is not None
    return value


def path_param(request: web.Request, key: str, max_chars: int) -> str:
    """A path segment (already URL-decoded by the router), bounded before use."""
    value = request.match_info[key]
    if not value or len(value) > max_chars:
        raise bad_request(f"{key} must be 1 to {max_chars} characters")
    return value


def contact_param(request: web.Request) -> str:
    return path_param(request, "contact", MAX_REF_CHARS)


# ------------------------------------------------------------------ output


def messenger(request: web.Request) -> Messenger:
    current = request.app[MESSENGER].current
    if current is None:
        raise ApiError(
            423, "locked", "btchat is locked: create or unlock your identity in the web app"
        )
    return current


#: Longest name an upload may give; the offer's is then cut to 255 UTF-8 bytes, keeping
#: the extension (``safe_name``), so a browser's long name is shortened, not refused.
MAX_UPLOAD_NAME = 1024
#: Bytes read from an upload's body per step.
UPLOAD_CHUNK = 256 * 1024


def streamed_upload(request: web.Request) -> tuple[str, int, AsyncIterator[bytes]]:
    """An upload's name (``?name=``), announced size and body, read as it is consumed:
    a file's bytes are never held whole in memory."""
    name = request.query.get("name", "")
    if not 1 <= len(name) <= MAX_UPLOAD_NAME:
        raise bad_request(f"name must be 1 to {MAX_UPLOAD_NAME} characters")
    size = request.content_length
    if size is None:
        raise ApiError(411, "length_required", "give the file's size as Content-Length")

    async def chunks() -> AsyncIterator[bytes]:
        async for chunk in request.content.iter_chunked(UPLOAD_CHUNK):
            yield chunk

    return name, size, chunks()


def part(request: web.Request, name: str, code: str, missing: str) -> Any:
    """The messenger's optional part ``name`` (channels, files, ...), or a 501 ``code``
    saying ``missing``: a daemon may run without it."""
    found = getattr(messenger(request), name)
    if found is None:
        raise ApiError(501, code, missing)
    return found


def ok(data: Any, status: int = 200) -> web.Response:
    return web.json_response(data, status=status)


def no_content() -> web.Response:
    return web.Response(status=204)


def saved_file(path: Path) -> web.FileResponse:
    """A finished file's bytes, streamed from disk with range requests. Always a download
    (``attachment``, octet-stream, nosniff, a sandboxing CSP): a browser opening the URL
    saves it and never renders what a stranger sent as a page of this origin."""
    name = path.name
    plain = (c if c.isascii() and c.isprintable() and c not in '"\\;' else "_" for c in name)
    fallback = "".join(plain)
    disposition = f"attachment; filename=\"{fallback}\"; filename*=UTF-8''{quote(name, safe='')}"
    headers = {
        "Content-Type": "application/octet-stream",
        "Content-Disposition": disposition,
        "X-Content-Type-Options": "nosniff",
        "Content-Security-Policy": "default-src 'none'; sandbox",
    }
    return web.FileResponse(path, headers=headers)
