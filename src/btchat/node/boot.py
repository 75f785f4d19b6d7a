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

import asyncio
import ipaddress
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from aiohttp import web

from btchat.api.client import new_token, remove_api_files, write_api_files
from btchat.api.routes import MessengerSlot
from btchat.api.server import preload, start_api
from btchat.channels.service import ChannelConfig
from btchat.discovery.lan_service import LanConfig
from btchat.identity.keystore import KeyStore, KeyStoreError, LoadedKeys, read_passphrase
from btchat.messaging.store import Store
from btchat.net.dht_proxy_core import DhtProxyLimits
from btchat.net.dht_service import has_ipv6
from btchat.net.proxy import PROXY_TIMEOUT, TOR_SOCKS, ProxyUrl, parse_proxy
from btchat.net.relay_core import RelayLimits
from btchat.node.config import DISCOVERY_WAYS, ConfigError, Settings
from btchat.node.daemon import Daemon, DaemonConfig
from btchat.node.history import HistoryError, open_history
from btchat.node.peering import PeeringConfig
from btchat.node.settings_file import SettingsFile
from btchat.node.unlock import BrowserUnlock
from btchat.storage.dir_lock import DirLock, DirLockError

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


def listen_host(settings: Settings) -> str:
    """Where sessions and channel links listen. In Tor mode only on loopback (where a
    local onion service would forward): a port on an outside address helps nobody who
    can only reach us through Tor, and the default "any" becomes 127.0.0.1."""
    if not settings.tor:
        return settings.host
    if settings.host == "0.0.0.0":
        return "127.0.0.1"
    try:
        loopback = ipaddress.ip_address(settings.host).is_loopback
    except ValueError:
        loopback = False
    if not loopback:
        raise ConfigError(f"Tor mode listens on loopback only, not on {settings.host}")
    return settings.host


def proxy(settings: Settings) -> ProxyUrl | None:
    """The proxy every outbound stream goes through; Tor mode defaults to Tor's port."""
    if settings.tor and settings.proxy is None:
        return parse_proxy(TOR_SOCKS)
    return settings.proxy


def channel_config(settings: Settings) -> ChannelConfig:
    """Channel discovery from the settings; never multicast from a loopback host
    unless an interface is given explicitly. Tor mode has none of the three ways: the
    DHT, UDP trackers and LAN multicast are UDP, and HTTP trackers would see our IP."""
    ways = {w.strip() for w in settings.channel_discovery.split(",") if w.strip()}
    unknown = ways - set(DISCOVERY_WAYS)
    if unknown:
        raise ConfigError(f"unknown discovery way(s): {', '.join(sorted(unknown))}")
    host = listen_host(settings)
    if settings.tor:
        return ChannelConfig(host=host, dht=False, trackers=False, lsd=False)
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


def lan_config(settings: Settings) -> LanConfig | None:
    """LAN announcements to contacts: off in Tor mode (multicast from our own IP) and, as
    channel LSD, from a loopback host unless an interface is given."""
    if settings.tor or not settings.lan:
        return None
    host = listen_host(settings)
    loopback = ipaddress.ip_address(host).is_loopback if host else False
    if loopback and settings.lsd_interface is None:
        return None
    return LanConfig(interface=settings.lsd_interface or host)


def dht_bind6(settings: Settings) -> str | None:
    """Where the IPv6 DHT socket binds (BEP 32), or None: off, Tor mode, no IPv6 here.

    By default "::" on a host with IPv6, "::1" when ``host`` is loopback (a test, a
    sandbox: what binds the IPv4 side to loopback keeps IPv6 there too)."""
    if settings.tor or not settings.ipv6 or settings.bind6 == "off":
        return None
    if settings.bind6:
        try:
            return str(ipaddress.IPv6Address(settings.bind6.strip("[]")))
        except ValueError:
            raise ConfigError(f"dht.bind6: {settings.bind6!r} is not an IPv6 address") from None
    if not has_ipv6():
        return None
    try:
        loopback = ipaddress.ip_address(settings.host).is_loopback
    except ValueError:
        loopback = False
    return "::1" if loopback else "::"


def daemon_config(settings: Settings) -> DaemonConfig:
    """What the daemon is started with."""
    host6 = dht_bind6(settings)
    return DaemonConfig(
        request_poll=settings.request_poll,
        data_dir=settings.data_dir,
        bootstrap=list(settings.bootstrap),
        dht_host=settings.host,
        dht_port=settings.dht_port,
        dht_host6=host6,
        dht_ipv4=_ipv4(settings, host6),
        peering=PeeringConfig(
            host=listen_host(settings),
            port=settings.port,
            # Through a proxy the dialer's own (longer) bound ends a slow dial, saying why;
            # and no session goes around it over UDP (QUIC would dial contacts directly).
            **({"dial_timeout": PROXY_TIMEOUT + 1, "udp": False} if proxy(settings) else {}),
            relay=RelayLimits(enabled=settings.relay),
            dht_proxy=DhtProxyLimits(enabled=settings.dht_proxy),
            lan=lan_config(settings),
            candidates=settings.candidates,
        ),
        channels=channel_config(settings),
        proxy=proxy(settings),
        tor=settings.tor,
        tor_control=settings.tor_control if settings.tor else None,
        upnp=settings.upnp and not settings.tor,  # Tor mode: no UDP, SSDP included
        files_dir=settings.files_dir,
    )


def _ipv4(settings: Settings, host6: str | None) -> bool:
    if not settings.ipv4 and host6 is None and not settings.tor:
        raise ConfigError("--no-ipv4 leaves no DHT: IPv6 is off or this host has none")
    return settings.ipv4


@dataclass
class RunningNode:
    """A started daemon with its store and local API; :meth:`stop` ends all three."""

    settings: Settings
    daemon: Daemon
    store: Store
    api_url: str
    api_token: str
    _runner: web.AppRunner
    _lock: DirLock

    @property
    def data_dir(self) -> Path:
        return self.settings.data_dir

    async def stop(self) -> None:
        """API files first (clients stop finding us), then the API, then the daemon."""
        remove_api_files(self.data_dir)
        await self._runner.cleanup()
        try:
            await self.daemon.stop()
        finally:
            self._lock.release()


async def start_node(
    settings: Settings,
    *,
    ask: AskPassphrase = _no_prompt,
    notice: Callable[[str], None] = print,
    in_browser: bool = False,
) -> RunningNode:
    """Lock the data directory, unlock the identity, open the store, start the daemon
    and serve the API. Nothing is written to the directory before the lock is held.
    ``in_browser``: when the identity needs a passphrase that no file or environment
    gives (to create or to open it), serve the API locked first and take it from the
    web app (``node/unlock.py``); ``notice`` says where."""
    config = daemon_config(settings)  # a bad setting fails before anything is opened
    lock = DirLock(settings.data_dir)
    try:
        lock.acquire()
    except DirLockError as exc:
        raise BootError(str(exc)) from None
    try:
        if in_browser and _needs_passphrase(settings):
            return await _start_in_browser(settings, config, lock, notice)
        return await _start_locked(settings, config, lock, ask, notice)
    except BaseException:
        lock.release()
        raise


def _needs_passphrase(settings: Settings) -> bool:
    """The identity needs a passphrase to be created or opened, and none is given."""
    keystore = KeyStore(settings.data_dir)
    if keystore.exists() and not keystore.is_encrypted():
        return False
    if not keystore.exists() and settings.no_passphrase:
        return False
    return passphrase(settings, lambda new: None, new=False) is None


def _listen_error(settings: Settings, exc: OSError, failed_dht: bool) -> str:
    """Which port could not be opened and which option picks another."""
    if failed_dht:
        what, port, option = "the DHT's UDP port", settings.dht_port, "--dht-port"
    else:
        what, port, option = "the session TCP port", settings.port, "--port"
    where = f"{settings.host}:{port}" if port else f"{settings.host} (any port)"
    hint = f" (in use by another program? choose another with {option})" if port else ""
    return f"cannot listen on {what} {where}: {exc.strerror}{hint}"


def _check_ports(settings: Settings) -> None:
    """Fail early, naming the port and its option, when a fixed port is taken. The real
    bind follows at once; a port taken in between still fails there, as clearly. Tor
    mode has no DHT port to probe: it opens no UDP socket at all, not even to look."""
    host = listen_host(settings)
    for kind, port, failed_dht in (
        (socket.SOCK_DGRAM, 0 if settings.tor else settings.dht_port, True),
        (socket.SOCK_STREAM, settings.port, False),
    ):
        if not port:
            continue
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        with socket.socket(family, kind) as probe:
            if kind == socket.SOCK_STREAM:  # as asyncio's listener does: TIME_WAIT is fine
                probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                probe.bind((host, port))
            except OSError as exc:
                raise BootError(_listen_error(settings, exc, failed_dht)) from None


async def _start_locked(
    settings: Settings,
    config: DaemonConfig,
    lock: DirLock,
    ask: AskPassphrase,
    notice: Callable[[str], None],
) -> RunningNode:
    _check_ports(settings)  # before the identity or store is created: nothing half-written
    keys = unlock_identity(settings, ask, notice)
    daemon, store = await _start_daemon(settings, config, keys, notice)
    token = new_token()
    try:
        runner, url = await _serve(MessengerSlot(daemon), settings, token)
    except BaseException:
        await daemon.stop()
        raise
    write_api_files(settings.data_dir, url, token)
    return RunningNode(settings, daemon, store, url, token, runner, lock)


async def _start_in_browser(
    settings: Settings, config: DaemonConfig, lock: DirLock, notice: Callable[[str], None]
) -> RunningNode:
    """The API and the page first, locked; the daemon once the page gave the passphrase."""
    _check_ports(settings)
    unlock = BrowserUnlock(KeyStore(settings.data_dir), now=int(time.time()))
    slot = MessengerSlot(None, unlock)
    token = new_token()
    runner, url = await _serve(slot, settings, token)
    try:
        write_api_files(settings.data_dir, url, token)
        creating = not KeyStore(settings.data_dir).exists()
        notice(
            f"{'create your identity' if creating else 'unlock btchat'} in the web app: "
            f"{url}/ (`btchat open` signs you in)"
        )
        keys = await unlock.keys
        daemon, store = await _start_daemon(settings, config, keys, notice)
        slot.current = daemon
        unlock.ready.set()
    except BaseException:
        remove_api_files(settings.data_dir)
        await runner.cleanup()
        raise
    return RunningNode(settings, daemon, store, url, token, runner, lock)


async def _start_daemon(
    settings: Settings, config: DaemonConfig, keys: LoadedKeys, notice: Callable[[str], None]
) -> tuple[Daemon, Store]:
    try:
        store = open_history(settings.data_dir, keys.db_key, warn=notice)
    except HistoryError as exc:
        raise BootError(str(exc)) from None
    daemon = Daemon(config, keys, store)
    daemon.settings = SettingsFile(settings, settings.config_file)
    try:
        await daemon.start()
    except OSError as exc:
        failed_dht = daemon.dht is None
        await daemon.stop()  # closes the store too
        raise BootError(_listen_error(settings, exc, failed_dht)) from None
    return daemon, store


async def _serve(slot: MessengerSlot, settings: Settings, token: str) -> tuple[web.AppRunner, str]:
    try:
        runner, api_port = await start_api(slot, token, port=settings.api_port)
    except OSError as exc:
        raise BootError(
            f"cannot serve the API on port {settings.api_port}: {exc.strerror} "
            "(choose another with --api-port)"
        ) from None
    # The API answers now; its request models load in a thread while the daemon waits
    # for the network, instead of delaying the API or stalling the first request.
    asyncio.get_running_loop().run_in_executor(None, preload)
    return runner, f"http://127.0.0.1:{api_port}"
