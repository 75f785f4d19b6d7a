"""``btchat settings``: the network settings as the web app's Status screen shows them
(what runs, what the next start takes, from where), and ``set``/``unset`` to write them
to the config file (``node/settings_file.py``; applied at the next start)."""

from __future__ import annotations

import argparse
from typing import Any

from btchat.cli.base import UserError, emit
from btchat.cli.chat import call

__all__ = ["SWITCHES", "add_commands", "setting_text"]

SWITCHES = ("tor", "relay", "dht_proxy", "upnp", "lan", "ipv6")
NAMES = ("bootstrap", "proxy", *SWITCHES)
_ON, _OFF = ("on", "true", "yes", "1"), ("off", "false", "no", "0")


def add_commands(sub: Any, chat: argparse.ArgumentParser, _secret: argparse.ArgumentParser) -> None:
    p = sub.add_parser(
        "settings", parents=[chat], help="network settings: show, or change for the next start"
    )
    verbs = p.add_subparsers(dest="settings_command")
    p.set_defaults(func=cmd_show)
    s = verbs.add_parser("set", parents=[chat], help="write a setting to the config file")
    s.add_argument("name", choices=NAMES)
    s.add_argument("value", help="on/off, a proxy URL, or host:port[,host:port...]")
    s.set_defaults(func=cmd_set)
    u = verbs.add_parser("unset", parents=[chat], help="back to the default at the next start")
    u.add_argument("name", choices=NAMES)
    u.set_defaults(func=cmd_unset)


def value_of(name: str, text: str) -> Any:
    """A setting typed on the command line, as the API takes it."""
    if name in SWITCHES:
        if text.lower() in _ON:
            return True
        if text.lower() in _OFF:
            return False
        raise UserError(f"{name} is on or off, not {text!r}")
    if name == "bootstrap":
        return [part.strip() for part in text.split(",") if part.strip()]
    return text


def setting_text(value: Any) -> str:
    """A setting's value as people read it: on/off, none, a comma-separated list."""
    if value is True:
        return "on"
    if value is False:
        return "off"
    if value is None:
        return "none"
    return ", ".join(value) if isinstance(value, list) else str(value)


def settings_text(view: dict[str, Any]) -> str:
    lines = [f"config file: {view['config_file']}"]
    if view.get("problem"):
        lines.append(f"PROBLEM: {view['problem']}")
    for name, st in view["settings"].items():
        line = f"{name}: {setting_text(st['value'])}"
        if st.get("flag"):
            line += " (from a flag of `btchat up`)"
        elif st["next_start"] != st["value"]:
            line += f" (next start: {setting_text(st['next_start'])})"
        line += f"  [{st['source']}]"
        lines.append(line)
    return "\n".join(lines)


async def cmd_show(args: argparse.Namespace) -> None:
    view = call(args, "get_settings")
    emit(args, view, settings_text(view))


async def _save(args: argparse.Namespace, changes: dict[str, Any]) -> None:
    view = call(args, "save_settings", changes)
    emit(args, view, settings_text(view) + "\nsaved; restart btchat (`btchat up`) to apply")


async def cmd_set(args: argparse.Namespace) -> None:
    await _save(args, {args.name: value_of(args.name, args.value)})


async def cmd_unset(args: argparse.Namespace) -> None:
    await _save(args, {args.name: None})
