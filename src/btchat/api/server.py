"""The local HTTP + WebSocket API served by ``btchat up``.

Threat model: anything on this machine can connect to loopback, including web pages in
a browser. So every call needs the bearer token from the 0600 ``api.token`` file, and
requests that look like they come from a browser page (a foreign ``Origin``) or through
DNS rebinding (a foreign ``Host``) are refused before the token is even looked at.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import ipaddress
import json
import logging
import re
import weakref
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from typing import Any

from aiohttp import WSCloseCode, WSMsgType, web

from btchat.api import channel_routes
from btchat.api.facade import (
    DEFAULT_LIMIT,
    MAX_LIMIT,
    MAX_NAME_CHARS,
    MAX_NOTE_BYTES,
    MAX_QUERY_CHARS,
    MAX_REF_CHARS,
    MAX_TEXT_BYTES,
    PRESENCE_STATES,
    ApiError,
    Messenger,
)
from btchat.api.openapi import DEFAULT_RECEIVE_TIMEOUT, MAX_RECEIVE_TIMEOUT, openapi_document

__all__ = ["LOOPBACK_HOSTS", "MAX_BODY", "make_app", "start_api"]

log = logging.getLogger(__name__)

#: Largest request body (and WebSocket frame) accepted.
MAX_BODY = 64 * 1024
#: Host names a loopback client may use; anything else suggests DNS rebinding.
LOOPBACK_HOSTS = frozenset({"127.0.0.1", "localhost", "::1"})
#: Longest /receive wait, so abandoned long-polls cannot pile up forever.
MAX_POLL_SECONDS = MAX_RECEIVE_TIMEOUT
DEFAULT_POLL_SECONDS = DEFAULT_RECEIVE_TIMEOUT
#: Longest contact-request id accepted in a path.
MAX_REQUEST_ID_CHARS = 128
#: Paths served without a token: the API description holds no secrets.
PUBLIC_PATHS = frozenset({"/openapi.json"})

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

MESSENGER = web.AppKey("messenger", Messenger)
TOKEN = web.AppKey("token", bytes)
HOSTS = web.AppKey("hosts", frozenset)
STOPPING = web.AppKey("stopping", asyncio.Event)
SOCKETS = web.AppKey("sockets", weakref.WeakSet)


# ------------------------------------------------------------------ responses


def error_response(status: int, code: str, message: str) -> web.Response:
    """The one error shape every failure uses, so clients need a single parser."""
    return web.json_response({"error": {"code": code, "message": message}}, status=status)


_HTTP_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    413: "too_large",
    501: "not_implemented",
}


def _from_http_exception(exc: web.HTTPException) -> web.Response:
    code = _HTTP_CODES.get(exc.status, f"http_{exc.status}")
    message = {
        404: "no such endpoint",
        413: f"request body is over {MAX_BODY // 1024} KiB",
    }.get(exc.status, exc.reason)
    resp = error_response(exc.status, code, message)
    if "Allow" in exc.headers:
        resp.headers["Allow"] = exc.headers["Allow"]
    return resp


# ------------------------------------------------------------------ guards


def _hostname(value: str) -> str:
    """The host part of a Host header or URL authority, lower-case, without brackets."""
    value = value.strip().lower()
    if value.startswith("["):
        return value[1 : value.find("]")] if "]" in value else value
    if value.count(":") == 1:
        return value.split(":", 1)[0]
    return value


def _local_port(request: web.Request) -> int | None:
    sock = request.transport.get_extra_info("sockname") if request.transport else None
    if isinstance(sock, tuple) and len(sock) >= 2:
        return int(sock[1])
    return None


def _origin_ok(origin: str, hosts: frozenset[str], port: int | None) -> bool:
    """Only pages served by this very server may talk to it (none are, today)."""
    origin = origin.strip().lower()
    if not origin.startswith("http://") or port is None:
        return False
    authority = origin[len("http://") :].rstrip("/")
    if "/" in authority or "@" in authority:
        return False
    if authority.startswith("["):
        host, _, rest = authority[1:].partition("]")
        port_text = rest[1:] if rest.startswith(":") else ""
    else:
        host, _, port_text = authority.partition(":")
    return host in hosts and port_text == str(port)


def _token_ok(request: web.Request, token: bytes) -> bool:
    header = request.headers.get("Authorization", "")
    scheme, _, value = header.partition(" ")
    if scheme.lower() == "bearer" and value:
        presented = value.strip()
    elif request.path == "/v1/events" and "token" in request.query:
        presented = request.query["token"]  # browsers' WebSocket API cannot set headers
    else:
        return False
    # Bytes, so non-ASCII input compares (in constant time) instead of raising TypeError.
    return hmac.compare_digest(presented.encode("utf-8", "surrogateescape"), token)


@web.middleware
async def guard(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Host and Origin checks, then the token, then uniform JSON errors."""
    app = request.app
    hosts = app[HOSTS]
    host = request.headers.get("Host")
    if host is not None and _hostname(host) not in hosts:
        return error_response(403, "forbidden_host", "the Host header must name this machine")
    origin = request.headers.get("Origin")
    if origin is not None and not _origin_ok(origin, hosts, _local_port(request)):
        return error_response(403, "forbidden_origin", "requests from web pages are refused")
    if request.path not in PUBLIC_PATHS and not _token_ok(request, app[TOKEN]):
        return error_response(401, "unauthorized", "missing or wrong API token")
    try:
        return await handler(request)
    except ApiError as exc:
        return error_response(exc.status, exc.code, exc.message)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        return _from_http_exception(exc)
    except Exception:
        log.exception("API %s %s failed", request.method, request.path)
        return error_response(500, "internal", "internal error; see the daemon's log")


# ------------------------------------------------------------------ input


def _bad(message: str) -> ApiError:
    return ApiError(400, "bad_request", message)


async def read_json(request: web.Request, allowed: Iterable[str]) -> dict[str, Any]:
    """The body as a JSON object with only known fields; an empty body is ``{}``."""
    if request.content_length is not None and request.content_length > MAX_BODY:
        raise ApiError(413, "too_large", f"request body is over {MAX_BODY // 1024} KiB")
    raw = await request.read()  # client_max_size enforces the limit for chunked bodies
    if not raw.strip():
        return {}
    try:
        data = json.loads(raw, parse_constant=_reject_constant)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ApiError(400, "bad_json", f"the body is not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise ApiError(400, "bad_json", "the body must be a JSON object")
    unknown = sorted(set(data) - set(allowed))
    if unknown:
        raise _bad(f"unknown field(s): {', '.join(unknown)}")
    return data


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _utf8_len(value: str) -> int:
    return len(value.encode("utf-8", "surrogatepass"))


def opt_str(
    data: dict[str, Any],
    key: str,
    *,
    max_chars: int | None = None,
    max_bytes: int | None = None,
    allow_empty: bool = False,
) -> str | None:
    """An optional string field; ``null`` means absent, ``""`` is refused unless allowed."""
    value = data.get(key)
    if value is None:
        return None
    if not isinstance(value, str) or (not value and not allow_empty):
        raise _bad(f"{key} must be a non-empty string")
    if max_chars is not None and len(value) > max_chars:
        raise _bad(f"{key} must be at most {max_chars} characters")
    if max_bytes is not None and _utf8_len(value) > max_bytes:
        raise _bad(f"{key} must be at most {max_bytes} bytes")
    return value


def req_str(data: dict[str, Any], key: str, *, max_chars: int | None = None) -> str:
    """A required, non-empty string field."""
    value = opt_str(data, key, max_chars=max_chars)
    if value is None:
        raise _bad(f"{key} is required")
    return value


def ref_field(data: dict[str, Any], key: str) -> str:
    """A contact reference (ID, URI, key or petname); bounded before anything parses it."""
    return req_str(data, key, max_chars=MAX_REF_CHARS)


def name_field(data: dict[str, Any], key: str = "name") -> str | None:
    """A petname: 1 to 64 characters and no control characters (they garble terminals)."""
    value = opt_str(data, key, max_chars=MAX_NAME_CHARS)
    if value is not None and any(ord(ch) < 0x20 or ord(ch) == 0x7F for ch in value):
        raise _bad(f"{key} must not contain control characters")
    return value


def note_field(data: dict[str, Any], key: str = "note") -> str | None:
    """A short note (presence, contact request): at most 140 UTF-8 bytes; may be empty."""
    value = data.get(key)
    if value is not None and (not isinstance(value, str) or _utf8_len(value) > MAX_NOTE_BYTES):
        raise ApiError(400, "bad_note", f"{key} must be a string of at most {MAX_NOTE_BYTES} bytes")
    return value


def message_id_field(data: dict[str, Any], key: str) -> str | None:
    """An optional message id: hex, as the API hands them out."""
    value = opt_str(data, key, max_chars=128)
    if value is not None and (len(value) < 2 or any(c not in _HEX_DIGITS for c in value)):
        raise _bad(f"{key} must be a message id (hex)")
    return value


_HEX_DIGITS = frozenset("0123456789abcdefABCDEF")


def text_field(data: dict[str, Any], key: str = "text") -> str:
    """Message text: 1 to 16384 UTF-8 bytes, the wire format's limit."""
    value = data.get(key)
    if not isinstance(value, str):
        raise ApiError(400, "bad_text", f"{key} must be a string")
    size = _utf8_len(value)
    if not 1 <= size <= MAX_TEXT_BYTES:
        raise ApiError(400, "bad_text", f"{key} must be 1 to {MAX_TEXT_BYTES} bytes")
    return value


def opt_bool(data: dict[str, Any], key: str) -> bool | None:
    value = data.get(key)
    if value is None or isinstance(value, bool):
        return value
    raise _bad(f"{key} must be true or false")


def req_bool(data: dict[str, Any], key: str) -> bool:
    value = opt_bool(data, key)
    if value is None:
        raise _bad(f"{key} is required (true or false)")
    return value


def query_int(
    request: web.Request, key: str, default: int | None, lo: int, hi: int | None = None
) -> int | None:
    raw = request.query.get(key)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise _bad(f"{key} must be an integer") from None
    if value < lo or (hi is not None and value > hi):
        bound = f"{lo} to {hi}" if hi is not None else f"at least {lo}"
        raise _bad(f"{key} must be {bound}")
    return value


def query_limit(request: web.Request) -> int:
    value = query_int(request, "limit", DEFAULT_LIMIT, 1, MAX_LIMIT)
    assert value is not None
    return value


def contact_param(request: web.Request) -> str:
    """The ``{contact}`` path segment, already URL-decoded by the router."""
    value = request.match_info["contact"]
    if not value or len(value) > MAX_REF_CHARS:
        raise _bad(f"contact must be 1 to {MAX_REF_CHARS} characters")
    return value


# ------------------------------------------------------------------ handlers


def _messenger(request: web.Request) -> Messenger:
    return request.app[MESSENGER]


def ok(data: Any, status: int = 200) -> web.Response:
    return web.json_response(data, status=status)


def no_content() -> web.Response:
    return web.Response(status=204)


async def get_openapi(request: web.Request) -> web.Response:
    doc = openapi_document()
    port = _local_port(request)
    if port is not None:
        doc["servers"][0]["variables"]["port"]["default"] = str(port)
    return ok(doc)


async def get_status(request: web.Request) -> web.Response:
    return ok(await _messenger(request).status())


async def get_identity(request: web.Request) -> web.Response:
    return ok(await _messenger(request).identity())


async def list_contacts(request: web.Request) -> web.Response:
    return ok({"contacts": await _messenger(request).list_contacts()})


async def add_contact(request: web.Request) -> web.Response:
    data = await read_json(request, ("ref", "name"))
    contact = await _messenger(request).add_contact(ref_field(data, "ref"), name_field(data))
    return ok(contact, 201)


async def get_contact(request: web.Request) -> web.Response:
    return ok(await _messenger(request).get_contact(contact_param(request)))


async def update_contact(request: web.Request) -> web.Response:
    data = await read_json(request, ("name", "verified", "blocked", "retention_days"))
    retention = data.get("retention_days")
    if retention is not None and (
        isinstance(retention, bool) or not isinstance(retention, int | float)
    ):
        raise _bad("retention_days must be a number of days (1 to 14)")
    contact = await _messenger(request).update_contact(
        contact_param(request),
        name=name_field(data),
        verified=opt_bool(data, "verified"),
        blocked=opt_bool(data, "blocked"),
        retention_days=retention,
    )
    return ok(contact)


async def remove_contact(request: web.Request) -> web.Response:
    await _messenger(request).remove_contact(contact_param(request))
    return no_content()


async def safety_number(request: web.Request) -> web.Response:
    return ok(await _messenger(request).safety_number(contact_param(request)))


async def history(request: web.Request) -> web.Response:
    contact = contact_param(request)
    limit = query_limit(request)
    before = query_int(request, "before", None, 0)
    return ok({"messages": await _messenger(request).history(contact, limit, before)})


async def send_message(request: web.Request) -> web.Response:
    data = await read_json(request, ("text",))
    message = await _messenger(request).send_message(contact_param(request), text_field(data))
    return ok(message, 201)


async def mark_read(request: web.Request) -> web.Response:
    data = await read_json(request, ("up_to",))
    up_to = message_id_field(data, "up_to")
    result = await _messenger(request).mark_read(contact_param(request), up_to)
    return ok(result)


async def send_typing(request: web.Request) -> web.Response:
    data = await read_json(request, ("on",))
    await _messenger(request).send_typing(contact_param(request), req_bool(data, "on"))
    return no_content()


async def search(request: web.Request) -> web.Response:
    q = request.query.get("q", "")
    if not q.strip():
        raise _bad("q (the search text) is required")
    if len(q) > MAX_QUERY_CHARS:
        raise _bad(f"q must be at most {MAX_QUERY_CHARS} characters")
    contact = request.query.get("contact") or None
    if contact is not None and len(contact) > MAX_REF_CHARS:
        raise _bad(f"contact must be at most {MAX_REF_CHARS} characters")
    rows = await _messenger(request).search(q, contact, query_limit(request))
    return ok({"messages": rows})


async def set_presence(request: web.Request) -> web.Response:
    data = await read_json(request, ("status", "note"))
    status = data.get("status")
    if status not in PRESENCE_STATES:
        raise ApiError(400, "bad_presence", f"status is one of {', '.join(PRESENCE_STATES)}")
    return ok(await _messenger(request).set_presence(status, note_field(data)))


async def get_profile(request: web.Request) -> web.Response:
    return ok(await _messenger(request).get_profile())


async def set_profile(request: web.Request) -> web.Response:
    data = await read_json(request, ("name", "status", "avatar"))
    avatar = data.get("avatar")
    if avatar is not None and (
        not isinstance(avatar, str) or (avatar and not re.fullmatch(r"[0-9a-f]{64}", avatar))
    ):
        raise ApiError(400, "bad_avatar", "avatar is the SHA-256 of the image, as 64 hex digits")
    result = await _messenger(request).set_profile(
        name_field(data), note_field(data, "status"), avatar
    )
    return ok(result)


async def list_requests(request: web.Request) -> web.Response:
    return ok({"requests": await _messenger(request).list_requests()})


async def send_request(request: web.Request) -> web.Response:
    data = await read_json(request, ("ref", "note"))
    note = note_field(data)
    result = await _messenger(request).send_request(ref_field(data, "ref"), note or None)
    return ok(result, 201)


async def answer_request(request: web.Request) -> web.Response:
    request_id = request.match_info["id"]
    if not request_id or len(request_id) > MAX_REQUEST_ID_CHARS:
        raise _bad(f"request id must be 1 to {MAX_REQUEST_ID_CHARS} characters")
    data = await read_json(request, ("accept", "name"))
    result = await _messenger(request).answer_request(
        request_id, req_bool(data, "accept"), name_field(data)
    )
    return ok(result)


# ------------------------------------------------------------------ aliases


async def send_alias(request: web.Request) -> web.Response:
    """``POST /send {to, text}``: the seed's name for sending a message."""
    data = await read_json(request, ("to", "text"))
    to = ref_field(data, "to")
    message = await _messenger(request).send_message(to, text_field(data))
    return ok(message, 201)


def _is_incoming_message(event: dict[str, Any]) -> bool:
    message = event.get("message")
    return (
        event.get("type") == "message"
        and isinstance(message, dict)
        and message.get("direction") != "out"
    )


async def _next_incoming(events: AsyncIterator[dict[str, Any]]) -> dict[str, Any]:
    async for event in events:
        if _is_incoming_message(event):
            return event
    raise ApiError(503, "unavailable", "the event stream ended")


async def receive_alias(request: web.Request) -> web.Response:
    """``GET /receive?timeout=``: long-poll the next incoming message; 204 on timeout."""
    raw = request.query.get("timeout", "")
    try:
        timeout = float(raw) if raw else DEFAULT_POLL_SECONDS
    except ValueError:
        raise _bad("timeout must be a number of seconds") from None
    if not 0 <= timeout <= MAX_POLL_SECONDS:  # also refuses NaN
        raise _bad(f"timeout must be 0 to {MAX_POLL_SECONDS:.0f} seconds")
    events = _messenger(request).subscribe()
    waiter = asyncio.ensure_future(_next_incoming(events))
    stopper = asyncio.ensure_future(request.app[STOPPING].wait())
    try:
        done, _ = await asyncio.wait(
            {waiter, stopper}, timeout=timeout, return_when=asyncio.FIRST_COMPLETED
        )
    finally:
        for task in (waiter, stopper):
            task.cancel()
        await asyncio.gather(waiter, stopper, return_exceptions=True)
        await _aclose(events)
    if waiter in done and not waiter.cancelled():
        return ok(waiter.result())
    if stopper in done:
        raise ApiError(503, "shutting_down", "the daemon is stopping")
    return no_content()


async def not_yet(request: web.Request) -> web.Response:
    """``/upload`` and ``/download`` are reserved names: say so instead of a bare 404."""
    raise ApiError(501, "not_implemented", "files arrive in a later version")


# ------------------------------------------------------------------ events


async def _aclose(events: AsyncIterator[dict[str, Any]]) -> None:
    aclose = getattr(events, "aclose", None)
    if aclose is not None:
        with contextlib.suppress(Exception):
            await aclose()


async def events_ws(request: web.Request) -> web.StreamResponse:
    """``GET /v1/events``: every event as a JSON text frame, ``ready`` first."""
    ws = web.WebSocketResponse(heartbeat=30.0, max_msg_size=MAX_BODY)
    if not ws.can_prepare(request).ok:
        raise ApiError(400, "websocket_required", "this endpoint needs a WebSocket upgrade")
    await ws.prepare(request)
    request.app[SOCKETS].add(ws)
    events = _messenger(request).subscribe()
    send_lock = asyncio.Lock()

    async def send(obj: dict[str, Any]) -> None:
        async with send_lock:
            await ws.send_str(json.dumps(obj))

    async def pump() -> None:
        try:
            async for event in events:
                await send(event)
        except ConnectionError as exc:  # the client went away mid-send
            log.debug("event stream to a client ended: %s", exc)
        except Exception:
            log.exception("the event stream failed")
        await ws.close()  # the stream ended by itself (not on cancel): tell the client

    # Hold the lock so "ready" goes out first, once the subscription is in place.
    async with send_lock:
        pumper = asyncio.create_task(pump())
        await asyncio.sleep(0)  # let the generator run up to its first wait: subscribed
        with contextlib.suppress(ConnectionError):
            await ws.send_str(json.dumps({"type": "ready"}))
    try:
        async for msg in ws:
            if msg.type != WSMsgType.TEXT:
                continue
            try:
                frame = json.loads(msg.data)
            except ValueError:
                frame = None
            if isinstance(frame, dict) and frame.get("type") == "ping":
                pong: dict[str, Any] = {"type": "pong"}
                if "id" in frame:  # lets a client match answers to its pings
                    pong["id"] = frame["id"]
                await send(pong)
            else:
                await send(
                    {
                        "type": "error",
                        "error": {
                            "code": "bad_frame",
                            "message": 'the only client frame is {"type": "ping"}',
                        },
                    }
                )
    except ConnectionError:  # the response is already a WebSocket: no error body possible
        log.debug("WebSocket client went away")
    finally:
        pumper.cancel()
        await asyncio.gather(pumper, return_exceptions=True)
        await _aclose(events)
        request.app[SOCKETS].discard(ws)
        if not ws.closed:
            await ws.close()
    return ws


async def _on_shutdown(app: web.Application) -> None:
    """End long-polls and WebSockets so cleanup does not wait for them."""
    app[STOPPING].set()
    for ws in list(app[SOCKETS]):
        with contextlib.suppress(Exception):
            await ws.close(code=WSCloseCode.GOING_AWAY, message=b"daemon stopping")


# ------------------------------------------------------------------ assembly


def make_app(
    messenger: Messenger, token: str, *, allowed_hosts: Iterable[str] = ()
) -> web.Application:
    """The API as an aiohttp app; ``allowed_hosts`` extends the loopback names."""
    if not token:
        raise ValueError("an API token is required")
    app = web.Application(middlewares=[guard], client_max_size=MAX_BODY)
    app[MESSENGER] = messenger
    app[TOKEN] = token.encode("utf-8")
    app[HOSTS] = LOOPBACK_HOSTS | {_hostname(h) for h in allowed_hosts}
    app[STOPPING] = asyncio.Event()
    app[SOCKETS] = weakref.WeakSet()
    app.on_shutdown.append(_on_shutdown)

    r = app.router
    r.add_get("/openapi.json", get_openapi, allow_head=False)
    channel_routes.add_routes(r)
    r.add_get("/v1/status", get_status, allow_head=False)
    r.add_get("/v1/identity", get_identity, allow_head=False)
    r.add_get("/v1/contacts", list_contacts, allow_head=False)
    r.add_post("/v1/contacts", add_contact)
    r.add_get("/v1/contacts/{contact}", get_contact, allow_head=False)
    r.add_patch("/v1/contacts/{contact}", update_contact)
    r.add_delete("/v1/contacts/{contact}", remove_contact)
    r.add_get("/v1/contacts/{contact}/safety-number", safety_number, allow_head=False)
    r.add_get("/v1/contacts/{contact}/messages", history, allow_head=False)
    r.add_post("/v1/contacts/{contact}/messages", send_message)
    r.add_post("/v1/contacts/{contact}/read", mark_read)
    r.add_post("/v1/contacts/{contact}/typing", send_typing)
    r.add_get("/v1/search", search, allow_head=False)
    r.add_put("/v1/presence", set_presence)
    r.add_get("/v1/profile", get_profile, allow_head=False)
    r.add_put("/v1/profile", set_profile)
    r.add_get("/v1/requests", list_requests, allow_head=False)
    r.add_post("/v1/requests", send_request)
    r.add_post("/v1/requests/{id}", answer_request)
    r.add_get("/v1/events", events_ws, allow_head=False)
    r.add_post("/send", send_alias)
    r.add_get("/receive", receive_alias, allow_head=False)
    r.add_post("/upload", not_yet)
    r.add_get("/download", not_yet, allow_head=False)
    return app


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


async def start_api(
    messenger: Messenger,
    token: str,
    host: str = "127.0.0.1",
    port: int = 0,
    *,
    allowed_hosts: Iterable[str] = (),
) -> tuple[web.AppRunner, int]:
    """Serve the API; returns the runner (``await runner.cleanup()`` to stop) and the port.

    Binds loopback unless ``host`` says otherwise; a non-wildcard ``host`` is then also
    accepted in the ``Host`` header.
    """
    extra = set(allowed_hosts)
    if not _is_loopback(host):
        log.warning("the local API listens on %s, not only on this machine", host)
        if host not in ("", "0.0.0.0", "::"):
            extra.add(host)
    app = make_app(messenger, token, allowed_hosts=extra)
    # No access log: WebSocket URLs may carry the token in the query string.
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=5.0)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    try:
        await site.start()
    except BaseException:
        await runner.cleanup()
        raise
    bound = runner.addresses[0][1]
    return runner, int(bound)
