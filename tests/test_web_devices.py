"""Linking a device from the web app's "Status and settings", in a real browser against
real daemons (``web_harness.py``): the page shows a one-time code, `btchat device join`
in another data directory uses it through the sandbox DHT, and the page says how it
ended; a wrong code and a cancelled code are said too; the device list shows the new
device and revokes it after asking twice (issue 13)."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import pytest
from test_device_link_e2e import join
from test_messenger_e2e import Person, sandbox  # noqa: F401
from web_harness import Tab, browser, people  # noqa: F401

pytestmark = pytest.mark.slow


def _new_code(tab: Tab) -> str:
    tab.page.get_by_role("button", name="Link a new device").click()
    tab.page.wait_for_selector("#link-code")
    text = tab.page.text_content("#link-code") or ""
    assert text.startswith("btchat device join ")
    return text.removeprefix("btchat device join ")


def test_link_a_device_from_the_status_screen(
    browser: Any,  # noqa: F811
    people: dict[str, Person],  # noqa: F811
    tmp_path: Path,
) -> None:
    alice_p = people["alice"]
    alice = Tab(browser, alice_p)
    alice.status_screen()
    card = "section[aria-label='Link a device']"
    alice.page.wait_for_selector(card)

    code = _new_code(alice)
    new = Person("alice2", tmp_path, alice_p.env, alice_p.bootstrap, init=False)
    joined = join(new, code)
    assert joined.returncode == 0, joined.stderr
    alice.page.wait_for_selector("#link-state >> text=A new device is linked")
    assert alice.page.is_visible(f"{card} >> text=Link a new device")

    code = _new_code(alice)
    plate, first, second = code.split("-")
    other = Person("mallory", tmp_path, alice_p.env, alice_p.bootstrap, init=False)
    wrong = join(other, f"{plate}-{first}-{'zebra' if second != 'zebra' else 'acorn'}")
    assert wrong.returncode == 1
    alice.page.wait_for_selector("#link-state >> text=A wrong code was tried")

    _new_code(alice)
    alice.page.get_by_role("button", name="Cancel the code").click()
    alice.page.wait_for_selector("#link-state >> text=The code was cancelled")

    # "Your devices" lists the linked device (reloaded on device_linked); revoking it asks
    # once more, and "Keep it" keeps it.
    devices = "section[aria-label='Your devices']"
    alice.page.wait_for_selector(f"{devices} li >> text=this device")
    row = alice.page.locator(f"{devices} li[data-device]", has_not_text="this device")
    new_id = row.get_attribute("data-device") or ""
    listed = alice_p.cli("device", "list")
    assert sorted(d["device_id"] for d in listed["devices"]) == sorted(
        [
            new_id,
            alice.page.locator(f"{devices} li", has_text="this device").get_attribute(
                "data-device"
            ),
        ]
    )
    # Renamed in the page (a name is text, never HTML); the CLI lists it by that name.
    row.get_by_role("button", name="Rename").click()
    row.locator("input").fill("old <b>phone</b>")
    row.get_by_role("button", name="Save").click()
    alice.page.wait_for_selector(f"{devices} li .device-name >> text=old <b>phone</b>")
    assert alice.page.locator(f"{devices} li b").count() == 0
    named = {d["device_id"]: d["name"] for d in alice_p.cli("device", "list")["devices"]}
    assert named[new_id] == "old <b>phone</b>"
    row = alice.page.locator(f"{devices} li[data-device='{new_id}']")
    row.get_by_role("button", name="Revoke…").click()
    row.get_by_role("button", name="Keep it").click()
    assert alice_p.cli("device", "list")["revoked"] == []
    row.get_by_role("button", name="Revoke…").click()
    row.get_by_role("button", name="Revoke for good").click()
    alice.page.wait_for_selector(f"{devices} >> text=Revoked: {new_id[:8]}")
    assert alice.page.locator(f"{devices} li[data-device]").count() == 1
    assert alice_p.cli("device", "list")["revoked"] == [new_id]
    alice.own_origin_only()
    assert alice.errors == [], alice.errors
    alice.context.close()


def test_edit_the_profile_from_the_status_screen(
    browser: Any,  # noqa: F811
    people: dict[str, Person],  # noqa: F811
    tmp_path: Path,
) -> None:
    alice_p = people["alice"]
    alice = Tab(browser, alice_p)
    alice.status_screen()
    alice.page.wait_for_selector("#profile-avatar >> text=No avatar")
    image = b"\x89PNG\r\n\x1a\n not really a picture"
    alice.page.fill("#profile-name", "Alice <b>A.</b>")
    alice.page.fill("#profile-status", "around")
    alice.page.get_by_label("Avatar image").set_input_files(
        {"name": "me.png", "mimeType": "image/png", "buffer": image}
    )
    alice.page.get_by_role("button", name="Save the profile").click()
    alice.page.wait_for_selector("text=Saved and published.")
    digest = hashlib.sha256(image).hexdigest()
    assert alice_p.cli("profile") == {
        "name": "Alice <b>A.</b>",
        "status": "around",
        "avatar": digest,
    }
    alice.page.wait_for_selector(f"#profile-avatar >> text={digest[:16]}")
    # Changed elsewhere (the CLI here; another device alike): the card follows.
    alice.page.get_by_role("button", name="Link a new device").focus()
    alice_p.cli("profile", "--status", "from the CLI")
    alice.page.wait_for_function(
        "() => document.querySelector('#profile-status').value === 'from the CLI'"
    )
    assert alice.page.input_value("#profile-name") == "Alice <b>A.</b>"
    alice.own_origin_only()
    assert alice.errors == [], alice.errors
    alice.context.close()
