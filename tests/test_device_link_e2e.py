"""Linking a second device, end to end: daemons and `btchat device join` in separate
processes on a sandbox swarm; the new device finds the old one through the DHT by the
code's nameplate (issue 13)."""

from __future__ import annotations

import asyncio
import json
import subprocess
from pathlib import Path
from typing import Any

import pytest
from test_messenger_e2e import BTCHAT, Person, befriend, sandbox, wait_for  # noqa: F401

from btchat.discovery.rendezvous import DEVICES_SALT, decode_device_list
from btchat.identity.idtext import parse_id
from btchat.net.dht_service import DhtService
from btchat.node.config import parse_hostport

pytestmark = pytest.mark.slow


def start_link(p: Person) -> tuple[subprocess.Popen[str], dict[str, Any]]:
    """`btchat device link` on ``p``'s running daemon: the process and its offer."""
    proc = subprocess.Popen(
        [*BTCHAT, "device", "link", "--data-dir", str(p.dir), "--json"],
        env=p.env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    line = proc.stdout.readline()
    assert line, proc.stderr.read() if proc.stderr else ""
    return proc, json.loads(line)


def join(new: Person, code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*BTCHAT, "device", "join", code, "--data-dir", str(new.dir), "--bootstrap",
         new.bootstrap, "--host", "127.0.0.1", "--no-passphrase", "--json"],
        env=new.env, capture_output=True, text=True, timeout=150,
    )  # fmt: skip


def finish(proc: subprocess.Popen[str]) -> tuple[int, list[str], str]:
    out, err = proc.communicate(timeout=60)
    return proc.returncode, out.splitlines(), err


def device_list(bootstrap: str, identity: bytes) -> list[bytes]:
    """Device ids in ``identity``'s device list as the DHT holds it now."""

    async def fetch() -> list[bytes]:
        dht = await DhtService.start(host="127.0.0.1", port=0)
        try:
            await dht.bootstrap([parse_hostport(bootstrap)])
            result = await dht.get_mutable(identity, DEVICES_SALT)
        finally:
            dht.close()
        if result.v_bencoded is None:
            return []
        return [c.device_id for c in decode_device_list(result.v_bencoded, identity)]

    return asyncio.run(fetch())


def test_a_second_device_links_through_the_dht(
    sandbox: tuple[str, dict[str, str]],  # noqa: F811
    tmp_path: Path,
) -> None:
    bootstrap, env = sandbox
    alice, bob = (Person(n, tmp_path, env, bootstrap) for n in ("alice", "bob"))
    new = Person("alice2", tmp_path, env, bootstrap, init=False)
    try:
        alice.up()
        bob.up()
        befriend(alice, bob)
        alice.cli("profile", "--name", "Alice")
        pk = parse_id(alice.id)
        wait_for(lambda: len(device_list(bootstrap, pk)) == 1, 60, "alice's device list")
        link, offer = start_link(alice)
        joined = join(new, offer["code"])
        assert joined.returncode == 0, joined.stderr
        got = json.loads(joined.stdout.splitlines()[-1])
        assert got["id"] == alice.id and got["contacts"] == 1 and got["devices"] == 2
        code, lines, err = finish(link)
        assert code == 0, err
        assert json.loads(lines[-1]) == {"type": "device_linked", "device_id": got["device_id"]}
        # The old device republished its list at once: both devices are in the DHT.
        ids = wait_for(
            lambda: (lambda d: d if len(d) == 2 else None)(device_list(bootstrap, pk)),
            60,
            "a device list with two devices",
        )
        assert ids[1].hex() == got["device_id"]
        # The new device starts as the same person, with alice's contacts and profile.
        new.up()
        assert new.cli("id")["id"] == alice.id
        assert [c["name"] for c in new.cli("contacts")["contacts"]] == ["bob"]
        assert new.cli("profile")["name"] == "Alice"
    finally:
        for p in (alice, bob, new):
            p.kill()


def test_a_wrong_code_fails_on_both_sides_and_leaves_no_key_file(
    sandbox: tuple[str, dict[str, str]],  # noqa: F811
    tmp_path: Path,
) -> None:
    bootstrap, env = sandbox
    alice = Person("alice", tmp_path, env, bootstrap)
    new = Person("alice2", tmp_path, env, bootstrap, init=False)
    try:
        alice.up()
        link, offer = start_link(alice)
        plate, first, second = offer["code"].split("-")
        wrong = f"{plate}-{first}-{'zebra' if second != 'zebra' else 'acorn'}"
        joined = join(new, wrong)
        assert joined.returncode == 1
        assert "code does not match" in joined.stderr
        code, _, err = finish(link)
        assert code == 1 and "wrong code" in err
        assert not (new.dir / "identity.key").exists()
    finally:
        alice.kill()


def test_join_errors_are_one_line_and_create_nothing(
    sandbox: tuple[str, dict[str, str]],  # noqa: F811
    tmp_path: Path,
) -> None:
    bootstrap, env = sandbox
    new = Person("fresh", tmp_path, env, bootstrap, init=False)
    bad = join(new, "37-cobalt")
    assert bad.returncode == 1 and bad.stderr.count("\n") == 1 and "37-cobalt-tiger" in bad.stderr
    assert not new.dir.exists() or not any(new.dir.iterdir())
    taken = Person("taken", tmp_path, env, bootstrap)
    out = join(taken, "37-cobalt-tiger")
    assert out.returncode == 1 and "already exists" in out.stderr
    # No daemon to link from: the CLI says so in a line.
    alone = subprocess.run(
        [*BTCHAT, "device", "link", "--data-dir", str(taken.dir)],
        env=env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert alone.returncode == 1 and alone.stderr.count("\n") == 1
