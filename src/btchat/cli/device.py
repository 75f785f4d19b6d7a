"""``btchat device``: ``link`` (on the device that has the identity), ``join CODE`` (on
the new one, with no daemon and an empty data directory), ``list`` and ``revoke``."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import sys
import time
from typing import Any

from btchat.api.client import ApiClient, read_api_files, watch_events
from btchat.cli.base import UserError, emit, stop_on_signal
from btchat.cli.chat import api_errors, ask_passphrase, call, data_dir, settings
from btchat.cli.dht import hostport
from btchat.cli.terminal import terminal_safe

__all__ = ["add_commands"]

#: How long `device link` waits for the daemon's event stream before giving up.
READY_TIMEOUT = 10.0


def add_commands(sub: Any, chat: argparse.ArgumentParser, secret: argparse.ArgumentParser) -> None:
    device = sub.add_parser(
        "device", help="link, list, name and revoke your devices"
    ).add_subparsers(dest="device_command", required=True)
    p = device.add_parser(
        "list", parents=[chat], help="devices that speak for you, and revoked ones"
    )
    p.set_defaults(func=cmd_list)
    p = device.add_parser(
        "revoke", parents=[chat], help="cut a lost device off for good: contacts stop reaching it"
    )
    p.add_argument("device", metavar="ID", help="device id (4+ hex digits, from `device list`)")
    p.set_defaults(func=cmd_revoke)
    p = device.add_parser(
        "name", parents=[chat], help="name a device (this one too), on all your devices"
    )
    p.add_argument("device", metavar="ID", help="device id (4+ hex digits, from `device list`)")
    p.add_argument("name", help='what to call it, e.g. "laptop" (1 to 40 characters)')
    p.set_defaults(func=cmd_name)
    p = device.add_parser(
        "link", parents=[chat], help="show a one-time code that links a new device"
    )
    p.add_argument("--no-qr", action="store_true", help="do not draw the code as a QR code")
    p.add_argument(
        "--cancel", action="store_true", help="cancel the open offer (its code stops working)"
    )
    p.set_defaults(func=cmd_link)
    p = device.add_parser(
        "join",
        parents=[chat, secret],
        help="link this new device to your identity (no daemon, empty data directory)",
    )
    p.add_argument("code", help="the code `btchat device link` shows, e.g. 37-cobalt-tiger")
    p.add_argument(
        "--addr", type=hostport, metavar="HOST:PORT", help="dial the other device here (no DHT)"
    )
    p.add_argument("--host", help="address of the short-lived DHT node (default: any)")
    p.add_argument("--no-passphrase", action="store_true", help="store the key unencrypted")
    p.set_defaults(func=cmd_join)


def devices_text(listing: dict[str, Any]) -> str:
    def state(d: dict[str, Any]) -> str:
        if d["this_device"]:
            return "  (this device)"
        online = "online" if d.get("online") else "offline"
        behind = d.get("to_sync") or 0
        return f"  {online}, " + (f"{behind} messages to sync" if behind else "in sync")

    lines = [
        f"{d['device_id']}  {terminal_safe(d.get('name') or '(no name)')}"
        f"  since {time.strftime('%Y-%m-%d', time.localtime(d['created']))}" + state(d)
        for d in listing["devices"]
    ]
    if listing["revoked"]:
        lines.append("revoked: " + ", ".join(listing["revoked"]))
    if listing["this_revoked"]:
        lines.append("THIS DEVICE WAS REVOKED by another of your devices: contacts refuse it")
    return "\n".join(lines)


async def cmd_list(args: argparse.Namespace) -> None:
    listing = call(args, "list_devices")
    emit(args, listing, devices_text(listing))


async def cmd_revoke(args: argparse.Namespace) -> None:
    listing = call(args, "revoke_device", args.device)
    emit(args, listing, f"revoked; your devices now:\n{devices_text(listing)}")


async def cmd_name(args: argparse.Namespace) -> None:
    listing = call(args, "rename_device", args.device, args.name)
    emit(args, listing, devices_text(listing))


async def cmd_link(args: argparse.Namespace) -> None:
    """Open an offer, show its code, wait until a device linked (0) or it failed (1)."""
    from btchat.identity.qr import qr_terminal

    with api_errors():
        url, token = read_api_files(data_dir(args))
        client = ApiClient(url, token)
        ready = asyncio.Event()
        queue: asyncio.Queue[dict[str, Any] | None] = asyncio.Queue()

        async def listen() -> None:  # subscribed before the offer: no outcome is missed
            async for event in watch_events(url, token, on_ready=ready.set):
                queue.put_nowait(event)
            queue.put_nowait(None)

        if args.cancel:
            await asyncio.to_thread(client.cancel_link)
            emit(args, {"cancelled": True}, "the link offer is cancelled; its code no longer works")
            return
        stop = stop_on_signal()  # Ctrl-C, kill, a closed terminal: the offer ends with us
        listener = asyncio.ensure_future(listen())
        outcome: asyncio.Future[None] | None = None
        try:
            async with asyncio.timeout(READY_TIMEOUT):
                await ready.wait()
            offer = await asyncio.to_thread(client.link_device)
            code = offer["code"]
            text = (
                f"on the new device run: btchat device join {code}\n(code valid 10 minutes, once)"
            )
            if not args.no_qr and not args.json:
                tty = sys.stdout.isatty() and not os.environ.get("NO_COLOR")
                text = qr_terminal(code, ansi=tty) + "\n" + text
            emit(args, offer, text, ours=True)
            outcome = asyncio.ensure_future(_outcome(args, queue))
            stopped = asyncio.ensure_future(stop.wait())
            await asyncio.wait({outcome, stopped}, return_when=asyncio.FIRST_COMPLETED)
            stopped.cancel()
            if not outcome.done():
                raise asyncio.CancelledError
            outcome.result()
        except asyncio.CancelledError:  # the offer must not outlive us
            with contextlib.suppress(Exception):
                await asyncio.to_thread(client.cancel_link)
            raise UserError("stopped; the link offer is cancelled") from None
        finally:
            listener.cancel()
            if outcome is not None:
                outcome.cancel()


async def _outcome(args: argparse.Namespace, queue: asyncio.Queue[dict[str, Any] | None]) -> None:
    while True:
        event = await queue.get()
        if event is None:
            raise UserError("the daemon went away before the device was linked")
        if event.get("type") == "device_linked":
            device = str(event.get("device_id", ""))
            emit(args, event, f"linked a new device: {device[:8]}")
            return
        if event.get("type") == "device_link_failed":
            reason = str(event.get("reason", ""))
            why = {
                "wrong_code": "a wrong code was tried; the offer is used up",
                "expired": "no device joined within 10 minutes",
                "cancelled": "the offer was cancelled",
            }.get(reason, reason)
            raise UserError(f"no device linked: {why}")


async def cmd_join(args: argparse.Namespace) -> None:
    from btchat.identity.idtext import format_id
    from btchat.identity.linking import parse_code
    from btchat.node.boot import BootError, passphrase
    from btchat.node.linking import JoinError, check_empty, join_device

    conf = settings(args)
    try:
        parse_code(args.code)
        check_empty(conf.data_dir)
        if conf.tor and args.addr is None:
            raise UserError("in Tor mode there is no DHT to find the other device: use --addr")
        secret = None if conf.no_passphrase else passphrase(conf, ask_passphrase, new=True)
    except (ValueError, JoinError, BootError) as exc:
        raise UserError(str(exc)) from None
    if secret is None and not conf.no_passphrase:
        raise UserError(
            "no passphrase given: use --passphrase-file, BTCHAT_PASSPHRASE, "
            "a terminal, or --no-passphrase to store the key unencrypted"
        )
    say = (lambda text: print(text, file=sys.stderr)) if args.verbose else (lambda text: None)
    try:
        result = await join_device(
            conf.data_dir,
            args.code,
            secret,
            addr=args.addr,
            bootstrap=list(conf.bootstrap),
            dht_host=args.host or "0.0.0.0",
            notice=say,
        )
    except JoinError as exc:
        raise UserError(str(exc)) from None
    keys = result.keys
    device = keys.device.device_id.hex()
    emit(
        args,
        {
            "id": format_id(keys.identity.public_key),
            "device_id": device,
            "contacts": result.contacts,
            "devices": result.devices,
            "data_dir": str(conf.data_dir),
            "encrypted": secret is not None,
        },
        f"linked as device {device[:8]}; {result.contacts} contacts; run `btchat up`",
    )
