"""``btchat open``: the web app in the browser, signed in with the daemon's token.

The token rides in the URL *fragment*, which browsers never send to a server and never
put in a Referer; the page moves it to sessionStorage and strips it from the address bar.
The browser is not handed that URL on its command line (other users may read argv with
``ps``): it gets a small redirect page, written 0600 into the data directory that already
holds ``api.token``, which forwards to the URL with the fragment. With no daemon running,
``open`` starts one (``btchat up --in-browser``) so that a first run needs no terminal.
"""

from __future__ import annotations

import argparse
import asyncio
import html
import os
import subprocess
import sys
import time
import webbrowser
from pathlib import Path
from typing import Any
from urllib.parse import quote

from btchat.api.client import DaemonNotRunning, read_api_files
from btchat.cli.base import UserError, emit

__all__ = ["REDIRECT_FILE", "add_command", "signed_in_url", "web_url"]

#: The redirect page, in the data directory.
REDIRECT_FILE = "open.html"


def web_url(api_url: str) -> str:
    """The web app's address (no token: safe to print and log)."""
    return api_url.rstrip("/") + "/"


def signed_in_url(api_url: str, token: str) -> str:
    """The web app's address with the token in the fragment."""
    return web_url(api_url) + "#token=" + quote(token, safe="")


def write_redirect(data_dir: Path, url: str) -> Path:
    """A 0600 page that forwards the browser to ``url``."""
    path = data_dir / REDIRECT_FILE
    target = html.escape(url, quote=True)
    page = (
        '<!doctype html><meta charset="utf-8"><meta name="referrer" content="no-referrer">'
        f'<meta http-equiv="refresh" content="0;url={target}"><title>btchat</title>'
        f'<a href="{target}">Open btchat</a>\n'
    )
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(page)
    os.chmod(path, 0o600)  # an older file may have been made with other bits
    return path


#: How long ``open`` waits for a daemon it started to serve the page.
START_WAIT = 30.0
#: Where a daemon that ``open`` started writes what it says.
DAEMON_LOG = "daemon.log"


def start_daemon(folder: Path, args: argparse.Namespace) -> tuple[str, str]:
    """``btchat up --in-browser`` in the background (its own session, so closing this
    terminal does not stop it); ``(api url, token)`` once it serves the page."""
    folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    argv = [sys.executable, "-m", "btchat.cli", "up", "--in-browser", "--data-dir", str(folder)]
    if args.config is not None:
        argv += ["--config", str(args.config)]
    for host, port in args.bootstrap or []:
        argv += ["--bootstrap", f"[{host}]:{port}" if ":" in host else f"{host}:{port}"]
    with open(folder / DAEMON_LOG, "ab") as log:
        proc = subprocess.Popen(
            argv, stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True
        )
    deadline = time.monotonic() + START_WAIT
    while time.monotonic() < deadline:
        try:
            return read_api_files(folder)
        except DaemonNotRunning:
            if proc.poll() is not None:
                raise UserError(
                    f"btchat could not start (exit {proc.returncode}); see {folder / DAEMON_LOG}"
                ) from None
            time.sleep(0.1)
    raise UserError(f"btchat did not start within {START_WAIT:.0f} s; see {folder / DAEMON_LOG}")


async def cmd_open(args: argparse.Namespace) -> None:
    from btchat.cli.chat import data_dir

    folder = data_dir(args)
    try:
        api_url, token = read_api_files(folder)
    except DaemonNotRunning as exc:
        if args.no_start:
            raise UserError(str(exc)) from None
        api_url, token = await asyncio.to_thread(start_daemon, folder, args)
        print(f"started btchat in the background (log: {folder / DAEMON_LOG})", file=sys.stderr)
    url = signed_in_url(api_url, token)
    if args.print_url:
        emit(args, {"url": url}, url)
        return
    page = write_redirect(folder, url)
    if not webbrowser.open(page.as_uri()):
        raise UserError(f"no browser found; open {page} in one, or run `btchat open --print-url`")
    emit(args, {"web": web_url(api_url)}, f"opened {web_url(api_url)} in the browser")


def add_command(sub: Any, parent: argparse.ArgumentParser) -> None:
    p = sub.add_parser("open", parents=[parent], help="open the web app in the browser")
    p.add_argument(
        "--print-url",
        action="store_true",
        help="print the signed-in URL (it holds the API token) instead of opening it",
    )
    p.add_argument(
        "--no-start",
        action="store_true",
        help="do not start btchat when it is not running (by default it is started, "
        "asking for the passphrase, or creating the identity, in the web app)",
    )
    p.set_defaults(func=cmd_open)
