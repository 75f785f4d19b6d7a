"""The web app as the API server serves it, without a browser: the files, their headers,
what needs no token and what still does, the QR endpoint, and ``btchat open``'s URL.
(tests/test_web_app.py drives the page itself in chromium.)"""

from __future__ import annotations

import re
import stat
from collections.abc import AsyncIterator
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from aiohttp.test_utils import TestClient, TestServer

from btchat.api.fake import FakeMessenger
from btchat.api.server import make_app
from btchat.api.web_routes import ASSET_NAME_CHARS, ASSETS
from btchat.cli.webopen import signed_in_url, web_url, write_redirect
from btchat.identity.qr import make_qr

TOKEN = "web-token/with+odd=chars"
WEB_DIR = Path(str(ASSETS))
SCRIPTS = sorted(WEB_DIR.glob("*.js"))


@pytest.fixture
async def client() -> AsyncIterator[TestClient]:
    async with TestClient(TestServer(make_app(FakeMessenger(), TOKEN), host="127.0.0.1")) as c:
        yield c


def origin(client: TestClient) -> str:
    return f"http://127.0.0.1:{client.server.port}"


async def test_page_is_public_with_strict_headers(client: TestClient) -> None:
    resp = await client.get("/")
    assert resp.status == 200
    assert resp.content_type == "text/html"
    policy = resp.headers["Content-Security-Policy"]
    directives = dict(d.strip().split(" ", 1) for d in policy.split(";"))
    assert directives["default-src"] == "'self'"
    assert directives["script-src"] == "'self'"
    assert directives["frame-ancestors"] == "'none'"
    assert directives["connect-src"].split()[:2] == [
        "'self'",
        f"ws://127.0.0.1:{client.server.port}",
    ]
    assert "unsafe" not in policy
    assert resp.headers["X-Content-Type-Options"] == "nosniff"
    assert resp.headers["Referrer-Policy"] == "no-referrer"
    assert resp.headers["X-Frame-Options"] == "DENY"


@pytest.mark.parametrize(
    ("name", "ctype"),
    [("app.js", "text/javascript"), ("style.css", "text/css"), ("icon.svg", "image/svg+xml")],
)
async def test_assets_have_their_types(client: TestClient, name: str, ctype: str) -> None:
    resp = await client.get(f"/app/{name}")
    assert resp.status == 200 and resp.content_type == ctype
    assert await resp.read() == (WEB_DIR / name).read_bytes()
    assert "Content-Security-Policy" in resp.headers


@pytest.mark.parametrize(
    ("path", "status"),
    [
        ("/app/nope.js", 404),
        ("/app/..%2Fserver.py", 400),
        ("/app/.hidden", 400),
        ("/app/App.JS", 400),
        (f"/app/{'a' * (ASSET_NAME_CHARS + 1)}.js", 400),
        ("/app/a%00b.js", 400),
        ("/app/a%2F..%2F..%2Fhandlers.py", 400),
    ],
)
async def test_asset_names_stay_in_the_folder(client: TestClient, path: str, status: int) -> None:
    resp = await client.get(path, headers={"Authorization": f"Bearer {TOKEN}"})
    assert resp.status == status, path


async def test_the_api_still_needs_the_token(client: TestClient) -> None:
    assert (await client.get("/v1/status")).status == 401
    assert (await client.get("/v1/identity/qr")).status == 401


async def test_only_the_daemons_own_origin_is_let_in(client: TestClient) -> None:
    auth = {"Authorization": f"Bearer {TOKEN}"}
    own = await client.get("/v1/identity", headers={**auth, "Origin": origin(client)})
    assert own.status == 200
    for foreign in ("http://evil.example", f"http://127.0.0.1:{client.server.port + 1}"):
        resp = await client.get("/v1/identity", headers={**auth, "Origin": foreign})
        assert resp.status == 403, foreign
        resp = await client.get("/", headers={"Origin": foreign})
        assert resp.status == 403, foreign


async def test_qr_rows_are_the_code_of_the_link(client: TestClient) -> None:
    auth = {"Authorization": f"Bearer {TOKEN}"}
    ident = await (await client.get("/v1/identity", headers=auth)).json()
    qr = await (await client.get("/v1/identity/qr", headers=auth)).json()
    assert qr["text"] == ident["uri"]
    expected = make_qr(ident["uri"]).matrix
    assert len(qr["rows"]) == len(expected)
    assert all(len(r) == len(qr["rows"]) and set(r) <= {"0", "1"} for r in qr["rows"])
    assert [[c == "1" for c in r] for r in qr["rows"]] == [[bool(c) for c in r] for r in expected]
    assert qr["quiet_zone"] == 4


class _Scripts(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.scripts: list[dict[str, str | None]] = []
        self.inline_handlers: list[str] = []
        self.urls: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "script":
            self.scripts.append(dict(attrs))
        for key, value in attrs:
            if key.startswith("on") or key == "style":
                self.inline_handlers.append(f"{tag} {key}")
            if key in ("src", "href") and value:
                self.urls.append(value)


def test_the_page_has_no_inline_script_and_no_foreign_url() -> None:
    parser = _Scripts()
    parser.feed((WEB_DIR / "index.html").read_text())
    assert parser.scripts and all(s.get("src", "").startswith("/app/") for s in parser.scripts)
    assert parser.inline_handlers == []
    assert all(urlsplit(u).netloc == "" and u.startswith("/") for u in parser.urls)


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.name)
def test_scripts_never_parse_markup(script: Path) -> None:
    """Text from others goes in as text nodes; these sinks would turn it into markup."""
    code = script.read_text()
    for sink in ("innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval("):
        assert sink not in code, f"{script.name} uses {sink}"
    assert not re.search(r"new Function|setTimeout\(\s*[\"'`]", code)
    assert not re.search(r"https?://", code), "no other origin (no CDN)"


def test_open_puts_the_token_in_the_fragment_only(tmp_path: Path) -> None:
    url = signed_in_url("http://127.0.0.1:4321", TOKEN)
    parts = urlsplit(url)
    assert parts.query == "" and parts.path == "/"
    assert parts.fragment == "token=web-token%2Fwith%2Bodd%3Dchars"
    assert web_url("http://127.0.0.1:4321") == "http://127.0.0.1:4321/"
    page = write_redirect(tmp_path, url)
    assert stat.S_IMODE(page.stat().st_mode) == 0o600
    assert f'content="0;url={url}"' in page.read_text()
