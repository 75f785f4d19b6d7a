"""The TUI's dialogs (``tui/screens.py``) driven by Textual's pilot against the real API
server over a fake messenger: channels created, joined and left, a channel's invite and
members, search with a jump to the hit, safety numbers and verification, a contact's
settings, your profile and the help screen, each with the bad input a user can type."""

from __future__ import annotations

from pathlib import Path

import pytest
from textual.pilot import Pilot
from textual.widgets import Checkbox, Input, ListView, Static, TextArea
from tui_harness import (
    BOB,
    CAROL,
    DAVE,
    Daemon,
    choose,
    daemon_fixture,  # noqa: F401
    item_text,
    row_texts,
    started,
    text_of,
    until,
)

from btchat.node.config import resolve
from btchat.node.settings_file import SettingsFile
from btchat.tui import app as tui_app
from btchat.tui.app import BtchatApp, Conversation, ConvItem, MessageRow
from btchat.tui.screens import (
    ChannelDetails,
    ChannelsDialog,
    Confirm,
    ContactDetails,
    Help,
    Hit,
    Profile,
    Search,
    Settings,
    device_text,
    devices_text,
    key_label,
    safety_lines,
)

SIZE = (110, 36)


def status(app: BtchatApp) -> str:
    return text_of(app.screen.query_one("#status", Static))


async def said(pilot: Pilot, words: str) -> None:
    """Wait for the dialog's status line to say ``words``."""
    await until(pilot, lambda: words in status(pilot.app))  # type: ignore[arg-type]


async def type_in(pilot: Pilot, field: str, text: str, *, clear: bool = True) -> None:
    box = pilot.app.screen.query_one(field, Input)
    box.focus()
    if clear:
        box.value = ""
    await pilot.press(*text, "enter") if text else await pilot.press("enter")


async def test_create_a_channel_refusing_an_empty_name(daemon: Daemon) -> None:
    channels = daemon.fake.channels
    assert channels is not None
    async with BtchatApp(daemon.locate).run_test(size=SIZE) as pilot:
        app = await started(pilot)
        await pilot.press("ctrl+g")
        await until(pilot, lambda: isinstance(app.screen, ChannelsDialog))
        await type_in(pilot, "#new-name", "   ")
        await said(pilot, "a channel needs a name")
        assert not channels.joined
        app.screen.query_one("#invite-only", Checkbox).value = True
        await type_in(pilot, "#new-name", "team")
        await until(pilot, lambda: channels.joined)
        (ch,) = channels.joined.values()
        assert ch["name"] == "team" and ch["invite_only"]
        # The new channel is shown, its posts go to it, and it is in the list.
        await until(pilot, lambda: app.current == ("channel", ch["id"]))
        assert not isinstance(app.screen, ChannelsDialog)
        assert any(i.key == ch["id"] for i in app.query(ConvItem))
        await pilot.press(*"first post", "enter")
        await until(pilot, lambda: channels.messages[ch["id"]])


async def test_join_by_invite_and_a_bad_invite_is_said_not_raised(daemon: Daemon) -> None:
    channels = daemon.fake.channels
    assert channels is not None
    ch = await channels.create("lobby", False, [])
    await channels.leave(ch["id"])  # known (the invite parses), not joined
    async with BtchatApp(daemon.locate).run_test(size=SIZE) as pilot:
        app = await started(pilot)
        await pilot.press("ctrl+g")
        await until(pilot, lambda: isinstance(app.screen, ChannelsDialog))
        assert "no channels yet" in str(app.screen.query_one("#channel-list Label").content)
        await type_in(pilot, "#invite", "")
        await said(pilot, "paste the invite you were given")
        await type_in(pilot, "#invite", "btchat:channel:\x1b[2Jnonsense")
        await said(pilot, "not a channel link or .chat file")
        assert isinstance(app.screen, ChannelsDialog) and not channels.joined
        await type_in(pilot, "#invite", ch["uri"])
        await until(pilot, lambda: app.current == ("channel", ch["id"]))
        assert ch["id"] in channels.joined
        # Joining again is the daemon's conflict, said in the dialog.
        await pilot.press("ctrl+g")
        await until(pilot, lambda: isinstance(app.screen, ChannelsDialog))
        await type_in(pilot, "#invite", ch["uri"])
        await said(pilot, "already in this channel")


async def test_leave_a_channel_after_saying_yes(daemon: Daemon) -> None:
    channels = daemon.fake.channels
    assert channels is not None
    ch = await channels.create("\x1b[31mlobby[/]", False, [])
    async with BtchatApp(daemon.locate).run_test(size=SIZE) as pilot:
        app = await started(pilot)
        await choose(pilot, ch["id"])
        await pilot.press("ctrl+g")
        await until(pilot, lambda: isinstance(app.screen, ChannelsDialog))
        listed = app.screen.query_one("#channel-list", ListView)
        listed.focus()
        await pilot.press("delete")
        await until(pilot, lambda: isinstance(app.screen, Confirm))
        assert "␛[31mlobby[/]" in text_of(app.screen.query_one(Static))
        await pilot.press("n")  # no: nothing happens
        await until(pilot, lambda: isinstance(app.screen, ChannelsDialog))
        assert ch["id"] in channels.joined
        app.screen.query_one("#channel-list", ListView).focus()
        await pilot.press("delete")
        await until(pilot, lambda: isinstance(app.screen, Confirm))
        await pilot.press("y")
        await until(pilot, lambda: ch["id"] not in channels.joined)
        await said(pilot, "left #")
        assert app.current is None  # it was shown: no longer
        assert not any(i.key == ch["id"] for i in app.query(ConvItem))
        assert app.query_one("#input", Input).disabled
        # Del with nothing to leave says so.
        app.screen.query_one("#channel-list", ListView).focus()
        await pilot.press("delete")
        await said(pilot, "choose a channel in the list first")


async def test_invite_a_contact_to_an_invite_only_channel(daemon: Daemon) -> None:
    channels = daemon.fake.channels
    assert channels is not None
    ch = await channels.create("team", True, [])
    async with BtchatApp(daemon.locate).run_test(size=SIZE) as pilot:
        app = await started(pilot)
        await choose(pilot, ch["id"])
        await pilot.press("ctrl+s")
        await until(pilot, lambda: isinstance(app.screen, ChannelDetails))
        screen = app.screen
        assert screen.query_one("#invite-text", TextArea).text == ch["uri"]
        await until(pilot, lambda: len(screen.query("#member-list ListItem")) == 1)
        assert "(you)" in text_of(screen.query_one("#member-list Label", Static))

        await type_in(pilot, "#invite-who", "")
        await said(pilot, "type the petname of a contact, or an ID")
        await type_in(pilot, "#invite-who", "nobody-we-know")
        await said(pilot, "is not a btchat ID")
        assert channels.members_of[ch["id"]] == {daemon.fake.public_key}

        await type_in(pilot, "#invite-who", "bob")
        await said(pilot, "invited bob: the invite went as a message")
        assert BOB in channels.members_of[ch["id"]]
        sent = [m for m in daemon.fake.messages if m["peer"] == BOB and m["direction"] == "out"]
        assert sent and sent[-1]["text"].endswith(ch["uri"])
        await until(pilot, lambda: len(screen.query("#member-list ListItem")) == 2)

        # The owner removes bob, after saying yes; removing yourself is not how to leave.
        members = screen.query_one("#member-list", ListView)
        members.focus()
        members.index = 1  # sorted by key: bob, then me
        await pilot.press("delete")
        await said(pilot, "that is you: ^G, then Del, leaves the channel")
        members.index = 0
        await pilot.press("delete")
        await until(pilot, lambda: isinstance(app.screen, Confirm))
        assert "Remove bob from #team?" in text_of(app.screen.query_one(Static))
        await pilot.press("y")
        await said(pilot, "removed bob")
        assert channels.members_of[ch["id"]] == {daemon.fake.public_key}
        await until(pilot, lambda: len(screen.query("#member-list ListItem")) == 1)


async def test_an_open_channel_invite_is_only_sent(daemon: Daemon) -> None:
    channels = daemon.fake.channels
    assert channels is not None
    ch = await channels.create("lobby", False, [])
    async with BtchatApp(daemon.locate).run_test(size=SIZE) as pilot:
        app = await started(pilot)
        await choose(pilot, ch["id"])
        await pilot.press("ctrl+s")
        await until(pilot, lambda: isinstance(app.screen, ChannelDetails))
        await type_in(pilot, "#invite-who", f"bt{DAVE[:20]}")
        await said(pilot, "not a contact: give them the invite text above")
        await type_in(pilot, "#invite-who", "carol")
        await said(pilot, "invited carol")
        assert any(m["peer"] == CAROL and ch["uri"] in m["text"] for m in daemon.fake.messages)
        app.screen.query_one("#member-list", ListView).focus()
        await pilot.press("delete")
        await said(pilot, "that is you")


async def test_search_jumps_to_the_hit_in_its_conversation(daemon: Daemon) -> None:
    daemon.fake.receive("carol", "the \x1b[2Jsecret word is [b]plover[/b]")
    for i in range(120):
        daemon.fake.receive("carol", f"chatter {i}")
    async with BtchatApp(daemon.locate).run_test(size=SIZE) as pilot:
        app = await started(pilot)
        await pilot.press("ctrl+f")
        await until(pilot, lambda: isinstance(app.screen, Search))
        await type_in(pilot, "#query", "  ")
        await said(pilot, "type a word to search for")
        await type_in(pilot, "#query", "zebra")
        await said(pilot, "nothing found for “zebra”")
        await type_in(pilot, "#query", "PLOVER")
        await said(pilot, "1 match(es)")
        (hit,) = app.screen.query(Hit)
        shown = text_of(hit.query_one(Static))
        assert "carol: the ␛[2Jsecret word is [b]plover[/b]" in shown
        await pilot.press("down", "enter")  # to the hits, then open it
        await until(pilot, lambda: app.current == ("contact", CAROL))
        log = app.query_one("#log", Conversation)
        await until(pilot, lambda: any(r.has_class("found") for r in log.query(MessageRow)))
        found = next(r for r in log.query(MessageRow) if r.has_class("found"))
        assert "plover" in text_of(found)
        assert len(row_texts(app)) == 121  # paged back to it: everything after it too
        assert not app.past
        await pilot.pause(0.1)
        assert log.scroll_y < log.max_scroll_y  # the hit in view, not the end


async def test_a_hit_further_back_than_the_jump_shows_its_page(
    daemon: Daemon, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(tui_app, "JUMP_PAGES", 1)
    for i in range(60):
        daemon.fake.receive("bob", f"old {i}")
    daemon.fake.receive("bob", "the needle")
    for i in range(150):
        daemon.fake.receive("bob", f"new {i}")
    async with BtchatApp(daemon.locate).run_test(size=SIZE) as pilot:
        app = await started(pilot)
        await pilot.press("ctrl+f")
        await until(pilot, lambda: isinstance(app.screen, Search))
        await type_in(pilot, "#query", "needle")
        await said(pilot, "1 match(es)")
        app.screen.query_one("#results", ListView).focus()
        await pilot.press("enter")
        # The page ending at the hit, alone: never mixed with the latest pages paged back
        # before (a page still loading for those is dropped). The view may page on up
        # from it (the swap can scroll it to the top), never down.
        await until(
            pilot, lambda: app.past and row_texts(app) and row_texts(app)[-1].endswith("needle")
        )
        texts = row_texts(app)
        assert not any(" new " in t for t in texts), texts[:3]
        assert any(t.endswith("old 11") for t in texts) and len(texts) in (50, 61)
        # New messages count as unread there, not appended to a page of the past...
        daemon.fake.receive("bob", "fresh")
        await until(pilot, lambda: "(1)" in item_text(app, BOB))
        assert not any("fresh" in t for t in row_texts(app))
        # ...and sending returns to the latest.
        app.query_one("#input", Input).focus()
        await pilot.press(*"reply", "enter")
        await until(pilot, lambda: not app.past and row_texts(app)[-1].endswith("me: reply  …"))


async def test_safety_number_verify_and_contact_settings(daemon: Daemon) -> None:
    files = daemon.fake.files
    assert files is not None
    expected = (await daemon.fake.safety_number(BOB))["safety_number"]
    async with BtchatApp(daemon.locate).run_test(size=SIZE) as pilot:
        app = await started(pilot)
        await pilot.press("ctrl+s")  # nothing shown: says what to do
        await until(
            pilot, lambda: any("choose a contact" in str(n.message) for n in app._notifications)
        )
        await choose(pilot, BOB)
        await pilot.press("ctrl+s")
        await until(pilot, lambda: isinstance(app.screen, ContactDetails))
        screen = app.screen
        safety = screen.query_one("#safety", Static)
        await until(pilot, lambda: text_of(safety) == safety_lines(expected))
        assert text_of(safety).replace("\n", " ") == expected
        assert "not verified" in text_of(screen.query_one("#verified", Static))

        await pilot.press("ctrl+y")
        await until(pilot, lambda: daemon.fake.contacts[BOB]["verified"])
        await said(pilot, "marked verified")
        assert "✔ verified" in text_of(screen.query_one("#verified", Static))
        await until(pilot, lambda: "✔ verified" in text_of(app.query_one("#title", Static)))

        await type_in(pilot, "#petname", "")
        await said(pilot, "a petname cannot be empty")
        await type_in(pilot, "#petname", "carol")
        await said(pilot, "another contact is already called 'carol'")
        await type_in(pilot, "#petname", "bobby")
        await said(pilot, "renamed bobby")
        assert daemon.fake.contacts[BOB]["name"] == "bobby"
        await until(pilot, lambda: "bobby" in item_text(app, BOB))

        for bad in ("0", "15", "soon"):
            await type_in(pilot, "#retention", bad)
            await said(pilot, "retention is a number of days, 1 to 14")
        assert daemon.fake.contacts[BOB]["retention_days"] == 2
        await type_in(pilot, "#retention", "7")
        await said(pilot, "retried for 7 day(s)")
        assert daemon.fake.contacts[BOB]["retention_days"] == 7

        for bad in ("-1", "lots", "1e30"):
            await type_in(pilot, "#file-limit", bad)
            await said(pilot, "the file limit is a size in MiB")
        assert not files.limits
        await type_in(pilot, "#file-limit", "2.5")
        await said(pilot, "files over 2.5 MiB from them are refused")
        assert files.limits[BOB] == int(2.5 * 1024 * 1024)

        await pilot.press("ctrl+y")  # and back
        await until(pilot, lambda: not daemon.fake.contacts[BOB]["verified"])

        blocked = screen.query_one("#blocked", Checkbox)
        assert not blocked.value
        blocked.value = True
        await said(pilot, "blocked")
        assert daemon.fake.contacts[BOB]["blocked"]
        await until(pilot, lambda: "blocked" in item_text(app, BOB))
        blocked.value = False
        await said(pilot, "unblocked")
        assert not daemon.fake.contacts[BOB]["blocked"]


async def test_profile_name_status_and_presence_note(daemon: Daemon) -> None:
    daemon.fake.profile["name"] = "\x1b]0;old"
    async with BtchatApp(daemon.locate).run_test(size=SIZE) as pilot:
        app = await started(pilot)
        await pilot.press("f2")
        await until(pilot, lambda: isinstance(app.screen, Profile))
        box = app.screen.query_one("#display-name", Input)
        await until(pilot, lambda: box.value == "␛]0;old")
        await type_in(pilot, "#display-name", "  ")
        await said(pilot, "a display name needs at least one character")
        assert daemon.fake.profile["name"] == "\x1b]0;old"
        await type_in(pilot, "#display-name", "Alice")
        await said(pilot, "your display name is now Alice")
        assert daemon.fake.profile["name"] == "Alice"
        await type_in(pilot, "#profile-status", "on holiday")
        await said(pilot, "status line saved")
        assert daemon.fake.profile["status"] == "on holiday"
        await type_in(pilot, "#presence-note", "x" * 141)
        await said(pilot, "note must be a string of at most 140 bytes")
        await type_in(pilot, "#presence-note", "in a meeting")
        await said(pilot, "you are online: in a meeting")
        assert daemon.fake.presence == {"status": "online", "note": "in a meeting"}
        await until(pilot, lambda: "you are online" in text_of(app.query_one("#me", Static)))
        device = text_of(app.screen.query_one("#device", Static))
        assert device.startswith("DHT joined, 0 nodes\nlistening on port -\n")
        assert "0 of 2 contacts online" in device and "Settings (F3)" in device


async def test_settings_saved_for_the_next_start_and_refusals_said(
    daemon: Daemon, tmp_path: Path
) -> None:
    config = tmp_path / "config.toml"
    config.write_text("# mine\n[net]\nrelay = false  # not for others\n")
    running = resolve({"data_dir": tmp_path}, config_file=config, environ={})
    daemon.fake.settings = SettingsFile(running, config, {})
    async with BtchatApp(daemon.locate).run_test(size=SIZE) as pilot:
        app = await started(pilot)
        await pilot.press("f3")
        await until(pilot, lambda: isinstance(app.screen, Settings))
        relay = app.screen.query_one("#set-relay", Checkbox)
        await until(pilot, lambda: "config.toml" in text_of(app.screen.query_one("#settings-file")))
        assert relay.value is False and app.screen.query_one("#set-lan", Checkbox).value is True
        # No device list in this daemon: said where the list would be, nothing breaks.
        await until(pilot, lambda: "no device list" in text_of(app.screen.query_one("#devices")))
        relay.focus()
        await pilot.press("space")
        await said(pilot, "relay on; restart btchat to apply")
        assert "relay = true" in config.read_text() and config.read_text().startswith("# mine")
        await type_in(pilot, "#set-proxy", "ftp://nowhere")
        await until(pilot, lambda: "proxy" in status(app) and "restart" not in status(app))
        assert "proxy" not in config.read_text()
        await type_in(pilot, "#set-proxy", "socks5://127.0.0.1:9050")
        await said(pilot, "proxy socks5://127.0.0.1:9050")
        await type_in(pilot, "#set-bootstrap", "10.0.0.1:6881, 10.0.0.2:6881")
        await said(pilot, "2 bootstrap node(s)")
        assert daemon.fake.settings.snapshot()["settings"]["bootstrap"]["next_start"] == [
            "10.0.0.1:6881",
            "10.0.0.2:6881",
        ]
        await type_in(pilot, "#set-bootstrap", "")
        await said(pilot, "default bootstrap node(s)")
        # A file damaged by hand is said and never written.
        config.write_text("[net\nrelay = ")
        lan = app.screen.query_one("#set-lan", Checkbox)
        lan.focus()
        await pilot.press("space")
        await until(pilot, lambda: "does not parse" in status(app))
        assert lan.value is True  # set back: nothing was saved
        assert config.read_text() == "[net\nrelay = "


async def test_help_lists_every_key(daemon: Daemon) -> None:
    async with BtchatApp(daemon.locate).run_test(size=SIZE) as pilot:
        app = await started(pilot)
        await pilot.press("f1")
        await until(pilot, lambda: isinstance(app.screen, Help))
        shown = text_of(app.screen.query_one("#help-keys Static", Static))
        for key, what in (
            ("^F", "Search"),
            ("^G", "Channels"),
            ("^S", "Details"),
            ("F2", "Profile"),
            ("F3", "Settings"),
            ("^B", "Older"),
            ("Del", "Leave channel"),
            ("^Y", "Mark verified"),
            ("^A", "Accept"),
        ):
            assert any(line.startswith(key) and what in line for line in shown.splitlines()), key
        await pilot.press("escape")
        await until(pilot, lambda: not isinstance(app.screen, Help))


def test_key_labels() -> None:
    assert key_label("ctrl+f") == "^F"
    assert key_label("escape,f1") == "Esc/F1"
    assert key_label("delete") == "Del"
    assert key_label("a") == "a"


def test_safety_lines_rows_of_four_groups() -> None:
    number = " ".join(f"{i:05d}" for i in range(12))
    assert safety_lines(number).splitlines() == [
        "00000 00001 00002 00003",
        "00004 00005 00006 00007",
        "00008 00009 00010 00011",
    ]


async def test_search_only_the_contact_shown(daemon: Daemon) -> None:
    daemon.fake.receive("bob", "lunch at noon")
    daemon.fake.receive("carol", "lunch tomorrow")
    async with BtchatApp(daemon.locate).run_test(size=SIZE) as pilot:
        app = await started(pilot)
        await pilot.press("ctrl+f")  # nothing shown: no "only" to tick
        await until(pilot, lambda: isinstance(app.screen, Search))
        assert not app.screen.query("#only-here")
        await type_in(pilot, "#query", "lunch")
        await said(pilot, "2 match(es)")
        await pilot.press("escape")
        await choose(pilot, CAROL)
        await pilot.press("ctrl+f")
        await until(pilot, lambda: isinstance(app.screen, Search))
        only = app.screen.query_one("#only-here", Checkbox)
        assert "only carol" in str(only.label)
        only.value = True
        await type_in(pilot, "#query", "lunch")
        await said(pilot, "1 match(es)")
        (hit,) = app.screen.query(Hit)
        assert "carol: lunch tomorrow" in text_of(hit.query_one(Static))


async def test_being_removed_from_a_channel_is_said(daemon: Daemon) -> None:
    channels = daemon.fake.channels
    assert channels is not None
    ch = await channels.create("team", True, [])
    async with BtchatApp(daemon.locate).run_test(size=SIZE) as pilot:
        app = await started(pilot)
        await choose(pilot, ch["id"])
        channels.joined[ch["id"]]["removed"] = True
        daemon.fake.emit({"type": "channel_removed", "channel": ch["id"]})
        await until(
            pilot, lambda: "the owner removed you" in text_of(app.query_one("#title", Static))
        )
        assert any("removed you from #team" in str(n.message) for n in app._notifications)


def test_device_text_says_what_the_status_says() -> None:
    st = {"dht": {"joined": False, "nodes": 3}, "listen_port": 4711, "tor": True}
    lines = device_text({**st, "storage": "disk full since 12:00"}).plain.splitlines()
    assert lines[:4] == [
        "no DHT (no contact serving)",
        "listening on port 4711",
        "0 of 0 contacts online",
        "Tor mode",
    ]
    assert lines[4] == "storage: disk full since 12:00"
    via = device_text({**st, "dht_via": {"name": "bob"}}).plain.splitlines()
    assert via[0] == "DHT through bob"
    assert device_text({**st, "tor": False}).plain.startswith("DHT not joined yet, 3 nodes")
    proxied = device_text({"proxy": {"url": "socks5://127.0.0.1:9050"}}).plain
    assert "through a proxy" in proxied and "Tor mode" not in proxied


def test_devices_text_names_each_device_and_the_mailbox_one() -> None:
    a, b, c = "a1" * 16, "b2" * 16, "c3" * 16
    listing = {
        "devices": [
            {"device_id": a, "this_device": True, "name": "laptop"},
            {"device_id": b, "online": True, "to_sync": 3, "name": "desk\x1b[2Jtop"},
            {"device_id": c, "online": False, "to_sync": 0, "name": None},
        ],
        "revoked": ["d4" * 16],
        "this_revoked": False,
        "mailbox_device": b,
    }
    assert devices_text(listing).plain.splitlines() == [
        "laptop a1a1a1a1  this device",
        "desk␛[2Jtop b2b2b2b2  online, 3 to sync, keeps offline delivery",
        "(no name) c3c3c3c3  offline, in sync",
        "revoked: d4d4d4d4",
    ]
    revoked = devices_text({**listing, "this_revoked": True}).plain
    assert revoked.startswith("Another of your devices revoked this one.")
