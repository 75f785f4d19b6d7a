"""Where a node's settings come from: flags beat the environment beat the config file.

How this works: :data:`SETTINGS` names every setting once, with the environment
variable and the ``[section] key`` of the TOML config file that may also give it, and
its default. :func:`resolve` takes the values given as flags (``None`` = not given),
reads the environment and the file only for what is still missing, and returns a
frozen :class:`Settings`. The CLI, a TUI and tests all build a node from one of these
(``node/boot.py`` derives the daemon's configs), so the precedence rule lives here and
nowhere else. Kept free of the daemon's imports: every CLI command reads settings.
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from btchat.net.dht_service import DEFAULT_BOOTSTRAP

__all__ = [
    "ENV_BOOTSTRAP",
    "ENV_CONFIG",
    "ENV_DATA_DIR",
    "ENV_UPNP",
    "ConfigError",
    "Settings",
    "load_config_file",
    "parse_hostport",
    "resolve",
    "setting",
]

ENV_CONFIG = "BTCHAT_CONFIG"
ENV_BOOTSTRAP = "BTCHAT_BOOTSTRAP"  # comma-separated HOST:PORT list
ENV_DATA_DIR = "BTCHAT_DATA_DIR"
ENV_UPNP = "BTCHAT_UPNP"  # 0/off/false/no turns port mapping off
#: Ways channel members can be found (``--channel-discovery``).
DISCOVERY_WAYS = ("dht", "trackers", "lsd")


class ConfigError(ValueError):
    """A setting the user gave that cannot be used; the text says which and why."""


def parse_hostport(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"expected HOST:PORT, got {text!r}")
    return host.strip("[]"), int(port)


def _bootstrap_env(text: str) -> list[tuple[str, int]]:
    return [parse_hostport(x.strip()) for x in text.split(",") if x.strip()]


def _bootstrap_file(value: Any) -> list[tuple[str, int]]:
    return [parse_hostport(str(x)) for x in value]


def _switch(value: Any) -> bool:
    """On/off from the environment or the file: true/false, 1/0, on/off, yes/no."""
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("1", "true", "on", "yes"):
        return True
    if text in ("0", "false", "off", "no"):
        return False
    raise ValueError(f"expected on or off, got {value!r}")


def _default_data_dir() -> Path:
    from platformdirs import user_data_dir

    return Path(user_data_dir("btchat"))


@dataclass(frozen=True)
class Settings:
    """Everything a node (or a one-shot DHT command) is started with."""

    data_dir: Path
    bootstrap: list[tuple[str, int]]
    host: str = "0.0.0.0"
    port: int = 0  # TCP port for sessions; 0 = any
    dht_port: int = 6881
    api_port: int = 0
    request_poll: float = 300.0
    channel_discovery: str = ",".join(DISCOVERY_WAYS)
    lsd_interface: str | None = None
    passphrase_file: Path | None = None
    no_passphrase: bool = False
    upnp: bool = True  # map our ports on the home gateway (UPnP-IGD)


@dataclass(frozen=True)
class _Source:
    """Where else a setting may come from, and how to read it there."""

    env: str | None = None
    file: tuple[str, str] | None = None  # ([section], key) in the TOML file
    from_env: Callable[[str], Any] = str
    from_file: Callable[[Any], Any] = lambda v: v


#: The settings that can come from more than the flags; the rest are flags or defaults.
SETTINGS: dict[str, _Source] = {
    "bootstrap": _Source(
        env=ENV_BOOTSTRAP,
        file=("dht", "bootstrap"),
        from_env=_bootstrap_env,
        from_file=_bootstrap_file,
    ),
    "data_dir": _Source(env=ENV_DATA_DIR, from_env=Path),
    "dht_port": _Source(file=("dht", "port"), from_file=int),
    "upnp": _Source(env=ENV_UPNP, file=("net", "upnp"), from_env=_switch, from_file=_switch),
}
_DEFAULTS: dict[str, Callable[[], Any]] = {
    "bootstrap": lambda: list(DEFAULT_BOOTSTRAP),
    "data_dir": _default_data_dir,
    "dht_port": lambda: 6881,
    "upnp": lambda: True,
}


def load_config_file(path: Path | None) -> dict[str, Any]:
    """The TOML config: ``path``, else ``$BTCHAT_CONFIG``, else the platform's config dir
    (where a missing file just means "no settings")."""
    if path is None:
        env = os.environ.get(ENV_CONFIG)
        if env:
            path = Path(env)
        else:
            from platformdirs import user_config_dir

            path = Path(user_config_dir("btchat")) / "config.toml"
            if not path.exists():
                return {}
    try:
        return tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"config file {path} does not exist") from None
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"cannot read config file {path}: {exc}") from None


class _File:
    """The config file, read at most once and only if a setting is still missing."""

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self.data: dict[str, Any] | None = None

    def get(self, section: str, key: str) -> Any:
        if self.data is None:
            self.data = load_config_file(self.path)
        return self.data.get(section, {}).get(key)


def resolve(
    flags: Mapping[str, Any],
    *,
    config_file: Path | None = None,
    environ: Mapping[str, str] | None = None,
) -> Settings:
    """Settings from ``flags`` (``None`` = not given), then the environment, then the file.

    The file is read only when a setting is still missing, so a command given everything
    on its command line does not fail on a broken config file.
    """
    names = {f.name for f in fields(Settings)}
    values = {k: v for k, v in flags.items() if k in names and v is not None}
    file = _File(config_file)
    for name in SETTINGS:
        values[name] = setting(name, values.get(name), file=file, environ=environ)
    return Settings(**values)


def setting(
    name: str,
    flag: Any = None,
    *,
    file: _File | Path | None = None,
    environ: Mapping[str, str] | None = None,
) -> Any:
    """One setting: the flag if given, else the environment, else the file, else default."""
    if flag is not None:
        return flag
    source = SETTINGS[name]
    environ = os.environ if environ is None else environ
    if source.env and environ.get(source.env):
        return _read(source.from_env, environ[source.env], source.env)
    if source.file is not None:
        if not isinstance(file, _File):
            file = _File(file)
        section, key = source.file
        raw = file.get(section, key)
        if raw is not None:
            return _read(source.from_file, raw, f"config {section}.{key}")
    default = _DEFAULTS.get(name)
    return default() if default is not None else None


def _read(parse: Callable[[Any], Any], raw: Any, where: str) -> Any:
    try:
        return parse(raw)
    except (ValueError, TypeError) as exc:
        raise ConfigError(f"{where}: {exc}") from None
