"""Settings a front end changes (issue 12): written to the config file for the next
start, the user's comments kept, bad values refused before anything is written, a file
that does not parse reported and left as it is, the environment said to win."""

from __future__ import annotations

import asyncio
import stat
from pathlib import Path

import pytest

from btchat.errors import ApiError
from btchat.node.config import ConfigError, Settings, resolve
from btchat.node.settings_file import EDITABLE, SettingsFile

ORIGINAL = """# my settings
[dht]
bootstrap = ["10.0.0.1:6881"]  # the office node

[net]
relay = false
"""


def part(tmp_path: Path, text: str | None = ORIGINAL, **environ: str) -> SettingsFile:
    path = tmp_path / "config.toml"
    if text is not None:
        path.write_text(text)
    running = resolve({"data_dir": tmp_path}, config_file=path, environ=environ)
    return SettingsFile(running, path, environ)


def test_the_view_says_what_runs_what_comes_next_and_from_where(tmp_path: Path) -> None:
    view = part(tmp_path, BTCHAT_LAN="off").snapshot()
    s = view["settings"]
    assert set(s) == set(EDITABLE) and view["problem"] is None
    assert s["bootstrap"] == {**s["bootstrap"], "value": ["10.0.0.1:6881"], "source": "file"}
    assert s["relay"]["value"] is False and s["relay"]["next_start"] is False
    assert s["lan"]["source"] == "environment" and s["lan"]["value"] is False
    assert s["upnp"] == {**s["upnp"], "value": True, "source": "default"}
    assert not any(v["flag"] for v in s.values())


def test_a_flag_at_this_start_is_said(tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    path.write_text(ORIGINAL)
    running = resolve({"data_dir": tmp_path, "relay": True}, config_file=path, environ={})
    s = SettingsFile(running, path, {}).snapshot()["settings"]
    assert s["relay"] == {**s["relay"], "value": True, "next_start": False, "flag": True}
    assert not s["upnp"]["flag"]


def test_a_change_is_written_for_the_next_start_and_keeps_the_comments(tmp_path: Path) -> None:
    settings = part(tmp_path)
    view = settings.write_changes(
        {"relay": True, "proxy": "socks5://alice:secret@127.0.0.1:9050", "bootstrap": None}
    )
    text = (tmp_path / "config.toml").read_text()
    assert "# my settings" in text and "[net]" in text
    assert "bootstrap" not in text and 'proxy = "socks5://alice:secret@127.0.0.1:9050"' in text
    assert stat.S_IMODE((tmp_path / "config.toml").stat().st_mode) == 0o600
    s = view["settings"]
    assert s["relay"]["value"] is False and s["relay"]["next_start"] is True  # a restart
    assert s["proxy"]["next_start"] == "socks5://alice@127.0.0.1:9050"  # no password shown
    assert s["bootstrap"]["source"] == "default"
    # The next start reads what was written.
    again = resolve({"data_dir": tmp_path}, config_file=tmp_path / "config.toml", environ={})
    assert again.relay is True and again.proxy is not None and again.proxy.password == "secret"


def test_bad_values_are_refused_and_nothing_is_written(tmp_path: Path) -> None:
    settings = part(tmp_path)
    for bad in (
        {"proxy": "ftp://example"},
        {"bootstrap": ["no port"]},
        {"relay": "yes"},
        {"relay": True, "data_dir": "/tmp"},
    ):
        with pytest.raises(ConfigError):
            settings.write_changes(bad)
        assert (tmp_path / "config.toml").read_text() == ORIGINAL
    with pytest.raises(ApiError) as err:
        asyncio.run(settings.save({"proxy": "ftp://example"}))
    assert err.value.status == 400


def test_a_file_that_does_not_parse_is_reported_and_left_alone(tmp_path: Path) -> None:
    settings = SettingsFile(Settings(data_dir=tmp_path, bootstrap=[]), tmp_path / "c.toml", {})
    (tmp_path / "c.toml").write_text("[net\nrelay = ")
    assert "does not parse" in (settings.snapshot()["problem"] or "")
    with pytest.raises(ApiError) as err:
        asyncio.run(settings.save({"relay": True}))
    assert err.value.status == 409 and "left as it is" in err.value.message
    assert (tmp_path / "c.toml").read_text() == "[net\nrelay = "


def test_a_missing_default_file_is_created(tmp_path: Path) -> None:
    settings = SettingsFile(Settings(data_dir=tmp_path, bootstrap=[]), None, {})
    settings.path, settings._named = tmp_path / "new" / "config.toml", False
    settings.write_changes({"upnp": False})
    assert "upnp = false" in settings.path.read_text()


def test_the_command_line_reads_and_shows_settings(tmp_path: Path) -> None:
    from btchat.cli.base import UserError
    from btchat.cli.network_settings import settings_text, value_of

    assert value_of("relay", "Off") is False and value_of("lan", "yes") is True
    assert value_of("bootstrap", "a:1, b:2,") == ["a:1", "b:2"]
    with pytest.raises(UserError, match="on or off"):
        value_of("tor", "maybe")
    settings = part(tmp_path)
    settings.write_changes({"relay": True})
    text = settings_text(settings.snapshot())
    assert f"config file: {tmp_path / 'config.toml'}" in text
    assert "relay: off (next start: on)  [file]" in text
    assert "bootstrap: 10.0.0.1:6881  [file]" in text and "upnp: on  [default]" in text
