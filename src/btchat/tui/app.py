"""The Textual application behind ``btchat tui``.

It is a client of the public local API only, as the web app is: REST calls through the
CLI's :class:`~btchat.api.client.ApiClient` (run in a thread, so the screen never waits
on the daemon) and live updates from the ``/v1/events`` WebSocket. When the stream
drops the app says "daemon not reachable", retries, re-reads the API files (a restarted
daemon has a new port and token) and, once the new stream is ``ready``, reloads what it
shows: events missed while away are not replayed.

Everything another person wrote (names, messages, notes, file names, channel posts)
reaches a widget as Rich ``Text`` made by :mod:`btchat.tui.text`; nothing of theirs is
ever parsed as markup.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any, ClassVar

from rich.text import Text
from textual import on, work
from textual.app import App, ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.message import Message
from textual.screen import ModalScreen
from textual.timer import Timer
from textual.widgets import Footer, Input, Label, ListItem, ListView, ProgressBar, Static

from btchat.api.client import ApiClient, ApiClientError, DaemonNotRunning, watch_events
from btchat.tui.screens import (
    ChannelDetails,
    ChannelsDialog,
    ContactDetails,
    Help,
    Profile,
    Search,
    Settings,
)
from btchat.tui.text import furthest, message_line, plain, safe, transfer_state

__all__ = ["BtchatApp", "Locate"]

logger = logging.getLogger(__name__)

#: Returns ``(url, token)`` of the daemon, or raises :class:`DaemonNotRunning`.
Locate = Callable[[], tuple[str, str]]

#: Rows fetched per history page.
PAGE = 50
#: Least time between two "typing" notifications to a contact.
TYPING_EVERY = 3.0
#: How long a contact's "typing" is shown without news from them.
TYPING_SHOWN = 6.0
#: Pause between reconnection attempts.
RETRY = 2.0
#: Pages of history fetched back from the latest to reach a search hit; one further
#: back is shown alone, as a window on the past (rows in memory stay bounded).
JUMP_PAGES = 10

PRESENCE_DOTS = {
    "online": ("●", "green"),
    "away": ("◐", "yellow"),
    "busy": ("●", "red"),
    "offline": ("○", "grey50"),
}


def presence_dot(c: dict[str, Any]) -> tuple[str, str]:
    if not c.get("online"):
        return PRESENCE_DOTS["offline"]
    return PRESENCE_DOTS.get(c.get("presence") or "online", PRESENCE_DOTS["online"])


class ConvItem(ListItem):
    """A contact or channel in the list; ``key`` is its public key or channel id."""

    def __init__(self, kind: str, key: str, text: Text) -> None:
        super().__init__(Label(text, markup=False))
        self.kind, self.key = kind, key

    def show(self, text: Text) -> None:
        self.query_one(Label).update(text)


class Heading(ListItem):
    def __init__(self, title: str) -> None:
        super().__init__(Label(title, markup=False), disabled=True, classes="heading")


class ChannelsHeading(Heading):
    pass


class MessageRow(Static):
    """One message; ``data`` is the message (or channel message) as the API gave it."""

    def __init__(self, data: dict[str, Any], text: Text, mine: bool) -> None:
        super().__init__(text, markup=False, classes="mine" if mine else "theirs")
        self.data = data


class Conversation(VerticalScroll):
    """The messages of the conversation shown, oldest first, by id."""

    def __init__(self, **kw: Any) -> None:
        super().__init__(**kw)
        self.rows: dict[str, MessageRow] = {}

    class ReachedTop(Message):
        """Scrolled up to the oldest message shown: time for the page before it."""

    def at_end(self) -> bool:
        return self.scroll_y >= self.max_scroll_y - 1

    def watch_scroll_y(self, old_value: float, new_value: float) -> None:
        super().watch_scroll_y(old_value, new_value)
        if new_value <= 0 < old_value:
            self.post_message(self.ReachedTop())


# ------------------------------------------------------------------ modal screens


class AddContact(ModalScreen[tuple[str, str | None] | None]):
    """An ID or btchat: link, and an optional petname."""

    BINDINGS: ClassVar[list[BindingType]] = [Binding("escape", "dismiss(None)", "Cancel")]

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog"):
            yield Label("Add a contact", classes="title")
            yield Input(placeholder="ID or btchat: link", id="ref")
            yield Input(placeholder="petname (optional)", id="name")
            yield Label("Enter adds, Esc cancels", classes="hint")

    @on(Input.Submitted)
    def _submit(self) -> None:
        ref = self.query_one("#ref", Input).value.strip()
        if not ref:
            self.query_one("#ref", Input).focus()
            return
        self.dismiss((ref, self.query_one("#name", Input).value.strip() or None))


class SendFile(ModalScreen[str | None]):
    """A path on this machine to offer to the contact shown."""

    BINDINGS: ClassVar[list[BindingType]] = [Binding("escape", "dismiss(None)", "Cancel")]

    def __init__(self, to: str) -> None:
        super().__init__()
        self.to = to

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog"):
            yield Label(Text("Offer a file to ") + safe(self.to), classes="title")
            yield Input(placeholder="path of the file", id="path")
            yield Label("Enter offers, Esc cancels", classes="hint")

    @on(Input.Submitted)
    def _submit(self, event: Input.Submitted) -> None:
        self.dismiss(event.value.strip() or None)


class Requests(ModalScreen[None]):
    """Contact requests: incoming ones are accepted (with a petname) or rejected."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape", "dismiss(None)", "Close"),
        Binding("ctrl+a", "answer(True)", "Accept", priority=True),
        Binding("ctrl+x", "answer(False)", "Reject", priority=True),
    ]

    def __init__(self, main: BtchatApp) -> None:
        super().__init__()
        self.main = main

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog wide"):
            yield Label("Contact requests", classes="title")
            yield ListView(id="request-list")
            yield Input(placeholder="petname for the one you accept (optional)", id="petname")
            yield Label("↑↓ choose, ^A accept, ^X reject, Esc close", classes="hint")
        yield Footer(compact=True)

    async def on_mount(self) -> None:
        await self.fill()
        self.query_one("#request-list", ListView).focus()

    async def fill(self) -> None:
        view = self.query_one("#request-list", ListView)
        index = view.index
        await view.clear()
        rows = self.main.requests
        if not rows:
            await view.append(ListItem(Label("no contact requests", markup=False), disabled=True))
            return
        for r in rows:
            line = Text()
            line.append(f"{'from' if r.get('direction') == 'in' else 'to'} ", style="dim")
            line.append(plain(r.get("name") or (r.get("public_key") or "")[:16], 40), style="bold")
            line.append(f"  {r.get('state') or ''}  ", style="dim")
            line.append_text(safe(plain(r.get("note"), 140)))
            item = ListItem(Label(line, markup=False))
            item.request = r  # type: ignore[attr-defined]
            await view.append(item)
        view.index = min(index or 0, len(rows) - 1)

    async def action_answer(self, accept: bool) -> None:
        item = self.query_one("#request-list", ListView).highlighted_child
        r = getattr(item, "request", None)
        if r is None:
            return
        if r.get("direction") != "in":
            self.notify("that request is yours; they answer it", severity="warning")
            return
        name = self.query_one("#petname", Input).value.strip() or None
        done = await self.main.call("answer_request", r["id"], accept, name if accept else None)
        if done is None:
            return
        self.query_one("#petname", Input).value = ""
        self.notify("accepted: a new contact" if accept else "rejected")
        await self.main.load_requests()
        await self.main.load_contacts()


class TransferRow(ListItem):
    def __init__(self, t: dict[str, Any], who: str) -> None:
        super().__init__(Label(classes="transfer"), ProgressBar(total=1.0, show_eta=False))
        self.transfer = t
        self.who = who

    def on_mount(self) -> None:
        self.show(self.transfer)

    def show(self, t: dict[str, Any]) -> None:
        self.transfer = t
        arrow = "→ " if t["direction"] == "out" else "← "
        line = Text()
        line.append(arrow, style="bold")
        line.append_text(safe(plain(t.get("name"), 60), "bold"))
        line.append(f"  {'to' if t['direction'] == 'out' else 'from'} ", style="dim")
        line.append(plain(self.who, 30))
        line.append(f"  {_size(t.get('size') or 0)}  {t['state']}", style="dim")
        if t.get("error"):
            line.append("  ")
            line.append_text(safe(plain(t["error"], 80), "red"))
        if t.get("path") and t["direction"] == "in" and t["state"] == "done":
            line.append("  saved to ")
            line.append_text(safe(plain(t["path"], 120)))
        self.query_one(Label).update(line)
        self.query_one(ProgressBar).update(total=1.0, progress=float(t.get("progress") or 0))


def as_transfer(f: dict[str, Any]) -> dict[str, Any]:
    """A channel's file as the transfer list shows one (ours goes out, theirs comes in)."""
    return {**f, "kind": "channel", "direction": "out" if f.get("mine") else "in",
            "contact": None}  # fmt: skip


def _size(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024  # type: ignore[assignment]
    return f"{n} B"


class Transfers(ModalScreen[None]):
    """File transfers both ways, with progress; offers to us are accepted or rejected."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape", "dismiss(None)", "Close"),
        Binding("a", "act('accept')", "Accept"),
        Binding("r", "act('reject')", "Reject"),
        Binding("c", "act('cancel')", "Cancel"),
        Binding("p", "act('pause')", "Pause"),
        Binding("u", "act('resume')", "Resume"),
    ]

    def __init__(self, main: BtchatApp) -> None:
        super().__init__()
        self.main = main

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog wide"):
            yield Label("File transfers", classes="title")
            yield ListView(id="transfer-list")
            yield Label(
                "↑↓ choose, a accept, r reject, c cancel, p pause, u resume", classes="hint"
            )
        yield Footer(compact=True)

    async def on_mount(self) -> None:
        await self.fill()
        self.query_one("#transfer-list", ListView).focus()

    async def fill(self) -> None:
        view = self.query_one("#transfer-list", ListView)
        rows = {r.transfer["id"]: r for r in view.query(TransferRow)}
        if list(rows) == list(self.main.transfers):
            for tid, row in rows.items():
                row.show(self.main.transfers[tid])
            return
        index = view.index
        await view.clear()
        if not self.main.transfers:
            await view.append(ListItem(Label("no file transfers", markup=False), disabled=True))
            return
        await view.extend(
            TransferRow(t, self.main.party_of(t)) for t in self.main.transfers.values()
        )
        view.index = min(index or 0, len(self.main.transfers) - 1)

    async def action_act(self, action: str) -> None:
        row = self.query_one("#transfer-list", ListView).highlighted_child
        if not isinstance(row, TransferRow):
            return
        picked = row.transfer
        if picked.get("kind") == "channel":
            f = await self.main.call("act_on_channel_file", picked["channel"], picked["id"], action)
            t = as_transfer(f) if f is not None else None
        else:
            t = await self.main.call("act_on_transfer", picked["id"], action)
        if t is not None:
            self.main.transfers[t["id"]] = t
            self.main._transfers_changed(t)


# ------------------------------------------------------------------ the app


class BtchatApp(App[None]):
    """Conversations on the left, the one chosen on the right, the input line below."""

    TITLE = "btchat"
    ENABLE_COMMAND_PALETTE = False
    CSS = """
    #banner { dock: top; height: auto; background: $error; color: $text; padding: 0 1; }
    #banner.hidden { display: none; }
    #sidebar { width: 34; border-right: solid $primary; }
    #convs { height: 1fr; }
    #convs > .heading { color: $text-muted; text-style: bold; }
    #me { height: auto; color: $text-muted; padding: 0 1; }
    #main { width: 1fr; }
    #title { height: auto; padding: 0 1; background: $boost; text-style: bold; }
    #log { height: 1fr; padding: 0 1; }
    #log > MessageRow { height: auto; width: 1fr; }
    #log > MessageRow.mine { border-left: outer $primary; }
    #log > MessageRow.theirs { border-left: outer $secondary; }
    #log > .older { color: $text-muted; }
    #log > MessageRow.found { background: $accent 30%; }
    #typing { height: 1; color: $text-muted; padding: 0 1; }
    #input { dock: bottom; }
    ModalScreen { align: center middle; }
    .dialog { width: 64; height: auto; max-height: 90%; border: thick $primary; padding: 1 2;
              background: $surface; }
    .dialog.wide { width: 90%; height: 80%; }
    .dialog.medium { width: 76; }
    .dialog ListView { height: 1fr; }
    .dialog .title { text-style: bold; margin-bottom: 1; }
    .dialog .hint { color: $text-muted; margin-top: 1; }
    .dialog .hint, .dialog .label { width: 1fr; }
    .dialog .section { text-style: bold; margin-top: 1; }
    .dialog .label { color: $text-muted; margin-top: 1; }
    .dialog .status { height: auto; margin-top: 1; }
    .dialog .row { height: auto; }
    .dialog .row Input { width: 1fr; }
    .dialog #invite-text { height: 4; }
    .dialog #member-list { height: 1fr; min-height: 3; }
    #help-keys { height: 1fr; }
    TransferRow { height: auto; }
    """
    #: Footer order: help first, so a narrow terminal still shows where the rest is.
    #: A tooltip is the longer text the help screen (F1) shows.
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("f1", "help", "Help", tooltip="every key, on every screen"),
        Binding(
            "ctrl+q",
            "quit",
            "Quit",
            priority=True,
            show=False,  # a priority binding would come first in the footer, before Help
            tooltip="the daemon keeps running",
        ),
        Binding("ctrl+n", "add_contact", "Add", tooltip="a contact, by ID or btchat: link"),
        Binding("ctrl+r", "requests", "Requests", tooltip="contact requests to answer"),
        Binding("ctrl+t", "transfers", "Files", tooltip="file transfers, with progress"),
        Binding(
            "ctrl+o",
            "send_file",
            "Send file",
            tooltip="offer a file to the contact shown, or post one in the channel",
        ),
        Binding("ctrl+b", "older", "Older", show=False, tooltip="older messages"),
        Binding("ctrl+p", "presence", "Presence", tooltip="online, away, busy, offline"),
        Binding("ctrl+l", "focus_list", "List", show=False, tooltip="back to the list"),
        Binding("ctrl+f", "search", "Search", tooltip="search your conversations"),
        Binding("ctrl+g", "channels", "Channels", tooltip="create, join (paste an invite), leave"),
        Binding(
            "ctrl+s",
            "details",
            "Details",
            tooltip="of the one shown: a contact's safety number and settings, "
            "a channel's invite and members",
        ),
        Binding("f2", "profile", "Profile", tooltip="your display name, status, presence note"),
        Binding("f3", "settings", "Settings", tooltip="network settings, your devices"),
    ]

    def __init__(self, locate: Locate, *, retry: float = RETRY) -> None:
        super().__init__()
        self.locate = locate
        self.retry = retry
        self.client: ApiClient | None = None
        self.connected = False
        self.me: dict[str, Any] = {}
        self.contacts: dict[str, dict[str, Any]] = {}
        self.channels: dict[str, dict[str, Any]] = {}
        self.unread: dict[str, int] = {}
        self.requests: list[dict[str, Any]] = []
        self.transfers: dict[str, dict[str, Any]] = {}
        self.typing: dict[str, Timer] = {}
        self.current: tuple[str, str] | None = None
        self._typing_sent: tuple[str, float] | None = None
        self._no_older: set[str] = set()
        self._list_lock = asyncio.Lock()
        #: Bumped whenever the rows shown are replaced: a page still loading for the rows
        #: shown before is dropped, not mixed in.
        self._shown = 0
        self._loading_older = False
        #: The conversation shown is a page from its past (a search hit far back), not
        #: its latest: new messages are counted unread, not added below it.
        self.past = False
        #: What we announced from here (the API has no read for it: unknown until then).
        self.presence: str | None = None

    # -------------------------------------------------------------- layout

    def compose(self) -> ComposeResult:
        yield Static("connecting to the daemon…", id="banner", markup=False)
        with Horizontal():
            with Vertical(id="sidebar"):
                yield ListView(id="convs")
                yield Static("", id="me", markup=False)
            with Vertical(id="main"):
                yield Static(
                    "Pick a conversation (↑↓ Enter), or add a contact (^N).",
                    id="title",
                    markup=False,
                )
                yield Conversation(id="log")
                yield Static("", id="typing", markup=False)
                yield Input(placeholder="message (Enter sends)", id="input", disabled=True)
        yield Footer(compact=True)

    def on_mount(self) -> None:
        self.query_one("#convs", ListView).focus()
        self.stream()

    # -------------------------------------------------------------- the daemon

    async def call(self, method: str, *args: Any, quiet: bool = False) -> Any:
        """``method`` of the API client, in a thread; an error is shown, ``None`` returned."""
        result, error = await self.try_call(method, *args)
        if error is not None and not quiet:
            self.notify(error, severity="error", markup=False)
        return result

    async def try_call(self, method: str, *args: Any) -> tuple[Any, str | None]:
        """``method`` of the API client, in a thread: ``(result, None)``, or ``(None, why)``
        with the reason as a user reads it (dialogs show it beside the field)."""
        client = self.client
        try:
            if client is None:
                raise DaemonNotRunning()
            return await asyncio.to_thread(getattr(client, method), *args), None
        except DaemonNotRunning as exc:
            return None, plain(str(exc))
        except ApiClientError as exc:
            return None, plain(exc.message, 300)
        except Exception as exc:  # a broken answer must not end the app
            logger.warning("%s failed: %r", method, exc)
            return None, plain(f"{method} failed: {exc}", 300)

    @work(exclusive=True, group="events")
    async def stream(self) -> None:
        """Events until the app quits: connect, reload at ``ready``, retry when gone."""
        while True:
            reason = "the daemon closed the event stream"
            try:
                url, token = await asyncio.to_thread(self.locate)
                self.client = ApiClient(url, token, timeout=15.0)
                async for event in watch_events(url, token, on_ready=self._on_ready):
                    self.apply_event(event)
            except DaemonNotRunning as exc:
                reason = str(exc)
            except ApiClientError as exc:
                reason = exc.message
            except Exception as exc:  # aiohttp's and the OS's many ways to fail
                reason = f"{type(exc).__name__}: {exc}".rstrip(": ")
            self.set_connected(False, reason)
            await asyncio.sleep(self.retry)

    def _on_ready(self) -> None:
        self.run_worker(self._guarded(self.reload(), "reload"), group="reload", exclusive=True)

    def set_connected(self, up: bool, reason: str = "") -> None:
        self.connected = up
        banner = self.query_one("#banner", Static)
        if up:
            banner.add_class("hidden")
        else:
            banner.remove_class("hidden")
            banner.update(
                Text(
                    f"daemon not reachable: {plain(reason, 200)} — retrying every "
                    f"{self.retry:g}s (start it with `btchat up`)"
                )
            )
        self.sub_title = "" if up else "offline"

    async def reload(self) -> None:
        """Everything shown, from the API (after each (re)connection)."""
        me = await self.call("identity", quiet=True)
        if me is None:
            return
        self.me = me
        self.query_one("#me", Static).update(Text(f"you: {me.get('id', '')}", overflow="fold"))
        await self.load_contacts()
        await self.load_channels()
        await self.load_requests()
        await self.load_transfers()
        self.draw_me()
        await self.load_unread()
        self.set_connected(True)
        if self.current is not None:
            await self.open(*self.current)

    async def load_contacts(self) -> None:
        rows = await self.call("list_contacts", quiet=True)
        if rows is not None:
            self.contacts = {c["public_key"]: c for c in rows}
            await self.draw_list()

    async def load_channels(self) -> None:
        rows = await self.call("list_channels", quiet=True)
        self.channels = {c["id"]: c for c in rows or []}
        await self.draw_list()

    async def load_requests(self) -> None:
        rows = await self.call("list_requests", quiet=True)
        if rows is not None:
            self.requests = rows
            self.draw_me()
            if isinstance(self.screen, Requests):
                await self.screen.fill()

    async def load_transfers(self) -> None:
        rows = await self.call("list_transfers", quiet=True)  # 501 where there are no files
        self.transfers = {t["id"]: t for t in rows or []}
        for cid in list(self.channels):
            for f in await self.call("list_channel_files", cid, quiet=True) or []:
                self.transfers[f["id"]] = as_transfer(f)

    async def load_unread(self) -> None:
        for pk in list(self.contacts):
            rows = await self.call("history", pk, PAGE, quiet=True) or []
            self.unread[pk] = sum(
                1 for m in rows if m["direction"] == "in" and m["state"] != "read"
            )
        await self.draw_list()

    # -------------------------------------------------------------- the list

    def party_of(self, t: dict[str, Any]) -> str:
        """Who a transfer is with: a contact, or a channel for a channel's file."""
        if t.get("kind") == "channel":
            ch = self.channels.get(t.get("channel") or "")
            return "#" + (ch.get("name") if ch else str(t.get("channel"))[:12])
        return self.name_of(t.get("contact"))

    def name_of(self, pk: str | None) -> str:
        if not pk:
            return "?"
        if pk == self.me.get("public_key"):
            return "me"
        c = self.contacts.get(pk)
        return c["name"] if c else pk[:12]

    def contact_text(self, c: dict[str, Any]) -> Text:
        dot, colour = presence_dot(c)
        line = Text(no_wrap=True, overflow="ellipsis")
        line.append(dot + " ", style=colour)
        line.append(plain(c["name"], 22), style="bold" if self.unread.get(c["public_key"]) else "")
        if c.get("blocked"):
            line.append(" blocked", style="red")
        if c["public_key"] in self.typing:
            line.append(" …", style="italic")
        n = self.unread.get(c["public_key"], 0)
        if n:
            line.append(f" ({n})", style="bold yellow")
        return line

    def channel_text(self, ch: dict[str, Any]) -> Text:
        line = Text(no_wrap=True, overflow="ellipsis")
        line.append("# ", style="bold")
        line.append(plain(ch["name"], 24))
        n = self.unread.get(ch["id"], 0)
        if n:
            line.append(f" ({n})", style="bold yellow")
        return line

    def _wanted(self) -> list[tuple[str, str, dict[str, Any]]]:
        people = sorted(self.contacts.values(), key=lambda c: (c["name"].casefold(), c["id"]))
        chans = sorted(self.channels.values(), key=lambda c: (c["name"].casefold(), c["id"]))
        return [("contact", c["public_key"], c) for c in people] + [
            ("channel", c["id"], c) for c in chans
        ]

    def redraw(self) -> None:
        """Redraw the list soon (from handlers that cannot wait)."""
        self.run_worker(self.draw_list(), group="list")

    async def draw_list(self) -> None:
        """The list as ``contacts``, ``channels``, ``unread`` and ``typing`` say: rows
        updated in place when the same conversations are there, else rebuilt."""
        async with self._list_lock:
            view = self.query_one("#convs", ListView)
            wanted = self._wanted()
            items = list(view.query(ConvItem))
            if items and [(i.kind, i.key) for i in items] == [(k, key) for k, key, _ in wanted]:
                for item, (kind, _, row) in zip(items, wanted, strict=True):
                    item.show(
                        self.contact_text(row) if kind == "contact" else self.channel_text(row)
                    )
                return
            chosen = view.highlighted_child
            keep = (chosen.kind, chosen.key) if isinstance(chosen, ConvItem) else self.current
            await view.clear()
            new: list[ListItem] = [Heading("Contacts")]
            if not self.contacts:
                new.append(ListItem(Label("none yet: ^N adds one", markup=False), disabled=True))
            for kind, key, row in wanted:
                if kind == "channel" and not any(isinstance(n, ChannelsHeading) for n in new):
                    new.append(ChannelsHeading("Channels"))
                text = self.contact_text(row) if kind == "contact" else self.channel_text(row)
                new.append(ConvItem(kind, key, text))
            await view.extend(new)
            for index, item in enumerate(new):
                if isinstance(item, ConvItem) and (item.kind, item.key) == keep:
                    view.index = index
                    break

    def draw_me(self) -> None:
        waiting = sum(1 for r in self.requests if r.get("direction") == "in")
        offers = sum(
            1 for t in self.transfers.values() if t["direction"] == "in" and t["state"] == "offered"
        )
        line = Text(f"you: {self.me.get('id', '')}", overflow="fold")
        if self.presence is None:
            line.append("\n^P sets your presence", style="dim")
        else:
            dot, colour = PRESENCE_DOTS.get(self.presence, PRESENCE_DOTS["online"])
            line.append(f"\n{dot} you are {self.presence} (^P changes)", style=colour)
        if waiting:
            line.append(f"\n{waiting} contact request(s): ^R", style="bold yellow")
        if offers:
            line.append(f"\n{offers} file offer(s): ^T", style="bold yellow")
        self.query_one("#me", Static).update(line)

    @on(ListView.Selected, "#convs")
    async def _chosen(self, event: ListView.Selected) -> None:
        item = event.item
        if isinstance(item, ConvItem):
            await self.open(item.kind, item.key)
            self.query_one("#input", Input).focus()

    # -------------------------------------------------------------- the conversation

    def title_text(self) -> Text:
        if self.current is None:
            return Text("")
        kind, key = self.current
        if kind == "channel":
            ch = self.channels.get(key, {})
            line = Text()
            line.append("# ", style="bold")
            line.append(plain(ch.get("name"), 60))
            line.append(
                f"  {ch.get('members_online', 0)}/{ch.get('members', 0)} online"
                f"{'  invite-only' if ch.get('invite_only') else ''}",
                style="dim",
            )
            if ch.get("removed"):
                line.append("  the owner removed you: ^G, Del leaves it", style="red")
            return line
        c = self.contacts.get(key, {})
        dot, colour = presence_dot(c)
        line = Text()
        line.append(dot + " ", style=colour)
        line.append(plain(c.get("name"), 60))
        state = c.get("presence", "offline") if c.get("online") else "offline"
        line.append(f"  {state}", style="dim")
        if c.get("verified"):
            line.append("  ✔ verified", style="green")
        if c.get("blocked"):
            line.append("  blocked", style="red")
        line.append(f"  {c.get('id', '')}", style="dim")
        return line

    def message_text(self, m: dict[str, Any]) -> tuple[Text, bool]:
        """How a message of the conversation shown reads, and whether it is ours."""
        if self.current and self.current[0] == "channel":
            mine = m.get("author") == self.me.get("public_key")
            who = self.name_of(m.get("author"))
            note = "(private) " if m.get("private") else ""
            after = None
            if m.get("file"):
                note += "posted a file: "
                t = self.transfers.get(m.get("id") or "")  # a channel file's id is its message's
                after = transfer_state(t) if t is not None else None
            line = message_line(who, m.get("text") or "", m.get("ts"), mine=mine, note=note,
                                after=after)  # fmt: skip
            return line, mine
        mine = m["direction"] == "out"
        who = "me" if mine else self.name_of(m["peer"])
        note, after = "", None
        if m.get("type") == "file":
            note = "offered a file: "
            t = self.transfers.get(m["id"])  # a transfer's id is its offer's message id
            after = transfer_state(t) if t is not None else None
        text = message_line(
            who, m["text"], m["ts"], mine=mine, state=m["state"], note=note, after=after
        )
        return text, mine

    def row_for(self, m: dict[str, Any]) -> MessageRow:
        return MessageRow(m, *self.message_text(m))

    async def open(self, kind: str, key: str) -> None:
        """Show a conversation: its latest page, at the end; a contact's is marked read."""
        self.current = (kind, key)
        self.past = False
        self._shown += 1
        self.stop_typing_notice()
        self.query_one("#title", Static).update(self.title_text())
        self.query_one("#typing", Static).update("")
        box = self.query_one("#input", Input)
        box.disabled = False
        box.placeholder = "message (Enter sends)" if kind == "contact" else "post to the channel"
        if kind == "contact":
            rows = await self.call("history", key, PAGE)
        else:
            rows = await self.call("channel_history", key, PAGE)
        if self.current != (kind, key) or rows is None:
            return
        log = self.query_one("#log", Conversation)
        await log.remove_children()
        log.rows.clear()
        self._no_older.discard(key)
        widgets = [self.row_for(m) for m in rows]
        if kind == "contact" and len(rows) >= PAGE:
            widgets.insert(0, Static("older messages: ^B", classes="older", markup=False))
        for w in widgets:
            if isinstance(w, MessageRow):
                log.rows[w.data["id"]] = w
        await log.mount_all(widgets)
        log.scroll_end(animate=False)
        if kind == "contact":
            self.show_typing(key)
            await self.mark_read(key)
        else:
            self.unread[key] = 0
            await self.draw_list()

    async def mark_read(self, pk: str) -> None:
        if self.unread.get(pk):
            self.unread[pk] = 0
            await self.draw_list()
        await self.call("mark_read", pk, quiet=True)

    async def action_older(self) -> None:
        """The page before the oldest message shown (contacts; channels keep their latest)."""
        if self.current is None or self.current[0] != "contact":
            return
        key = self.current[1]
        log = self.query_one("#log", Conversation)
        shown = [r.data for r in log.rows.values()]
        if not shown or key in self._no_older or self._loading_older:
            return
        self._loading_older = True
        shown_now = self._shown
        try:
            oldest = min(m["lamport"] for m in shown)
            rows = await self.call("history", key, PAGE, oldest)
            if rows is None or self.current != ("contact", key) or self._shown != shown_now:
                return
            for old in log.query(".older"):
                await old.remove()
            rows = [m for m in rows if m["id"] not in log.rows]
            if len(rows) < PAGE:
                self._no_older.add(key)
            if not rows:
                return
            widgets: list[Static] = [self.row_for(m) for m in rows]
            for w in widgets:
                log.rows[w.data["id"]] = w  # type: ignore[attr-defined]
            if len(rows) >= PAGE:
                widgets.insert(0, Static("older messages: ^B", classes="older", markup=False))
            first = log.query(MessageRow).first()
            await log.mount_all(widgets, before=first)
            # Where the reader was stays in view; scrolling on up reaches the new page.
            log.scroll_to_widget(first, animate=False, top=True)
        finally:
            self._loading_older = False

    @on(Conversation.ReachedTop)
    async def _reached_top(self) -> None:
        await self.action_older()

    @on(Input.Submitted, "#input")
    async def _send(self, event: Input.Submitted) -> None:
        text = event.value
        if not text.strip() or self.current is None:
            return
        kind, key = self.current
        event.input.value = ""
        self._typing_sent = None
        if kind == "contact":
            m = await self.call("send_message", key, text)
        else:
            m = await self.call("post_channel", key, text)
        if m is None:
            if not event.input.value:
                event.input.value = text  # not sent: give it back
            return
        if self.current == (kind, key):  # still shown (the reply may come after a switch)
            if self.past:
                await self.open(kind, key)  # back from the past to the latest, with it
            else:
                await self.show_message(m)

    @on(Input.Changed, "#input")
    def _typed(self, event: Input.Changed) -> None:
        if self.current is None or self.current[0] != "contact":
            return
        if not event.value:
            self.stop_typing_notice()  # all deleted: no longer typing
            return
        key, now = self.current[1], time.monotonic()
        last = self._typing_sent
        if last is not None and last[0] == key and now - last[1] < TYPING_EVERY:
            return
        self._typing_sent = (key, now)
        self.run_worker(self.call("send_typing", key, True, quiet=True), group="typing")

    def stop_typing_notice(self) -> None:
        last, self._typing_sent = self._typing_sent, None
        if last is not None:
            self.run_worker(self.call("send_typing", last[0], False, quiet=True), group="typing")

    async def show_message(self, m: dict[str, Any]) -> None:
        """Add (or update) a message in the conversation shown."""
        log = self.query_one("#log", Conversation)
        row = log.rows.get(m["id"])
        if row is not None:
            if "state" in m and "state" in row.data:
                m = {**m, "state": furthest(row.data["state"], m["state"])}
            row.data = m
            row.update(self.message_text(m)[0])
            return
        end = log.at_end()
        row = self.row_for(m)
        log.rows[m["id"]] = row
        await log.mount(row)
        if end or m.get("direction") == "out":
            log.scroll_end(animate=False)

    def show_typing(self, pk: str) -> None:
        if self.current == ("contact", pk):
            on_ = pk in self.typing
            self.query_one("#typing", Static).update(
                Text(plain(self.name_of(pk), 40) + " is typing…") if on_ else Text("")
            )

    # -------------------------------------------------------------- actions

    async def action_presence(self) -> None:
        """Announce the next presence: online, away, busy, offline, online..."""
        order = ("online", "away", "busy", "offline")
        now = self.presence if self.presence in order else "offline"
        wanted = order[(order.index(now) + 1) % len(order)]
        done = await self.call("set_presence", wanted, None)
        if done is not None:
            self.presence = done.get("status", wanted)
            self.draw_me()

    def action_focus_list(self) -> None:
        self.query_one("#convs", ListView).focus()

    @work(group="dialogs")
    async def action_add_contact(self) -> None:
        got = await self.push_screen_wait(AddContact())
        if got is None:
            return
        c = await self.call("add_contact", *got)
        if c is not None:
            self.notify("added " + plain(c["name"], 64), markup=False)
            await self.load_contacts()
            await self.open("contact", c["public_key"])

    async def action_requests(self) -> None:
        await self.load_requests()
        await self.push_screen(Requests(self))

    async def action_transfers(self) -> None:
        await self.load_transfers()
        await self.push_screen(Transfers(self))

    @work(group="dialogs")
    async def action_send_file(self) -> None:
        if self.current is None:
            self.notify("choose a contact or a channel first", severity="warning")
            return
        kind, key = self.current
        if kind == "channel":
            where = "#" + plain(self.channels.get(key, {}).get("name"), 40)
        else:
            where = self.name_of(key)
        path = await self.push_screen_wait(SendFile(where))
        if not path:
            return
        from pathlib import Path

        full = str(Path(path).expanduser().resolve())
        if kind == "channel":
            f = await self.call("send_channel_file", key, full)
            if f is not None:
                self.transfers[f["id"]] = as_transfer(f)
                self.notify("posted " + plain(f["name"], 80) + " in " + where, markup=False)
            return
        t = await self.call("send_file", key, full)
        if t is not None:
            self.transfers[t["id"]] = t
            self.notify("offered " + plain(t["name"], 80) + " (^T shows progress)", markup=False)

    @work(group="dialogs")
    async def action_search(self) -> None:
        hit = await self.push_screen_wait(Search(self))
        if hit is not None:
            await self.open_at(hit)

    @work(group="dialogs")
    async def action_channels(self) -> None:
        cid = await self.push_screen_wait(ChannelsDialog(self))
        if cid is not None and cid in self.channels:
            await self.open("channel", cid)
            self.query_one("#input", Input).focus()

    async def action_details(self) -> None:
        """What ^S shows: the contact's safety number and settings, or the channel's
        invite and members."""
        if self.current is None:
            self.notify("choose a contact or a channel first (↑↓ Enter)", severity="warning")
            return
        kind, key = self.current
        if kind == "contact":
            await self.push_screen(ContactDetails(self, key))
            return
        ch = await self.call("get_channel", key)  # with its invite (uri, .chat file)
        if ch is not None:
            self.channels[key] = {**self.channels.get(key, {}), **ch}
            await self.push_screen(ChannelDetails(self, ch))

    async def action_profile(self) -> None:
        await self.push_screen(Profile(self))

    async def action_settings(self) -> None:
        await self.push_screen(Settings(self))

    async def action_help(self) -> None:
        await self.push_screen(Help(self.help_sections()))

    def help_sections(self) -> list[tuple[str, list[BindingType]]]:
        return [
            ("Main screen", self.BINDINGS),
            ("Contact requests (^R)", Requests.BINDINGS),
            ("File transfers (^T)", Transfers.BINDINGS),
            ("Channels (^G)", ChannelsDialog.BINDINGS),
            ("A channel's details (^S)", ChannelDetails.BINDINGS),
            ("A contact's details (^S)", ContactDetails.BINDINGS),
        ]

    def retitle(self) -> None:
        """The title again, after a contact or channel changed."""
        if self.current is not None:
            self.query_one("#title", Static).update(self.title_text())

    async def forget_channel(self, cid: str) -> None:
        """A channel left: out of the list, and out of view if it was shown."""
        self.unread.pop(cid, None)
        if self.current == ("channel", cid):
            self.current = None
            log = self.query_one("#log", Conversation)
            await log.remove_children()
            log.rows.clear()
            self.query_one("#title", Static).update(Text("Pick a conversation (↑↓ Enter)."))
            box = self.query_one("#input", Input)
            box.disabled = True
        await self.load_channels()

    async def open_at(self, m: dict[str, Any]) -> None:
        """Show the conversation of a search hit with the hit in view and marked: paged
        back from the latest up to ``JUMP_PAGES`` pages, else the page ending at it alone."""
        pk, mid, lamport = m.get("peer"), m.get("id"), m.get("lamport")
        if pk not in self.contacts:
            self.notify("that conversation is no longer in your contacts", severity="warning")
            return
        await self.open("contact", pk)
        if not isinstance(mid, str) or not isinstance(lamport, int):
            return  # not a message as the API gives one: its conversation, at the end
        log = self.query_one("#log", Conversation)
        for _ in range(JUMP_PAGES):
            if mid in log.rows or pk in self._no_older or self.current != ("contact", pk):
                break
            before = len(log.rows)
            await self.action_older()
            if len(log.rows) == before:
                break
        if self.current != ("contact", pk):
            return
        if mid not in log.rows:
            rows = await self.call("history", pk, PAGE, lamport + 1)
            if rows is None or self.current != ("contact", pk):
                return
            self.past = True
            self._shown += 1
            await log.remove_children()
            log.rows.clear()
            widgets: list[Static] = [self.row_for(r) for r in rows]
            for w in widgets:
                log.rows[w.data["id"]] = w  # type: ignore[attr-defined]
            if len(rows) >= PAGE:
                widgets.insert(0, Static("older messages: ^B", classes="older", markup=False))
            else:
                self._no_older.add(pk)
            widgets.append(
                Static(
                    "newer messages are not shown: Enter on the contact shows the latest",
                    classes="older",
                    markup=False,
                )
            )
            await log.mount_all(widgets)
        row = log.rows.get(mid)
        if row is not None:
            row.add_class("found")
            log.scroll_to_widget(row, animate=False, center=True)

    # -------------------------------------------------------------- events

    def apply_event(self, e: dict[str, Any]) -> None:
        kind = e.get("type")
        handler = getattr(self, f"_ev_{kind}", None)
        if handler is None:
            return  # kinds we do not show (and kinds newer daemons add) are ignored
        try:
            result = handler(e)
        except Exception:  # one odd event must not take the stream (and the banner) down
            logger.warning("%r event not shown", kind, exc_info=True)
            return
        if asyncio.iscoroutine(result):
            self.run_worker(self._guarded(result, kind), group="events-apply")

    async def _guarded(self, coro: Any, kind: Any) -> None:
        try:
            await coro
        except Exception:
            logger.warning("%r event not shown", kind, exc_info=True)

    async def _ev_message(self, e: dict[str, Any]) -> None:
        m = e["message"]
        pk = m["peer"]
        shown = self.current == ("contact", pk) and not self.past
        if m["direction"] == "in":
            self._typing_off(pk)
            if not shown and m["state"] != "read":
                self.unread[pk] = self.unread.get(pk, 0) + 1
                await self.draw_list()
        if shown:
            await self.show_message(m)
            if m["direction"] == "in":
                await self.mark_read(pk)

    async def _ev_receipt(self, e: dict[str, Any]) -> None:
        if self.current != ("contact", e["contact"]):
            return
        log = self.query_one("#log", Conversation)
        for mid in e["ids"]:
            row = log.rows.get(mid)
            if row is not None and row.data.get("direction") == "out":
                await self.show_message({**row.data, "state": e["state"]})

    async def _ev_read(self, e: dict[str, Any]) -> None:
        """Read here or on another of our devices: fewer unread in the list."""
        pk = e["contact"]
        if self.unread.get(pk):
            self.unread[pk] = max(0, self.unread[pk] - len(e["ids"]))
            await self.draw_list()

    async def _ev_expired(self, e: dict[str, Any]) -> None:
        await self._ev_receipt({**e, "state": "failed"})

    def _ev_presence(self, e: dict[str, Any]) -> None:
        c = self.contacts.get(e["contact"])
        if c is not None:
            c["presence"] = e["status"]
            self.redraw()
            if self.current == ("contact", e["contact"]):
                self.query_one("#title", Static).update(self.title_text())

    def _ev_typing(self, e: dict[str, Any]) -> None:
        pk = e["contact"]
        self._typing_off(pk)
        if e["on"]:
            self.typing[pk] = self.set_timer(TYPING_SHOWN, lambda: self._typing_off(pk))
        self.show_typing(pk)
        self.redraw()

    def _typing_off(self, pk: str) -> None:
        timer = self.typing.pop(pk, None)
        if timer is not None:
            timer.stop()
            self.show_typing(pk)
            self.redraw()

    def _ev_session(self, e: dict[str, Any]) -> None:
        self._ev_contact(e)

    def _ev_contact(self, e: dict[str, Any]) -> None:
        c = e.get("contact")
        if c and c.get("public_key"):
            self.contacts[c["public_key"]] = c
        elif e.get("action") == "removed":
            self.contacts.pop(e.get("public_key") or "", None)
        self.redraw()
        if self.current and self.current[0] == "contact":
            self.query_one("#title", Static).update(self.title_text())

    async def _ev_request(self, e: dict[str, Any]) -> None:
        await self.load_requests()
        if any(r.get("direction") == "in" for r in self.requests):
            self.notify("a contact request is waiting: ^R")

    async def _ev_channel_message(self, e: dict[str, Any]) -> None:
        cid, m = e["channel"], e["message"]
        if self.current == ("channel", cid):
            await self.show_message(m)
        elif m.get("author") != self.me.get("public_key"):
            self.unread[cid] = self.unread.get(cid, 0) + 1
            await self.draw_list()

    async def _ev_channel_joined(self, e: dict[str, Any]) -> None:
        """Joined on another of our devices, so here too: it appears in the list."""
        await self.load_channels()
        self.retitle()

    async def _ev_channel_removed(self, e: dict[str, Any]) -> None:
        """The owner took us off an invite-only channel's member list (we stay joined)."""
        await self.load_channels()
        ch = self.channels.get(e.get("channel") or "")
        if ch is not None:
            self.notify("the owner removed you from #" + plain(ch.get("name"), 60), markup=False)
        self.retitle()

    def _ev_file_offer(self, e: dict[str, Any]) -> None:
        t = e["transfer"]
        self.transfers[t["id"]] = t
        if t["state"] == "offered":
            self.notify(
                plain(self.name_of(t["contact"]), 40)
                + " offers "
                + plain(t["name"], 60)
                + ": ^T to accept or reject",
                markup=False,
            )
        self._transfers_changed(t)

    def _ev_file_progress(self, e: dict[str, Any]) -> None:
        t = e["transfer"]
        self.transfers[t["id"]] = t
        self._transfers_changed(t)

    def _ev_file_done(self, e: dict[str, Any]) -> None:
        self._ev_file_progress(e)
        t = e["transfer"]
        if t["direction"] == "in" and t["state"] == "done":
            self.notify("received " + plain(t["name"], 60), markup=False)

    def _ev_channel_file_offer(self, e: dict[str, Any]) -> None:
        t = as_transfer(e["file"])
        known = t["id"] in self.transfers
        self.transfers[t["id"]] = t
        if not known and t["state"] == "offered":
            self.notify(
                f"{plain(self.party_of(t), 40)}: {plain(self.name_of(t.get('author')), 40)}"
                f" posted {plain(t['name'], 60)}: ^T to fetch it",
                markup=False,
            )
        self._transfers_changed(t)

    def _ev_channel_file_progress(self, e: dict[str, Any]) -> None:
        t = as_transfer(e["file"])
        self.transfers[t["id"]] = t
        self._transfers_changed(t)

    def _ev_channel_file_done(self, e: dict[str, Any]) -> None:
        self._ev_channel_file_progress(e)
        t = as_transfer(e["file"])
        if t["state"] == "done" and not t.get("mine"):
            self.notify("fetched " + plain(t["name"], 60), markup=False)

    def _transfers_changed(self, t: dict[str, Any] | None = None) -> None:
        self.draw_me()
        if t is not None:  # its offer's line in the conversation shown
            row = self.query_one("#log", Conversation).rows.get(t["id"])
            if row is not None:
                row.update(self.message_text(row.data)[0])
        if isinstance(self.screen, Transfers):
            self.run_worker(self.screen.fill(), group="transfers")

    def _ev_dht(self, e: dict[str, Any]) -> None:
        pass
