"""``btchat tui`` driven by Textual's pilot against the real API server over a fake
messenger: the same HTTP and WebSocket a daemon serves, no network, no disk."""

from __future__ import annotations

from typing import Any

import pytest
from rich.text import Text
from textual.pilot import Pilot
from textual.widgets import Input, ListView, ProgressBar, Static
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

from btchat.tui import app as tui_app
from btchat.tui.app import BtchatApp, Conversation, ConvItem, MessageRow, Requests, Transfers

SIZE = (110, 32)

#: Everything that could drive a terminal or Textual, and a word no line can hold.
HOSTILE = (
    "\x1b[2J\x1b]0;pwned\x07 [bold red]red?[/] [@click=app.quit]click[/] "
    "\u202eevil\u202c\rover\x00\x7f\x9b :smile: "
)
LONG_WORD = "W" * 16384


async def test_send_a_message_and_see_its_ticks_move(
    daemon: Daemon, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(tui_app, "TYPING_EVERY", 60.0)  # however slow the keys come
    old = daemon.fake.receive("bob", "are you there?")
    async with BtchatApp(daemon.locate).run_test(size=SIZE) as pilot:
        app = await started(pilot)
        await until(pilot, lambda: "(1)" in item_text(app, BOB))
        assert "carol" in item_text(app, CAROL) and "(" not in item_text(app, CAROL)

        await choose(pilot, BOB)
        assert "are you there?" in row_texts(app)[0]
        await until(pilot, lambda: old["state"] == "read")  # shown: marked read
        await until(pilot, lambda: "(1)" not in item_text(app, BOB))
        assert app.focused is app.query_one("#input", Input)

        await pilot.press(*"hello bob")
        await until(pilot, lambda: (BOB, True) in daemon.fake.typing)
        assert daemon.fake.typing.count((BOB, True)) == 1  # throttled: one per few seconds
        await pilot.press("enter")
        await until(pilot, lambda: any(m["text"] == "hello bob" for m in daemon.fake.messages))
        sent = next(m for m in daemon.fake.messages if m["text"] == "hello bob")
        assert app.query_one("#input", Input).value == ""
        await until(pilot, lambda: row_texts(app)[-1].endswith("me: hello bob  …"))

        daemon.fake.emit(
            {"type": "receipt", "contact": BOB, "state": "delivered", "ids": [sent["id"]]}
        )
        await until(pilot, lambda: row_texts(app)[-1].endswith("hello bob  ✓✓"))
        daemon.fake.emit({"type": "receipt", "contact": BOB, "state": "read", "ids": [sent["id"]]})
        await until(pilot, lambda: row_texts(app)[-1].endswith("hello bob  ✓✓ read"))
        # A late, lesser receipt does not undo "read".
        daemon.fake.emit({"type": "receipt", "contact": BOB, "state": "sent", "ids": [sent["id"]]})
        await pilot.pause(0.2)
        assert row_texts(app)[-1].endswith("hello bob  ✓✓ read")
        assert len(row_texts(app)) == 2


async def test_unread_counts_typing_and_presence_arrive_live(daemon: Daemon) -> None:
    async with BtchatApp(daemon.locate).run_test(size=SIZE) as pilot:
        app = await started(pilot)
        await choose(pilot, BOB)
        daemon.fake.receive("carol", "psst")
        daemon.fake.receive("carol", "psst again")
        await until(pilot, lambda: "(2)" in item_text(app, CAROL))
        daemon.fake.receive("bob", "in view")
        await until(pilot, lambda: any("in view" in t for t in row_texts(app)))
        assert "(" not in item_text(app, BOB)  # the one shown does not count up

        daemon.fake.emit({"type": "typing", "contact": BOB, "on": True})
        typing = app.query_one("#typing", Static)
        await until(pilot, lambda: text_of(typing) == "bob is typing…")
        daemon.fake.receive("bob", "done typing")
        await until(pilot, lambda: text_of(typing) == "")

        daemon.fake.contacts[CAROL]["online"] = True
        carol = dict(daemon.fake.contacts[CAROL], presence="online")
        daemon.fake.emit({"type": "session", "state": "up", "contact": carol})
        await until(pilot, lambda: item_text(app, CAROL).startswith("●"))
        daemon.fake.emit({"type": "presence", "contact": CAROL, "status": "away"})
        await until(pilot, lambda: item_text(app, CAROL).startswith("◐"))

        await choose(pilot, CAROL)
        await until(pilot, lambda: "(" not in item_text(app, CAROL))
        assert [t.split(": ", 1)[1] for t in row_texts(app)] == ["psst", "psst again"]


async def test_older_messages_page_in(daemon: Daemon) -> None:
    for i in range(70):
        daemon.fake.receive("bob", f"message {i}")
    async with BtchatApp(daemon.locate).run_test(size=SIZE) as pilot:
        app = await started(pilot)
        await choose(pilot, BOB)
        assert len(row_texts(app)) == 50
        assert row_texts(app)[0].endswith("message 20")
        await pilot.press("ctrl+b")
        await until(pilot, lambda: len(row_texts(app)) == 70)
        assert [t.split(": ")[1] for t in row_texts(app)] == [f"message {i}" for i in range(70)]


async def test_scrolling_up_pages_in_older_messages_one_page_at_a_time(daemon: Daemon) -> None:
    for i in range(120):
        daemon.fake.receive("bob", f"message {i}")
    async with BtchatApp(daemon.locate).run_test(size=SIZE) as pilot:
        app = await started(pilot)
        await choose(pilot, BOB)
        log = app.query_one("#log", Conversation)
        assert len(row_texts(app)) == 50
        await until(pilot, lambda: log.scroll_y > 0)
        log.scroll_home(animate=False)
        await until(pilot, lambda: len(row_texts(app)) == 100)
        await pilot.pause(0.3)
        assert len(row_texts(app)) == 100  # the reader stays put: no run to the start
        assert log.scroll_y > 0
        log.scroll_home(animate=False)
        await until(pilot, lambda: len(row_texts(app)) == 120)
        assert row_texts(app)[0].endswith("message 0")
        assert not app.query(".older")  # the start: no "older messages" line


async def test_accept_a_contact_request(daemon: Daemon) -> None:
    async with BtchatApp(daemon.locate).run_test(size=SIZE) as pilot:
        app = await started(pilot)
        daemon.fake.incoming_request(DAVE, note="hi, it's [b]dave[/b]\x1b[5m")
        await until(pilot, lambda: "1 contact request(s)" in text_of(app.query_one("#me", Static)))
        await pilot.press("ctrl+r")
        await until(pilot, lambda: isinstance(app.screen, Requests))
        screen = app.screen

        def labels() -> list[str]:
            return [text_of(lbl) for lbl in screen.query("#request-list Label")]

        await until(pilot, lambda: any(DAVE[:16] in t for t in labels()))
        assert any("hi, it's [b]dave[/b]␛[5m" in t for t in labels()), labels()
        screen.query_one("#request-list", ListView).index = 0
        screen.query_one("#petname", Input).focus()
        await pilot.press(*"dave")
        await pilot.press("ctrl+a")
        await until(pilot, lambda: DAVE in daemon.fake.contacts)
        assert daemon.fake.contacts[DAVE]["name"] == "dave"
        await pilot.press("escape")
        await until(pilot, lambda: any(i.key == DAVE for i in app.query(ConvItem)))
        assert "dave" in item_text(app, DAVE)


async def test_add_a_contact_by_link(daemon: Daemon) -> None:
    async with BtchatApp(daemon.locate).run_test(size=SIZE) as pilot:
        app = await started(pilot)
        await pilot.press("ctrl+n")
        await pilot.press(*f"btchat:{DAVE}")
        await pilot.press("tab", *"dee", "enter")
        await until(pilot, lambda: DAVE in daemon.fake.contacts)
        assert daemon.fake.contacts[DAVE]["name"] == "dee"
        await until(pilot, lambda: app.current == ("contact", DAVE))
        # A bad ID is refused with the daemon's reason, and nothing is added.
        await pilot.press("ctrl+n", *"not-an-id", "enter")
        await until(
            pilot, lambda: any("not a btchat ID" in str(n.message) for n in app._notifications)
        )
        assert len(daemon.fake.contacts) == 3


async def test_accept_a_file_offer_and_watch_it_progress(daemon: Daemon) -> None:
    files = daemon.fake.files
    assert files is not None
    async with BtchatApp(daemon.locate).run_test(size=SIZE) as pilot:
        app = await started(pilot)
        offer = files.offer("bob", "report[red].pdf", 4096)
        await until(pilot, lambda: "1 file offer(s)" in text_of(app.query_one("#me", Static)))
        await pilot.press("ctrl+t")
        await until(pilot, lambda: isinstance(app.screen, Transfers))
        screen = app.screen
        row = await _transfer_row(pilot, screen)
        assert "report[red].pdf" in text_of(row.query_one("Label", Static))
        assert "offered" in text_of(row.query_one("Label", Static))
        await pilot.press("a")
        await until(pilot, lambda: files.transfers[offer["id"]]["state"] == "active")
        files.advance(offer["id"], 1024)
        bar = row.query_one(ProgressBar)
        await until(pilot, lambda: bar.progress == pytest.approx(0.25))
        files.advance(offer["id"], 4096)
        await until(pilot, lambda: "done" in text_of(row.query_one("Label", Static)))
        assert "saved to /tmp/btchat-fake/report[red].pdf" in text_of(
            row.query_one("Label", Static)
        )
        assert bar.progress == pytest.approx(1.0)
        assert app.query_one("#banner", Static).has_class("hidden")  # the stream stayed up


async def _transfer_row(pilot: Pilot, screen: Any) -> Any:
    from btchat.tui.app import TransferRow

    await until(pilot, lambda: list(screen.query(TransferRow)))
    return screen.query_one(TransferRow)


async def test_offer_a_file(daemon: Daemon, tmp_path: Any) -> None:
    path = tmp_path / "notes.txt"
    path.write_text("x")
    async with BtchatApp(daemon.locate).run_test(size=SIZE) as pilot:
        app = await started(pilot)
        await choose(pilot, BOB)
        await pilot.press("ctrl+o", *str(path), "enter")
        files = daemon.fake.files
        assert files is not None
        await until(pilot, lambda: files.transfers)
        await until(pilot, lambda: any("offered a file: notes.txt" in t for t in row_texts(app)))


async def test_post_in_a_channel(daemon: Daemon) -> None:
    channels = daemon.fake.channels
    assert channels is not None
    ch = await channels.create("lobby", False, [])
    async with BtchatApp(daemon.locate).run_test(size=SIZE) as pilot:
        app = await started(pilot)
        await until(pilot, lambda: any(i.key == ch["id"] for i in app.query(ConvItem)))
        await choose(pilot, ch["id"])
        await pilot.press(*"hi all", "enter")
        await until(pilot, lambda: channels.messages[ch["id"]])
        await until(pilot, lambda: any(t.endswith("me: hi all") for t in row_texts(app)))
        assert "# lobby" in text_of(app.query_one("#title", Static))


async def test_hostile_text_is_shown_never_obeyed(daemon: Daemon) -> None:
    await daemon.fake.add_contact(DAVE, "\x1b[31mdave[/] \u202egnp.exe")
    daemon.fake.receive(DAVE, HOSTILE + "\nbob: fake line")
    daemon.fake.receive(DAVE, LONG_WORD)
    async with BtchatApp(daemon.locate).run_test(size=SIZE) as pilot:
        app = await started(pilot)
        name = item_text(app, DAVE)
        assert "\x1b" not in name and "\u202e" not in name
        assert "␛[31mdave[/] \ufffdgnp.exe" in name
        await choose(pilot, DAVE)
        hostile, long = row_texts(app)
        for bad in "\x1b\x07\x00\x7f\x9b\r\u202e\u202c":
            assert bad not in hostile
        assert "␛[2J␛]0;pwned␇ [bold red]red?[/] [@click=app.quit]click[/] " in hostile
        assert "\ufffdevil\ufffd␍over␀␡\ufffd :smile:" in hostile
        assert "\n  bob: fake line" in hostile  # indented: cannot pass for bob's own line
        assert long.endswith(LONG_WORD)
        # The markup stayed text: no style was made from it, no action bound.
        row = app.query_one("#log", Conversation).query(MessageRow).first()
        content = row.content
        assert isinstance(content, Text)
        assert not any(
            "red" in str(span.style) and span.end - span.start == 4 for span in content.spans
        )
        # The 16 KiB word folds inside the pane: nothing scrolls sideways.
        log = app.query_one("#log", Conversation)
        assert log.max_scroll_x == 0
        long_row = log.query(MessageRow).last()
        assert long_row.size.width <= log.size.width
        assert long_row.size.height > 16384 // log.size.width
        assert app.is_running  # [@click=app.quit] did nothing
        svg = app.export_screenshot()
        assert "\x1b" not in svg


async def test_the_daemon_going_away_is_shown_and_survived(daemon: Daemon) -> None:
    async with BtchatApp(daemon.locate, retry=0.1).run_test(size=SIZE) as pilot:
        app = await started(pilot)
        banner = app.query_one("#banner", Static)
        assert banner.has_class("hidden")
        await choose(pilot, BOB)

        await daemon.down()
        await until(pilot, lambda: not banner.has_class("hidden"))
        await until(
            pilot,
            lambda: text_of(banner).startswith("daemon not reachable: no btchat daemon is running"),
        )
        await pilot.press(*"anyone?", "enter")
        await until(pilot, lambda: app._notifications)
        assert app.query_one("#input", Input).value == "anyone?"  # kept, not lost

        daemon.fake.receive("bob", "sent while you were away")
        await daemon.up()  # a new port and token file, as a restarted daemon has
        await until(pilot, lambda: banner.has_class("hidden"))
        await until(pilot, lambda: any("while you were away" in t for t in row_texts(app)))
        await pilot.press("enter")
        await until(pilot, lambda: any(m["text"] == "anyone?" for m in daemon.fake.messages))


async def test_unknown_and_malformed_events_are_ignored(daemon: Daemon) -> None:
    async with BtchatApp(daemon.locate).run_test(size=SIZE) as pilot:
        app = await started(pilot)
        daemon.fake.emit({"type": "from_the_future", "x": 1})
        daemon.fake.emit({"type": "typing", "contact": BOB})  # no "on"
        daemon.fake.emit({"type": "message"})  # no message
        daemon.fake.receive("bob", "still fine")
        await until(pilot, lambda: "(1)" in item_text(app, BOB))
        assert app.is_running


async def test_presence_is_set_from_the_tui(daemon: Daemon) -> None:
    async with BtchatApp(daemon.locate).run_test(size=SIZE) as pilot:
        app = await started(pilot)
        me = app.query_one("#me", Static)
        assert "^P sets your presence" in text_of(me)
        await pilot.press("ctrl+p")
        await until(pilot, lambda: daemon.fake.presence["status"] == "online")
        await pilot.press("ctrl+p")
        await until(pilot, lambda: daemon.fake.presence["status"] == "away")
        await until(pilot, lambda: "you are away" in text_of(me))


async def test_a_file_offer_shows_its_state_in_the_conversation(daemon: Daemon) -> None:
    files = daemon.fake.files
    assert files is not None
    async with BtchatApp(daemon.locate).run_test(size=SIZE) as pilot:
        app = await started(pilot)
        await choose(pilot, BOB)
        offer = files.offer("bob", "big.iso", 1000)
        await until(pilot, lambda: any("[offered: ^T to accept]" in t for t in row_texts(app)))
        await files.act(offer["id"], "accept")
        files.advance(offer["id"], 420)
        await until(pilot, lambda: row_texts(app)[-1].endswith("big.iso  [active 42%]"))
        files.advance(offer["id"], 1000)
        await until(pilot, lambda: row_texts(app)[-1].endswith("big.iso  [done]"))


async def test_reject_a_contact_request(daemon: Daemon) -> None:
    async with BtchatApp(daemon.locate).run_test(size=SIZE) as pilot:
        app = await started(pilot)
        daemon.fake.incoming_request(DAVE, note="buy cheap pills")
        await until(pilot, lambda: "1 contact request(s)" in text_of(app.query_one("#me", Static)))
        await pilot.press("ctrl+r")
        await until(pilot, lambda: isinstance(app.screen, Requests))
        await until(pilot, lambda: len(app.screen.query("#request-list ListItem")) == 1)
        await pilot.press("ctrl+x")
        await until(pilot, lambda: not daemon.fake.requests)
        assert DAVE not in daemon.fake.contacts
        screen = app.screen
        await until(
            pilot,
            lambda: (
                [text_of(lbl) for lbl in screen.query("#request-list Label")]
                == ["no contact requests"]
            ),
        )
        await pilot.press("escape")
        await until(pilot, lambda: "contact request" not in text_of(app.query_one("#me", Static)))


async def test_typing_fades_without_news(daemon: Daemon, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(tui_app, "TYPING_SHOWN", 0.3)
    async with BtchatApp(daemon.locate).run_test(size=SIZE) as pilot:
        app = await started(pilot)
        await choose(pilot, BOB)
        daemon.fake.emit({"type": "typing", "contact": BOB, "on": True})
        typing = app.query_one("#typing", Static)
        await until(pilot, lambda: text_of(typing) == "bob is typing…")
        assert item_text(app, BOB).endswith(" …")
        await until(pilot, lambda: text_of(typing) == "")
        await until(pilot, lambda: not item_text(app, BOB).endswith(" …"))


async def test_channel_files_posted_listed_and_fetched(daemon: Daemon, tmp_path: Any) -> None:
    from btchat.tui.app import TransferRow

    channels = daemon.fake.channels
    assert channels is not None
    ch = await channels.create("lobby", False, [])
    path = tmp_path / "clip.mp4"
    path.write_bytes(b"x")
    async with BtchatApp(daemon.locate).run_test(size=SIZE) as pilot:
        app = await started(pilot)
        await until(pilot, lambda: any(i.key == ch["id"] for i in app.query(ConvItem)))
        await choose(pilot, ch["id"])
        await pilot.press("ctrl+o", *str(path), "enter")  # ^O in a channel posts there
        await until(pilot, lambda: channels.files.get(ch["id"]))
        assert channels.files[ch["id"]][0]["name"] == "clip.mp4"
        # Another member's file comes: said, and listed with the channel's name.
        theirs = {**channels.files[ch["id"]][0], "id": "ab" * 16, "author": BOB, "mine": False,
                  "name": "pic\x1b[2J.png", "state": "offered", "progress": 0.0}  # fmt: skip
        channels.files[ch["id"]].append(theirs)
        daemon.fake.emit({"type": "channel_file_offer", "file": theirs})
        await until(pilot, lambda: theirs["id"] in app.transfers)
        await pilot.press("ctrl+t")
        await until(pilot, lambda: isinstance(app.screen, Transfers))
        screen = app.screen
        await until(pilot, lambda: len(list(screen.query(TransferRow))) == 2)
        rows = {r.transfer["id"]: r for r in screen.query(TransferRow)}
        line = text_of(rows[theirs["id"]].query_one("Label", Static))
        assert "pic␛[2J.png" in line and "from #lobby" in line and "offered" in line
        view = screen.query_one("#transfer-list", ListView)
        view.index = list(rows).index(theirs["id"])
        await pilot.press("a")
        await until(pilot, lambda: channels.files[ch["id"]][1]["state"] == "active")
        await until(pilot, lambda: app.transfers[theirs["id"]]["state"] == "active")
