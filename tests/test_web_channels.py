"""Channels in the web app (issue 12) with two real daemons: an invite-only channel made
and joined in the page, people named by petname (never a hex prefix for a contact), a
private message to one member, and the owner removing a member, which the removed
member's open page shows at once (the ``channel_removed`` event), not after a reload;
and a file posted in a channel from the page, fetched by another member and saved
(issue 11), its bytes the same. A screen chosen while the page is still loading is not
drawn a second time over what the user typed into it (CI saw a typed channel name wiped)."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any

from test_messenger_e2e import Person, sandbox  # noqa: F401
from web_harness import Tab, browser, friends_by_api, people  # noqa: F401


def shown(tab: Tab, selector: str) -> None:
    """Wait for ``selector``, failing at once with what the page said if it said an error."""
    found = tab.page.wait_for_selector(f"{selector}, .notice.error")
    assert found is not None
    assert "notice" not in (found.get_attribute("class") or ""), found.text_content()


def test_invite_only_channel_names_private_message_and_removal(
    browser: Any,  # noqa: F811
    people: dict[str, Person],  # noqa: F811
) -> None:
    alice, _ = friends_by_api(browser, people)
    bob = Tab(browser, people["bob"], scheme="dark")
    alice.open()
    bob.open()

    bob.page.get_by_role("button", name="Channels").click()
    bob.page.fill("input[aria-label='New channel name']", "book club")
    bob.page.check("input[aria-label='Invite only']")
    bob.page.click("form[aria-label='Create a channel'] button")
    shown(bob, ".screen-head h2:has-text('book club')")
    bob.page.fill("input[aria-label='ID to add as a member']", people["alice"].id)
    bob.page.click("form[aria-label='Add a member'] button")
    link = bob.page.input_value("input[aria-label='Channel link']")

    alice.page.get_by_role("button", name="Channels").click()
    alice.page.fill("form[aria-label='Join a channel'] input", link)
    alice.page.click("form[aria-label='Join a channel'] button")
    shown(alice, ".screen-head h2:has-text('book club')")

    bob.page.fill("textarea[aria-label='Post to the channel']", "welcome <b>all</b>")
    bob.page.press("textarea[aria-label='Post to the channel']", "Enter")
    alice.page.wait_for_selector(".history .msg.in .text >> text=welcome <b>all</b>")
    assert alice.page.text_content(".history .msg.in .author") == "bob"  # her petname
    assert alice.page.locator(".history b").count() == 0  # text, never HTML

    # A private message to bob, chosen in the member list; then back to everyone.
    alice.page.wait_for_selector(".members li >> text=bob")
    alice.page.click(".members li:has-text('bob') >> text=Private message")
    alice.page.wait_for_selector(".private-to >> text=Private to bob")
    alice.page.fill("textarea[aria-label='Private message to the member']", "just for you")
    alice.page.press("textarea[aria-label='Private message to the member']", "Enter")
    bob.page.wait_for_selector(".history .msg.in:has-text('just for you') .meta >> text=private")
    assert bob.page.text_content(".history .msg.in:has-text('just for you') .author") == "alice"

    # The owner removes alice, asked twice; her open page says so without a reload.
    bob.page.wait_for_selector(".members li:has-text('alice') >> text=Remove")
    bob.page.click(".members li:has-text('alice') >> text=Remove\u2026")
    bob.page.click(".members li:has-text('alice') button.danger")
    rows = "[...document.querySelectorAll('.members li')]"
    gone = f"() => !{rows}.some(li => /alice/.test(li.innerText))"
    bob.page.wait_for_function(gone)
    alice.page.wait_for_selector("text=The owner removed you from this channel")
    assert alice.page.locator("textarea[aria-label='Post to the channel']").count() == 0

    for tab in (alice, bob):
        tab.own_origin_only()
        assert tab.errors == [], tab.errors
        tab.context.close()


def test_a_channel_name_typed_while_the_page_loads_is_not_wiped(
    browser: Any,  # noqa: F811
    people: dict[str, Person],  # noqa: F811
) -> None:
    friends_by_api(browser, people)
    bob = Tab(browser, people["bob"])
    bob.hold_replies("**/v1/contacts", "GET")  # the page stays loading until released
    bob.open()
    for _ in range(400):
        if bob.held:
            break
        bob.page.wait_for_timeout(50)
    assert bob.held, "the page never asked for its contacts"
    bob.page.get_by_role("button", name="Channels").click()
    name = bob.page.locator("input[aria-label='New channel name']")
    typed_early = name.count() == 1  # drawn before the page had loaded
    if typed_early:
        name.fill("photos")
    bob.release()
    bob.page.wait_for_selector("#conv-list >> text=alice")  # loaded
    bob.page.wait_for_timeout(300)  # what ran after loading has run
    if typed_early:
        assert name.input_value() == "photos"
    else:
        name.fill("photos")
    bob.page.click("form[aria-label='Create a channel'] button")
    shown(bob, ".screen-head h2:has-text('photos')")
    bob.own_origin_only()
    assert bob.errors == [], bob.errors
    bob.context.close()


def test_a_file_posted_in_a_channel_is_fetched_and_saved(
    browser: Any,  # noqa: F811
    people: dict[str, Person],  # noqa: F811
) -> None:
    alice, _ = friends_by_api(browser, people)
    bob = Tab(browser, people["bob"])
    alice.open()
    bob.open()
    bob.page.get_by_role("button", name="Channels").click()
    bob.page.fill("input[aria-label='New channel name']", "photos")
    bob.page.click("form[aria-label='Create a channel'] button")
    shown(bob, ".screen-head h2:has-text('photos')")
    link = bob.page.input_value("input[aria-label='Channel link']")
    alice.page.get_by_role("button", name="Channels").click()
    alice.page.fill("form[aria-label='Join a channel'] input", link)
    alice.page.click("form[aria-label='Join a channel'] button")
    shown(alice, ".screen-head h2:has-text('photos')")
    alice.page.wait_for_selector(".members li >> text=bob")  # linked to bob

    data = os.urandom(3 * 1024 * 1024 + 77)
    bob.page.set_input_files(
        "#channel-attach-input",
        files=[{"name": "trip <b>1.bin", "mimeType": "application/octet-stream", "buffer": data}],
    )
    mine = bob.page.locator(".history [data-transfer]", has_text="trip b1.bin")
    mine.get_by_text("Posted by you").wait_for()
    card = alice.page.locator(".history [data-transfer]", has_text="trip b1.bin")
    card.get_by_text("Posted in the channel: fetch it?").wait_for()
    # The name as the daemon made it safe to save (no "/", "<" or ">"), shown as text.
    assert card.locator(".file-name").text_content() == "trip b1.bin"
    card.get_by_role("button", name="Accept").click()
    card.get_by_text("You have it").wait_for()
    with alice.page.expect_download() as info:
        card.get_by_role("button", name="Save").click()
    saved = Path(info.value.path()).read_bytes()
    assert hashlib.sha256(saved).digest() == hashlib.sha256(data).digest()
    listed = alice.client.list_channels()[0]["id"]
    files = alice.client._request("GET", f"/v1/channels/{listed}/files")["files"]
    assert [(f["state"], f["size"]) for f in files] == [("done", len(data))]

    for tab in (alice, bob):
        tab.own_origin_only()
        assert tab.errors == [], tab.errors
        tab.context.close()
