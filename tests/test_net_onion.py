"""The onion service a Tor-mode daemon makes itself, against a real local tor.

There is no Tor network offline, so tor runs with ``DisableNetwork 1``: it still answers
its control port, and ``ADD_ONION`` still makes the service and hands back its key (it
only cannot publish the descriptor). The test checks that the daemon's address is the
one tor holds, that it derives from the key kept in the data directory, that the address
survives a restart, and that a tor that is not there costs a status line, not the start.
"""

from __future__ import annotations

import base64
import hashlib
import os
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from harness import skip_unless_ci
from nacl.bindings import crypto_scalarmult_ed25519_base_noclamp
from test_net_proxy import start

from btchat.net.onion import KEY_FILE, VIRTUAL_PORT
from btchat.net.proxy import parse_proxy
from btchat.node.config import ConfigError, resolve
from btchat.node.daemon import DaemonConfig


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def needs_stem() -> None:
    try:
        import stem  # noqa: F401
    except ImportError:
        skip_unless_ci("needs stem (a dependency: scripts/setup installs it)")


@pytest.fixture
def tor_control(tmp_path: Path) -> Iterator[tuple[str, int]]:
    """A local tor with no network, its control port on loopback (cookie auth)."""
    tor = shutil.which("tor") or "/usr/sbin/tor"
    if not os.access(tor, os.X_OK):
        skip_unless_ci("needs tor (apt-get install tor; scripts/setup does as root)")
    needs_stem()
    data = tmp_path / "tor"
    data.mkdir(mode=0o700)
    port = _free_port()
    torrc = tmp_path / "torrc"
    torrc.write_text(
        f"DataDirectory {data}\nDisableNetwork 1\nSocksPort 0\n"
        f"ControlPort 127.0.0.1:{port}\nCookieAuthentication 1\nLog notice stdout\n"
    )
    proc = subprocess.Popen(
        [tor, "-f", str(torrc)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise RuntimeError("tor did not open its control port") from None
                time.sleep(0.1)
        yield ("127.0.0.1", port)
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def onion_of(public_key: bytes) -> str:
    """rend-spec-v3 section 6: base32(PUBKEY | CHECKSUM | VERSION), lower case."""
    version = b"\x03"
    checksum = hashlib.sha3_256(b".onion checksum" + public_key + version).digest()[:2]
    return base64.b32encode(public_key + checksum + version).decode().lower()


async def test_a_tor_mode_daemon_makes_its_onion_service_and_keeps_its_address(
    tmp_path: Path, tor_control: tuple[str, int]
) -> None:
    proxy = parse_proxy("socks5://127.0.0.1:9")  # never dialled here
    node = await start(tmp_path, "a", tor=True, proxy=proxy, tor_control=tor_control)
    try:
        onion = node.daemon.onion
        assert onion is not None, node.daemon.onion_error
        status = (await node.daemon.status())["onion"]
        address = status["address"]
        assert status["error"] is None and address == f"{onion.service_id}.onion:{VIRTUAL_PORT}"
        assert onion.service_id in onion.current()  # tor itself holds it (GETINFO)
        key_file = node.data_dir / KEY_FILE
        assert key_file.stat().st_mode & 0o777 == 0o600
        kind, blob = key_file.read_text().strip().split(":", 1)
        assert kind == "ED25519-V3"
        # The address is the one the kept key makes: what contacts dial reaches us.
        secret = base64.b64decode(blob)[:32]
        assert onion.service_id == onion_of(crypto_scalarmult_ed25519_base_noclamp(secret))
    finally:
        await node.stop()
    again = await start(tmp_path, "a", tor=True, proxy=proxy, tor_control=tor_control)
    try:
        assert (await again.daemon.status())["onion"]["address"] == address
    finally:
        await again.stop()


async def test_no_tor_at_the_control_port_is_a_status_line_not_a_failed_start(
    tmp_path: Path,
) -> None:
    needs_stem()
    proxy = parse_proxy("socks5://127.0.0.1:9")
    node = await start(
        tmp_path, "a", tor=True, proxy=proxy, tor_control=("127.0.0.1", _free_port())
    )
    try:
        status = (await node.daemon.status())["onion"]
        assert status["address"] is None and "control port" in status["error"]
    finally:
        await node.stop()


def test_the_control_port_must_be_loopback(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="loopback"):
        resolve({"tor_control": None}, environ={"BTCHAT_TOR_CONTROL": "192.0.2.1:9051"})
    conf = tmp_path / "c.toml"
    conf.write_text('[net]\ntor_control = "127.0.0.1:9051"\n')
    assert resolve({}, config_file=conf, environ={}).tor_control == ("127.0.0.1", 9051)
    with pytest.raises(ValueError, match="loopback"):
        DaemonConfig(data_dir=tmp_path, tor_control=("10.0.0.1", 9051))
