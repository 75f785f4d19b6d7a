"""First run and unlock in the web app (issue 12): `btchat up --in-browser` on an empty
data directory serves the page locked; it creates the identity with a passphrase
(strength hint, the no-recovery warning, typed twice) and shows the new ID; started
again, the page unlocks it, and a wrong passphrase is refused. Everything but
``/v1/setup`` answers 423 meanwhile."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from test_messenger_e2e import BTCHAT, Person, sandbox  # noqa: F401
from web_harness import Tab, browser  # noqa: F401

from btchat.api.client import API_FILE, ApiClient, ApiError, DaemonNotRunning, read_api_files

pytestmark = pytest.mark.slow

STRONG = "orbit tulip grammar seventy"


class Locked:
    """`btchat up --in-browser`, its output read once it is up."""

    def __init__(self, person: Person) -> None:
        self.person = person
        self.proc = subprocess.Popen(
            [*BTCHAT, "up", "--in-browser", "--data-dir", str(person.dir), "--bootstrap",
             person.bootstrap, "--host", "127.0.0.1", "--dht-port", "0", "--json"],
            env=person.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        deadline = time.monotonic() + 60
        while True:
            try:
                read_api_files(person.dir)
                return
            except DaemonNotRunning:
                assert self.proc.poll() is None, self.proc.stderr.read()  # type: ignore[union-attr]
                assert time.monotonic() < deadline, "the locked API never came up"
                time.sleep(0.1)

    def up_line(self) -> dict[str, Any]:
        assert self.proc.stdout is not None
        return json.loads(self.proc.stdout.readline())

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=20)


@pytest.fixture
def newcomer(sandbox: tuple[str, dict[str, str]], tmp_path: Path) -> Iterator[Person]:  # noqa: F811
    bootstrap, env = sandbox
    env = {k: v for k, v in env.items() if k != "BTCHAT_PASSPHRASE"}
    yield Person("newcomer", tmp_path, env, bootstrap, init=False)


def test_create_then_unlock_in_the_browser(browser: Any, newcomer: Person) -> None:  # noqa: F811
    daemon = Locked(newcomer)
    try:
        client = ApiClient(*read_api_files(newcomer.dir))
        with pytest.raises(ApiError, match="locked"):
            client.list_contacts()
        tab = Tab(browser, newcomer)
        tab.open()
        tab.page.wait_for_selector("h2 >> text=Welcome to btchat")
        assert tab.page.is_visible("text=Nobody can recover it")
        tab.page.fill("#setup-pass", "password")
        tab.page.wait_for_selector("#setup-hint >> text=weak")
        assert tab.page.is_visible("text=Use it anyway")
        tab.page.fill("#setup-again", "password")
        tab.page.get_by_role("button", name="Create my identity").click()
        tab.page.wait_for_selector("form .notice.error >> text=not created")
        assert not (newcomer.dir / "identity.key").exists()
        tab.page.fill("#setup-pass", STRONG)
        tab.page.fill("#setup-again", STRONG + "!")
        tab.page.get_by_role("button", name="Create my identity").click()
        tab.page.wait_for_selector("text=The two passphrases differ")
        tab.page.fill("#setup-again", STRONG)
        tab.page.get_by_role("button", name="Create my identity").click()
        up = daemon.up_line()  # the daemon runs now
        tab.page.wait_for_selector("#my-id")  # the status screen: the new ID, its QR
        assert tab.page.text_content("#my-id") == up["id"]
        assert client.list_contacts() == []
        tab.own_origin_only()
        assert tab.errors == [], tab.errors
        tab.context.close()
    finally:
        daemon.stop()

    # `btchat open` with no daemon running starts one, locked, in the background.
    opened = newcomer.cli("open", "--print-url")
    pid = json.loads((newcomer.dir / API_FILE).read_text())["pid"]
    try:
        assert opened["url"].startswith(read_api_files(newcomer.dir)[0])
        tab = Tab(browser, newcomer)
        tab.page.goto(opened["url"])
        tab.page.wait_for_selector("h2 >> text=Unlock btchat")
        tab.page.fill("#setup-pass", "not it")
        tab.page.get_by_role("button", name="Unlock").click()
        tab.page.wait_for_selector("form .notice.error >> text=does not open this identity")
        tab.page.fill("#setup-pass", STRONG)
        tab.page.get_by_role("button", name="Unlock").click()
        tab.page.wait_for_selector("text=No contacts yet")
        assert newcomer.cli("id")["id"] == up["id"]
        assert "btchat is up" in (newcomer.dir / "daemon.log").read_text()
        assert tab.errors == [], tab.errors
        tab.context.close()
    finally:
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                break
            time.sleep(0.1)
