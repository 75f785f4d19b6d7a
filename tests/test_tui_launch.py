"""How ``btchat tui`` finds its daemon or starts one, and what it says when it cannot."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from btchat.api.client import write_api_files
from btchat.cli.base import UserError
from btchat.identity.keystore import KeyStore
from btchat.tui.launch import LOG_FILE, ensure_daemon


def test_a_running_daemon_is_used_as_it_is(tmp_path: Path) -> None:
    write_api_files(tmp_path, "http://127.0.0.1:1234", "tok")  # our own pid: alive
    got = ensure_daemon(tmp_path)
    assert (got.url, got.token, got.pid) == ("http://127.0.0.1:1234", "tok", None)
    assert not (tmp_path / LOG_FILE).exists()  # nothing was started


def test_no_identity_says_run_init(tmp_path: Path) -> None:
    with pytest.raises(UserError, match=r"no identity in .* yet: create one with `btchat init`"):
        ensure_daemon(tmp_path)
    assert not (tmp_path / LOG_FILE).exists()


def test_no_start_says_so(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="no btchat daemon is running"):
        ensure_daemon(tmp_path, start=False)


def test_a_passphrase_nobody_can_type(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("BTCHAT_PASSPHRASE", raising=False)
    KeyStore(tmp_path).create("correct horse", now=0)
    with pytest.raises(UserError, match=r"protected by a passphrase.*--passphrase-file"):
        ensure_daemon(tmp_path, ask=lambda new: None)


def test_a_daemon_that_exits_at_once_is_reported_with_its_log(tmp_path: Path) -> None:
    KeyStore(tmp_path).create(None, now=0)
    with pytest.raises(UserError, match=r"the daemon did not start: .*--port.*\(log: "):
        ensure_daemon(tmp_path, up_args=["--port", "not-a-port"], timeout=60)
    log = tmp_path / LOG_FILE
    assert "invalid int value" in log.read_text()
    assert log.stat().st_mode & 0o777 == 0o600


def test_the_tui_command_wants_a_terminal(tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[1] / "src")}
    out = subprocess.run(
        [sys.executable, "-m", "btchat.cli", "tui", "--data-dir", str(tmp_path)],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert out.returncode == 1
    assert "needs a terminal" in out.stderr
