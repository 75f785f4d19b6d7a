"""The settings a front end may show and change: the network ones of the config file.

A daemon runs with what it was started with (flags, then the environment, then the
file, then defaults: ``node/config.py``); changing one here writes the TOML file, so it
takes effect at the next start, and says so. The file is edited with ``tomlkit``, which
keeps the user's comments and layout; a file that does not parse is reported and never
overwritten; the new text replaces the old atomically (written beside it, then renamed).
A value from the environment still wins over the file (the view says so), and a flag
given to ``btchat up`` over both; so a front end does not promise what the next start
will not do.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import tomlkit
from tomlkit.exceptions import TOMLKitError

from btchat.errors import ApiError
from btchat.net.proxy import ProxyUrl
from btchat.node.config import (
    SETTINGS,
    ConfigError,
    Settings,
    _File,
    config_file_path,
    setting,
)

__all__ = ["EDITABLE", "SettingsFile"]

#: What a front end may change, and what each is for (shown beside it).
EDITABLE: dict[str, str] = {
    "bootstrap": "DHT nodes to join through (host:port); none: the public routers",
    "proxy": "sessions and channel links go out through this SOCKS5 or HTTP proxy",
    "tor": "Tor mode: nothing leaves but through the proxy (Tor's SOCKS port); no DHT",
    "relay": "relay sessions between your contacts who cannot reach each other",
    "dht_proxy": "run DHT lookups and puts for contacts in Tor mode (they have no DHT)",
    "upnp": "map the ports on the home gateway (UPnP-IGD)",
    "lan": "find contacts on the local network too",
    "ipv6": "take part in the IPv6 DHT; sessions over IPv6",
}
#: Most bootstrap nodes one may save.
MAX_BOOTSTRAP = 32


def _shown(name: str, value: Any) -> Any:
    """A setting as JSON: host:port strings, a proxy URL without its password."""
    if name == "bootstrap":
        return [f"[{h}]:{p}" if ":" in h else f"{h}:{p}" for h, p in value]
    if isinstance(value, ProxyUrl):
        return str(value)
    return value


def _to_file(name: str, value: Any) -> Any:
    """A value from a front end as the file holds it, checked by the file's own reader
    (so what is saved is what the next start accepts)."""
    if name == "bootstrap":
        if not isinstance(value, list) or len(value) > MAX_BOOTSTRAP:
            raise ConfigError(f"bootstrap: a list of at most {MAX_BOOTSTRAP} host:port")
        raw: Any = [str(v) for v in value]
    elif name == "proxy" or isinstance(value, bool):
        raw = value
    else:
        raise ConfigError(f"{name}: expected true or false")
    source = SETTINGS[name]
    try:
        source.from_file(raw)
    except (ValueError, TypeError) as exc:
        raise ConfigError(f"{name}: {exc}") from None
    return raw


class SettingsFile:
    """The API's ``settings`` part: the view, and saving changes to the config file."""

    def __init__(
        self,
        running: Settings,
        config_file: Path | None = None,
        environ: Mapping[str, str] | None = None,
    ) -> None:
        self.running = running
        self.path, self._named = config_file_path(config_file)
        self.environ = os.environ if environ is None else environ
        #: What the file and environment gave when this daemon started: a running
        #: value other than that came from a flag.
        self._at_start = {n: v for n, (v, _) in self._from_file_and_environment()[0].items()}

    def _read(self) -> tomlkit.TOMLDocument:
        try:
            text = self.path.read_text()
        except FileNotFoundError:
            if self._named:
                raise ConfigError(f"config file {self.path} does not exist") from None
            return tomlkit.document()
        except OSError as exc:
            raise ConfigError(f"cannot read config file {self.path}: {exc}") from None
        try:
            return tomlkit.parse(text)
        except TOMLKitError as exc:
            raise ConfigError(
                f"config file {self.path} does not parse ({exc}); fix it by hand: "
                "it is left as it is"
            ) from None

    async def view(self) -> dict[str, Any]:
        return self.snapshot()

    async def save(self, changes: dict[str, Any]) -> dict[str, Any]:
        try:
            return self.write_changes(changes)
        except ConfigError as exc:
            unreadable = "does not parse" in str(exc) or "cannot read" in str(exc)
            raise ApiError(409 if unreadable else 400, "bad_setting", str(exc)) from None

    def _from_file_and_environment(self) -> tuple[dict[str, tuple[Any, str]], str | None]:
        """What a start without flags takes now: {name: (value, source)}, and why the
        file cannot be read (then as if empty)."""
        try:
            data: dict[str, Any] = self._read().unwrap()
            problem = None
        except ConfigError as exc:
            data, problem = {}, str(exc)
        file = _File(None)
        file.data = data
        out: dict[str, tuple[Any, str]] = {}
        for name in EDITABLE:
            env = SETTINGS[name].env
            section, key = SETTINGS[name].file or ("", "")
            if env and self.environ.get(env):
                source = "environment"
            else:
                source = "file" if key in data.get(section, {}) else "default"
            try:
                value = _shown(name, setting(name, None, file=file, environ=self.environ))
            except ConfigError as exc:
                value, problem = None, problem or str(exc)
            out[name] = (value, source)
        return out, problem

    def snapshot(self) -> dict[str, Any]:
        """Each setting: what runs now, what the next start takes (flags aside), from
        where, and whether a flag decided it at this start; a file that does not parse
        is said, not hidden."""
        nxt, problem = self._from_file_and_environment()
        out: dict[str, Any] = {}
        for name, about in EDITABLE.items():
            value, source = nxt[name]
            running = _shown(name, getattr(self.running, name))
            out[name] = {
                "value": running,
                "next_start": value,
                "source": source,
                "flag": running != self._at_start.get(name, running),
                "about": about,
            }
        return {"config_file": str(self.path), "problem": problem, "settings": out}

    def write_changes(self, changes: Mapping[str, Any]) -> dict[str, Any]:
        """Write ``changes`` (``None``: back to the default) to the config file."""
        unknown = set(changes) - set(EDITABLE)
        if unknown:
            raise ConfigError(f"not a setting one can change here: {', '.join(sorted(unknown))}")
        doc = self._read()
        for name, value in changes.items():
            section, key = SETTINGS[name].file or ("", "")
            table = doc.get(section)
            if value is None:
                if table is not None and key in table:
                    del table[key]
                continue
            if table is None:
                table = tomlkit.table()
                doc[section] = table
            table[key] = _to_file(name, value)
        self._write(tomlkit.dumps(doc))
        return self.snapshot()

    def _write(self, text: str) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".config-", dir=self.path.parent)
        try:
            with os.fdopen(fd, "w") as f:
                f.write(text)
                f.flush()
                os.fsync(f.fileno())
            os.chmod(tmp, 0o600)  # it may hold a proxy password
            os.replace(tmp, self.path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
