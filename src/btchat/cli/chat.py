"""The messenger half of the command line: ``init``, ``id``, ``up`` and the commands that
talk to a running daemon through its local API (``contacts``, ``send``, ``history``...).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import hashlib
import json
import os
import sys
import unicodedata
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

from btchat.api.client import ApiClient, ApiClientError, DaemonNotRunning, read_api_files
from btchat.api.facade import MAX_TEXT_BYTES
from btchat.cli import tuicmd, webopen
from btchat.cli.base import UserError, emit, stop_on_signal
from btchat.cli.render import (
    Names,
    channel_file_line,
    channel_line,
    channel_message_line,
    contact_line,
    describe_event,
    emit_rows,
    human_size,
    member_line,
    request_line,
    show_message,
    transfer_line,
)
from btchat.cli.terminal import terminal_safe
from btchat.errors import ApiError
from btchat.messaging.contacts import ContactChange
from btchat.net.proxy import TOR_SOCKS, ProxyUrl, parse_proxy
from btchat.node.config import (
    ENV_DATA_DIR,
    ENV_PROXY,
    ENV_TOR,
    ConfigError,
    Settings,
    parse_control,
    resolve,
    setting,
)

__all__ = ["add_commands"]


def settings(args: argparse.Namespace) -> Settings:
    """This command's settings: its flags, then the environment, then the config file."""
    flags = {
        name: getattr(args, name, None)
        for name in (
            "data_dir",
            "bootstrap",
            "host",
            "port",
            "dht_port",
            "api_port",
            "request_poll",
            "channel_discovery",
            "lsd_interface",
            "passphrase_file",
            "no_passphrase",
            "proxy",
            "tor",
            "tor_control",
            "upnp",
            "relay",
            "dht_proxy",
            "lan",
            "bind6",
            "ipv6",
            "ipv4",
            "files_dir",
        )
    }
    if flags["data_dir"] is not None:
        flags["data_dir"] = Path(flags["data_dir"])
    try:
        return resolve(flags, config_file=args.config)
    except ConfigError as exc:
        raise UserError(str(exc)) from None


def control_port(text: str) -> tuple[str, int]:
    """``--tor-control`` as an argparse type."""
    try:
        return parse_control(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def proxy_url(text: str) -> ProxyUrl:
    """``--proxy`` as an argparse type (its message is shown as the usage error)."""
    try:
        return parse_proxy(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def data_dir(args: argparse.Namespace) -> Path:
    """``--data-dir``, else ``$BTCHAT_DATA_DIR``, else the platform's data directory."""
    flag = getattr(args, "data_dir", None)
    return setting("data_dir", Path(flag) if flag else None)


def parents(common: argparse.ArgumentParser) -> tuple[argparse.ArgumentParser, ...]:
    """The shared options of messenger commands: (``--data-dir``, ``--passphrase-file``)."""
    chat = argparse.ArgumentParser(add_help=False, parents=[common])
    chat.add_argument("--data-dir", help=f"where btchat keeps its data (env {ENV_DATA_DIR})")
    secret = argparse.ArgumentParser(add_help=False)
    secret.add_argument("--passphrase-file", type=Path, help="read the passphrase from a file")
    return chat, secret


def add_commands(sub: Any, common: argparse.ArgumentParser) -> None:
    chat, secret = parents(common)

    p = sub.add_parser("init", parents=[chat, secret], help="create your identity")
    p.add_argument(
        "--no-passphrase",
        action="store_true",
        help="store the private key unencrypted (bots, tests)",
    )
    p.set_defaults(func=cmd_init)

    p = sub.add_parser("id", parents=[chat], help="show your ID, URI and QR code")
    p.add_argument("--png", type=Path, help="also write the QR code as PNG")
    p.add_argument("--svg", type=Path, help="also write the QR code as SVG")
    p.add_argument("--no-qr", action="store_true", help="do not draw the QR code")
    p.set_defaults(func=cmd_id)

    p = sub.add_parser(
        "up",
        parents=[chat, secret],
        help="run the messenger daemon (creates your identity on first use)",
    )
    p.add_argument(
        "--no-passphrase",
        action="store_true",
        help="if no identity exists yet, create one stored unencrypted",
    )
    p.add_argument(
        "--port",
        type=int,
        default=0,
        help="TCP port for sessions (default: the DHT's port number if free, else any)",
    )
    p.add_argument(
        "--dht-port",
        type=int,
        default=None,
        help="UDP port of the DHT node and of sessions over QUIC (default 6881)",
    )
    p.add_argument("--api-port", type=int, default=0, help="local API port (default: any)")
    p.add_argument(
        "--in-browser",
        action="store_true",
        help="create or unlock the identity in the web app, not at a terminal "
        "(when no passphrase file or environment gives it)",
    )
    p.add_argument("--host", default="0.0.0.0", help="address for sessions and DHT")
    p.add_argument(
        "--files-dir",
        type=Path,
        default=None,
        metavar="DIR",
        help="where accepted files are saved (default: DATA_DIR/files)",
    )
    p.add_argument(
        "--request-poll",
        type=float,
        default=None,
        metavar="SECONDS",
        help="how often to look for contact requests (default 60)",
    )
    p.add_argument(
        "--channel-discovery",
        default="dht,trackers,lsd",
        metavar="WAYS",
        help="how channel members are found: any of dht,trackers,lsd (default all; LAN "
        "discovery is off when --host is a loopback address)",
    )
    p.add_argument(
        "--lsd-interface",
        default=None,
        metavar="IP",
        help="interface address for LAN discovery (default: the --host address)",
    )
    p.add_argument(
        "--proxy",
        type=proxy_url,
        metavar="URL",
        help="dial sessions and channel links through this proxy: socks5://IP:PORT or "
        f"http://IP:PORT, optionally with user:pass@ (env {ENV_PROXY})",
    )
    p.add_argument(
        "--tor",
        action="store_const",
        const=True,
        help="Tor mode: nothing leaves but through the proxy (default Tor's "
        f"{TOR_SOCKS}); no DHT, no UDP, no LAN discovery (env {ENV_TOR})",
    )
    p.add_argument(
        "--tor-control",
        type=control_port,
        metavar="IP:PORT",
        help="Tor mode: make an onion service for the session port through Tor's control "
        "port, e.g. 127.0.0.1:9051 (env BTCHAT_TOR_CONTROL, config [net] tor_control)",
    )
    p.add_argument(
        "--no-upnp",
        dest="upnp",
        action="store_const",
        const=False,
        default=None,
        help="do not map ports on the home gateway: no UPnP, PCP or NAT-PMP"
        " (env BTCHAT_UPNP=0, config [net] upnp)",
    )
    p.add_argument(
        "--no-relay",
        dest="relay",
        action="store_const",
        const=False,
        default=None,
        help="do not relay sessions between your contacts (env BTCHAT_RELAY=0, config [net] relay)",
    )
    p.add_argument(
        "--no-dht-proxy",
        dest="dht_proxy",
        action="store_const",
        const=False,
        default=None,
        help="do not run DHT operations for contacts in Tor mode (env BTCHAT_DHT_PROXY=0, "
        "config [net] dht_proxy)",
    )
    p.add_argument(
        "--no-lan",
        dest="lan",
        action="store_const",
        const=False,
        default=None,
        help="do not announce contacts on the LAN (env BTCHAT_LAN=0, config [net] lan)",
    )
    p.add_argument(
        "--bind6",
        default=None,
        metavar="IPV6",
        help="address of the IPv6 DHT socket, or off (config [dht] bind6; default :: when "
        "this host has IPv6, ::1 when --host is loopback)",
    )
    p.add_argument(
        "--no-ipv6",
        dest="ipv6",
        action="store_const",
        const=False,
        default=None,
        help="IPv4 only: no IPv6 DHT, no sessions over IPv6 (env BTCHAT_IPV6=0, [net] ipv6)",
    )
    p.add_argument(
        "--no-ipv4",
        dest="ipv4",
        action="store_const",
        const=False,
        default=None,
        help="IPv6 only: no IPv4 DHT socket (config [net] ipv4)",
    )
    p.set_defaults(func=cmd_up)

    p = sub.add_parser(
        "doctor",
        parents=[chat, secret],
        help="check the data directory; restore the message database from a backup",
    )
    mend = p.add_mutually_exclusive_group()
    mend.add_argument(
        "--restore",
        nargs="?",
        const="newest",
        metavar="BACKUP",
        help="put back a backup (default: the newest sound one); the current file is kept aside",
    )
    mend.add_argument(
        "--new-database",
        action="store_true",
        help="start over with an empty history; the current file is kept aside",
    )
    p.set_defaults(func=cmd_doctor)

    def command(
        group: Any, name: str, func: Any, *positional: str, help: str | None = None
    ) -> argparse.ArgumentParser:
        """A subcommand of ``group`` taking the daemon flags and ``positional`` arguments."""
        # No help= at all keeps a command out of its group's list, as before.
        p = group.add_parser(name, parents=[chat], **({"help": help} if help else {}))
        for arg in positional:
            p.add_argument(arg)
        p.set_defaults(func=func)
        return p

    command(sub, "status", cmd_status, help="what the daemon is doing")
    contacts = lister("list_contacts", "contacts", contact_line, "no contacts yet")
    command(sub, "contacts", contacts, help="list contacts")

    contact = sub.add_parser("contact", help="manage one contact").add_subparsers(
        dest="contact_command", required=True
    )
    p = command(contact, "add", cmd_contact_add, help="add a contact by ID or btchat: URI")
    p.add_argument("ref", metavar="ID|URI", nargs="?", help="their ID (not with --qr)")
    p.add_argument("name", nargs="?", help="petname")
    p.add_argument(
        "--qr", type=Path, metavar="PICTURE", help="read their ID from a picture of their QR code"
    )
    command(contact, "rename", lambda a: patch(a, name=a.name), "contact", "name",
            help="give a contact another petname")  # fmt: skip
    for verb, field, value, what in (
        ("block", "blocked", True, "refuse their sessions and messages"),
        ("unblock", "blocked", False, "take them back"),
        ("verify", "verified", True, "mark their safety number as compared"),
        ("unverify", "verified", False, "take the mark back"),
    ):
        command(contact, verb, lambda a, f=field, v=value: patch(a, **{f: v}), "contact",
                help=what)  # fmt: skip
    p = command(
        contact,
        "retention",
        cmd_contact_retention,
        "contact",
        help="how long a message to this contact is retried while they are offline",
    )
    p.add_argument("days", type=float, nargs="?", help="1 to 14 (default 2); none: show it")
    command(contact, "remove", cmd_contact_remove, "contact",
            help="forget a contact (the history stays)")  # fmt: skip
    command(contact, "safety", cmd_contact_safety, "contact", help="the safety number to compare")
    p = command(
        contact,
        "dial",
        cmd_contact_dial,
        "contact",
        help="open a session at an address given by hand (the only way in Tor mode)",
    )
    p.add_argument("address", metavar="IP:PORT")

    p = command(sub, "send", cmd_send, "contact", help="send a message")
    text_arguments(p)
    p = command(
        sub, "history", cmd_history, "contact",
        help="show a conversation (read from the database when no daemon runs)",
    )  # fmt: skip
    p.add_argument("--limit", type=int, default=50)
    p.add_argument("--before", type=int, metavar="LAMPORT",
                   help="only messages older than this one (paging back)")  # fmt: skip
    p = command(sub, "search", cmd_search, "query", help="search your history")
    p.add_argument("--contact")
    command(sub, "read", cmd_read, "contact", help="mark a conversation read")
    p = command(sub, "presence", cmd_presence, help="set online/away/busy/offline")
    p.add_argument("state", choices=["online", "away", "busy", "offline"])
    p.add_argument("--note")
    p = command(sub, "profile", cmd_profile, help="show or change your public profile")
    p.add_argument("--name", help="display name")
    p.add_argument("--status", help="status line")
    p.add_argument("--avatar", type=Path, help="avatar image (its SHA-256 is published)")

    p = command(sub, "send-file", cmd_send_file, "contact", "path", help="offer a file")
    command(sub, "files", cmd_files, help="file transfers with progress")
    for verb in ("accept", "reject", "cancel", "pause", "resume"):
        command(
            sub,
            f"{verb}-file",
            lambda a, v=verb: cmd_file_action(a, v),
            "id",
            help=f"{verb} a file transfer",
        )
    p = command(
        sub, "file-limit", cmd_file_limit, "contact", help="largest file a contact may offer"
    )
    p.add_argument("max_bytes", type=byte_size, metavar="SIZE", help="e.g. 500000, 100MB, 2GiB")

    requests = lister("list_requests", "requests", request_line, "no contact requests")
    command(sub, "requests", requests, help="list contact requests")
    request = sub.add_parser("request", help="contact requests").add_subparsers(
        dest="request_command", required=True
    )
    p = command(
        request,
        "send",
        cmd_request_send,
        help="ask someone who does not know you yet to add you",
    )
    p.add_argument("ref", metavar="ID|URI")
    p.add_argument("--note", help="a short message shown with the request")
    for verb, accept in (("accept", True), ("reject", False)):
        p = command(request, verb, lambda a, ok=accept: cmd_request_answer(a, ok))
        p.add_argument("id", help="request id (from `btchat requests`)")
        if accept:
            p.add_argument("--name", help="petname for the new contact")

    channels = lister("list_channels", "channels", channel_line, "no channels")
    command(sub, "channels", channels, help="list joined channels")
    channel = sub.add_parser("channel", help="group channels").add_subparsers(
        dest="channel_command", required=True
    )
    p = command(
        channel, "create", cmd_channel_create, "name", help="create a channel and its .chat file"
    )
    p.add_argument("--invite-only", action="store_true", help="only members you invite")
    p.add_argument("--tracker", action="append", default=[], metavar="URL")
    p.add_argument("--out", default=".", help="directory for NAME.chat (default: here)")
    p = command(channel, "join", cmd_channel_join, help="join from a .chat file or link")
    p.add_argument("ref", metavar="FILE|URI")
    p = command(
        channel,
        "invite",
        cmd_channel_invite,
        "channel",
        help="print the channel's link to share (and, invite-only, add members by ID)",
    )
    p.add_argument("members", nargs="*", metavar="ID")
    p = command(
        channel, "remove", cmd_channel_remove, "channel", help="remove members (invite-only owner)"
    )
    p.add_argument("members", nargs="+", metavar="ID")
    command(channel, "leave", cmd_channel_leave, "channel")
    p = command(
        channel,
        "dial",
        cmd_channel_dial,
        "channel",
        help="link to a member at an address given by hand (the only way in Tor mode)",
    )
    p.add_argument("address", metavar="IP:PORT")
    command(channel, "members", cmd_channel_members, "channel", help="members with presence")
    p = command(channel, "send", cmd_channel_send, "channel", help="post to the channel")
    text_arguments(p)
    p.add_argument("--to", action="append", default=[], metavar="ID", help="private to members")
    p = command(channel, "history", cmd_channel_history, "channel")
    p.add_argument("--limit", type=int, default=50)
    p = command(channel, "send-file", cmd_channel_send_file, "channel", "path",
                help="post a file; members fetch it from whoever holds it")  # fmt: skip
    p.add_argument("--name", help="offer it under this name (default: its own)")
    command(channel, "files", cmd_channel_files, "channel", help="files offered in the channel")
    for verb in ("accept", "reject", "cancel", "pause", "resume"):
        command(
            channel,
            f"{verb}-file",
            lambda a, v=verb: cmd_channel_file_action(a, v),
            "channel",
            "id",
            help=f"{verb} a channel file" + (" (fetch it)" if verb == "accept" else ""),
        )
    p = command(channel, "serve", cmd_channel_serve, "channel",
                help="whether you serve the channel's files to its members")  # fmt: skip
    p.add_argument("serve", choices=["on", "off"])

    command(sub, "watch", cmd_watch, help="print live events")
    webopen.add_command(sub, chat)
    tuicmd.add_command(sub, chat)


# ------------------------------------------------------------------ helpers


@contextlib.contextmanager
def api_errors() -> Iterator[None]:
    """A daemon that is not running, or an API error, as one line for the user."""
    try:
        yield
    except DaemonNotRunning as exc:
        raise UserError(str(exc)) from None
    except ApiClientError as exc:
        raise UserError(exc.message) from None


def call(args: argparse.Namespace, method: str, *a: Any, **kw: Any) -> Any:
    """``method`` of the running daemon's API client."""
    with api_errors():
        url, token = read_api_files(data_dir(args))
        return getattr(ApiClient(url, token), method)(*a, **kw)


def lister(
    method: str, key: str, line: Callable[[dict[str, Any]], str], empty: str
) -> Callable[[argparse.Namespace], Awaitable[None]]:
    """A command that prints the rows ``method`` returns, one ``line`` each."""

    async def run(args: argparse.Namespace) -> None:
        emit_rows(args, key, call(args, method), line, empty)

    return run


def ask_passphrase(new: bool) -> str | None:
    """Prompt on a terminal (a new one with a strength hint, typed twice); ``None`` when
    there is no terminal."""
    if not sys.stdin.isatty():
        return None
    import getpass

    if not new:
        return getpass.getpass("Passphrase: ")
    from btchat.cli.passphrase import choose_passphrase

    chosen = choose_passphrase(getpass.getpass, input, lambda s: print(s, file=sys.stderr))
    if chosen is None:
        raise UserError("no passphrase chosen; nothing was created")
    return chosen


# ------------------------------------------------------------------ commands


def create_identity(args: argparse.Namespace) -> tuple[Any, bool]:
    """Create the identity in the data directory: (loaded keys, encrypted?)."""
    from btchat.node.boot import BootError, create_identity

    conf = Settings(
        data_dir=data_dir(args),
        bootstrap=[],
        passphrase_file=args.passphrase_file,
        no_passphrase=args.no_passphrase,
    )
    try:
        return create_identity(conf, ask_passphrase)
    except BootError as exc:
        raise UserError(str(exc)) from None


async def cmd_init(args: argparse.Namespace) -> None:
    from btchat.identity.idtext import format_id

    keys, encrypted = create_identity(args)
    pk = keys.identity.public_key
    emit(
        args,
        {
            "id": format_id(pk),
            "public_key": pk.hex(),
            "data_dir": str(data_dir(args)),
            "encrypted": encrypted,
        },
        f"created your identity: {format_id(pk, grouped=True)}",
    )


async def cmd_id(args: argparse.Namespace) -> None:
    from btchat.identity.idtext import format_id, format_uri
    from btchat.identity.keystore import KeyStore, NoIdentity
    from btchat.identity.qr import qr_terminal, save_qr

    try:
        pk = KeyStore(data_dir(args)).public_key()
    except NoIdentity as exc:
        raise UserError(str(exc)) from None
    uri = format_uri(pk)
    for path in (args.png, args.svg):
        if path is not None:
            save_qr(uri, path)
    text = f"{format_id(pk, grouped=True)}\n{uri}"
    if not args.no_qr and not args.json:
        text += "\n" + qr_terminal(uri, ansi=sys.stdout.isatty() and not os.environ.get("NO_COLOR"))
    emit(args, {"id": format_id(pk), "uri": uri, "public_key": pk.hex()}, text, ours=True)


async def cmd_up(args: argparse.Namespace) -> None:
    from btchat.identity.idtext import format_id, parse_id
    from btchat.node.boot import BootError, start_node

    conf = settings(args)
    stop = stop_on_signal()
    starting = asyncio.ensure_future(
        start_node(
            conf,
            ask=ask_passphrase,
            notice=lambda text: print(text, file=sys.stderr, flush=True),
            in_browser=args.in_browser,
        )
    )
    stopping = asyncio.ensure_future(stop.wait())
    # A start waiting for the web app to unlock it still ends on a signal.
    await asyncio.wait({starting, stopping}, return_when=asyncio.FIRST_COMPLETED)
    stopping.cancel()
    if not starting.done():
        starting.cancel()
        with contextlib.suppress(asyncio.CancelledError, BootError, ConfigError):
            await starting
        return
    try:
        node = starting.result()
    except (BootError, ConfigError) as exc:
        raise UserError(str(exc)) from None
    try:
        status = await node.daemon.status()
        emit(
            args,
            {
                "api": node.api_url,
                "web": webopen.web_url(node.api_url),
                "id": status["id"],
                "listen_port": status["listen_port"],
                "dht": status["dht"]["addr"],
                "pid": os.getpid(),
                "proxy": status["proxy"]["url"] if status["proxy"] else None,
                "tor": status["tor"],
            },
            f"btchat is up: {format_id(parse_id(status['id']), grouped=True)}\n"
            f"API {node.api_url}, "
            f"sessions on port {status['listen_port']}"
            + _network_note(status)
            + f"\nWeb app {webopen.web_url(node.api_url)} (`btchat open` signs you in)",
        )
        notices = asyncio.ensure_future(_say_when_joined(node.daemon))
        try:
            await stop.wait()
        finally:
            notices.cancel()
    finally:
        await node.stop()


async def _say_when_joined(daemon: Any) -> None:
    """One plain line on stderr each time the node (re)joins the DHT (a log warning
    already says when no DHT node answers)."""
    joined: asyncio.Event = daemon.joined_event  # Tor mode: set while a contact serves
    while True:
        await joined.wait()
        status = await daemon.status()
        if status["tor"]:
            print(dht_via_text(status.get("dht_via")), file=sys.stderr)
        else:
            print(f"joined the DHT ({status['dht']['nodes']} nodes known)", file=sys.stderr)
        while joined.is_set():
            await asyncio.sleep(1.0)


def _network_note(status: dict[str, Any]) -> str:
    """What ``up`` says about the way out: the proxy, and Tor mode's limits."""
    if status["tor"]:
        onion = status.get("onion") or {}
        if onion.get("address"):
            return (
                f"\nTor mode through {status['proxy']['url']}: onion service "
                f"{onion['address']} (contacts dial it: `btchat contact dial NAME ADDRESS`)"
            )
        return (
            f"\nTor mode through {status['proxy']['url']}: no DHT node, no UDP; dial a "
            "contact with `btchat contact dial` and the DHT then goes through it if it "
            "serves; channel members with `btchat channel dial`"
        )
    if status["proxy"]:
        return f"\nsessions and channel links through {status['proxy']['url']}"
    return ""


async def cmd_doctor(args: argparse.Namespace) -> None:
    from btchat.node import doctor
    from btchat.node.boot import BootError

    conf = settings(args)
    try:
        if args.new_database:
            done = doctor.new_database(conf)
        elif args.restore:
            chosen = None if args.restore == "newest" else Path(args.restore)
            done = doctor.restore_backup(conf, ask_passphrase, chosen)
        else:
            found = doctor.diagnose(conf, ask_passphrase)
            lines = [f"{'ok ' if f.ok else 'BAD'} {f.what}" for f in found]
            emit(args, [{"ok": f.ok, "what": f.what} for f in found], "\n".join(lines))
            if not all(f.ok for f in found):
                raise UserError("problems found: see above (`btchat doctor --help` for repairs)")
            return
    except BootError as exc:
        raise UserError(str(exc)) from None
    emit(args, {"done": done}, done)


async def cmd_status(args: argparse.Namespace) -> None:
    s = call(args, "status")
    dht = s["dht"]
    if s.get("tor"):
        dht_line = f"{dht_via_text(s.get('dht_via'))} (Tor mode: no UDP leaves this machine)"
        if s.get("onion"):
            onion = s["onion"]
            dht_line += f"\nonion service: {onion['address'] or 'none: ' + str(onion['error'])}"
    else:
        dht_line = f"DHT: {'joined' if dht['joined'] else 'NOT joined'}, {dht['nodes']} nodes"
    proxy = s.get("proxy")
    if proxy:
        problem = f"; last error: {proxy['last_error']}" if proxy["last_error"] else ""
        dht_line += (
            f"\nproxy {proxy['url']}: {proxy['connected']} of {proxy['dials']} dials"
            f" connected{problem}"
        )
    emit(
        args,
        s,
        f"{s['id']}\n{dht_line}; contacts online: {s['contacts_online']}/{s['contacts']}"
        + ("" if s.get("tor") else "\n" + network_text(s))
        + records_text(s.get("rendezvous"))
        + ("" if s.get("storage", "ok") == "ok" else f"\nSTORAGE: {s['storage']}"),
    )


def records_text(r: dict[str, int] | None) -> str:
    """One line on candidate records once any was written or read (else nothing)."""
    if not r or not any(r.get(k) for k in ("records_put", "records_read", "records_dropped")):
        return ""
    return (
        f"\ncandidate records: {r['records_put']} written, {r['records_read']} read,"
        f" {r['records_dropped']} dropped, {r['candidates_refused']} candidates refused"
    )


def dht_via_text(via: dict[str, Any] | None) -> str:
    """Tor mode's DHT: through which contact, or none."""
    if not via or not via.get("name"):
        return "no DHT (no contact serving)"
    return f"DHT through {via['name']}"


def network_text(s: dict[str, Any]) -> str:
    """What kind of network we are on, in two lines: where we are seen, the mapping."""
    dht, seen = s["dht"], s["dht"].get("reachability") or {}
    external = dht.get("external_addr") or (
        f"{seen['external_ip']} (the port differs per destination)"
        if seen.get("external_ip")
        else "not known yet"
    )
    line = f"network: {seen.get('label', 'unknown')}; external address {external}"
    line += f" (bound to {dht['addr']})"
    pm = s.get("port_mapping")
    if pm is None:
        return line + "\nport mapping: off"
    mapped = ", ".join(
        f"{proto} {pm['external_ip']}:{m['external_port']} -> {m['internal_port']}"
        for proto, m in pm["mappings"].items()
    )
    detail = mapped or pm.get("error") or ""
    scheme = str(pm.get("gateway") or "").partition("://")[0]
    how = {"natpmp": "NAT-PMP", "pcp": "PCP"}.get(scheme, "UPnP")
    return line + f"\nport mapping ({how}): {pm['state']}" + (f": {detail}" if detail else "")


def _ref_from_qr(picture: Path) -> str:
    from btchat.identity.qr_scan import QrImageError, read_qr

    try:
        texts = read_qr(picture.read_bytes())
    except OSError as exc:
        raise UserError(f"cannot read {picture}: {exc.strerror}") from None
    except QrImageError as exc:
        raise UserError(f"{picture}: {exc}") from None
    if not texts:
        raise UserError(f"no QR code found in {picture}")
    return texts[0]


async def cmd_contact_add(args: argparse.Namespace) -> None:
    ref, name = args.ref, args.name
    if args.qr is not None:
        if name is not None:
            raise UserError("with --qr give only the petname: btchat contact add --qr PICTURE NAME")
        ref, name = _ref_from_qr(args.qr), ref
    elif ref is None:
        raise UserError("give their ID (btchat contact add ID NAME) or --qr PICTURE")
    if name and not ref.lower().startswith(("bt", "btchat:")) and name.lower().startswith("bt"):
        raise UserError(f"the ID comes first: btchat contact add {name} {ref}")
    c = call(args, "add_contact", ref, name)
    emit(args, c, f"added {c['name']} ({c['id']})")


async def patch(args: argparse.Namespace, **changes: Any) -> None:
    c = call(args, "update_contact", args.contact, ContactChange(**changes))
    emit(args, c, f"{c['name']}: " + ", ".join(f"{k} = {v}" for k, v in changes.items()))


async def cmd_contact_retention(args: argparse.Namespace) -> None:
    if args.days is not None:
        await patch(args, retention_days=args.days)
        return
    c = call(args, "get_contact", args.contact)
    days = c["retention_days"]
    emit(args, c, f"{c['name']}: a message is retried for {days:g} days while they are offline")


async def cmd_contact_remove(args: argparse.Namespace) -> None:
    call(args, "remove_contact", args.contact)
    emit(args, {"removed": args.contact}, f"removed {args.contact}")


async def cmd_contact_safety(args: argparse.Namespace) -> None:
    r = call(args, "safety_number", args.contact)
    emit(
        args,
        r,
        f"safety number with {r['contact']['name']}:\n{r['safety_number']}\n"
        "Compare it with theirs (in person or by voice); if it matches, run "
        f"`btchat contact verify {r['contact']['name']}`.",
    )


async def cmd_contact_dial(args: argparse.Namespace) -> None:
    c = call(args, "dial_contact", args.contact, args.address)
    emit(args, c, f"session with {c['name']} at {args.address}")


def contact_names(args: argparse.Namespace) -> dict[str, str]:
    """Public key -> petname, for lines that name people (none needed with --json)."""
    return {} if args.json else {c["public_key"]: c["name"] for c in call(args, "list_contacts")}


async def cmd_files(args: argparse.Namespace) -> None:
    names = contact_names(args)
    rows = call(args, "list_transfers")
    emit_rows(args, "transfers", rows, lambda t: transfer_line(t, names), "no transfers")


async def cmd_send_file(args: argparse.Namespace) -> None:
    t = call(args, "send_file", args.contact, str(Path(args.path).resolve()))
    emit(args, t, transfer_line(t, contact_names(args)))


async def cmd_file_action(args: argparse.Namespace, action: str) -> None:
    t = call(args, "act_on_transfer", args.id, action)
    emit(args, t, transfer_line(t, contact_names(args)))


_UNITS = {"": 1, "b": 1, "kb": 10**3, "mb": 10**6, "gb": 10**9, "tb": 10**12,
          "kib": 2**10, "mib": 2**20, "gib": 2**30, "tib": 2**40}  # fmt: skip


def byte_size(text: str) -> int:
    """A size as people write it: 500000, 100MB, 1.5 GiB (decimal and binary units)."""
    number = text.strip().lower().rstrip("bikmgt ")
    unit = text.strip().lower()[len(number) :].strip()
    try:
        value = float(number)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a size: {text!r} (e.g. 100MB)") from None
    if unit not in _UNITS or value < 0:
        raise argparse.ArgumentTypeError(f"not a size: {text!r} (e.g. 100MB, 2GiB)")
    return int(value * _UNITS[unit])


async def cmd_file_limit(args: argparse.Namespace) -> None:
    r = call(args, "set_file_limit", args.contact, args.max_bytes)
    emit(args, r, f"{args.contact} may offer files up to {human_size(r['max_bytes'])}")


def text_arguments(p: argparse.ArgumentParser) -> None:
    """TEXT, or ``-`` for standard input, or ``--file PATH``."""
    p.add_argument("text", nargs="?", help="the message; - reads it from standard input")
    p.add_argument("--file", type=Path, metavar="PATH", help="read the message from a file")


def message_text(args: argparse.Namespace) -> str:
    """The text to send, from the argument, standard input or a file, as given."""
    if args.file is not None and args.text is not None:
        raise UserError("give the message as TEXT or --file, not both")
    if args.file is not None:
        try:
            data = args.file.read_bytes()
        except OSError as exc:
            raise UserError(f"cannot read {args.file}: {exc.strerror}") from None
    elif args.text == "-":
        data = sys.stdin.buffer.read()
    elif args.text is None:
        raise UserError("no message: give TEXT, - (standard input) or --file PATH")
    else:
        return str(args.text)
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise UserError("the message is not UTF-8 text") from None
    text = text[:-1] if text.endswith("\n") else text  # echo and files end with one
    size = len(text.encode("utf-8", "surrogatepass"))
    if size > MAX_TEXT_BYTES:
        raise UserError(
            f"the message is {size:,} bytes; one message holds at most {MAX_TEXT_BYTES:,}"
            " (send a long text as a file: btchat send-file)"
        )
    return text


async def cmd_send(args: argparse.Namespace) -> None:
    m = call(args, "send_message", args.contact, message_text(args))
    emit(args, m, f"{m['state']}: {m['text']}")


def emit_messages(args: argparse.Namespace, rows: list[dict[str, Any]], empty: str) -> None:
    """Print messages with contacts' petnames (one JSON object with --json)."""
    names = contact_names(args)
    emit_rows(args, "messages", rows, lambda m: show_message(m, names), empty)


async def cmd_history(args: argparse.Namespace) -> None:
    """From the daemon, or straight from the database when none runs (read only)."""
    try:
        url, token = read_api_files(data_dir(args))
    except DaemonNotRunning:
        rows, names = history_offline(args)
    else:
        with api_errors():
            client = ApiClient(url, token)
            rows = client.history(args.contact, limit=args.limit, before=args.before)
            contacts = [] if args.json else client.list_contacts()
            names = {c["public_key"]: c["name"] for c in contacts}
    emit_rows(args, "messages", rows, lambda m: show_message(m, names), "no messages yet")
    if rows and len(rows) == args.limit and not args.json:
        print(f"(older: --before {rows[0]['lamport']})", file=sys.stderr)


def history_offline(args: argparse.Namespace) -> tuple[list[dict[str, Any]], dict[str, str]]:
    from btchat.node.boot import BootError
    from btchat.node.reader import read_history

    try:
        found = read_history(settings(args), ask_passphrase, args.contact, args.limit, args.before)
    except BootError as exc:
        raise UserError(str(exc)) from None
    except ApiError as exc:
        raise UserError(exc.message) from None
    return found.messages, found.names


async def cmd_search(args: argparse.Namespace) -> None:
    emit_messages(args, call(args, "search", args.query, contact=args.contact), "nothing found")


async def cmd_read(args: argparse.Namespace) -> None:
    r = call(args, "mark_read", args.contact)
    emit(args, r, f"marked {r['marked']} messages read")


async def cmd_presence(args: argparse.Namespace) -> None:
    r = call(args, "set_presence", args.state, args.note)
    emit(args, r, f"you are {r['status']}")


async def cmd_profile(args: argparse.Namespace) -> None:
    avatar = None
    if args.avatar is not None:
        try:
            avatar = hashlib.sha256(args.avatar.read_bytes()).hexdigest()
        except OSError as exc:
            raise UserError(f"cannot read {args.avatar}: {exc.strerror}") from None
    if args.name is None and args.status is None and avatar is None:
        profile = call(args, "get_profile")
    else:
        profile = call(args, "set_profile", args.name, args.status, avatar)
    emit(args, profile, "\n".join(f"{k}: {v or ''}" for k, v in profile.items()))


async def cmd_request_send(args: argparse.Namespace) -> None:
    r = call(args, "send_request", args.ref, args.note)
    emit(args, r, "request sent (it may take a few minutes to be seen)")


async def cmd_request_answer(args: argparse.Namespace, accept: bool) -> None:
    r = call(args, "answer_request", args.id, accept, getattr(args, "name", None))
    emit(args, r, f"request {r['state']}")


async def cmd_channel_create(args: argparse.Namespace) -> None:
    # The file is claimed first: a create that cannot write its .chat file must not
    # leave a channel behind in the daemon.
    name = unicodedata.normalize("NFC", args.name).strip()
    safe = "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in name) or "channel"
    path = Path(args.out) / f"{safe}.chat"
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        raise UserError(f"{path} exists; choose another --out") from None
    except OSError as exc:
        raise UserError(f"cannot write {path}: {exc.strerror}") from None
    try:
        c = call(args, "create_channel", args.name, args.invite_only, args.tracker)
    except BaseException:
        os.close(fd)
        path.unlink(missing_ok=True)
        raise
    with os.fdopen(fd, "wb") as f:
        f.write(base64.b64decode(c["chatfile"]))
    emit(args, {**c, "file": str(path)}, f"created {c['name']} -> {path}\n{c['uri']}")


async def cmd_channel_dial(args: argparse.Namespace) -> None:
    c = call(args, "dial_channel_member", args.channel, args.address)
    emit(args, c, f"{c['name']}: dialling {args.address}; {c['links']} link(s) up")


async def cmd_channel_join(args: argparse.Namespace) -> None:
    ref = args.ref
    if not ref.lower().startswith("btchat:"):
        try:
            ref = base64.b64encode(Path(ref).read_bytes()[:8192]).decode()
        except OSError as exc:
            raise UserError(f"cannot read {args.ref}: {exc.strerror}") from None
    c = call(args, "join_channel", ref)
    emit(args, c, f"joined {c['name']} ({c['id'][:12]}); looking for members")


async def cmd_channel_invite(args: argparse.Namespace) -> None:
    if args.members:
        call(args, "change_channel_members", args.channel, add=args.members)
    c = call(args, "get_channel", args.channel)
    emit(args, c, f"share this link (or the .chat file) with them:\n{c['uri']}")


async def cmd_channel_remove(args: argparse.Namespace) -> None:
    c = call(args, "change_channel_members", args.channel, remove=args.members)
    emit(args, c, f"removed {len(args.members)} member(s); channel keys moved on")


async def cmd_channel_leave(args: argparse.Namespace) -> None:
    call(args, "leave_channel", args.channel)
    emit(args, {"left": args.channel}, f"left {args.channel}")


async def cmd_channel_members(args: argparse.Namespace) -> None:
    names = contact_names(args)
    rows = call(args, "channel_members", args.channel)
    emit_rows(args, "members", rows, lambda m: member_line(m, names), "")


async def cmd_channel_send(args: argparse.Namespace) -> None:
    m = call(args, "post_channel", args.channel, message_text(args), args.to)
    emit(args, m, f"sent: {m['text']}")


async def cmd_channel_history(args: argparse.Namespace) -> None:
    names = contact_names(args)
    rows = call(args, "channel_history", args.channel, limit=args.limit)
    emit_rows(args, "messages", rows, lambda m: channel_message_line(m, names), "no messages yet")


async def cmd_channel_send_file(args: argparse.Namespace) -> None:
    path = str(Path(args.path).resolve())
    f = call(args, "send_channel_file", args.channel, path, args.name)
    emit(args, f, f"posted {f['name']} ({human_size(f['size'])}) in {args.channel}")


async def cmd_channel_files(args: argparse.Namespace) -> None:
    names = contact_names(args)
    rows = call(args, "list_channel_files", args.channel)
    emit_rows(args, "files", rows, lambda f: channel_file_line(f, names), "no files")


async def cmd_channel_file_action(args: argparse.Namespace, action: str) -> None:
    f = call(args, "act_on_channel_file", args.channel, args.id, action)
    emit(args, f, channel_file_line(f, contact_names(args)))


async def cmd_channel_serve(args: argparse.Namespace) -> None:
    r = call(args, "set_channel_serving", args.channel, args.serve == "on")
    state = "serving" if r["serve"] else "not serving"
    emit(args, r, f"{args.channel}: {state} its files to members")


async def cmd_watch(args: argparse.Namespace) -> None:
    """Events as lines naming people by petname; exits 1 when the daemon goes away."""
    from btchat.api.client import watch_events

    with api_errors():
        url, token = read_api_files(data_dir(args))
        client = ApiClient(url, token)
        names = Names()

        def learn() -> None:
            if not args.json:
                names.contacts = {c["public_key"]: c["name"] for c in client.list_contacts()}
                names.channels = {c["id"]: c["name"] for c in client.list_channels()}

        learn()
        async for event in watch_events(url, token):
            kind = event.get("type")
            unknown = kind == "channel_message" and event.get("channel") not in names.channels
            if kind in ("contact", "channel_removed", "channel_joined") or unknown:
                learn()
            line = json.dumps(event) if args.json else terminal_safe(describe_event(event, names))
            print(line, flush=True)
    raise UserError("the daemon went away (stopped or crashed); `btchat up` starts it again")
