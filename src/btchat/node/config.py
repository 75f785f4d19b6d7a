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

import ipaddress
import os
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from btchat.net.dht_service import DEFAULT_BOOTSTRAP
from btchat.net.onion import check_control
from btchat.net.proxy import ProxyUrl, is_onion, parse_proxy

__all__ = [
    "ENV_BOOTSTRAP",
    "ENV_CONFIG",
    "ENV_DATA_DIR",
    "ENV_IPV6",
    "ENV_LAN",
    "ENV_PROXY",
    "ENV_RELAY",
    "ENV_TOR",
    "ENV_UPNP",
    "ConfigError",
    "Settings",
    "config_file_path",
    "load_config_file",
    "parse_control",
    "parse_hostport",
    "parse_ip_port",
    "resolve",
    "setting",
]

ENV_CONFIG = "BTCHAT_CONFIG"
ENV_BOOTSTRAP = "BTCHAT_BOOTSTRAP"  # comma-separated HOST:PORT list
ENV_DATA_DIR = "BTCHAT_DATA_DIR"
ENV_PROXY = "BTCHAT_PROXY"  # socks5://IP:PORT or http://IP:PORT, optional user:pass@
ENV_TOR = "BTCHAT_TOR"  # 1/true/yes or 0/false/no
ENV_FILES_DIR = "BTCHAT_FILES_DIR"  # where accepted files are saved
ENV_UPNP = "BTCHAT_UPNP"  # 0/off/false/no turns port mapping off
ENV_RELAY = "BTCHAT_RELAY"  # 0/off/false/no: do not relay sessions for our contacts
ENV_TOR_CONTROL = "BTCHAT_TOR_CONTROL"  # IP:PORT of Tor's control port (an onion service)
ENV_DHT_PROXY = "BTCHAT_DHT_PROXY"  # 0/off: do not run DHT operations for our contacts
ENV_LAN = "BTCHAT_LAN"  # 0/off/false/no: contacts are not announced on the LAN
ENV_IPV6 = "BTCHAT_IPV6"  # 0/off/false/no: no IPv6 DHT socket, no sessions over IPv6
ENV_CANDIDATES = "BTCHAT_CANDIDATES"  # 0/off: no candidate records written or read
#: Ways channel members can be found (``--channel-discovery``).
DISCOVERY_WAYS = ("dht", "trackers", "lsd")


class ConfigError(ValueError):
    """A setting the user gave that cannot be used; the text says which and why."""


def parse_hostport(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"expected HOST:PORT, got {text!r}")
    return host.strip("[]"), int(port)


def parse_ip_port(text: str, *, proxied: bool) -> tuple[str, int]:
    """``IP:PORT`` (``[v6]:PORT``) with an IP literal, or, when ``proxied``,
    ``ONION.onion:PORT``: an address we may dial by hand (a host name would be resolved
    outside the proxy; an onion address only Tor resolves, so only through a proxy)."""
    try:
        host, port = parse_hostport(text)
    except ValueError:
        raise ValueError("address must be IP:PORT") from None
    if is_onion(host):
        if not proxied:
            raise ValueError("an onion address is reached only through Tor (--tor or --proxy)")
        return host.lower(), port
    try:
        return str(ipaddress.ip_address(host)), port
    except ValueError:
        raise ValueError("address must be IP:PORT (or ONION.onion:PORT through Tor)") from None


def parse_control(text: str) -> tuple[str, int]:
    """Tor's control port: a loopback ``IP:PORT`` (anything else would leave the machine)."""
    return check_control(parse_hostport(str(text)))


def _bootstrap_env(text: str) -> list[tuple[str, int]]:
    return [parse_hostport(x.strip()) for x in text.split(",") if x.strip()]


def _bootstrap_file(value: Any) -> list[tuple[str, int]]:
    return [parse_hostport(str(x)) for x in value]


def _proxy_file(value: Any) -> ProxyUrl:
    if not isinstance(value, str):
        raise ValueError('expected a URL string such as "socks5://127.0.0.1:9050"')
    return parse_proxy(value)


_TRUE, _FALSE = ("1", "true", "yes", "on"), ("0", "false", "no", "off", "")


def _flag_env(text: str) -> bool:
    if text.strip().lower() in _TRUE:
        return True
    if text.strip().lower() in _FALSE:
        return False
    raise ValueError(f"expected true or false, got {text!r}")


def _flag_file(value: Any) -> bool:
    if not isinstance(value, bool):
        raise ValueError(f"expected true or false, got {value!r}")
    return value


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
    port: int = 0  # TCP port for sessions; 0 = the DHT's port number if free, else any
    dht_port: int = 6881
    api_port: int = 0
    request_poll: float = 60.0
    channel_discovery: str = ",".join(DISCOVERY_WAYS)
    lsd_interface: str | None = None
    passphrase_file: Path | None = None
    no_passphrase: bool = False
    #: Sessions and channel links go out through this proxy (``--proxy``).
    proxy: ProxyUrl | None = None
    #: Tor mode: nothing leaves but through the proxy (Tor's SOCKS port); no UDP at all.
    tor: bool = False
    #: Tor mode: make an onion service for the session port through this control port.
    tor_control: tuple[str, int] | None = None
    upnp: bool = True  # map our ports on the home gateway (UPnP-IGD, PCP, NAT-PMP)
    relay: bool = True  # relay 1:1 sessions between our contacts (``--no-relay``)
    #: Run DHT operations for contacts without a DHT of their own (Tor mode;
    #: ``--no-dht-proxy``).
    dht_proxy: bool = True
    lan: bool = True  # find contacts on the LAN too (private multicast announcements)
    #: BEP 32: the IPv6 DHT socket's address (``[dht] bind6``); None: "::" when this host
    #: has IPv6 ("::1" when ``host`` is loopback); "off": none.
    bind6: str | None = None
    ipv6: bool = True  # take part in the IPv6 DHT, sessions over IPv6 (``--no-ipv6``)
    ipv4: bool = True  # the IPv4 DHT (``--no-ipv4``: an IPv6-only node)
    #: Candidate records for contacts (our TCP port, mappings, LAN/IPv6 addresses, onion).
    candidates: bool = True
    #: Where accepted files are saved (None: ``<data dir>/files``).
    files_dir: Path | None = None
    #: ``--config``: the TOML file read (None: ``$BTCHAT_CONFIG``, else the default).
    config_file: Path | None = None


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
    "files_dir": _Source(
        env=ENV_FILES_DIR,
        file=("files", "dir"),
        from_env=lambda v: Path(v).expanduser(),
        from_file=lambda v: Path(str(v)).expanduser(),
    ),
    "proxy": _Source(
        env=ENV_PROXY, file=("net", "proxy"), from_env=parse_proxy, from_file=_proxy_file
    ),
    "tor": _Source(env=ENV_TOR, file=("net", "tor"), from_env=_flag_env, from_file=_flag_file),
    "tor_control": _Source(
        env=ENV_TOR_CONTROL,
        file=("net", "tor_control"),
        from_env=parse_control,
        from_file=parse_control,
    ),
    "upnp": _Source(env=ENV_UPNP, file=("net", "upnp"), from_env=_switch, from_file=_switch),
    "relay": _Source(env=ENV_RELAY, file=("net", "relay"), from_env=_switch, from_file=_switch),
    "dht_proxy": _Source(
        env=ENV_DHT_PROXY, file=("net", "dht_proxy"), from_env=_switch, from_file=_switch
    ),
    "lan": _Source(env=ENV_LAN, file=("net", "lan"), from_env=_switch, from_file=_switch),
    "bind6": _Source(file=("dht", "bind6"), from_file=str),
    "ipv6": _Source(env=ENV_IPV6, file=("net", "ipv6"), from_env=_switch, from_file=_switch),
    "ipv4": _Source(file=("net", "ipv4"), from_file=_switch),
    "candidates": _Source(
        env=ENV_CANDIDATES, file=("net", "candidates"), from_env=_switch, from_file=_switch
    ),
}
_DEFAULTS: dict[str, Callable[[], Any]] = {
    "bootstrap": lambda: list(DEFAULT_BOOTSTRAP),
    "data_dir": _default_data_dir,
    "dht_port": lambda: 6881,
    "tor": lambda: False,
    "upnp": lambda: True,
    "relay": lambda: True,
    "dht_proxy": lambda: True,
    "lan": lambda: True,
    "ipv6": lambda: True,
    "ipv4": lambda: True,
    "candidates": lambda: True,
}


def config_file_path(path: Path | None) -> tuple[Path, bool]:
    """Where the TOML config is: ``path``, else ``$BTCHAT_CONFIG``, else the platform's
    config dir; and whether it was named (a named file must exist, the default need not)."""
    if path is not None:
        return path, True
    env = os.environ.get(ENV_CONFIG)
    if env:
        return Path(env), True
    from platformdirs import user_config_dir

    return Path(user_config_dir("btchat")) / "config.toml", False


def load_config_file(path: Path | None) -> dict[str, Any]:
    """The TOML config (``config_file_path``); a missing default file means "no settings"."""
    path, named = config_file_path(path)
    if not named and not path.exists():
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
    return Settings(**values, config_file=config_file)


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
