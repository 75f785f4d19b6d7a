"""The TUI's dialogs beyond the conversation: channels (create, join, leave), a channel's
invite and members, search, a contact's safety number and settings, your profile, and the
help screen.

How this works: each is a modal screen over :class:`~btchat.tui.app.BtchatApp` (passed
in as ``main``) that talks to the daemon only through the app's ``try_call``, so it is a
client of the public API like the rest of the TUI. What goes wrong (an empty name, an
invite that does not parse, a number out of range, the daemon's own refusal) is said in
the dialog's status line as a sentence; nothing a user types can raise into Textual.
Text from others (channel names, member names, search hits) is made by
:mod:`btchat.tui.text`, never parsed as markup.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar

from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Checkbox, Footer, Input, Label, ListItem, ListView, Static, TextArea

from btchat.cli.network_settings import SWITCHES, setting_text
from btchat.messaging.contacts import ContactChange
from btchat.tui.text import clock, plain, safe

if TYPE_CHECKING:
    from btchat.tui.app import BtchatApp

__all__ = [
    "ChannelDetails",
    "ChannelsDialog",
    "Confirm",
    "ContactDetails",
    "Help",
    "Profile",
    "Search",
    "device_text",
    "key_label",
    "safety_lines",
]

T = TypeVar("T")

#: Matches asked of the daemon per search (the API's default page).
SEARCH_LIMIT = 50
#: Longest invite pasted: a ``btchat:channel`` link or a base64 ``.chat`` file (the API
#: refuses bodies over 64 KiB anyway; this keeps the input line from growing past it).
MAX_INVITE_CHARS = 32 * 1024
#: Retention bounds the daemon enforces (``ContactPatch.retention_days``).
RETENTION_DAYS = (1, 14)
#: Largest file limit the API takes (``FileLimit.max_bytes``).
MAX_FILE_LIMIT = 2**36
MIB = 1024 * 1024


def key_label(key: str) -> str:
    """How a binding's key reads in help text: ``ctrl+f`` as ``^F``, ``f1`` as ``F1``."""
    words = {"escape": "Esc", "enter": "Enter", "delete": "Del", "tab": "Tab"}
    out = []
    for one in key.split(","):
        if one.startswith("ctrl+"):
            out.append("^" + one[5:].upper())
        elif one in words:
            out.append(words[one])
        elif len(one) > 1 and one[0] == "f" and one[1:].isdigit():
            out.append(one.upper())
        else:
            out.append(one)
    return "/".join(out)


class Dialog(ModalScreen[T]):
    """A modal whose ``say`` writes a result or an error in its status line."""

    BINDINGS: ClassVar[list[BindingType]] = [Binding("escape", "dismiss(None)", "Close")]

    def __init__(self, main: BtchatApp) -> None:
        super().__init__()
        self.main = main

    def status_line(self) -> Static:
        return Static("", id="status", classes="status", markup=False)

    def say(self, text: str, *, error: bool = False) -> None:
        self.query_one("#status", Static).update(
            Text(text, style="bold red" if error else "green", overflow="fold")
        )

    async def attempt(self, method: str, *args: Any) -> Any:
        """The API call, its failure said in the status line (``None`` then)."""
        result, error = await self.main.try_call(method, *args)
        if error is not None:
            self.say(error, error=True)
        return result


# ------------------------------------------------------------------ help


class Help(ModalScreen[None]):
    """Every key, read from the bindings of the main screen and of each dialog."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape,f1", "dismiss(None)", "Close"),
    ]

    #: Keys that are no binding of ours (Textual's own widgets handle them).
    BASICS = (
        ("↑ ↓, Enter", "choose a contact, channel, request or search result"),
        ("Tab, Shift+Tab", "move between the fields of a screen"),
        ("Enter (a field)", "send, search or save what the field holds"),
    )

    def __init__(self, sections: Iterable[tuple[str, Iterable[BindingType]]]) -> None:
        super().__init__()
        self.sections = list(sections)

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog wide"):
            yield Label("Keys", classes="title")
            with VerticalScroll(id="help-keys"):
                yield Static(self.text(), markup=False)
            yield Label("↑↓ PgUp PgDn scroll; Esc or F1 closes", classes="hint")

    def on_mount(self) -> None:
        self.query_one("#help-keys", VerticalScroll).focus()

    def text(self) -> Text:
        out = Text()
        for keys, what in self.BASICS:
            out.append(f"{keys:<18}", style="bold")
            out.append(what + "\n")
        for title, bindings in self.sections:
            out.append("\n" + title + "\n", style="bold underline")
            for b in bindings:
                if not isinstance(b, Binding) or not b.description:
                    continue
                out.append(f"{key_label(b.key):<18}", style="bold")
                out.append(b.description)
                out.append(f": {b.tooltip}\n" if b.tooltip else "\n", style="dim")
        return out


# ------------------------------------------------------------------ confirm


class Confirm(ModalScreen[bool]):
    """A yes/no question; only ``y`` says yes."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("y", "dismiss(True)", "Yes"),
        Binding("n,escape", "dismiss(False)", "No"),
    ]

    def __init__(self, question: Text) -> None:
        super().__init__()
        self.question = question

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog"):
            yield Static(self.question, markup=False, classes="title")
            yield Label("y yes, n or Esc no", classes="hint")


# ------------------------------------------------------------------ channels


class ChannelRow(ListItem):
    def __init__(self, ch: dict[str, Any]) -> None:
        line = Text(no_wrap=True, overflow="ellipsis")
        line.append("# ", style="bold")
        line.append(plain(ch.get("name"), 40), style="bold")
        line.append(f"  {ch.get('members', 0)} member(s)", style="dim")
        line.append("  invite-only" if ch.get("invite_only") else "  open", style="dim")
        super().__init__(Label(line, markup=False))
        self.channel = ch


class ChannelsDialog(Dialog[str | None]):
    """Your channels (Enter opens one, Del leaves it), a new one, or one joined by its
    invite. Dismissed with the id of the channel to show."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape", "dismiss(None)", "Close"),
        Binding("delete", "leave", "Leave channel", tooltip="the one chosen in the list"),
    ]

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog wide"):
            yield Label("Channels", classes="title")
            yield ListView(id="channel-list")
            yield Label("New channel", classes="section")
            with Horizontal(classes="row"):
                yield Input(placeholder="name of a new channel", id="new-name", max_length=64)
                yield Checkbox("invite only", id="invite-only")
            yield Label("Join a channel", classes="section")
            yield Input(
                placeholder="paste an invite: a btchat:channel link or .chat text",
                id="invite",
                max_length=MAX_INVITE_CHARS,
            )
            yield self.status_line()
            yield Label(
                "↑↓ Enter open, Del leave; Enter in a field creates or joins; Esc close",
                classes="hint",
            )
        yield Footer(compact=True)

    async def on_mount(self) -> None:
        await self.fill()
        self.query_one("#channel-list", ListView).focus()

    async def fill(self) -> None:
        view = self.query_one("#channel-list", ListView)
        await view.clear()
        rows = sorted(self.main.channels.values(), key=lambda c: (c["name"].casefold(), c["id"]))
        if not rows:
            await view.append(ListItem(Label("no channels yet", markup=False), disabled=True))
            return
        await view.extend(ChannelRow(ch) for ch in rows)
        view.index = 0

    @on(ListView.Selected, "#channel-list")
    def _open(self, event: ListView.Selected) -> None:
        if isinstance(event.item, ChannelRow):
            self.dismiss(event.item.channel["id"])

    @on(Input.Submitted, "#new-name")
    async def _create(self, event: Input.Submitted) -> None:
        name = event.value.strip()
        if not name:
            self.say("a channel needs a name", error=True)
            return
        invite_only = self.query_one("#invite-only", Checkbox).value
        ch = await self.attempt("create_channel", name, invite_only)
        if ch is not None:
            await self.main.load_channels()
            self.dismiss(ch["id"])

    @on(Input.Submitted, "#invite")
    async def _join(self, event: Input.Submitted) -> None:
        invite = event.value.strip()
        if not invite:
            self.say("paste the invite you were given (a btchat:channel link)", error=True)
            return
        ch = await self.attempt("join_channel", invite)
        if ch is not None:
            await self.main.load_channels()
            self.dismiss(ch["id"])

    @work(group="leave")
    async def action_leave(self) -> None:
        row = self.query_one("#channel-list", ListView).highlighted_child
        if not isinstance(row, ChannelRow):
            self.say("choose a channel in the list first", error=True)
            return
        ch = row.channel
        question = Text("Leave ") + safe("#" + plain(ch.get("name"), 60), "bold")
        question.append("? Its messages are deleted here (the other members keep theirs).")
        if not await self.app.push_screen_wait(Confirm(question)):
            return
        _, error = await self.main.try_call("leave_channel", ch["id"])
        if error is not None:
            self.say(error, error=True)
            return
        await self.main.forget_channel(ch["id"])
        await self.fill()
        self.say("left #" + plain(ch.get("name"), 60))


class MemberRow(ListItem):
    def __init__(self, member: dict[str, Any], text: Text) -> None:
        super().__init__(Label(text, markup=False))
        self.member = member


class ChannelDetails(Dialog[None]):
    """A channel's invite text and members; a contact invited gets the invite as a
    message (and, for an invite-only channel, a place on its member list first); the
    owner of an invite-only channel removes a member with Del."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape", "dismiss(None)", "Close"),
        Binding(
            "delete",
            "remove_member",
            "Remove member",
            tooltip="the one chosen in the list (an invite-only channel's owner)",
        ),
    ]

    def __init__(self, main: BtchatApp, channel: dict[str, Any]) -> None:
        super().__init__(main)
        self.channel = channel

    def compose(self) -> ComposeResult:
        ch = self.channel
        with Vertical(classes="dialog wide"):
            title = Text("# ", style="bold")
            title.append(plain(ch.get("name"), 60), style="bold")
            title.append(
                "  invite-only" if ch.get("invite_only") else "  open to anyone with the invite",
                style="dim",
            )
            yield Static(title, classes="title", markup=False)
            yield Label("Invite (whoever has it can ask to join; ^G pastes it):", classes="label")
            yield TextArea(plain(ch.get("uri")), read_only=True, soft_wrap=True, id="invite-text")
            yield Label("Members", classes="section")
            yield ListView(id="member-list")
            yield Input(placeholder="invite a contact: petname or ID (Enter)", id="invite-who")
            yield self.status_line()
            yield Label(
                "Enter invites; select the invite text to copy it; in the list Del removes;"
                " Esc close",
                classes="hint",
            )
        yield Footer(compact=True)

    async def on_mount(self) -> None:
        await self.fill()
        self.query_one("#invite-who", Input).focus()

    async def fill(self) -> None:
        members = await self.attempt("channel_members", self.channel["id"])
        view = self.query_one("#member-list", ListView)
        index = view.index or 0
        await view.clear()
        for m in members or []:
            line = Text(no_wrap=True, overflow="ellipsis")
            on_ = bool(m.get("online") or m.get("me"))
            line.append("● " if on_ else "○ ", style="green" if on_ else "grey50")
            pk = m.get("public_key") or ""
            known = pk in self.main.contacts
            line.append(plain(self.main.name_of(pk) if known else (m.get("id") or pk), 60))
            if m.get("me"):
                line.append("  (you)", style="dim")
            if m.get("role"):
                line.append("  " + plain(str(m["role"]), 20), style="dim")
            await view.append(MemberRow(m, line))
        if members:
            view.index = min(index, len(members) - 1)

    @work(group="remove")
    async def action_remove_member(self) -> None:
        row = self.query_one("#member-list", ListView).highlighted_child
        if not isinstance(row, MemberRow):
            self.say("choose a member in the list first", error=True)
            return
        m = row.member
        if m.get("me"):
            self.say("that is you: ^G, then Del, leaves the channel", error=True)
            return
        if not self.channel.get("invite_only"):
            self.say("an open channel has no member list: anyone with the invite joins", error=True)
            return
        pk = m.get("public_key") or ""
        who = plain(self.main.name_of(pk) if pk in self.main.contacts else m.get("id") or pk, 60)
        question = Text("Remove ") + Text(who, style="bold")
        question.append(" from ")
        question.append_text(safe("#" + plain(self.channel.get("name"), 60), "bold"))
        question.append("? They cannot read what is posted after.")
        if not await self.app.push_screen_wait(Confirm(question)):
            return
        if await self.attempt("change_channel_members", self.channel["id"], [], [pk]) is None:
            return
        await self.fill()
        self.say("removed " + who)

    def _contact(self, who: str) -> dict[str, Any] | None:
        for c in self.main.contacts.values():
            if who in (c.get("name"), c.get("id"), c.get("public_key")):
                return c
        return None

    @on(Input.Submitted, "#invite-who")
    async def _invite(self, event: Input.Submitted) -> None:
        who = event.value.strip()
        if not who:
            self.say("type the petname of a contact, or an ID", error=True)
            return
        ch, contact = self.channel, self._contact(who)
        if ch.get("invite_only"):
            member = contact["public_key"] if contact else who
            if await self.attempt("change_channel_members", ch["id"], [member]) is None:
                return
        if contact is None:
            self.say(
                "on the member list: give them the invite text above"
                if ch.get("invite_only")
                else "not a contact: give them the invite text above",
                error=not ch.get("invite_only"),
            )
        else:
            text = f"Join my channel #{ch.get('name')}: {ch.get('uri')}"
            if await self.attempt("send_message", contact["public_key"], text) is None:
                return
            self.say("invited " + plain(contact["name"], 60) + ": the invite went as a message")
        event.input.value = ""
        await self.fill()


# ------------------------------------------------------------------ search


class Hit(ListItem):
    def __init__(self, message: dict[str, Any], text: Text) -> None:
        super().__init__(Label(text, markup=False))
        self.message = message


class Search(Dialog[dict[str, Any] | None]):
    """Full-text search of the 1:1 history (``GET /v1/search``), of everyone or of the
    contact shown; dismissed with the hit chosen, which the app opens in its
    conversation."""

    def __init__(self, main: BtchatApp) -> None:
        super().__init__(main)
        shown = main.current
        #: The contact shown when the search opened: the one "only" narrows it to.
        self.here = shown[1] if shown is not None and shown[0] == "contact" else None

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog wide"):
            yield Label("Search your conversations", classes="title")
            with Horizontal(classes="row"):
                yield Input(
                    placeholder="words to find (Enter searches)", id="query", max_length=256
                )
                if self.here is not None:
                    yield Checkbox(
                        "only " + plain(self.main.name_of(self.here), 20), id="only-here"
                    )
            yield ListView(id="results")
            yield self.status_line()
            yield Label(
                "Enter searches; ↑↓ choose a hit, Enter opens it there; Tab back; Esc close",
                classes="hint",
            )
        yield Footer(compact=True)

    def on_mount(self) -> None:
        self.query_one("#query", Input).focus()

    def hit_text(self, m: dict[str, Any], words: list[str]) -> Text:
        line = Text(no_wrap=True, overflow="ellipsis")
        line.append(clock(m.get("ts")) + " ", style="dim")
        peer = plain(self.main.name_of(m.get("peer")), 30)
        line.append("me → " + peer if m.get("direction") == "out" else peer, style="bold")
        line.append(": ")
        snippet = safe(plain(m.get("text"), 300))
        snippet.highlight_words(words, "reverse", case_sensitive=False)
        line.append_text(snippet)
        return line

    @on(Input.Submitted, "#query")
    async def _search(self, event: Input.Submitted) -> None:
        q = event.value.strip()
        if not q:
            self.say("type a word to search for", error=True)
            return
        only = self.here is not None and self.query_one("#only-here", Checkbox).value
        rows = await self.attempt("search", q, self.here if only else None, SEARCH_LIMIT)
        if rows is None:
            return
        view = self.query_one("#results", ListView)
        await view.clear()
        words = [w for w in q.replace('"', " ").split() if w]
        await view.extend(Hit(m, self.hit_text(m, words)) for m in rows)
        if rows:
            view.index = 0
            view.focus()  # Enter opens the first; Tab back to the words
            self.say(f"{len(rows)} match(es){'+' if len(rows) >= SEARCH_LIMIT else ''}")
        else:
            self.say("nothing found for “" + plain(q, 60) + "”", error=True)

    @on(ListView.Selected, "#results")
    def _chosen(self, event: ListView.Selected) -> None:
        if isinstance(event.item, Hit):
            self.dismiss(event.item.message)


# ------------------------------------------------------------------ a contact


def safety_lines(number: str) -> str:
    """The safety number in rows of four groups, as the CLI and web app show it."""
    groups = number.split()
    return "\n".join(" ".join(groups[i : i + 4]) for i in range(0, len(groups), 4))


class ContactDetails(Dialog[None]):
    """A contact's safety number (^Y marks it verified after comparing), petname, how
    long messages to them are retried, the largest file they may send, and blocking."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape", "dismiss(None)", "Close"),
        Binding(
            "ctrl+y",
            "verify",
            "Mark verified",
            priority=True,
            tooltip="after comparing the safety number (again: unmark)",
        ),
    ]

    def __init__(self, main: BtchatApp, pk: str) -> None:
        super().__init__(main)
        self.pk = pk

    @property
    def contact(self) -> dict[str, Any]:
        return self.main.contacts.get(self.pk, {})

    def compose(self) -> ComposeResult:
        c = self.contact
        with VerticalScroll(classes="dialog medium"):
            yield Static(id="contact-title", classes="title", markup=False)
            yield Label("Safety number", classes="section")
            yield Static("…", id="safety", classes="safety", markup=False)
            yield Static(id="verified", markup=False)
            yield Label("Petname", classes="label")
            yield Input(value=plain(c.get("name")), id="petname", max_length=64)
            yield Label("Days a message is retried while they are offline (1-14)", classes="label")
            yield Input(value=f"{c.get('retention_days', '')}", id="retention", max_length=8)
            yield Label("Largest file they may send you, in MiB", classes="label")
            yield Input(placeholder="unchanged", id="file-limit", max_length=12)
            yield Checkbox(
                "blocked: they cannot reach you",
                value=bool(c.get("blocked")),
                id="blocked",
            )
            yield self.status_line()
            yield Label(
                "Enter in a field saves it; Space on blocked toggles it; ^Y marks verified (or"
                " not); Esc close",
                classes="hint",
            )
        yield Footer(compact=True)

    async def on_mount(self) -> None:
        self.draw()
        sn = await self.attempt("safety_number", self.pk)
        if sn is not None:
            self.query_one("#safety", Static).update(
                Text(safety_lines(str(sn.get("safety_number", ""))), style="bold")
            )
        self.query_one("#petname", Input).focus()

    def draw(self) -> None:
        c = self.contact
        title = Text(plain(c.get("name"), 60), style="bold")
        title.append("  " + str(c.get("id", "")), style="dim")
        self.query_one("#contact-title", Static).update(title)
        name = plain(c.get("name"), 40)
        if c.get("verified"):
            state = Text(f"✔ verified: you compared it with {name}'s", style="green")
        else:
            state = Text(
                f"not verified: compare it with {name}'s (in person or on a call); "
                "if every digit matches, press ^Y",
                style="yellow",
            )
        self.query_one("#verified", Static).update(state)

    async def changed(self, row: dict[str, Any] | None, what: str) -> None:
        if row is None:
            return
        self.main.contacts[self.pk] = row
        self.main.redraw()
        self.main.retitle()
        self.draw()
        self.say(what)

    async def action_verify(self) -> None:
        now = not self.contact.get("verified")
        row = await self.attempt("update_contact", self.pk, ContactChange(verified=now))
        await self.changed(row, "marked verified" if now else "no longer marked verified")

    @on(Input.Submitted, "#petname")
    async def _rename(self, event: Input.Submitted) -> None:
        name = event.value.strip()
        if not name:
            self.say("a petname cannot be empty", error=True)
            return
        row = await self.attempt("update_contact", self.pk, ContactChange(name=name))
        await self.changed(row, "renamed " + plain(name, 60))

    @on(Input.Submitted, "#retention")
    async def _retention(self, event: Input.Submitted) -> None:
        lo, hi = RETENTION_DAYS
        try:
            days = float(event.value.strip())
        except ValueError:
            days = -1.0
        if not lo <= days <= hi:
            self.say(f"retention is a number of days, {lo} to {hi}", error=True)
            return
        row = await self.attempt("update_contact", self.pk, ContactChange(retention_days=days))
        await self.changed(row, f"messages to them are retried for {days:g} day(s)")

    @on(Checkbox.Changed, "#blocked")
    async def _blocked(self, event: Checkbox.Changed) -> None:
        wanted = event.value
        if wanted == bool(self.contact.get("blocked")):
            return  # set back after a refusal, or unchanged
        row = await self.attempt("update_contact", self.pk, ContactChange(blocked=wanted))
        if row is None:
            event.checkbox.value = not wanted  # refused: show what holds
            return
        await self.changed(row, "blocked" if wanted else "unblocked")

    @on(Input.Submitted, "#file-limit")
    async def _file_limit(self, event: Input.Submitted) -> None:
        try:
            limit = int(float(event.value.strip()) * MIB)
        except (ValueError, OverflowError):
            limit = -1
        if not 0 <= limit <= MAX_FILE_LIMIT:
            self.say(f"the file limit is a size in MiB, 0 to {MAX_FILE_LIMIT // MIB}", error=True)
            return
        done = await self.attempt("set_file_limit", self.pk, limit)
        if done is not None:
            self.say(f"files over {limit / MIB:g} MiB from them are refused")


# ------------------------------------------------------------------ your profile


def device_text(st: dict[str, Any]) -> Text:
    """What ``GET /v1/status`` says about this device, in a few lines (read only: the
    network settings are the daemon's start-up options, not the API's)."""
    dht = st.get("dht") or {}
    via = (st.get("dht_via") or {}).get("name")
    if st.get("tor"):  # no DHT node: the DHT through a contact that serves, or none
        dht_line = f"DHT through {plain(str(via), 40)}" if via else "no DHT (no contact serving)"
    else:
        dht_line = f"DHT {'joined' if dht.get('joined') else 'not joined yet'}, "
        dht_line += f"{dht.get('nodes', 0)} nodes"
    lines = [
        dht_line,
        f"listening on port {st.get('listen_port') or '-'}",
        f"{st.get('contacts_online', 0)} of {st.get('contacts', 0)} contacts online",
    ]
    if st.get("tor"):
        lines.append("Tor mode")
    elif st.get("proxy"):
        lines.append("through a proxy")
    storage = st.get("storage")
    if storage and storage != "ok":
        lines.append("storage: " + plain(str(storage), 80))
    out = Text("\n".join(lines), overflow="fold")
    out.append(
        "\nRelaying for others, bootstrap nodes, proxy and Tor: Settings (F3), applied "
        "at the next start.",
        style="dim",
    )
    return out


class Profile(Dialog[None]):
    """Your display name and status line (the profile contacts fetch), the note sent
    with your presence, and what this device's daemon is doing."""

    def compose(self) -> ComposeResult:
        me = self.main.me
        with VerticalScroll(classes="dialog medium"):
            yield Label("Your profile", classes="title")
            yield Static(
                Text(f"ID {me.get('id', '')}\n{me.get('uri', '')}", overflow="fold"),
                markup=False,
            )
            yield Label(
                "Display name (contacts see it until they choose a petname)", classes="label"
            )
            yield Input(placeholder="your name", id="display-name", max_length=64)
            yield Label(
                "Status line, published with your profile (empty clears it)", classes="label"
            )
            yield Input(placeholder="e.g. on holiday until May", id="profile-status")
            yield Label("Presence note, sent with your presence (empty clears it)", classes="label")
            yield Input(placeholder="e.g. in a meeting", id="presence-note")
            yield self.status_line()
            yield Label("This device", classes="section")
            yield Static("…", id="device", markup=False)
            yield Label("Enter in a field saves it; Esc close", classes="hint")
        yield Footer(compact=True)

    async def on_mount(self) -> None:
        self.query_one("#display-name", Input).focus()
        st, _ = await self.main.try_call("status")
        if isinstance(st, dict):
            self.query_one("#device", Static).update(device_text(st))
        profile = await self.attempt("get_profile")
        if profile is not None:
            self.query_one("#display-name", Input).value = plain(profile.get("name"), 64)
            self.query_one("#profile-status", Input).value = plain(profile.get("status"))

    @on(Input.Submitted, "#display-name")
    async def _name(self, event: Input.Submitted) -> None:
        name = event.value.strip()
        if not name:
            self.say("a display name needs at least one character", error=True)
            return
        if await self.attempt("set_profile", name, None, None) is not None:
            self.say("your display name is now " + plain(name, 64))

    @on(Input.Submitted, "#profile-status")
    async def _status(self, event: Input.Submitted) -> None:
        status = event.value.strip()
        if await self.attempt("set_profile", None, status, None) is not None:
            self.say("status line saved" if status else "status line cleared")

    @on(Input.Submitted, "#presence-note")
    async def _note(self, event: Input.Submitted) -> None:
        note = event.value.strip()
        presence = self.main.presence or "online"
        done = await self.attempt("set_presence", presence, note or None)
        if done is not None:
            self.main.presence = done.get("status", presence)
            self.main.draw_me()
            self.say(f"you are {self.main.presence}" + (": " + plain(note, 140) if note else ""))


# ------------------------------------------------------------------ settings


def devices_text(listing: dict[str, Any]) -> Text:
    """Our devices as ``GET /v1/devices`` lists them (revoking is in the web app and
    ``btchat device revoke``: it cannot be undone, so it is not one key away here)."""
    out = Text(overflow="fold")
    if listing.get("this_revoked"):
        out.append("Another of your devices revoked this one.\n", style="bold red")
    for d in listing.get("devices", []):
        did = str(d.get("device_id", ""))
        out.append(plain(d.get("name"), 40) or "(no name)", style="bold")
        out.append(" " + did[:8], style="dim")
        if d.get("this_device"):
            tags = ["this device"]
        else:
            tags = ["online" if d.get("online") else "offline"]
            tags.append(f"{d['to_sync']} to sync" if d.get("to_sync") else "in sync")
        if did == listing.get("mailbox_device"):
            tags.append("keeps offline delivery")
        out.append("  " + ", ".join(tags) + "\n")
    revoked = listing.get("revoked") or []
    if revoked:
        out.append("revoked: " + ", ".join(str(r)[:8] for r in revoked) + "\n", style="dim")
    return out


class Settings(Dialog[None]):
    """The network settings (``GET/PUT /v1/settings``), written to the config file for
    the next start, and this identity's devices."""

    def compose(self) -> ComposeResult:
        with VerticalScroll(classes="dialog medium"):
            yield Label("Settings", classes="title")
            yield Static("", id="settings-file", markup=False)
            for name in SWITCHES:
                yield Checkbox(name, id=f"set-{name}")
            yield Label("Proxy (socks5://host:port or http://host:port; empty: none)",
                        classes="label")  # fmt: skip
            yield Input(placeholder="none", id="set-proxy", max_length=1024)
            yield Label("Bootstrap nodes (host:port, comma separated; empty: the defaults)",
                        classes="label")  # fmt: skip
            yield Input(placeholder="the defaults", id="set-bootstrap", max_length=4096)
            yield self.status_line()
            yield Label("Your devices", classes="section")
            yield Static("…", id="devices", markup=False)
            yield Label(
                "Space toggles; Enter in a field saves it; changes apply at the next start; "
                "Esc close",
                classes="hint",
            )
        yield Footer(compact=True)

    async def on_mount(self) -> None:
        self.view: dict[str, Any] = {}
        found, error = await self.main.try_call("get_settings")
        if error is not None:
            self.say(error, error=True)
            for box in self.query(Checkbox):
                box.disabled = True
            for field in self.query(Input):
                field.disabled = True
        else:
            self.draw(found)
        listing, error = await self.main.try_call("list_devices")
        devices = self.query_one("#devices", Static)
        devices.update(devices_text(listing) if error is None else Text(error, style="dim"))
        self.query_one(f"#set-{SWITCHES[0]}", Checkbox).focus()

    def draw(self, view: dict[str, Any]) -> None:
        """Each setting as the next start takes it, with what runs now where different."""
        self.view = view
        settings = view.get("settings", {})
        head = Text(f"config file: {plain(view.get('config_file'), 200)}", overflow="fold")
        if view.get("problem"):
            head.append("\n" + plain(view["problem"], 300), style="bold red")
        self.query_one("#settings-file", Static).update(head)
        for name in SWITCHES:
            st = settings.get(name, {})
            box = self.query_one(f"#set-{name}", Checkbox)
            label = f"{name}: {plain(st.get('about'), 80)}"
            if st.get("value") != st.get("next_start"):
                label += f" (now {setting_text(st.get('value'))})"
            if st.get("source") == "environment":
                label += " [set by the environment, which wins]"
            with box.prevent(Checkbox.Changed):
                box.value = bool(st.get("next_start"))
            box.label = label
        proxy = settings.get("proxy", {}).get("next_start")
        self.query_one("#set-proxy", Input).value = "" if proxy is None else plain(proxy, 1024)
        boot = settings.get("bootstrap", {}).get("next_start") or []
        self.query_one("#set-bootstrap", Input).value = ", ".join(plain(b, 262) for b in boot)

    async def save(self, changes: dict[str, Any], done: str) -> bool:
        view = await self.attempt("save_settings", changes)
        if view is None:
            return False
        self.draw(view)
        self.say(done + "; restart btchat to apply")
        return True

    @on(Checkbox.Changed)
    async def _switch(self, event: Checkbox.Changed) -> None:
        name = (event.checkbox.id or "").removeprefix("set-")
        if name not in SWITCHES:
            return
        if not await self.save({name: event.value}, f"{name} {setting_text(event.value)}"):
            with event.checkbox.prevent(Checkbox.Changed):
                event.checkbox.value = not event.value  # refused: show what holds

    @on(Input.Submitted, "#set-proxy")
    async def _proxy(self, event: Input.Submitted) -> None:
        url = event.value.strip()
        await self.save({"proxy": url or None}, "proxy " + (url or "none"))

    @on(Input.Submitted, "#set-bootstrap")
    async def _bootstrap(self, event: Input.Submitted) -> None:
        nodes = [part.strip() for part in event.value.split(",") if part.strip()]
        await self.save(
            {"bootstrap": nodes or None}, f"{len(nodes) or 'default'} bootstrap node(s)"
        )
