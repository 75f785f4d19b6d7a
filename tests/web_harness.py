"""The browser side of the web app tests: headless Debian chromium driven by Playwright,
one :class:`Tab` per person (its own context, recording every request), two real
daemons on a loopback sandbox swarm (``people``), and the steps tests share.

A test module imports ``browser`` and ``people`` from here, and ``sandbox`` from
``test_messenger_e2e`` (the fixture ``people`` builds on), so pytest finds them.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from harness import skip_unless_ci
from test_messenger_e2e import Person, sandbox  # noqa: F401

from btchat.api.client import ApiClient, read_api_files
from btchat.cli.webopen import signed_in_url

__all__ = [
    "CHROMIUM",
    "TIMEOUT_MS",
    "Tab",
    "add_contact",
    "browser",
    "fetch_as_page",
    "launched",
    "people",
]

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",  # as root, chromium's sandbox cannot start
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
]
TIMEOUT_MS = 60_000


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with launched() as b:
        yield b


@contextlib.contextmanager
def launched(*extra_args: str) -> Iterator[Any]:
    """Headless chromium (``extra_args``: e.g. a fake camera), or a skip saying why."""
    if os.geteuid() != 0:
        skip_unless_ci("the web app tests run chromium as root (CI); not root here")
    if not os.access(CHROMIUM, os.X_OK):
        skip_unless_ci(f"{CHROMIUM} is missing (scripts/setup installs Debian chromium)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        skip_unless_ci("the playwright package is missing (pip install -e '.[test]')")
    with sync_playwright() as pw:
        b = pw.chromium.launch(
            executable_path=CHROMIUM, headless=True, args=[*CHROMIUM_ARGS, *extra_args]
        )
        try:
            yield b
        finally:
            b.close()


class Tab:
    """One person's browser context and page, recording every request it makes."""

    def __init__(self, browser: Any, person: Person, scheme: str = "light", **context: Any) -> None:
        """``context``: more options for Playwright's ``new_context`` (``bypass_csp``
        for the accessibility check, ``permissions`` for notifications)."""
        self.api_url, self.token = read_api_files(person.dir)
        self.origin = self.api_url.rstrip("/")
        self.client = ApiClient(self.api_url, self.token)
        self.context = browser.new_context(
            color_scheme=scheme, viewport={"width": 1100, "height": 720}, **context
        )
        self.requests: list[str] = []
        self.foreign: list[str] = []
        self.sockets: list[str] = []
        self.dialogs: list[str] = []
        self.errors: list[str] = []
        self.context.route("**/*", self._route)
        self.held: list[tuple[Any, Any]] = []  # (route, response) of replies held back
        self.held_patterns: list[str] = []
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
        self.hold_replies("**/v1/contacts/*/messages", "POST")

    def hold_replies(self, pattern: str, method: str) -> None:
        """From now on the daemon answers ``method`` requests to ``pattern`` at once, but
        the page sees the answers only on ``release()``."""

        def hold(route: Any) -> None:
            if route.request.method != method:
                route.fallback()
                return
            self.requests.append(route.request.url)
            self.held.append((route, fetch_as_page(route)))

        self.page.route(pattern, hold)
        self.held_patterns.append(pattern)

    def release(self) -> None:
        for route, response in self.held:
            route.fulfill(response=response)
        self.held.clear()
        for pattern in self.held_patterns:
            self.page.unroute(pattern)
        self.held_patterns.clear()

    def tap_events(self) -> None:
        """Pass /v1/events through the test (call before ``open``), so that
        :meth:`drop_events` can lose events and :meth:`cut_events` the connection."""
        self.deaf = False
        self.event_sockets: list[Any] = []

        def tap(ws: Any) -> None:
            server = ws.connect_to_server()
            server.on_message(lambda m: None if self.deaf else ws.send(m))
            self.event_sockets.append(ws)

        self.page.route_web_socket("**/v1/events*", tap)

    def drop_events(self) -> None:
        """From now on events from the daemon never reach the page (a network hiccup)."""
        self.deaf = True

    def cut_events(self) -> None:
        """Close the page's event socket; it reconnects, and hears events again."""
        self.deaf = False
        self.event_sockets[-1].close()

    def _dialog(self, dialog: Any) -> None:
        self.dialogs.append(dialog.message)
        dialog.dismiss()

    def open(self) -> Any:
        return self.page.goto(signed_in_url(self.api_url, self.token))

    def status_screen(self) -> None:
        """Open the page signed in and go to "Status and settings"."""
        self.open()
        self.page.get_by_role("button", name="Status and settings").click()

    def shot(self, name: str, folder: Path) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        self.page.screenshot(path=str(folder / f"{name}.png"))

    def own_origin_only(self) -> None:
        assert self.foreign == [], f"requests to other origins: {self.foreign}"
        assert self.requests, "no request recorded: the route log is not working"
        ws_origin = "ws://" + urlsplit(self.origin).netloc + "/"
        assert self.sockets and all(u.startswith(ws_origin) for u in self.sockets), self.sockets
        # Past the fragment of the first step, the token is in no URL, the socket's neither.
        leaked = [u for u in self.requests + self.sockets if self.token in u or "token=" in u]
        assert leaked == [], leaked


def fetch_as_page(route: Any) -> Any:
    """``route.fetch()`` for a request of the page: Playwright fetches outside the
    browser's network stack, which is what adds Fetch Metadata, so say what the browser
    would (the session cookie counts only on same-origin requests)."""
    return route.fetch(headers={**route.request.headers, "sec-fetch-site": "same-origin"})


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
            p.kill()


def friends_by_api(browser: Any, people: dict[str, Person]) -> tuple[Tab, ApiClient]:
    """Alice's tab (not yet opened) and Bob's API client, each the other's contact, made
    through the API rather than the page (for tests about something else)."""
    alice_p, bob_p = people["alice"], people["bob"]
    alice = Tab(browser, alice_p)
    alice.client.add_contact(bob_p.id, "bob")
    bob = ApiClient(*read_api_files(bob_p.dir))
    bob.add_contact(alice_p.id, "alice")
    return alice, bob


def add_contact(tab: Tab, their_id: str, name: str) -> None:
    tab.page.get_by_role("button", name="Add a contact").click()
    tab.page.fill("#add-ref", their_id)
    tab.page.fill("#add-name", name)
    tab.page.click("#add-submit")
    tab.page.wait_for_selector(f"#compose[aria-label='Message to {name}']")
