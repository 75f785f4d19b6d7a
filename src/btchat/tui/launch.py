"""Find the daemon for a data directory, or start one in the background.

Started the way ``btchat up`` runs, as its own detached process (a new session, so
closing the terminal or quitting the TUI leaves it running and messages keep arriving),
with its output appended to ``daemon.log`` in the data directory. What it cannot do is
said in a line the user can act on: no identity yet (run ``btchat init``), a passphrase
nobody can type, a daemon that exits at once (its last log line is shown).
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from btchat.api.client import DaemonNotRunning, read_api_files
from btchat.cli.base import UserError
from btchat.identity.keystore import KeyStore, KeyStoreError, read_passphrase

__all__ = ["LOG_FILE", "Started", "ensure_daemon"]

#: The background daemon's output, in the data directory.
LOG_FILE = "daemon.log"
#: How long a starting daemon may take to publish its API files.
START_TIMEOUT = 90.0


class Started:
    """Where the daemon's API is, and whether this call started it (its pid then)."""

    def __init__(self, url: str, token: str, pid: int | None = None) -> None:
        self.url, self.token, self.pid = url, token, pid


def _last_line(path: Path) -> str:
    try:
        with path.open("rb") as f:
            f.seek(max(0, path.stat().st_size - 4096))
            lines = [ln for ln in f.read().decode("utf-8", "replace").splitlines() if ln.strip()]
    except OSError:
        return ""
    return lines[-1].strip() if lines else ""


def ensure_daemon(
    data_dir: Path,
    *,
    start: bool = True,
    passphrase_file: Path | None = None,
    up_args: Sequence[str] = (),
    ask: Callable[[bool], str | None] | None = None,
    timeout: float = START_TIMEOUT,
) -> Started:
    """The running daemon's API, else a daemon started for ``data_dir``."""
    try:
        return Started(*read_api_files(data_dir))
    except DaemonNotRunning:
        pass
    if not start:
        raise UserError(f"no btchat daemon is running for {data_dir} (start it with `btchat up`)")
    store = KeyStore(data_dir)
    if not store.exists():
        raise UserError(
            f"no identity in {data_dir} yet: create one with `btchat init`, then run `btchat tui`"
        )
    env = dict(os.environ)
    cmd = [sys.executable, "-m", "btchat.cli", "up", "--data-dir", str(data_dir), *up_args]
    secret: str | None = None
    try:
        if store.is_encrypted():
            given = read_passphrase(file=passphrase_file)  # the file, else BTCHAT_PASSPHRASE
            if passphrase_file is not None:
                cmd += ["--passphrase-file", str(passphrase_file)]
            elif given is None:
                secret = ask(False) if ask is not None else None
                if not secret:
                    raise UserError(
                        "your key is protected by a passphrase: run `btchat tui` in a terminal "
                        "to type it, or give --passphrase-file or BTCHAT_PASSPHRASE"
                    )
    except KeyStoreError as exc:
        raise UserError(str(exc)) from None
    if secret is not None:
        if os.name == "posix":  # through a pipe: not in argv, not in the environment
            cmd += ["--passphrase-file", "/dev/stdin"]
        else:
            env["BTCHAT_PASSPHRASE"] = secret
    log_path = Path(data_dir) / LOG_FILE
    detach: dict[str, object] = (
        {"start_new_session": True}
        if os.name == "posix"
        else {"creationflags": getattr(subprocess, "DETACHED_PROCESS", 0)}
    )
    with log_path.open("ab") as log:
        os.chmod(log_path, 0o600)
        proc = subprocess.Popen(
            cmd,
            stdin=subprocess.PIPE
            if secret is not None and os.name == "posix"
            else subprocess.DEVNULL,
            stdout=log,
            stderr=log,
            env=env,
            close_fds=True,
            **detach,  # type: ignore[arg-type]
        )
    if proc.stdin is not None:
        try:
            proc.stdin.write((secret or "").encode() + b"\n")
            proc.stdin.close()
        except BrokenPipeError:
            pass
    deadline = time.monotonic() + timeout
    while True:
        try:
            return Started(*read_api_files(data_dir), pid=proc.pid)
        except DaemonNotRunning:
            pass
        if proc.poll() is not None:
            why = _last_line(log_path) or f"exit status {proc.returncode}"
            raise UserError(f"the daemon did not start: {why} (log: {log_path})")
        if time.monotonic() > deadline:
            raise UserError(f"the daemon has not come up in {timeout:.0f}s; see {log_path}")
        time.sleep(0.2)
