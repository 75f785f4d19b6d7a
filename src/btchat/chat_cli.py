"""The messenger half of the command line: ``init``, ``id``, ``up`` and the commands that
talk to a running daemon through its local API (``contacts``, ``send``, ``history``...).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path
from typing import Any

from btchat.api.client import (
    ApiClient,
    ApiClientError,
    DaemonNotRunning,
    new_token,
    read_api_files,
    remove_api_files,
    watch_events,
    write_api_files,
)

__all__ = ["add_commands"]

log = logging.getLogger(__name__)
ENV_DATA_DIR = "BTCHAT_DATA_DIR"


class ChatError(Exception):
    """A user-facing failure; printed as one line."""


def data_dir(args: argparse.Namespace) -> Path:
    if getattr(args, "data_dir", None):
        return Path(args.data_dir)
    if os.environ.get(ENV_DATA_DIR):
        return Path(os.environ[ENV_DATA_DIR])
    from platformdirs import user_data_dir

    return Path(user_data_dir("btchat"))


def add_commands(sub: Any, common: argparse.ArgumentParser) -> None:
    chat = argparse.ArgumentParser(add_help=False, parents=[common])
    chat.add_argument("--data-dir", help=f"where btchat keeps its data (env {ENV_DATA_DIR})")
    secret = argparse.ArgumentParser(add_help=False)
    secret.add_argument("--passphrase-file", type=Path, help="read the passphrase from a file")

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
    p.add_argument("--port", type=int, default=0, help="TCP port for sessions (default: any)")
    p.add_argument("--dht-port", type=int, default=6881, help="UDP port of the DHT node")
    p.add_argument("--api-port", type=int, default=0, help="local API port (default: any)")
    p.add_argument("--host", default="0.0.0.0", help="address for sessions and DHT")
    p.add_argument(
        "--request-poll",
        type=float,
        default=300.0,
        metavar="SECONDS",
        help="how often to look for contact requests (default 300)",
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
    p.set_defaults(func=cmd_up)

    p = sub.add_parser("status", parents=[chat], help="what the daemon is doing")
    p.set_defaults(func=cmd_status)
    p = sub.add_parser("contacts", parents=[chat], help="list contacts")
    p.set_defaults(func=cmd_contacts)

    contact = sub.add_parser("contact", help="manage one contact").add_subparsers(
        dest="contact_command", required=True
    )
    p = contact.add_parser("add", parents=[chat], help="add a contact by ID or btchat: URI")
    p.add_argument("ref", metavar="ID|URI")
    p.add_argument("name", nargs="?", help="petname")
    p.set_defaults(func=cmd_contact_add)
    p = contact.add_parser("rename", parents=[chat])
    p.add_argument("contact")
    p.add_argument("name")
    p.set_defaults(func=lambda a: patch(a, name=a.name))
    for verb, field, value in (
        ("block", "blocked", True),
        ("unblock", "blocked", False),
        ("verify", "verified", True),
        ("unverify", "verified", False),
    ):
        p = contact.add_parser(verb, parents=[chat])
        p.add_argument("contact")
        p.set_defaults(func=lambda a, f=field, v=value: patch(a, **{f: v}))
    p = contact.add_parser(
        "retention",
        parents=[chat],
        help="how long a message to this contact is retried while they are offline",
    )
    p.add_argument("contact")
    p.add_argument("days", type=float, help="1 to 14 (default 2)")
    p.set_defaults(func=lambda a: patch(a, retention_days=a.days))
    p = contact.add_parser("remove", parents=[chat])
    p.add_argument("contact")
    p.set_defaults(func=cmd_contact_remove)
    p = contact.add_parser("safety", parents=[chat], help="the safety number to compare")
    p.add_argument("contact")
    p.set_defaults(func=cmd_contact_safety)

    p = sub.add_parser("send", parents=[chat], help="send a message")
    p.add_argument("contact")
    p.add_argument("text")
    p.set_defaults(func=cmd_send)
    p = sub.add_parser("history", parents=[chat], help="show a conversation")
    p.add_argument("contact")
    p.add_argument("--limit", type=int, default=50)
    p.set_defaults(func=cmd_history)
    p = sub.add_parser("search", parents=[chat], help="search your history")
    p.add_argument("query")
    p.add_argument("--contact")
    p.set_defaults(func=cmd_search)
    p = sub.add_parser("read", parents=[chat], help="mark a conversation read")
    p.add_argument("contact")
    p.set_defaults(func=cmd_read)
    p = sub.add_parser("presence", parents=[chat], help="set online/away/busy/offline")
    p.add_argument("state", choices=["online", "away", "busy", "offline"])
    p.add_argument("--note")
    p.set_defaults(func=cmd_presence)
    p = sub.add_parser("profile", parents=[chat], help="show or change your public profile")
    p.add_argument("--name", help="display name")
    p.add_argument("--status", help="status line")
    p.add_argument("--avatar", type=Path, help="avatar image (its SHA-256 is published)")
    p.set_defaults(func=cmd_profile)

    p = sub.add_parser("requests", parents=[chat], help="list contact requests")
    p.set_defaults(func=cmd_requests)
    request = sub.add_parser("request", help="contact requests").add_subparsers(
        dest="request_command", required=True
    )
    p = request.add_parser(
        "send", parents=[chat], help="ask someone who does not know you yet to add you"
    )
    p.add_argument("ref", metavar="ID|URI")
    p.add_argument("--note", help="a short message shown with the request")
    p.set_defaults(func=cmd_request_send)
    for verb, accept in (("accept", True), ("reject", False)):
        p = request.add_parser(verb, parents=[chat])
        p.add_argument("id", help="request id (from `btchat requests`)")
        if accept:
            p.add_argument("--name", help="petname for the new contact")
        p.set_defaults(func=lambda a, ok=accept: cmd_request_answer(a, ok))

    p = sub.add_parser("channels", parents=[chat], help="list joined channels")
    p.set_defaults(func=cmd_channels)
    channel = sub.add_parser("channel", help="group channels").add_subparsers(
        dest="channel_command", required=True
    )
    p = channel.add_parser("create", parents=[chat], help="create a channel and its .chat file")
    p.add_argument("name")
    p.add_argument("--invite-only", action="store_true", help="only members you invite")
    p.add_argument("--tracker", action="append", default=[], metavar="URL")
    p.add_argument("--out", default=".", help="directory for NAME.chat (default: here)")
    p.set_defaults(func=cmd_channel_create)
    p = channel.add_parser("join", parents=[chat], help="join from a .chat file or link")
    p.add_argument("ref", metavar="FILE|URI")
    p.set_defaults(func=cmd_channel_join)
    p = channel.add_parser(
        "invite",
        parents=[chat],
        help="print the channel's link to share (and, invite-only, add members by ID)",
    )
    p.add_argument("channel")
    p.add_argument("members", nargs="*", metavar="ID")
    p.set_defaults(func=cmd_channel_invite)
    p = channel.add_parser("remove", parents=[chat], help="remove members (invite-only owner)")
    p.add_argument("channel")
    p.add_argument("members", nargs="+", metavar="ID")
    p.set_defaults(func=cmd_channel_remove)
    p = channel.add_parser("leave", parents=[chat])
    p.add_argument("channel")
    p.set_defaults(func=cmd_channel_leave)
    p = channel.add_parser("members", parents=[chat], help="members with presence")
    p.add_argument("channel")
    p.set_defaults(func=cmd_channel_members)
    p = channel.add_parser("send", parents=[chat], help="post to the channel")
    p.add_argument("channel")
    p.add_argument("text")
    p.add_argument("--to", action="append", default=[], metavar="ID", help="private to members")
    p.set_defaults(func=cmd_channel_send)
    p = channel.add_parser("history", parents=[chat])
    p.add_argument("channel")
    p.add_argument("--limit", type=int, default=50)
    p.set_defaults(func=cmd_channel_history)

    p = sub.add_parser("watch", parents=[chat], help="print live events")
    p.set_defaults(func=cmd_watch)


# ------------------------------------------------------------------ helpers


def emit(args: argparse.Namespace, obj: Any, text: str) -> None:
    print(json.dumps(obj) if args.json else text, flush=True)


def client(args: argparse.Namespace) -> ApiClient:
    url, token = read_api_files(data_dir(args))
    return ApiClient(url, token)


def call(args: argparse.Namespace, method: str, *a: Any, **kw: Any) -> Any:
    try:
        return getattr(client(args), method)(*a, **kw)
    except DaemonNotRunning as exc:
        raise ChatError(str(exc)) from None
    except ApiClientError as exc:
        raise ChatError(exc.message) from None


def passphrase(args: argparse.Namespace, *, new: bool) -> str | None:
    from btchat.identity.keystore import read_passphrase

    value = read_passphrase(file=args.passphrase_file, prompt=False)
    if value is None and sys.stdin.isatty():
        import getpass

        value = getpass.getpass("Passphrase: ")
        if new and getpass.getpass("Again: ") != value:
            raise ChatError("the passphrases differ")
    return value


def _when(ms: int | None) -> str:
    if not ms:
        return ""
    import datetime as dt

    return dt.datetime.fromtimestamp(ms / 1000).strftime("%Y-%m-%d %H:%M")


def show_message(m: dict[str, Any], names: dict[str, str]) -> str:
    who = "me" if m["direction"] == "out" else names.get(m["peer"], m["peer"][:12])
    marks = {
        "pending": "…",
        "sent": "✓",
        "delivered": "✓✓",
        "read": "✓✓ read",
        "failed": "! not delivered",
    }
    state = f"  [{marks.get(m['state'], m['state'])}]" if m["direction"] == "out" else ""
    return f"{_when(m.get('ts'))} {who}: {m['text']}{state}"


# ------------------------------------------------------------------ commands


def channel_config(args: argparse.Namespace) -> Any:
    """Channel discovery from the ``up`` flags; never multicast from a loopback host
    unless an interface is given explicitly."""
    import ipaddress

    from btchat.channels.service import ChannelConfig

    ways = {w.strip() for w in args.channel_discovery.split(",") if w.strip()}
    unknown = ways - {"dht", "trackers", "lsd"}
    if unknown:
        raise ChatError(f"unknown discovery way(s): {', '.join(sorted(unknown))}")
    interface = args.lsd_interface or args.host
    loopback = ipaddress.ip_address(args.host).is_loopback if args.host else False
    lsd = "lsd" in ways and (args.lsd_interface is not None or not loopback)
    options = {"interface": interface} if interface != "0.0.0.0" else {}
    return ChannelConfig(
        host=args.host,
        dht="dht" in ways,
        trackers="trackers" in ways,
        lsd=lsd,
        lsd_options=options,
    )


def create_identity(args: argparse.Namespace) -> tuple[Any, bool]:
    """Create the identity in the data directory: (loaded keys, encrypted?)."""
    import time

    from btchat.identity.keystore import KeyStore, KeyStoreError

    store = KeyStore(data_dir(args))
    if store.exists():
        raise ChatError(f"an identity already exists in {data_dir(args)}")
    secret = None if args.no_passphrase else passphrase(args, new=True)
    if secret is None and not args.no_passphrase:
        raise ChatError(
            "no passphrase given: use --passphrase-file, BTCHAT_PASSPHRASE, "
            "a terminal, or --no-passphrase to store the key unencrypted"
        )
    try:
        return store.create(secret, now=int(time.time())), secret is not None
    except KeyStoreError as exc:
        raise ChatError(str(exc)) from None


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
        raise ChatError(str(exc)) from None
    uri = format_uri(pk)
    for path in (args.png, args.svg):
        if path is not None:
            save_qr(uri, path)
    text = f"{format_id(pk, grouped=True)}\n{uri}"
    if not args.no_qr and not args.json:
        text += "\n" + qr_terminal(uri, ansi=sys.stdout.isatty() and not os.environ.get("NO_COLOR"))
    emit(args, {"id": format_id(pk), "uri": uri, "public_key": pk.hex()}, text)


async def cmd_up(args: argparse.Namespace) -> None:
    from btchat.api.server import start_api
    from btchat.cli import bootstrap_list, stop_on_signal
    from btchat.identity.keystore import KeyStore, KeyStoreError
    from btchat.messaging.store import Store, StoreError
    from btchat.node.daemon import Daemon, DaemonConfig
    from btchat.node.peering import PeeringConfig

    ddir = data_dir(args)
    keystore = KeyStore(ddir)
    try:
        if not keystore.exists():
            print(f"no identity in {ddir} yet: creating one", file=sys.stderr)
            keys, _ = create_identity(args)
        else:
            secret = passphrase(args, new=False) if keystore.is_encrypted() else None
            keys = keystore.load(secret)
    except KeyStoreError as exc:  # no identity, wrong or missing passphrase, damaged file
        raise ChatError(str(exc)) from None
    try:
        store = Store.open(ddir / "messages.db", keys.db_key)
    except StoreError as exc:
        raise ChatError(str(exc)) from None
    stop = stop_on_signal()
    bootstrap = bootstrap_list(args)
    config = DaemonConfig(
        request_poll=args.request_poll,
        data_dir=ddir,
        bootstrap=bootstrap,
        dht_host=args.host,
        dht_port=args.dht_port,
        peering=PeeringConfig(host=args.host, port=args.port),
        channels=channel_config(args),
    )
    daemon = Daemon(config, keys, store)
    try:
        await daemon.start()
    except OSError as exc:
        store.close()
        raise ChatError(f"cannot listen: {exc.strerror}") from None
    token = new_token()
    runner, api_port = await start_api(daemon, token, port=args.api_port)
    url = f"http://127.0.0.1:{api_port}"
    write_api_files(ddir, url, token)
    status = await daemon.status()
    emit(
        args,
        {
            "api": url,
            "id": status["id"],
            "listen_port": status["listen_port"],
            "dht": status["dht"]["addr"],
            "pid": os.getpid(),
        },
        f"btchat is up: {status['id']}\nAPI {url}, sessions on port {status['listen_port']}",
    )
    try:
        await stop.wait()
    finally:
        remove_api_files(ddir)
        await runner.cleanup()
        await daemon.stop()


async def cmd_status(args: argparse.Namespace) -> None:
    s = call(args, "status")
    dht = s["dht"]
    emit(
        args,
        s,
        f"{s['id']}\nDHT: {'joined' if dht['joined'] else 'NOT joined'}, "
        f"{dht['nodes']} nodes; contacts online: {s['contacts_online']}/{s['contacts']}",
    )


async def cmd_contacts(args: argparse.Namespace) -> None:
    rows = call(args, "list_contacts")
    lines = [
        f"{'*' if c['online'] else ' '} {c['name']:<20} {c['presence']:<8} "
        f"{'verified ' if c['verified'] else ''}{'BLOCKED ' if c['blocked'] else ''}{c['id']}"
        for c in rows
    ]
    emit(args, {"contacts": rows}, "\n".join(lines) if lines else "no contacts yet")


async def cmd_contact_add(args: argparse.Namespace) -> None:
    c = call(args, "add_contact", args.ref, args.name)
    emit(args, c, f"added {c['name']} ({c['id']})")


async def patch(args: argparse.Namespace, **changes: Any) -> None:
    c = call(args, "update_contact", args.contact, **changes)
    emit(args, c, f"{c['name']}: " + ", ".join(f"{k} = {v}" for k, v in changes.items()))


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


async def cmd_send(args: argparse.Namespace) -> None:
    m = call(args, "send_message", args.contact, args.text)
    emit(args, m, f"{m['state']}: {m['text']}")


def emit_messages(args: argparse.Namespace, rows: list[dict[str, Any]], empty: str) -> None:
    """Print messages with contacts' petnames (one JSON object with --json)."""
    names = {} if args.json else {c["public_key"]: c["name"] for c in call(args, "list_contacts")}
    emit(args, {"messages": rows}, "\n".join(show_message(m, names) for m in rows) or empty)


async def cmd_history(args: argparse.Namespace) -> None:
    emit_messages(args, call(args, "history", args.contact, limit=args.limit), "no messages yet")


async def cmd_search(args: argparse.Namespace) -> None:
    emit_messages(args, call(args, "search", args.query, contact=args.contact), "nothing found")


async def cmd_read(args: argparse.Namespace) -> None:
    r = call(args, "mark_read", args.contact)
    emit(args, r, f"marked {r['marked']} messages read")


async def cmd_presence(args: argparse.Namespace) -> None:
    r = call(args, "set_presence", args.state, args.note)
    emit(args, r, f"you are {r['status']}")


async def cmd_profile(args: argparse.Namespace) -> None:
    import hashlib

    avatar = None
    if args.avatar is not None:
        try:
            avatar = hashlib.sha256(args.avatar.read_bytes()).hexdigest()
        except OSError as exc:
            raise ChatError(f"cannot read {args.avatar}: {exc.strerror}") from None
    if args.name is None and args.status is None and avatar is None:
        profile = call(args, "get_profile")
    else:
        profile = call(args, "set_profile", args.name, args.status, avatar)
    emit(args, profile, "\n".join(f"{k}: {v or ''}" for k, v in profile.items()))


async def cmd_requests(args: argparse.Namespace) -> None:
    rows = call(args, "list_requests")
    lines = [
        f"{r['id']}  {r['direction']:<3} {r['state']:<9} {r['name'] or ''}  "
        f"{r['contact_id']}  {r['note'] or ''}"
        for r in rows
    ]
    emit(args, {"requests": rows}, "\n".join(lines) if lines else "no contact requests")


async def cmd_request_send(args: argparse.Namespace) -> None:
    r = call(args, "send_request", args.ref, args.note)
    emit(args, r, "request sent (it may take a few minutes to be seen)")


async def cmd_request_answer(args: argparse.Namespace, accept: bool) -> None:
    r = call(args, "answer_request", args.id, accept, getattr(args, "name", None))
    emit(args, r, f"request {r['state']}")


async def cmd_channels(args: argparse.Namespace) -> None:
    rows = call(args, "list_channels")
    lines = [
        f"{c['name']}  {c['id'][:12]}  {'invite-only' if c['invite_only'] else 'open'}  "
        f"{c['members_online']}/{c['members']} online"
        for c in rows
    ]
    emit(args, {"channels": rows}, "\n".join(lines) or "no channels")


async def cmd_channel_create(args: argparse.Namespace) -> None:
    import base64
    from pathlib import Path

    c = call(args, "create_channel", args.name, args.invite_only, args.tracker)
    safe = "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in c["name"]) or "channel"
    path = Path(args.out) / f"{safe}.chat"
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        raise ChatError(f"{path} exists; choose another --out") from None
    with os.fdopen(fd, "wb") as f:
        f.write(base64.b64decode(c["chatfile"]))
    emit(args, {**c, "file": str(path)}, f"created {c['name']} -> {path}\n{c['uri']}")


async def cmd_channel_join(args: argparse.Namespace) -> None:
    import base64
    from pathlib import Path

    ref = args.ref
    if not ref.lower().startswith("btchat:"):
        try:
            ref = base64.b64encode(Path(ref).read_bytes()[:8192]).decode()
        except OSError as exc:
            raise ChatError(f"cannot read {args.ref}: {exc.strerror}") from None
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
    rows = call(args, "channel_members", args.channel)
    lines = [
        f"{'*' if m['online'] else ' '} {m['id']}"
        + (f"  ({m['role']})" if m.get("role") else "")
        + ("  (you)" if m["me"] else "")
        for m in rows
    ]
    emit(args, {"members": rows}, "\n".join(lines))


async def cmd_channel_send(args: argparse.Namespace) -> None:
    m = call(args, "post_channel", args.channel, args.text, args.to)
    emit(args, m, f"sent: {m['text']}")


async def cmd_channel_history(args: argparse.Namespace) -> None:
    rows = call(args, "channel_history", args.channel, limit=args.limit)
    lines = [
        f"{_when(m['ts'])} {m['author'][:12]}{' (private)' if m['private'] else ''}: {m['text']}"
        for m in rows
    ]
    emit(args, {"messages": rows}, "\n".join(lines) or "no messages yet")


async def cmd_watch(args: argparse.Namespace) -> None:
    try:
        url, token = read_api_files(data_dir(args))
    except DaemonNotRunning as exc:
        raise ChatError(str(exc)) from None
    try:
        async for event in watch_events(url, token):
            print(json.dumps(event) if args.json else _describe(event), flush=True)
    except DaemonNotRunning as exc:
        raise ChatError(str(exc)) from None
    except ApiClientError as exc:
        raise ChatError(exc.message) from None


def _describe(e: dict[str, Any]) -> str:
    kind = e.get("type")
    if kind == "message":
        return show_message(e["message"], {})
    if kind == "receipt":
        return f"{len(e['ids'])} message(s) {e['state']} by {e['contact'][:12]}"
    if kind == "presence":
        return f"{e['contact'][:12]} is {e['status']}"
    if kind == "session":
        return f"{e['contact']['name']} {'connected' if e['state'] == 'up' else 'disconnected'}"
    if kind == "channel_message":
        m = e["message"]
        return f"#{e['channel'][:8]} {m['author'][:12]}: {m['text']}"
    if kind == "expired":
        return f"{len(e['ids'])} message(s) to {e['contact'][:12]} not delivered, expired"
    if kind == "undecryptable":
        return f"{e['contact'][:12]}: {e['notice']}"
    return json.dumps(e)
