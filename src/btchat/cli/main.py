"""``btchat``: the parser, the dispatch and the exit codes (0 done, 1 error, 130 ^C)."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

from btchat import __version__
from btchat.cli import chat, device, dht, network_settings
from btchat.cli.base import UserError
from btchat.cli.terminal import terminal_safe
from btchat.errors import StorageFault
from btchat.net import eventloop
from btchat.net.dht_service import DhtError
from btchat.storage.health import os_fault

__all__ = ["build_parser", "main"]


def build_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--bootstrap",
        action="append",
        type=dht.hostport,
        metavar="HOST:PORT",
        help="DHT node to join through (repeatable); default: the public routers",
    )
    common.add_argument("--json", action="store_true", help="print one JSON object")
    common.add_argument("--config", type=Path, help="config file (TOML)")
    common.add_argument("-v", "--verbose", action="store_true", help="log to stderr")

    parser = argparse.ArgumentParser(prog="btchat", description="btchat: serverless P2P chat")
    parser.add_argument("--version", action="version", version=f"btchat {__version__}")
    # The common options are also taken before the command (`btchat --json contacts`);
    # kept apart here and folded in by `_fold_leading` (a subcommand's own defaults
    # would overwrite them otherwise).
    for flag, dest in (("--json", "json"), ("-v", "verbose"), ("--verbose", "verbose")):
        parser.add_argument(flag, action="store_true", dest=f"lead_{dest}", help=argparse.SUPPRESS)
    parser.add_argument("--config", type=Path, dest="lead_config", help=argparse.SUPPRESS)
    parser.add_argument("--data-dir", dest="lead_data_dir", help=argparse.SUPPRESS)
    sub = parser.add_subparsers(dest="command", required=True)
    dht.add_commands(sub, common)
    chat.add_commands(sub, common)
    device.add_commands(sub, *chat.parents(common))
    network_settings.add_commands(sub, *chat.parents(common))
    dht.add_sandbox(sub, common)
    return parser


def _fold_leading(parser: argparse.ArgumentParser, args: argparse.Namespace) -> argparse.Namespace:
    """Options given before the command count as if given after it."""
    for name, value in list(vars(args).items()):
        if not name.startswith("lead_"):
            continue
        delattr(args, name)
        own = name.removeprefix("lead_")
        if not value:
            continue
        if not hasattr(args, own):
            parser.error(f"--{own.replace('_', '-')} does not apply to `{args.command}`")
        if not getattr(args, own):
            setattr(args, own, value)
    return args


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = _fold_leading(parser, parser.parse_args(argv))
    logging.basicConfig(
        level=logging.INFO if getattr(args, "verbose", False) else logging.WARNING,
        format="%(asctime)s %(name)s %(levelname)s %(message)s",
        stream=sys.stderr,
    )
    func: Callable[[argparse.Namespace], Coroutine[Any, Any, None]] = args.func
    try:
        # uvloop when installed (net/eventloop.py; BTCHAT_UVLOOP=0 turns it off).
        eventloop.run(func(args))
    except (UserError, DhtError) as exc:
        print(terminal_safe(f"btchat: {exc}"), file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # The reader went away (`btchat id | head -1`): not an error of ours. Point stdout
        # at /dev/null so the interpreter's final flush does not raise again.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 0
    except (OSError, StorageFault) as exc:
        fault = os_fault(exc)
        if fault is None:
            raise
        # A full disk is the machine's state: say so in a line, not a traceback.
        print(terminal_safe(f"btchat: cannot write: {fault.condition} ({exc})"), file=sys.stderr)
        return 1
    return 0
