"""The web app in a real browser (headless Debian chromium, driven by Playwright) against
two real daemons on a loopback sandbox swarm: Alice adds Bob, they chat both ways with
receipts and typing, a hostile message renders as text, and the page never talks to
any origin but its own daemon's.

Screenshots of the main screens, light and dark, go to ``BTCHAT_SCREENSHOTS`` (a folder)
when it is set: ``docs/screenshots/`` is made that way.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from test_messenger_e2e import Person, sandbox  # noqa: F401
from web_harness import Tab, add_contact, browser, people  # noqa: F401

from btchat.api.facade import MAX_TEXT_BYTES

pytestmark = pytest.mark.slow

#: The hostile message: markup, a terminal escape, a bidi override, and a word as long
#: as the rest of the 16 KiB a message may hold.
HOSTILE_MARKUP = "<img src=x onerror=alert(1)><script>alert(2)</script>"
_HOSTILE_HEAD = f"{HOSTILE_MARKUP} \x1b[31mred\x1b[0m \u202egnp.exe "
LONG_WORD = "W" * (MAX_TEXT_BYTES - len(_HOSTILE_HEAD.encode()))
HOSTILE = _HOSTILE_HEAD + LONG_WORD


def test_two_people_chat_in_the_browser(
    browser: Any,  # noqa: F811
    people: dict[str, Person],  # noqa: F811
    tmp_path: Path,
) -> None:
    alice_p, bob_p = people["alice"], people["bob"]
    shots = Path(os.environ.get("BTCHAT_SCREENSHOTS") or tmp_path / "shots")
    alice, bob = Tab(browser, alice_p), Tab(browser, bob_p, scheme="dark")

    # The page: strict headers; the token goes from the fragment into an HttpOnly cookie.
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
    kept = alice.page.evaluate("JSON.stringify([{...sessionStorage}, {...localStorage}])")
    assert alice.token not in kept and "token" not in kept  # no script can find it
    assert alice.page.evaluate("document.cookie") == ""  # HttpOnly: not even the page
    (cookie,) = alice.context.cookies(alice.origin)
    assert cookie["httpOnly"] and cookie["sameSite"] == "Strict" and cookie["expires"] == -1
    assert alice.token not in cookie["value"]
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


def test_theme_toggle_and_no_token(browser: Any, people: dict[str, Person]) -> None:  # noqa: F811
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
