"""File transfer in the web app, in a real browser against two real daemons
(``web_harness.py``): Alice attaches a file with the picker and drops two more on the
conversation; Bob sees the offers, rejects one, accepts the others, watches the progress
bar move (Alice holds the first one paused until she resumes), saves them and gets the
same bytes; Alice cancels one more while Bob's page misses the events, and it catches up
when its socket reconnects. A hostile file name and failure reason render as
text, and the token never appears in a URL.

Screenshots (light and dark) go to ``BTCHAT_SCREENSHOTS`` when it is set.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

import pytest
from test_messenger_e2e import Person, sandbox  # noqa: F401
from web_harness import Tab, add_contact, browser, fetch_as_page, people  # noqa: F401

pytestmark = pytest.mark.slow

#: A name no honest daemon sends (the sender's makes names safe; a hostile one need
#: not): markup, a terminal escape, a bidi override that would flip "exe.png".
HOSTILE_NAME = "<img src=x onerror=alert(1)>\x1b[31m\u202egnp.exe"
HOSTILE_REASON = "<b>disk</b> on \x1b]8;;evil\x07fire"

#: Every aria-valuenow a page shows, in order, per transfer ("upload" for uploads).
WATCH_PROGRESS = """() => {
  window.seen = {};
  const note = (el) => {
    const card = el.closest('[data-transfer]');
    const key = card ? card.dataset.transfer : el.closest('[data-upload]') ? 'upload' : null;
    if (key) (window.seen[key] ||= []).push(Number(el.getAttribute('aria-valuenow')));
  };
  new MutationObserver((muts) => {
    for (const m of muts) for (const n of m.addedNodes) {
      if (n.nodeType !== 1) continue;
      for (const el of [n, ...n.querySelectorAll('[role=progressbar]')]) {
        if (el.matches && el.matches('[role=progressbar]')) note(el);
      }
    }
  }).observe(document.getElementById('main'), {childList: true, subtree: true});
}"""

#: Drop files on the conversation the way a browser does: dragover, then drop.
DROP = """(files) => {
  const dt = new DataTransfer();
  for (const [name, text] of files) dt.items.add(new File([text], name));
  const main = document.getElementById('main');
  for (const type of ['dragenter', 'dragover', 'drop']) {
    main.dispatchEvent(new DragEvent(type, {dataTransfer: dt, bubbles: true, cancelable: true}));
  }
}"""


def card(tab: Tab, tid: str) -> Any:
    return tab.page.locator(f"[data-transfer='{tid}']").first


def offer_card(tab: Tab, name: str) -> Any:
    return tab.page.locator(".history [data-transfer]", has_text=name)


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def save(tab: Tab, tid: str) -> tuple[str, bytes]:
    with tab.page.expect_download() as info:
        card(tab, tid).get_by_role("button", name="Save").click()
    download = info.value
    return download.suggested_filename, Path(download.path()).read_bytes()


def test_files_in_the_browser(browser: Any, people: dict[str, Person], tmp_path: Path) -> None:  # noqa: F811
    alice_p, bob_p = people["alice"], people["bob"]
    shots = Path(os.environ.get("BTCHAT_SCREENSHOTS") or tmp_path / "shots")
    alice, bob = Tab(browser, alice_p), Tab(browser, bob_p, scheme="dark")
    bob.tap_events()
    alice.open()
    bob.open()
    alice.page.wait_for_selector("#conv-list .empty")
    bob.page.wait_for_selector("#conv-list .empty")
    add_contact(alice, bob_p.id, "bob")
    add_contact(bob, alice_p.id, "alice")
    for tab in (alice, bob):
        tab.page.evaluate(WATCH_PROGRESS)

    # Alice picks a file: it goes up to her daemon, then is offered. She pauses the
    # offer, so nothing flows until she resumes.
    big = os.urandom(6 * 1024 * 1024 + 321)
    assert alice.page.get_by_role("button", name="Attach files").is_visible()
    alice.page.set_input_files(
        "#attach-input",
        files=[{"name": "holiday.bin", "mimeType": "application/octet-stream", "buffer": big}],
    )
    sent = alice.page.locator(".history .msg.out [data-transfer]", has_text="holiday.bin")
    sent.get_by_role("button", name="Pause").click()
    sent.locator("text=Paused").wait_for()
    tid = sent.get_attribute("data-transfer")
    assert tid and alice.client.get_transfer(tid)["state"] == "paused"
    uploaded = alice.page.evaluate("window.seen.upload")
    assert uploaded and uploaded == sorted(uploaded) and uploaded[-1] == 100, uploaded

    # Bob sees the offer: name, human size, Accept and Reject.
    got = offer_card(bob, "holiday.bin")
    got.locator("text=Offered to you").wait_for()
    assert got.locator(".file-size").text_content() == "6.0 MB"
    assert got.get_attribute("data-transfer") == tid
    bob.page.wait_for_selector("#files-count >> text=1")  # waiting offers, on the button
    got.get_by_role("button", name="Accept").click()
    card(bob, tid).locator("text=Receiving").wait_for()
    bar = card(bob, tid).get_by_role("progressbar")
    assert bar.get_attribute("aria-valuenow") == "0"
    assert "%" in (card(bob, tid).locator(".file-detail").text_content() or "")
    assert card(bob, tid).get_by_role("button", name="Pause").is_visible()
    assert bob.page.text_content("#files-activity") == "\u2195 0%"  # seen from anywhere
    alice.shot("files-paused-light", shots)
    bob.shot("files-receiving-dark", shots)

    # Alice resumes: the bar moves to the end, both sides say so.
    card(alice, tid).get_by_role("button", name="Resume").click()
    card(bob, tid).locator("text=Received").wait_for()
    card(alice, tid).locator("text=Delivered").wait_for()
    assert bob.page.text_content("#sr-status") == "holiday.bin: Received"  # said once
    seen = bob.page.evaluate(f"window.seen[{json.dumps(tid)}]")
    assert seen and seen == sorted(seen), seen  # never goes back
    assert seen[0] == 0 and all(0 <= v <= 100 for v in seen)
    bob.page.wait_for_selector("#files-activity", state="hidden")
    name, data = save(bob, tid)
    assert name == "holiday.bin" and sha256(data) == sha256(big)

    # Three more, dropped on the conversation: a small one (inline: it arrives with its
    # message, nothing to accept); of the two larger, Bob rejects one, takes the other.
    notes, spam = "dropped notes\n" * 2000, "no thanks " * 2000  # above MAX_INLINE
    alice.page.evaluate(DROP, [["notes.txt", notes], ["spam.txt", spam], ["hi.txt", "hi!"]])
    offer_card(bob, "hi.txt").locator("text=Received").wait_for()
    offer_card(alice, "hi.txt").locator("text=Sent with the message").wait_for()
    assert offer_card(bob, "hi.txt").get_by_role("button", name="Accept").count() == 0
    assert save(bob, offer_card(bob, "hi.txt").get_attribute("data-transfer")) == (
        "hi.txt",
        b"hi!",
    )
    for fname in ("notes.txt", "spam.txt"):
        offer_card(bob, fname).locator("text=Offered to you").wait_for()
    spam = offer_card(bob, "spam.txt")
    spam_id = spam.get_attribute("data-transfer")
    spam.get_by_role("button", name="Reject").click()
    card(bob, spam_id).locator("text=You declined it").wait_for()
    card(alice, spam_id).locator("text=They declined it").wait_for()
    notes_id = offer_card(bob, "notes.txt").get_attribute("data-transfer")
    offer_card(bob, "notes.txt").get_by_role("button", name="Accept").click()
    card(bob, notes_id).locator("text=Received").wait_for()
    assert save(bob, notes_id) == ("notes.txt", notes.encode())
    # Alice thinks better of one and cancels it while Bob's page hears nothing (events
    # lost): when its socket comes back, the page reloads the transfers and shows it.
    alice.page.set_input_files(
        "#attach-input",
        files=[{"name": "oops.txt", "mimeType": "text/plain", "buffer": b"x" * 20000}],
    )
    oops = offer_card(bob, "oops.txt")
    oops.locator("text=Offered to you").wait_for()
    oops_id = oops.get_attribute("data-transfer")
    bob.drop_events()
    offer_card(alice, "oops.txt").get_by_role("button", name="Cancel").click()
    for _ in range(150):
        if bob.client.get_transfer(oops_id)["state"] == "cancelled":
            break
        bob.page.wait_for_timeout(100)
    assert bob.client.get_transfer(oops_id)["state"] == "cancelled"
    assert oops.get_by_role("button", name="Accept").is_visible()  # the event was lost
    bob.cut_events()
    oops.locator("text=Cancelled").wait_for()
    assert oops.get_by_role("button").count() == 0
    alice.page.get_by_role("button", name="Attach files").focus()  # keyboard reachable
    assert alice.page.evaluate("document.activeElement.id") == "attach"
    alice.shot("files-conversation-light", shots)
    bob.shot("files-conversation-dark", shots)

    # The Files screen lists every transfer; a hostile name and reason (as a hostile
    # contact's daemon could send them) are text there.
    def with_hostile(route: Any) -> None:
        resp = fetch_as_page(route)
        body = resp.json()
        fake = dict(body["transfers"][0], id="ee" * 16, name=HOSTILE_NAME, state="failed")
        fake["error"] = HOSTILE_REASON
        body["transfers"].append(fake)
        route.fulfill(response=resp, body=json.dumps(body))

    bob.page.route("**/v1/files", with_hostile)
    bob.page.get_by_role("button", name="File transfers").click()
    hostile = bob.page.locator(f".transfer-list [data-transfer='{'ee' * 16}']")
    hostile.wait_for()
    assert bob.page.locator(".transfer-list .transfer").count() == 6
    found = hostile.evaluate(
        """(el) => ({
          name: el.querySelector('.file-name').textContent,
          tag: el.querySelector('.file-name').tagName + ':' + el.querySelector('.file-name').dir,
          marks: [...el.querySelectorAll('.ctl')].map(e => e.textContent),
          reason: el.querySelector('.file-error').textContent,
          elements: [...el.querySelectorAll('.file-name *, .file-error *')]
            .map(e => e.tagName + '.' + e.className),
          imgs: document.querySelectorAll('img').length,
        })"""
    )
    assert found["name"].startswith("<img src=x onerror=alert(1)>")
    assert found["tag"] == "BDI:auto"
    assert found["marks"] == ["U+001B", "U+202E", "U+001B", "U+0007"]
    assert found["reason"].startswith("Reason: <b>disk</b>")
    assert set(found["elements"]) <= {"SPAN.ctl", "BDI."}
    assert found["imgs"] == 0
    assert hostile.get_by_role("button").count() == 0  # a failed transfer has no actions
    bob.shot("files-screen-dark", shots)
    bob.page.unroute("**/v1/files")
    alice.page.get_by_role("button", name="File transfers").click()
    alice.page.wait_for_selector(".transfer-list .transfer >> text=Delivered")
    alice.shot("files-screen-light", shots)

    for tab in (alice, bob):
        tab.own_origin_only()  # no URL carries the token
        assert tab.errors == [] and tab.dialogs == [], (tab.errors, tab.dialogs)
        tab.context.close()
