"""``btchat tui``: the terminal UI, with the daemon started first if none runs.

Textual loads only here, so the other commands start as fast as before.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import Any

from btchat.cli.base import UserError

__all__ = ["TUI_LOG", "add_command"]

#: Where ``btchat tui -v`` logs, in the data directory.
TUI_LOG = "tui.log"


async def cmd_tui(args: argparse.Namespace) -> None:
    from btchat.api.client import read_api_files
    from btchat.cli.chat import ask_passphrase, data_dir
    from btchat.tui.launch import LOG_FILE, ensure_daemon

    if not sys.stdout.isatty() and not args.no_tty_check:
        raise UserError("`btchat tui` needs a terminal (use the other commands in scripts)")
    folder = data_dir(args)
    up_args: list[str] = []
    if args.config is not None:
        up_args += ["--config", str(args.config)]
    for host, port in args.bootstrap or []:
        up_args += ["--bootstrap", f"{host}:{port}"]
    started = ensure_daemon(
        folder,
        start=not args.no_start,
        passphrase_file=args.passphrase_file,
        up_args=up_args,
        ask=ask_passphrase,
    )
    try:
        from btchat.tui.app import BtchatApp
    except ImportError as exc:  # textual is a dependency; a broken install says so
        raise UserError(f"the terminal UI needs Textual: {exc}") from None
    # Log lines on stderr would scribble over the screen: to a file in the data
    # directory with -v, else nowhere (not even logging's last-resort stderr handler).
    root = logging.getLogger()
    saved = root.handlers[:]
    root.handlers = [
        logging.FileHandler(folder / TUI_LOG, encoding="utf-8")
        if args.verbose
        else logging.NullHandler()
    ]
    try:
        await BtchatApp(lambda: read_api_files(folder)).run_async()
    finally:
        for handler in root.handlers:
            handler.close()
        root.handlers = saved
    if started.pid is not None:
        print(
            f"btchat: the daemon started for the TUI keeps running (pid {started.pid}, "
            f"log {folder / LOG_FILE}), so messages keep arriving; stop it with "
            f"`kill {started.pid}`"
        )


def add_command(sub: Any, parent: argparse.ArgumentParser) -> None:
    p = sub.add_parser(
        "tui",
        parents=[parent],
        help="the terminal UI (starts the daemon in the background if none runs)",
    )
    p.add_argument(
        "--passphrase-file",
        type=Path,
        help="read the passphrase from a file, if the daemon has to be started",
    )
    p.add_argument(
        "--no-start",
        action="store_true",
        help="do not start a daemon; fail if none runs for the data directory",
    )
    p.add_argument("--no-tty-check", action="store_true", help=argparse.SUPPRESS)
    p.set_defaults(func=cmd_tui)
