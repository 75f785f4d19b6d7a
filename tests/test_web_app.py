"""The web app in a real browser (headless Debian chromium, driven by Playwright) against
two real daemons on a loopback sandbox swarm: Alice adds Bob, they chat both ways with
receipts and typing, a hostile message renders as text, and the page never talks to
any origin but its own daemon's.

Screenshots of the main screens, light and dark, go to ``BTCHAT_SCREENSHOTS`` (a folder)
when it is set: ``docs/screenshots/`` is made that way.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from harness import skip_unless_ci
from test_messenger_e2e import Person, sandbox, wait_for  # noqa: F401

from btchat.api.client import ApiClient, read_api_files
from btchat.api.facade import MAX_TEXT_BYTES
from btchat.cli.webopen import signed_in_url

pytestmark = pytest.mark.slow

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",  # as root, chromium's sandbox cannot start
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
]
#: The hostile message: markup, a terminal escape, a bidi override, and a word as long
#: as the rest of the 16 KiB a message may hold.
HOSTILE_MARKUP = "<img src=x onerror=alert(1)><script>alert(2)</script>"
_HOSTILE_HEAD = f"{HOSTILE_MARKUP} \x1b[31mred\x1b[0m \u202egnp.exe "
LONG_WORD = "W" * (MAX_TEXT_BYTES - len(_HOSTILE_HEAD.encode()))
HOSTILE = _HOSTILE_HEAD + LONG_WORD
TIMEOUT_MS = 60_000


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    if os.geteuid() != 0:
        skip_unless_ci("the web app tests run chromium as root (CI); not root here")
    if not os.access(CHROMIUM, os.X_OK):
        skip_unless_ci(f"{CHROMIUM} is missing (scripts/setup installs Debian chromium)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        skip_unless_ci("the playwright package is missing (pip install -e '.[test]')")
    with sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        try:
            yield b
        finally:
            b.close()


class Tab:
    """One person's browser context and page, recording every request it makes."""

    def __init__(self, browser: Any, person: Person, scheme: str = "light") -> None:
        self.api_url, self.token = read_api_files(person.dir)
        self.origin = self.api_url.rstrip("/")
        self.client = ApiClient(self.api_url, self.token)
        self.context = browser.new_context(
            color_scheme=scheme, viewport={"width": 1100, "height": 720}
        )
        self.requests: list[str] = []
        self.foreign: list[str] = []
        self.sockets: list[str] = []
        self.dialogs: list[str] = []
        self.errors: list[str] = []
        self.context.route("**/*", self._route)
        self.held: list[tuple[Any, Any]] = []  # (route, response) of sends held back
        self.page = self.context.new_page()
        self.page.set_default_timeout(TIMEOUT_MS)
        self.page.on("websocket", lambda ws: self.sockets.append(ws.url))
        self.page.on("dialog", self._dialog)
        self.page.on("pageerror", lambda exc: self.errors.append(str(exc)))

    def _route(self, route: Any) -> None:
        url = route.request.url
        self.requests.append(url)
        if url.startswith(self.origin + "/"):
            route.continue_()
        else:  # never let it out; the test fails on it below
            self.foreign.append(url)
            route.abort()

    def hold_send_replies(self) -> None:
        """From now on the daemon gets each send at once, but the page sees the reply
        only on ``release()``: the events of that message then arrive before it."""

        def hold(route: Any) -> None:
            if route.request.method != "POST":
                route.fallback()
                return
            self.requests.append(route.request.url)
            self.held.append((route, route.fetch()))

        self.page.route("**/v1/contacts/*/messages", hold)

    def release(self) -> None:
        for route, response in self.held:
            route.fulfill(response=response)
        self.held.clear()
        self.page.unroute("**/v1/contacts/*/messages")

    def _dialog(self, dialog: Any) -> None:
        self.dialogs.append(dialog.message)
        dialog.dismiss()

    def open(self) -> Any:
        return self.page.goto(signed_in_url(self.api_url, self.token))

    def shot(self, name: str, folder: Path) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        self.page.screenshot(path=str(folder / f"{name}.png"))

    def own_origin_only(self) -> None:
        assert self.foreign == [], f"requests to other origins: {self.foreign}"
        assert self.requests, "no request recorded: the route log is not working"
        ws_origin = "ws://" + urlsplit(self.origin).netloc + "/"
        assert self.sockets and all(u.startswith(ws_origin) for u in self.sockets), self.sockets


@pytest.fixture
def people(sandbox: tuple[str, dict[str, str]], tmp_path: Path) -> Iterator[dict[str, Person]]:  # noqa: F811
    bootstrap, env = sandbox
    folks = {n: Person(n, tmp_path, env, bootstrap) for n in ("alice", "bob")}
    try:
        for p in folks.values():
            p.up()
        yield folks
    finally:
        for p in folks.values():
            if p.proc is not None:
                p.proc.kill()
                p.proc.wait(timeout=10)


def add_contact(tab: Tab, their_id: str, name: str) -> None:
    tab.page.get_by_role("button", name="Add a contact").click()
    tab.page.fill("#add-ref", their_id)
    tab.page.fill("#add-name", name)
    tab.page.click("#add-submit")
    tab.page.wait_for_selector(f"#compose[aria-label='Message to {name}']")


def test_two_people_chat_in_the_browser(
    browser: Any, people: dict[str, Person], tmp_path: Path
) -> None:
    alice_p, bob_p = people["alice"], people["bob"]
    shots = Path(os.environ.get("BTCHAT_SCREENSHOTS") or tmp_path / "shots")
    alice, bob = Tab(browser, alice_p), Tab(browser, bob_p, scheme="dark")

    # The page: strict headers; the token moves from the fragment to sessionStorage.
    resp = alice.open()
    headers = resp.headers
    policy = headers["content-security-policy"]
    for part in ("default-src 'self'", "script-src 'self'", "frame-ancestors 'none'"):
        assert part in policy
    assert "unsafe-inline" not in policy and "unsafe-eval" not in policy
    assert f"ws://{urlsplit(alice.origin).netloc}" in policy
    assert headers["x-content-type-options"] == "nosniff"
    assert headers["referrer-policy"] == "no-referrer"
    alice.page.wait_for_selector("#conv-list .empty")
    assert "token" not in alice.page.url and alice.page.url.endswith("#/")
    stored = alice.page.evaluate("sessionStorage.getItem('btchat.token')")
    assert stored == alice.token
    bob.open()
    bob.page.wait_for_selector("#conv-list .empty")

    # Alice adds Bob, Bob adds Alice, each in their own browser.
    add_contact(alice, bob_p.id, "bob")
    alice.shot("add-contact-done-light", tmp_path)
    add_contact(bob, alice_p.id, "alice")

    # Alice writes; Enter sends. Bob sees it; Alice sees delivered, then read (Bob has
    # the conversation open, so his page marks it read).
    alice.page.fill("#compose", "hello bob")
    alice.page.press("#compose", "Enter")
    bob.page.wait_for_selector(".history .msg.in .text >> text=hello bob")
    alice.page.wait_for_selector(".history .msg.out .tick.t-read")

    # Bob types: Alice sees it; Shift+Enter is a new line, Enter sends both lines.
    bob.page.click("#compose")
    bob.page.keyboard.type("line one")
    alice.page.wait_for_selector(".typing >> text=is typing")
    bob.page.keyboard.press("Shift+Enter")
    bob.page.keyboard.type("line two")
    bob.page.keyboard.press("Enter")
    alice.page.wait_for_function(
        "() => [...document.querySelectorAll('.msg.in .text')]"
        ".some(e => e.textContent === 'line one\\nline two')"
    )
    bob.page.wait_for_selector(".history .msg.out .tick.t-read")
    assert alice.client.history("bob")[-1]["text"] == "line one\nline two"
    assert alice.page.text_content(".typing") == ""  # the message ended the typing

    # The reply to a send arrives after its delivered and read receipts (a busy
    # machine): the row still ends at read, never stuck at sent.
    alice.hold_send_replies()
    alice.page.fill("#compose", "late reply")
    alice.page.press("#compose", "Enter")
    bob.page.wait_for_selector(".history .msg.in .text >> text=late reply")
    for _ in range(300):  # wait_for_timeout, not sleep: it lets the routes run
        if alice.client.history("bob")[-1]["state"] == "read":
            break
        alice.page.wait_for_timeout(200)
    assert alice.client.history("bob")[-1]["state"] == "read"
    assert alice.held, "the send reply was not held"
    alice.release()
    late = alice.page.locator(".history .msg.out", has_text="late reply")
    late.locator(".tick.t-read").wait_for()
    alice.shot("conversation-light", shots)
    bob.shot("conversation-dark", shots)

    # A hostile message: rendered as text, runs nothing, breaks no layout.
    bob_p.cli("send", "alice", HOSTILE)
    alice.page.wait_for_selector(".msg.in .text >> text=onerror")
    found = alice.page.evaluate(
        """() => {
          const rows = [...document.querySelectorAll('.msg.in')];
          const row = rows[rows.length - 1];
          const text = row.querySelector('.text');
          const hist = document.querySelector('.history');
          return {
            content: text.textContent,
            marks: [...text.querySelectorAll('.ctl')].map(e => e.textContent),
            elements: [...text.querySelectorAll('*')].map(e => e.tagName),
            imgs: document.querySelectorAll('img').length,
            scripts: [...document.scripts].map(s => s.src),
            bdi: text.tagName + ':' + text.dir,
            rowWidth: row.getBoundingClientRect().width,
            histWidth: hist.getBoundingClientRect().width,
            pageOverflow: document.documentElement.scrollWidth
              - document.documentElement.clientWidth,
          };
        }"""
    )
    assert found["content"].startswith(HOSTILE_MARKUP)  # the markup, as characters
    assert found["content"].endswith(LONG_WORD)
    assert found["marks"] == ["U+001B", "U+001B", "U+202E"]  # ESC, ESC, RLO shown
    assert set(found["elements"]) == {"SPAN"}  # only our marks, nothing from the text
    assert found["imgs"] == 0
    assert all(s.startswith(alice.origin + "/app/") for s in found["scripts"])
    assert found["bdi"] == "BDI:auto"
    assert found["rowWidth"] <= found["histWidth"] + 1  # the 16 KiB word wraps
    assert found["pageOverflow"] <= 0
    assert alice.dialogs == [] and alice.errors == []
    alice.page.evaluate(
        "() => [...document.querySelectorAll('.msg.in')].pop().scrollIntoView({block: 'start'})"
    )
    alice.shot("hostile-message-light", shots)

    # History pages in on scroll-up.
    for i in range(60):
        alice.client.send_message("bob", f"filler {i}")
    alice.page.reload()
    alice.page.wait_for_selector(".msg.out .text >> text=filler 59")
    assert alice.page.locator(".history .msg").count() == 50
    alice.page.evaluate("document.querySelector('.history').scrollTop = 0")
    total = len(alice.client.history("bob", limit=500))
    assert total == 64  # hello, the two lines, the late one, the hostile one, 60 fillers
    alice.page.wait_for_function(
        "n => document.querySelectorAll('.history .msg').length === n", arg=total
    )
    assert alice.page.text_content(".history .msg .text") == "hello bob"  # oldest first

    # The other screens, for the record (and so they must render without errors).
    alice.page.click("text=Details")
    alice.page.wait_for_selector("dl >> text=Verified")
    alice.shot("contact-details-light", shots)
    alice.page.get_by_role("button", name="Status and settings").click()
    alice.page.wait_for_selector("#my-id")
    assert alice.page.text_content("#my-id") == alice_p.id
    qr_drawn = "() => (document.querySelector('canvas.qr') || {}).width > 0"
    alice.page.wait_for_function(qr_drawn)
    alice.shot("status-light", shots)
    bob.page.get_by_role("button", name="Status and settings").click()
    bob.page.wait_for_selector("#my-id")
    bob.page.wait_for_function(qr_drawn)
    bob.shot("status-dark", shots)
    bob.page.get_by_role("button", name="Channels").click()
    bob.page.fill("input[aria-label='New channel name']", "garden club")
    bob.page.click("form[aria-label='Create a channel'] button")
    bob.page.wait_for_selector(".screen-head h2 >> text=garden club")
    bob.page.fill("textarea[aria-label='Post to the channel']", "first post")
    bob.page.press("textarea[aria-label='Post to the channel']", "Enter")
    bob.page.wait_for_selector(".history .text >> text=first post")
    bob.page.wait_for_selector(".members li >> text=(you)")
    bob.shot("channel-dark", shots)

    for tab in (alice, bob):
        tab.own_origin_only()
        assert tab.errors == [], tab.errors
        tab.context.close()


def test_theme_toggle_and_no_token(browser: Any, people: dict[str, Person]) -> None:
    alice = Tab(browser, people["alice"])
    # Without the fragment the page asks for `btchat open`, and the API refuses it.
    alice.page.goto(alice.origin + "/")
    alice.page.wait_for_selector("h2 >> text=Not signed in")
    alice.open()
    alice.page.wait_for_selector("#conv-list .empty")
    dark = "getComputedStyle(document.body).backgroundColor"
    light_bg = alice.page.evaluate(dark)
    alice.page.click("#theme-toggle")
    assert alice.page.evaluate("document.documentElement.dataset.theme") == "dark"
    assert alice.page.evaluate(dark) != light_bg
    alice.page.keyboard.press("Escape")  # keyboard handler runs without error
    alice.own_origin_only()
    assert alice.errors == []
    alice.context.close()
