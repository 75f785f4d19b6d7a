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
import logging
import weakref
from collections.abc import Awaitable, Callable, Iterable

from aiohttp import WSCloseCode, web

from btchat.api import (
    channel_routes,
    device_routes,
    file_routes,
    handlers,
    qr_routes,
    settings_routes,
    setup_routes,
    web_routes,
)
from btchat.api.facade import ApiError, Messenger
from btchat.api.routes import (
    MAX_BODY,
    MESSENGER,
    SOCKETS,
    STOPPING,
    MessengerSlot,
    RouteTable,
    join_tables,
    models_loaded,
    ok,
    preload,
)
from btchat.storage.health import os_fault

__all__ = ["ALL_ROUTES", "LOOPBACK_HOSTS", "MAX_BODY", "make_app", "preload", "start_api"]

log = logging.getLogger(__name__)

#: Host names a loopback client may use; anything else suggests DNS rebinding.
LOOPBACK_HOSTS = frozenset({"127.0.0.1", "localhost", "::1"})
#: Paths served without a token: the API description holds no secrets.
PUBLIC_PATHS = frozenset({"/openapi.json"})

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

TOKEN = web.AppKey("token", bytes)
HOSTS = web.AppKey("hosts", frozenset)


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
    """Only pages served by this very server (the web app) may talk to it."""
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
    """The bearer token, or the web app's session cookie; never a token in a URL."""
    header = request.headers.get("Authorization", "")
    scheme, _, value = header.partition(" ")
    if scheme.lower() == "bearer" and value:
        presented = value.strip()
    else:
        return web_routes.session_cookie_ok(request, _local_port(request))
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
    public = request.path in PUBLIC_PATHS or web_routes.is_web_path(request.path)
    if not public and not _token_ok(request, app[TOKEN]):
        return error_response(401, "unauthorized", "missing or wrong API token")
    try:
        return await handler(request)
    except ApiError as exc:
        return error_response(exc.status, exc.code, exc.message)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        return _from_http_exception(exc)
    except Exception as exc:
        fault = os_fault(exc)
        if fault is not None:  # a full disk is the machine's state, not our bug: no traceback
            return error_response(507, "storage", f"cannot store it: {fault.condition} ({fault})")
        log.exception("API %s %s failed", request.method, request.path)
        return error_response(500, "internal", "internal error; see the daemon's log")


async def _on_shutdown(app: web.Application) -> None:
    """End long-polls and WebSockets so cleanup does not wait for them."""
    app[STOPPING].set()
    for ws in list(app[SOCKETS]):
        with contextlib.suppress(Exception):
            await ws.close(code=WSCloseCode.GOING_AWAY, message=b"daemon stopping")


# ------------------------------------------------------------------ assembly

OPENAPI = RouteTable()


@OPENAPI.route(
    "GET /openapi.json",
    "openapi",
    "This document",
    {"200": ({"type": "object"}, "OpenAPI 3.1 document.")},
    public=True,
    tag="daemon",
)
async def get_openapi(request: web.Request) -> web.Response:
    await models_loaded()
    from btchat.api.openapi import openapi_document  # built when first asked for

    doc = openapi_document(ALL_ROUTES)
    sock = request.transport.get_extra_info("sockname") if request.transport else None
    if isinstance(sock, tuple) and len(sock) >= 2:
        doc["servers"][0]["variables"]["port"]["default"] = str(sock[1])
    return ok(doc)


#: Every route the server registers, in order (channel routes first: ``/join``
#: must match before ``{channel}``).
ALL_ROUTES = join_tables(
    [
        OPENAPI,
        channel_routes.ROUTES,
        file_routes.ROUTES,
        device_routes.ROUTES,
        settings_routes.ROUTES,
        setup_routes.ROUTES,
        qr_routes.ROUTES,
        handlers.ROUTES,
        web_routes.ROUTES,
    ]
)


def make_app(
    messenger: Messenger | MessengerSlot, token: str, *, allowed_hosts: Iterable[str] = ()
) -> web.Application:
    """The API as an aiohttp app; ``allowed_hosts`` extends the loopback names."""
    if not token:
        raise ValueError("an API token is required")
    app = web.Application(middlewares=[guard], client_max_size=MAX_BODY)
    app[MESSENGER] = messenger if isinstance(messenger, MessengerSlot) else MessengerSlot(messenger)
    app[TOKEN] = token.encode("utf-8")
    app[web_routes.SESSION] = web_routes.session_value(app[TOKEN])
    app[HOSTS] = LOOPBACK_HOSTS | {_hostname(h) for h in allowed_hosts}
    app[STOPPING] = asyncio.Event()
    app[SOCKETS] = weakref.WeakSet()
    app.on_shutdown.append(_on_shutdown)

    ALL_ROUTES.add_to(app.router)
    return app


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


async def start_api(
    messenger: Messenger | MessengerSlot,
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
