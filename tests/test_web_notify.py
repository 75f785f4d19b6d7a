"""Browser notifications in the web app, in a real browser against two real daemons
(``web_harness.py``). The context is granted the "notifications" permission and
``window.Notification`` is a stub (an init script) that records each notification and
each permission request; another init script lets the test hide the page
(``document.visibilityState``). The page never asks on load, asks when "Notify me" is
switched on, then shows the petname and a plain, short preview of each message and
file offer that arrives while it is hidden or shows another screen, and nothing for the
conversation in view; a click on one opens that conversation.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from test_messenger_e2e import Person, sandbox  # noqa: F401
from web_harness import Tab, browser, people  # noqa: F401

from btchat.api.client import ApiClient, read_api_files

pytestmark = pytest.mark.slow

STUB = """(() => {
  window.__notes = [];
  window.__asked = 0;
  window.__hidden = false;
  class Recorded {
    constructor(title, options = {}) {
      this.title = title;
      this.body = options.body;
      this.tag = options.tag;
      this.closed = false;
      window.__notes.push(this);
    }
    close() { this.closed = true; }
    static requestPermission() {
      window.__asked += 1;
      Recorded.permission = 'granted';
      localStorage.setItem('test.granted', '1'); // as the browser remembers it
      return Promise.resolve('granted');
    }
  }
  Recorded.permission = localStorage.getItem('test.granted') ? 'granted' : 'default';
  window.Notification = Recorded;
  Object.defineProperty(Document.prototype, 'visibilityState', {
    configurable: true, get: () => (window.__hidden ? 'hidden' : 'visible'),
  });
  Object.defineProperty(Document.prototype, 'hidden', {
    configurable: true, get: () => window.__hidden,
  });
  window.__setHidden = (on) => {
    window.__hidden = on;
    document.dispatchEvent(new Event('visibilitychange'));
  };
})();"""

NOTES = "() => window.__notes.map(n => ({title: n.title, body: n.body, tag: n.tag}))"
#: Controls, a bidi override and markup: none of it may reach a notification.
HOSTILE = "<b>bold</b> <a href=x>x</a> &amp; \x1b[31mred\x1b[0m \u202egnp.exe\u200b " + "y" * 300
BAD_CHARS = set("<>&\x1b\u202e\u200b")


def wait_notes(tab: Tab, n: int) -> list[dict[str, Any]]:
    tab.page.wait_for_function("n => window.__notes.length >= n", arg=n)
    return tab.page.evaluate(NOTES)


def test_notifications_when_hidden_or_elsewhere(
    browser: Any,  # noqa: F811
    people: dict[str, Person],  # noqa: F811
    tmp_path: Path,
) -> None:
    alice_p, bob_p = people["alice"], people["bob"]
    bob = ApiClient(*read_api_files(bob_p.dir))
    alice = Tab(browser, alice_p, permissions=["notifications"])
    alice.context.add_init_script(STUB)
    bob_card = alice.client.add_contact(bob_p.id, "bob & <co>")  # a petname with markup
    bob.add_contact(alice_p.id, "alice")
    pk = bob_card["public_key"]
    alice.open()
    page = alice.page
    page.wait_for_selector(".conv[data-key]")

    # Off until switched on; the page never asks on load.
    bob.send_message("alice", "before the switch")
    page.wait_for_selector(".conv >> text=before the switch")
    assert page.evaluate("window.__asked") == 0
    assert page.evaluate(NOTES) == []

    page.get_by_role("button", name="Status and settings").click()
    page.get_by_label("Notify me of new messages and file offers").check()
    page.wait_for_selector("#notify-note >> text=On:")
    assert page.evaluate("window.__asked") == 1
    assert page.evaluate("localStorage.getItem('btchat.notify')") == "on"

    # Visible, but another screen is shown: a notification; the title is the petname
    # (its markup characters as lookalikes), the body a short plain preview.
    bob.send_message("alice", HOSTILE)
    (note,) = wait_notes(alice, 1)
    assert note["title"] == "bob \uff06 \u2039co\u203a"
    assert note["tag"] == f"btchat-{pk}"
    assert not BAD_CHARS & set(note["body"]), note["body"]
    assert note["body"].startswith("\u2039b\u203abold\u2039/b\u203a")
    assert len(note["body"]) <= 120 and note["body"].endswith("\u2026")

    # A click on it opens that conversation.
    page.evaluate("window.__notes[0].onclick()")
    page.wait_for_selector("#compose[aria-label='Message to bob & <co>']")
    assert page.url.endswith(f"#/chat/{pk}")
    assert page.evaluate("window.__notes[0].closed")

    # The conversation in view and the tab visible: nothing.
    bob.send_message("alice", "you see this one")
    page.wait_for_selector(".history .msg.in .text >> text=you see this one")
    assert len(page.evaluate(NOTES)) == 1

    # The same conversation, the tab hidden: a message, then a file offer.
    page.evaluate("window.__setHidden(true)")
    bob.send_message("alice", "while hidden")
    assert wait_notes(alice, 2)[1]["body"] == "while hidden"
    offered = tmp_path / "notes.txt"
    offered.write_text("eleven byte")
    bob.send_file("alice", str(offered))
    assert wait_notes(alice, 3)[2]["body"] == "File: notes.txt (11 B)"
    page.wait_for_selector(".history .msg.file.in")
    assert len(page.evaluate(NOTES)) == 3  # one for the offer, not one per event

    # Switched off (remembered across a reload): nothing, and never asked again.
    page.evaluate("window.__setHidden(false)")
    page.get_by_role("button", name="Status and settings").click()
    page.get_by_label("Notify me of new messages and file offers").uncheck()
    page.reload()
    page.wait_for_selector(".conv[data-key]")
    page.get_by_role("button", name="Status and settings").click()
    assert not page.get_by_label("Notify me of new messages and file offers").is_checked()
    bob.send_message("alice", "after the switch")
    page.wait_for_selector(".conv >> text=after the switch")
    page.wait_for_timeout(300)
    assert page.evaluate(NOTES) == [] and page.evaluate("window.__asked") == 0
    assert alice.errors == [], alice.errors
    alice.own_origin_only()
    alice.context.close()
