"""The web app's long history, in a real browser against a real daemon
(``web_harness.py``): a conversation far longer than the page keeps (``MAX_ROWS`` in
app.js) scrolls to its first message and back to its last, the page never holding more
than that many rows, every message shown once and in order on the way; a message that
arrives while the newest rows are dropped is there when scrolled back down.
"""

from __future__ import annotations

from typing import Any

import pytest
from test_messenger_e2e import Person, sandbox  # noqa: F401
from web_harness import browser, friends_by_api, people  # noqa: F401

pytestmark = pytest.mark.slow

MAX_ROWS = 300
TOTAL = 800

#: Lamports of the rows in the page, in page order.
ROWS = (
    "() => [...document.querySelectorAll('.history > li[data-lamport]')]"
    ".map(e => Number(e.dataset.lamport))"
)
TEXTS = "() => [...document.querySelectorAll('.history .msg .text')].map(e => e.textContent)"


def test_a_long_history_keeps_a_window_of_rows(
    browser: Any,  # noqa: F811
    people: dict[str, Person],  # noqa: F811
) -> None:
    alice, bob = friends_by_api(browser, people)
    for i in range(TOTAL):
        alice.client.send_message("bob", f"m {i}")
    alice.open()
    page = alice.page
    page.click(".conv[data-key]")
    page.wait_for_selector(f".history .msg .text >> text=m {TOTAL - 1}")

    seen: set[str] = set()
    # Up to the first message, a page at a time.
    for _ in range(TOTAL // 50 + 5):
        texts = page.evaluate(TEXTS)
        seen.update(texts)
        lamports = page.evaluate(ROWS)
        assert len(lamports) <= MAX_ROWS
        assert lamports == sorted(lamports) and len(set(lamports)) == len(lamports)
        if texts[0] == "m 0":
            break
        first = texts[0]
        page.evaluate("document.querySelector('.history').scrollTop = 0")
        page.wait_for_function(
            "f => document.querySelector('.history .msg .text').textContent !== f", arg=first
        )
    assert page.evaluate(TEXTS)[0] == "m 0"
    assert seen == {f"m {i}" for i in range(TOTAL)}
    assert f"m {TOTAL - 1}" not in page.evaluate(TEXTS)  # the newest were dropped

    # Bob writes meanwhile: the live end is not in the page, the row comes later.
    for _ in range(300):  # all of Alice's in first: Bob's Lamport clock then follows them
        if [m["text"] for m in bob.history("alice", limit=1)] == [f"m {TOTAL - 1}"]:
            break
        page.wait_for_timeout(200)
    bob.send_message("alice", "while you read the start")
    page.wait_for_selector(".conv >> text=while you read the start")

    # Back down to the last one.
    for _ in range(TOTAL // 50 + 5):
        texts = page.evaluate(TEXTS)
        lamports = page.evaluate(ROWS)
        assert len(lamports) <= MAX_ROWS
        assert lamports == sorted(lamports) and len(set(lamports)) == len(lamports)
        if texts[-1] == "while you read the start":
            break
        last = texts[-1]
        page.evaluate("(h => h.scrollTop = h.scrollHeight)(document.querySelector('.history'))")
        page.wait_for_function(
            "l => [...document.querySelectorAll('.history .msg .text')].pop().textContent !== l",
            arg=last,
        )
    texts = page.evaluate(TEXTS)
    assert texts[-2:] == [f"m {TOTAL - 1}", "while you read the start"]
    assert alice.errors == [], alice.errors
    alice.context.close()
