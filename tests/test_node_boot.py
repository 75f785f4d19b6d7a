"""Settings merge (flags > environment > config file > defaults) and starting a node."""

from __future__ import annotations

from pathlib import Path

import pytest

from btchat.api.client import ApiClient, read_api_files
from btchat.cli.chat import network_text
from btchat.errors import ApiError
from btchat.identity.keys import Identity
from btchat.messaging.contacts import ContactChange
from btchat.net.dht_service import DEFAULT_BOOTSTRAP
from btchat.net.proxy import parse_proxy
from btchat.node.boot import (
    BootError,
    channel_config,
    create_identity,
    daemon_config,
    start_node,
)
from btchat.node.config import ConfigError, Settings, resolve, setting


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "config.toml"
    path.write_text(text)
    return path


def test_flag_beats_env_beats_file_beats_default(tmp_path: Path) -> None:
    conf = write(tmp_path, '[dht]\nbootstrap = ["file.example:1"]\nport = 7000\n')
    env = {"BTCHAT_BOOTSTRAP": "env.example:2, env2.example:3"}
    flag = [("flag.example", 4)]
    assert resolve({"bootstrap": flag}, config_file=conf, environ=env).bootstrap == flag
    assert resolve({}, config_file=conf, environ=env).bootstrap == [
        ("env.example", 2),
        ("env2.example", 3),
    ]
    from_file = resolve({}, config_file=conf, environ={})
    assert from_file.bootstrap == [("file.example", 1)]
    assert from_file.dht_port == 7000
    assert resolve({"dht_port": 0}, config_file=conf, environ={}).dht_port == 0
    empty = write(tmp_path, "")
    defaults = resolve({}, config_file=empty, environ={})
    assert defaults.bootstrap == list(DEFAULT_BOOTSTRAP)
    assert defaults.dht_port == 6881


def test_port_mapping_is_on_unless_a_flag_the_environment_or_the_file_says_off(
    tmp_path: Path,
) -> None:
    assert resolve({}, config_file=write(tmp_path, ""), environ={}).upnp is True
    off = write(tmp_path, "[net]\nupnp = false\n")
    assert resolve({}, config_file=off, environ={}).upnp is False
    assert resolve({}, config_file=off, environ={"BTCHAT_UPNP": "on"}).upnp is True
    assert resolve({}, config_file=off, environ={"BTCHAT_UPNP": "0"}).upnp is False
    assert resolve({"upnp": False}, config_file=off, environ={"BTCHAT_UPNP": "yes"}).upnp is False
    assert daemon_config(resolve({"upnp": False}, config_file=off, environ={})).upnp is False


def test_relaying_for_others_is_on_unless_a_flag_the_environment_or_the_file_says_off(
    tmp_path: Path,
) -> None:
    on = resolve({}, config_file=write(tmp_path, ""), environ={})
    assert on.relay is True and daemon_config(on).peering.relay.enabled
    off = write(tmp_path, "[net]\nrelay = false\n")
    assert resolve({}, config_file=off, environ={}).relay is False
    assert resolve({}, config_file=off, environ={"BTCHAT_RELAY": "on"}).relay is True
    assert resolve({}, config_file=off, environ={"BTCHAT_RELAY": "0"}).relay is False
    flagged = resolve({"relay": False}, config_file=off, environ={"BTCHAT_RELAY": "yes"})
    assert flagged.relay is False and not daemon_config(flagged).peering.relay.enabled


def test_data_dir_from_flag_then_env(tmp_path: Path) -> None:
    assert setting("data_dir", tmp_path / "a", environ={"BTCHAT_DATA_DIR": "/x"}) == tmp_path / "a"
    assert setting("data_dir", None, environ={"BTCHAT_DATA_DIR": "/x"}) == Path("/x")
    assert isinstance(setting("data_dir", None, environ={}), Path)


def test_the_file_is_read_only_when_needed(tmp_path: Path) -> None:
    broken = write(tmp_path, "this is [not toml")
    proxy = parse_proxy("socks5://127.0.0.1:1080")
    flags = {"bootstrap": [("h", 1)], "dht_port": 1, "data_dir": tmp_path, "proxy": proxy}
    flags["tor"] = False
    flags["upnp"] = False
    flags["relay"] = flags["dht_proxy"] = True
    flags["lan"] = False
    flags["files_dir"] = tmp_path / "files"
    flags.update(
        bind6="off", ipv6=True, ipv4=True, candidates=True, tor_control=("127.0.0.1", 9051)
    )
    assert resolve(flags, config_file=broken, environ={}).dht_port == 1
    with pytest.raises(ConfigError, match="cannot read config file"):
        resolve({"data_dir": tmp_path}, config_file=broken, environ={})
    with pytest.raises(ConfigError, match="does not exist"):
        resolve({"data_dir": tmp_path}, config_file=tmp_path / "missing.toml", environ={})


@pytest.mark.parametrize(
    ("environ", "text", "where"),
    [
        ({"BTCHAT_BOOTSTRAP": "nope"}, "", "BTCHAT_BOOTSTRAP"),
        ({}, '[dht]\nbootstrap = ["nope"]\n', "config dht.bootstrap"),
        ({}, '[dht]\nport = "x"\n', "config dht.port"),
        ({"BTCHAT_UPNP": "maybe"}, "", "BTCHAT_UPNP"),
        ({}, '[net]\nupnp = "sometimes"\n', "config net.upnp"),
    ],
)
def test_bad_values_name_their_source(
    tmp_path: Path, environ: dict[str, str], text: str, where: str
) -> None:
    with pytest.raises(ConfigError, match=where):
        resolve({"data_dir": tmp_path}, config_file=write(tmp_path, text), environ=environ)


def test_channel_discovery() -> None:
    base = Settings(data_dir=Path("."), bootstrap=[], host="127.0.0.1")
    loopback = channel_config(base)
    assert loopback.dht and loopback.trackers and not loopback.lsd  # no multicast on lo
    assert channel_config(
        Settings(data_dir=Path("."), bootstrap=[], host="127.0.0.1", lsd_interface="127.0.0.1")
    ).lsd
    with pytest.raises(ConfigError, match="carrier-pigeon"):
        channel_config(
            Settings(data_dir=Path("."), bootstrap=[], channel_discovery="dht,carrier-pigeon")
        )


def test_create_identity_needs_a_passphrase_or_consent(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path, bootstrap=[])
    with pytest.raises(BootError, match="no passphrase given"):
        create_identity(settings)
    _, encrypted = create_identity(settings, lambda new: "correct horse")
    assert encrypted
    with pytest.raises(BootError, match="already exists"):
        create_identity(settings)


async def test_start_node_serves_the_api_and_stop_cleans_up(tmp_path: Path) -> None:
    settings = Settings(
        data_dir=tmp_path,
        bootstrap=[("127.0.0.1", 9)],  # nobody there: the node runs, unjoined
        host="127.0.0.1",
        dht_port=0,
        no_passphrase=True,
        channel_discovery="dht",
    )
    notices: list[str] = []
    node = await start_node(settings, notice=notices.append)
    try:
        assert notices and "creating one" in notices[0]
        url, token = read_api_files(tmp_path)
        assert url == node.api_url
        status = await node.daemon.status()
        client_status = await _in_thread(lambda: ApiClient(url, token).status())
        assert client_status["id"] == status["id"]
        # Port mapping is on by default, but a loopback bind has nothing to map.
        assert settings.upnp and node.daemon.portmap is None
        assert status["port_mapping"] is None and status["external_tcp"] is None
        assert status["dht"]["external_addr"] is None
        assert status["dht"]["reachability"]["label"] == "unknown"  # nobody reported yet
        text = network_text(client_status)
        assert "external address not known yet" in text and "port mapping: off" in text
    finally:
        await node.stop()
    assert not (tmp_path / "api.json").exists()
    # A second start unlocks the identity it created (no passphrase: stored unencrypted).
    again = await start_node(settings, notice=notices.append)
    await again.stop()
    assert len(notices) == 1


async def _in_thread(fn):  # type: ignore[no-untyped-def]
    """The sync API client, off the event loop the server runs on."""
    import asyncio

    return await asyncio.get_running_loop().run_in_executor(None, fn)


def _settings(tmp_path: Path, **kw: object) -> Settings:
    base: dict[str, object] = {
        "data_dir": tmp_path,
        "bootstrap": [("127.0.0.1", 9)],
        "host": "127.0.0.1",
        "dht_port": 0,
        "no_passphrase": True,
        "channel_discovery": "dht",
    }
    return Settings(**{**base, **kw})  # type: ignore[arg-type]


async def test_a_second_node_on_one_data_dir_is_refused_and_the_first_keeps_working(
    tmp_path: Path,
) -> None:
    import os

    settings = _settings(tmp_path)
    first = await start_node(settings, notice=lambda _: None)
    try:
        api_before = (tmp_path / "api.json").read_text()
        with pytest.raises(BootError, match=f"in use by pid {os.getpid()}"):
            await start_node(settings, notice=lambda _: None)
        assert (tmp_path / "api.json").read_text() == api_before  # not overwritten
        status = await first.daemon.status()
        assert status["id"]
    finally:
        await first.stop()
    again = await start_node(settings, notice=lambda _: None)  # the lock went with stop()
    await again.stop()


def test_the_lock_is_held_by_another_process_and_dies_with_it(tmp_path: Path) -> None:
    import subprocess
    import sys

    from btchat.storage.dir_lock import DirLock, DirLockError

    code = (
        "import sys, time; from pathlib import Path; from btchat.storage.dir_lock import DirLock;"
        f"DirLock(Path({str(tmp_path)!r})).acquire(); print('held', flush=True); time.sleep(60)"
    )
    child = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout is not None and child.stdout.readline().strip() == "held"
        with pytest.raises(DirLockError, match=f"in use by pid {child.pid}"):
            DirLock(tmp_path).acquire()
    finally:
        child.kill()  # SIGKILL: no clean-up runs, the kernel drops the lock
        child.wait()
    lock = DirLock(tmp_path)
    lock.acquire()
    assert lock.held
    lock.release()


@pytest.mark.parametrize(
    ("kind", "field", "option"),
    [("udp", "dht_port", "--dht-port"), ("tcp", "port", "--port")],
)
async def test_a_taken_port_is_named_with_its_option_before_anything_is_written(
    tmp_path: Path, kind: str, field: str, option: str
) -> None:
    import socket

    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM if kind == "udp" else socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    if kind == "tcp":
        sock.listen()
    port = sock.getsockname()[1]
    try:
        with pytest.raises(BootError, match=f"127.0.0.1:{port}.*{option}"):
            await start_node(_settings(tmp_path, **{field: port}), notice=lambda _: None)
    finally:
        sock.close()
    assert not (tmp_path / "identity.key").exists() and not (tmp_path / "messages.db").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["lock"]


def test_a_proxy_keeps_sessions_off_udp(tmp_path: Path) -> None:
    from btchat.node.boot import daemon_config

    plain = daemon_config(Settings(data_dir=tmp_path, bootstrap=[]))
    proxied = daemon_config(
        Settings(data_dir=tmp_path, bootstrap=[], proxy="socks5://127.0.0.1:1080")
    )
    assert plain.peering.udp and not proxied.peering.udp


async def test_the_daemon_applies_only_the_fields_a_change_gives(tmp_path: Path) -> None:
    settings = Settings(
        data_dir=tmp_path,
        bootstrap=[("127.0.0.1", 9)],
        host="127.0.0.1",
        dht_port=0,
        no_passphrase=True,
        channel_discovery="dht",
    )
    node = await start_node(settings, notice=lambda _: None)
    try:
        daemon = node.daemon
        await daemon.add_contact(Identity.generate().public_key.hex(), "bob")
        await daemon.add_contact(Identity.generate().public_key.hex(), "carol")
        bob = await daemon.update_contact("bob", ContactChange(verified=True, retention_days=3))
        assert (bob["name"], bob["verified"], bob["blocked"]) == ("bob", True, False)
        assert bob["retention_days"] == 3
        bob = await daemon.update_contact("bob", ContactChange(name="robert", blocked=True))
        assert (bob["name"], bob["verified"], bob["blocked"]) == ("robert", True, True)
        with pytest.raises(ApiError) as bad:
            await daemon.update_contact("robert", ContactChange(retention_days=30))
        assert (bad.value.status, bad.value.code) == (400, "bad_retention")
        with pytest.raises(ApiError) as taken:
            await daemon.update_contact("robert", ContactChange(name="carol"))
        assert taken.value.status == 409
        assert (await daemon.get_contact("robert"))["retention_days"] == 3
    finally:
        await node.stop()


def test_start_up_path_leaves_pydantic_and_the_api_models_for_later() -> None:
    """`btchat up` answers before pydantic is imported (about 0.1 s of its start-up):
    the CLI, the node's composition and the API server import no models, no events and
    no OpenAPI generator; the first request with a body or the first event loads them."""
    import subprocess
    import sys

    late = ("pydantic", "btchat.api.models", "btchat.api.events", "btchat.api.openapi")
    code = (
        "import sys, btchat.cli.main, btchat.node.boot, btchat.api.server\n"
        f"print(sorted(m for m in {late!r} if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


async def test_first_request_loads_the_models_off_the_event_loop() -> None:
    """The first body to validate waits for the models in a thread, and then validates."""
    from btchat.api import routes

    await routes.models_loaded()
    assert routes.model("NewMessage").parse({"text": "hi"}).text == "hi"  # type: ignore[attr-defined]


async def test_a_second_channel_of_one_name_is_refused(tmp_path: Path) -> None:
    node = await start_node(_settings(tmp_path), notice=lambda _: None)
    try:
        channels = node.daemon.channels
        assert channels is not None
        await channels.create("friends", False, [])
        with pytest.raises(ApiError) as taken:
            await channels.create(" friends ", False, [])
        assert (taken.value.status, taken.value.code) == (409, "name_taken")
        assert [s.chat.name for s in channels.services.values()] == ["friends"]
    finally:
        await node.stop()
