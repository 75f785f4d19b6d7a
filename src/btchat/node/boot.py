"""Build a running node from :class:`~btchat.node.config.Settings`: one way for all.

How this works: :func:`start_node` unlocks (or, on first use, creates) the identity in
the data directory, opens the message store with the key file's ``db_key``, starts the
:class:`~btchat.node.daemon.Daemon`, serves the local API on 127.0.0.1 and writes
``api.json``/``api.token`` so clients find it. The :class:`RunningNode` it returns
undoes all of that in reverse order on :meth:`RunningNode.stop`. The CLI's ``btchat
up``, a TUI and tests start a node through here, so none of them repeats the order.
Failures the user can fix raise :class:`BootError` with a sentence to show.
"""

from __future__ import annotations

import ipaddress
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from aiohttp import web

from btchat.api.client import new_token, remove_api_files, write_api_files
from btchat.api.server import start_api
from btchat.channels.service import ChannelConfig
from btchat.identity.keystore import KeyStore, KeyStoreError, LoadedKeys, read_passphrase
from btchat.messaging.store import Store, StoreError
from btchat.node.config import DISCOVERY_WAYS, ConfigError, Settings
from btchat.node.daemon import Daemon, DaemonConfig
from btchat.node.peering import PeeringConfig

__all__ = [
    "BootError",
    "RunningNode",
    "channel_config",
    "create_identity",
    "daemon_config",
    "start_node",
]

#: Asks the user for a passphrase (``new``: ask twice); ``None`` when nobody can answer.
AskPassphrase = Callable[[bool], str | None]


class BootError(Exception):
    """The node cannot start for a reason the user can fix; the text says which."""


def _no_prompt(new: bool) -> str | None:
    return None


def passphrase(settings: Settings, ask: AskPassphrase, *, new: bool) -> str | None:
    """The passphrase from ``--passphrase-file``, else ``BTCHAT_PASSPHRASE``, else ``ask``."""
    try:
        value = read_passphrase(file=settings.passphrase_file, prompt=False)
    except KeyStoreError as exc:
        raise BootError(str(exc)) from None
    return ask(new) if value is None else value


def create_identity(settings: Settings, ask: AskPassphrase = _no_prompt) -> tuple[LoadedKeys, bool]:
    """Create the identity in the data directory: (loaded keys, encrypted?)."""
    store = KeyStore(settings.data_dir)
    if store.exists():
        raise BootError(f"an identity already exists in {settings.data_dir}")
    secret = None if settings.no_passphrase else passphrase(settings, ask, new=True)
    if secret is None and not settings.no_passphrase:
        raise BootError(
            "no passphrase given: use --passphrase-file, BTCHAT_PASSPHRASE, "
            "a terminal, or --no-passphrase to store the key unencrypted"
        )
    try:
        return store.create(secret, now=int(time.time())), secret is not None
    except KeyStoreError as exc:
        raise BootError(str(exc)) from None


def unlock_identity(
    settings: Settings, ask: AskPassphrase = _no_prompt, notice: Callable[[str], None] = print
) -> LoadedKeys:
    """The identity's keys, created first if the data directory has none yet."""
    keystore = KeyStore(settings.data_dir)
    try:
        if not keystore.exists():
            notice(f"no identity in {settings.data_dir} yet: creating one")
            return create_identity(settings, ask)[0]
        secret = passphrase(settings, ask, new=False) if keystore.is_encrypted() else None
        return keystore.load(secret)
    except KeyStoreError as exc:  # no identity, wrong or missing passphrase, damaged file
        raise BootError(str(exc)) from None


# ------------------------------------------------------------------ derived configs


def channel_config(settings: Settings) -> ChannelConfig:
    """Channel discovery from the settings; never multicast from a loopback host
    unless an interface is given explicitly."""
    ways = {w.strip() for w in settings.channel_discovery.split(",") if w.strip()}
    unknown = ways - set(DISCOVERY_WAYS)
    if unknown:
        raise ConfigError(f"unknown discovery way(s): {', '.join(sorted(unknown))}")
    host = settings.host
    interface = settings.lsd_interface or host
    loopback = ipaddress.ip_address(host).is_loopback if host else False
    lsd = "lsd" in ways and (settings.lsd_interface is not None or not loopback)
    options = {"interface": interface} if interface != "0.0.0.0" else {}
    return ChannelConfig(
        host=host,
        dht="dht" in ways,
        trackers="trackers" in ways,
        lsd=lsd,
        lsd_options=options,
    )


def daemon_config(settings: Settings) -> DaemonConfig:
    """What the daemon is started with."""
    return DaemonConfig(
        request_poll=settings.request_poll,
        data_dir=settings.data_dir,
        bootstrap=list(settings.bootstrap),
        dht_host=settings.host,
        dht_port=settings.dht_port,
        peering=PeeringConfig(host=settings.host, port=settings.port),
        channels=channel_config(settings),
        upnp=settings.upnp,
    )


@dataclass
class RunningNode:
    """A started daemon with its store and local API; :meth:`stop` ends all three."""

    settings: Settings
    daemon: Daemon
    store: Store
    api_url: str
    api_token: str
    _runner: web.AppRunner

    @property
    def data_dir(self) -> Path:
        return self.settings.data_dir

    async def stop(self) -> None:
        """API files first (clients stop finding us), then the API, then the daemon."""
        remove_api_files(self.data_dir)
        await self._runner.cleanup()
        await self.daemon.stop()


async def start_node(
    settings: Settings,
    *,
    ask: AskPassphrase = _no_prompt,
    notice: Callable[[str], None] = print,
) -> RunningNode:
    """Unlock the identity, open the store, start the daemon and serve the API."""
    config = daemon_config(settings)  # a bad setting fails before anything is opened
    keys = unlock_identity(settings, ask, notice)
    try:
        store = Store.open(settings.data_dir / "messages.db", keys.db_key)
    except StoreError as exc:
        raise BootError(str(exc)) from None
    daemon = Daemon(config, keys, store)
    try:
        await daemon.start()
    except OSError as exc:
        store.close()
        raise BootError(f"cannot listen: {exc.strerror}") from None
    token = new_token()
    try:
        runner, api_port = await start_api(daemon, token, port=settings.api_port)
    except BaseException:
        await daemon.stop()
        raise
    url = f"http://127.0.0.1:{api_port}"
    write_api_files(settings.data_dir, url, token)
    return RunningNode(settings, daemon, store, url, token, runner)
