"""Settings merge (flags > environment > config file > defaults) and starting a node."""

from __future__ import annotations

from pathlib import Path

import pytest

from btchat.api.client import ApiClient, read_api_files
from btchat.cli.chat import network_text
from btchat.net.dht_service import DEFAULT_BOOTSTRAP
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


def test_data_dir_from_flag_then_env(tmp_path: Path) -> None:
    assert setting("data_dir", tmp_path / "a", environ={"BTCHAT_DATA_DIR": "/x"}) == tmp_path / "a"
    assert setting("data_dir", None, environ={"BTCHAT_DATA_DIR": "/x"}) == Path("/x")
    assert isinstance(setting("data_dir", None, environ={}), Path)


def test_the_file_is_read_only_when_needed(tmp_path: Path) -> None:
    broken = write(tmp_path, "this is [not toml")
    flags = {"bootstrap": [("h", 1)], "dht_port": 1, "data_dir": tmp_path, "upnp": False}
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
