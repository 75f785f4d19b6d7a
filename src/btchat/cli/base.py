"""What every command shares: the one user-facing error, the output line, the stop signal."""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
from typing import Any

from btchat.cli.terminal import terminal_safe

__all__ = ["UserError", "emit", "stop_on_signal"]


class UserError(Exception):
    """Something the user can fix; printed as one line."""


def emit(args: Any, obj: Any, text: str, *, ours: bool = False) -> None:
    """One JSON object with ``--json``, else the human-readable text, made terminal-safe
    (:mod:`btchat.cli.terminal`) unless ``ours`` (text we drew, e.g. an ANSI QR code)."""
    print(json.dumps(obj) if args.json else text if ours else terminal_safe(text), flush=True)


def stop_on_signal() -> asyncio.Event:
    """An event set by SIGINT/SIGTERM (and SIGHUP: the terminal closed, unless ``nohup``
    ignores it); install it before announcing readiness, so that a supervisor that
    signals as soon as it reads our first line gets a clean shutdown."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    hup = getattr(signal, "SIGHUP", None)
    keep_hup = hup is not None and signal.getsignal(hup) is not signal.SIG_IGN
    for sig in (signal.SIGINT, signal.SIGTERM, *((hup,) if keep_hup else ())):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, stop.set)
    return stop
