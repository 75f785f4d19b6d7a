"""The web app's static files, served by the API server itself.

Why from the daemon: the page then shares the API's origin, so the Origin guard lets it
in and nothing else (no CORS, no second port). The files hold no secrets, so they need no
token. The page gets the token once, from the URL fragment ``btchat open`` puts there (a
fragment never reaches the server), trades it at ``POST /v1/web/session`` for an
HttpOnly, SameSite=Strict session cookie and forgets it: no script can read the cookie,
and from then on the token is in no URL and no storage of the page.

Every response here carries a strict Content-Security-Policy: scripts only from this
origin and never inline, network only to this origin (HTTP and its WebSocket), no
framing. A message that slipped past the page's text-only rendering still could not run
or send anything anywhere.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import mimetypes
from importlib import resources

from aiohttp import web

from btchat.api.routes import RouteTable, bad_request, no_content

__all__ = [
    "ASSET_NAME_CHARS",
    "ROUTES",
    "SESSION",
    "cookie_name",
    "is_web_path",
    "security_headers",
    "session_cookie_ok",
    "session_value",
]

ROUTES = RouteTable()
web_route = ROUTES.section("web")

#: The folder (package data) the assets ship in.
ASSETS = resources.files("btchat.api") / "web"
#: Longest asset name accepted, and the characters one may contain: a flat folder, so
#: no ``/`` and no ``..`` can ever name a file outside it.
ASSET_NAME_CHARS = 64
_NAME_OK = frozenset("abcdefghijklmnopqrstuvwxyz0123456789-_.")
_TYPES = {".js": "text/javascript", ".css": "text/css", ".svg": "image/svg+xml"}

#: The session cookie's value for this daemon run (see :func:`session_value`).
SESSION = web.AppKey("web_session", bytes)


def session_value(token: bytes) -> bytes:
    """The cookie's value: derived from the run's token, so it dies with it (a daemon
    restart signs the page out), yet is not the token itself."""
    mac = hmac.new(token, b"btchat web session v1", hashlib.sha256).digest()
    return base64.urlsafe_b64encode(mac).rstrip(b"=")


def cookie_name(port: int | None) -> str:
    """Cookies ignore ports, so two daemons of one browser would overwrite each other's
    cookie under one name; the port keeps them apart."""
    return f"btchat_session_{port}"


def session_cookie_ok(request: web.Request, port: int | None) -> bool:
    """The request carries this run's session cookie and comes from the page itself.

    SameSite=Strict still sends the cookie from a page of the same host on another port
    (a "site" ignores ports), so it counts only on a same-origin request: Fetch Metadata
    says so, or (a browser without it) an Origin the guard has already checked.
    """
    presented = request.cookies.get(cookie_name(port))
    if not presented:
        return False
    fetch_site = request.headers.get("Sec-Fetch-Site")
    if fetch_site is None and "Origin" not in request.headers:
        return False
    if fetch_site is not None and fetch_site != "same-origin":
        return False
    expected = request.app[SESSION]
    return hmac.compare_digest(presented.encode("utf-8", "surrogateescape"), expected)


def csp(port: int | None) -> str:
    """The page's policy; ``connect-src`` names the WebSocket origin because CSP 2
    browsers do not count ``ws:`` as ``'self'``."""
    ws = f" ws://127.0.0.1:{port} ws://localhost:{port} ws://[::1]:{port}" if port else ""
    return (
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        f"connect-src 'self'{ws}; object-src 'none'; base-uri 'none'; form-action 'self'; "
        "frame-ancestors 'none'"
    )


def security_headers(response: web.StreamResponse, port: int | None) -> None:
    """The headers every web-app response carries."""
    response.headers["Content-Security-Policy"] = csp(port)
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["Referrer-Policy"] = "no-referrer"
    response.headers["X-Frame-Options"] = "DENY"
    response.headers["Cache-Control"] = "no-cache"
    response.headers["Cross-Origin-Opener-Policy"] = "same-origin"


def is_web_path(path: str) -> bool:
    """Paths served without a token: the page and its assets."""
    return path == "/" or path.startswith("/app/")


def _port(request: web.Request) -> int | None:
    sock = request.transport.get_extra_info("sockname") if request.transport else None
    return int(sock[1]) if isinstance(sock, tuple) and len(sock) >= 2 else None


def _asset(name: str, request: web.Request) -> web.Response:
    if len(name) > ASSET_NAME_CHARS or not set(name) <= _NAME_OK or name.startswith("."):
        raise bad_request("no such asset name")
    item = ASSETS / name
    if not item.is_file():
        raise web.HTTPNotFound()
    suffix = name[name.rfind(".") :] if "." in name else ""
    ctype = _TYPES.get(suffix) or mimetypes.guess_type(name)[0] or "application/octet-stream"
    resp = web.Response(body=item.read_bytes(), content_type=ctype)
    if ctype.startswith("text/"):
        resp.charset = "utf-8"
    security_headers(resp, _port(request))
    return resp


_HTML = {"description": "The web app's page.", "content": {"text/html": {}}}
_FILE = {"description": "A script, style sheet or image of the web app.", "content": {"*/*": {}}}


@web_route("GET /", "webApp", "The web app (`btchat open` opens it)", {"200": _HTML}, public=True)
async def index(request: web.Request) -> web.Response:
    return _asset("index.html", request)


@web_route(
    "GET /app/{name}",
    "webAsset",
    "One file of the web app",
    {"200": _FILE, "404": "NotFound"},
    public=True,
    params=("assetName",),
)
async def asset(request: web.Request) -> web.Response:
    return _asset(request.match_info["name"], request)


@web_route(
    "POST /v1/web/session",
    "startWebSession",
    "Trade the token for the page's session cookie",
    {"204": {"description": "Signed in: the response sets the cookie."}},
)
async def start_session(request: web.Request) -> web.Response:
    """Called once by the page with the bearer token from its URL fragment. The cookie is
    HttpOnly (no script reads it), SameSite=Strict, for this run only (no expiry: the
    browser drops it when it closes; the next daemon run derives another)."""
    resp = no_content()
    value = request.app[SESSION].decode()
    resp.set_cookie(cookie_name(_port(request)), value, path="/", httponly=True, samesite="Strict")
    return resp


@web_route(
    "DELETE /v1/web/session",
    "endWebSession",
    "Sign this browser out",
    {"204": {"description": "The cookie is cleared."}},
)
async def end_session(request: web.Request) -> web.Response:
    resp = no_content()
    resp.del_cookie(cookie_name(_port(request)), path="/")
    return resp
