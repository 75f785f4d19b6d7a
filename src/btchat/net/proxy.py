"""Outbound streams through a SOCKS5 or HTTP CONNECT proxy: the :class:`ProxyDialer`.

How this works: :func:`parse_proxy` reads ``socks5://[user:pass@]host:port`` or
``http://[user:pass@]host:port`` into a :class:`ProxyUrl`; a :class:`ProxyDialer` is a
:class:`~btchat.net.transport.Dialer` that asks that proxy (through python-socks, whose
asyncio backend speaks RFC 1928/1929 SOCKS5 and RFC 9110 CONNECT) to connect to an
address and hands back the tunnel as a :class:`~btchat.net.transport.ByteStream`.
Peering and the channel service take any Dialer, so nothing above this module knows a
proxy is there.

Only IP literals are dialled, and the proxy itself must be an IP literal: a host name
would mean a DNS query from this machine (a UDP packet past the proxy, which Tor mode
must never send) or a name the proxy resolves for us, which we never need since the
DHT, the rendezvous and channel discovery all give addresses as numbers. The one
exception is a v3 onion address (56 base32 characters + ``.onion``), which is not a DNS
name at all: it is handed to the proxy as it is (SOCKS5 remote resolution) for Tor to
reach, and never resolved here; :func:`is_onion` lets callers refuse one when there is
no proxy to give it to. Every dial is
bounded by one timeout that covers reaching the proxy, its handshake and its reply; a
proxy that is down or refuses raises :class:`ProxyError` (an OSError, as the Dialer
contract says) with a sentence a user can act on, and the dialer's :meth:`status`
keeps the last one for ``btchat status``.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import os
import re
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote, urlsplit

from python_socks import ProxyConnectionError, ProxyTimeoutError, ProxyType
from python_socks import ProxyError as SocksError
from python_socks.async_.asyncio import Proxy

from btchat.net.transport import STREAM_LIMIT, Address, ByteStream, TcpStream

__all__ = [
    "PROXY_SCHEMES",
    "PROXY_TIMEOUT",
    "TOR_SOCKS",
    "ProxiedStream",
    "ProxyDialer",
    "ProxyError",
    "ProxyUrl",
    "is_onion",
    "parse_proxy",
]

log = logging.getLogger(__name__)

#: URL scheme -> python-socks proxy type. SOCKS4 is left out: no IPv6, no auth.
PROXY_SCHEMES: dict[str, ProxyType] = {"socks5": ProxyType.SOCKS5, "http": ProxyType.HTTP}
#: Tor's default SOCKS port, the proxy ``--tor`` uses when none is given.
TOR_SOCKS = "socks5://127.0.0.1:9050"
#: Seconds one proxied dial may take, proxy handshake and reply included: a Tor circuit
#: to an exit or an onion service often takes several seconds (Tor's own SocksTimeout is
#: 120 s); past this the dial fails with a ProxyError saying so.
PROXY_TIMEOUT = 30.0
#: RFC 1929: user name and password are each 1 to 255 bytes.
MAX_CREDENTIAL = 255
#: A v3 onion service address (Tor rend-spec-v3 section 6): base32 of 35 bytes, 56 chars.
_ONION_V3 = re.compile(r"[a-z2-7]{56}\.onion")


def is_onion(host: str) -> bool:
    """A v3 onion address: only Tor can reach it, through its SOCKS or HTTP tunnel port."""
    return _ONION_V3.fullmatch(host.lower()) is not None


class ProxyError(OSError):
    """A dial through the proxy failed; the text says whether the proxy is down, slow,
    or refused, so the user knows where to look."""


def _ip_literal(host: str, what: str) -> str:
    try:
        return str(ipaddress.ip_address(host))
    except ValueError:
        raise ValueError(
            f"{what} must be an IP address, not the host name {host!r}: a name would be "
            "looked up through DNS outside the proxy"
        ) from None


@dataclass(frozen=True)
class ProxyUrl:
    """Where the proxy is and how to talk to it."""

    scheme: str  # a key of PROXY_SCHEMES
    host: str  # an IP literal
    port: int
    username: str | None = None
    password: str | None = None

    def __str__(self) -> str:
        """The URL without the password (for status and logs)."""
        user = f"{self.username}@" if self.username is not None else ""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.scheme}://{user}{host}:{self.port}"


def parse_proxy(text: str) -> ProxyUrl:
    """``socks5://[user:pass@]IP:PORT`` or ``http://...``; ValueError says what is wrong."""
    parts = urlsplit(text.strip())
    scheme = parts.scheme.lower()
    if scheme not in PROXY_SCHEMES:
        raise ValueError(
            f"a proxy is socks5://IP:PORT or http://IP:PORT, not {text!r} "
            f"(scheme {scheme or 'missing'!r})"
        )
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        raise ValueError(f"a proxy URL has no path or query: {text!r}")
    try:
        port = parts.port
    except ValueError:
        port = None
    if not parts.hostname or not port:
        raise ValueError(f"a proxy URL needs a host and a port: {text!r}")
    host = _ip_literal(parts.hostname, "the proxy")
    username = unquote(parts.username) if parts.username is not None else None
    password = unquote(parts.password) if parts.password is not None else None
    if (username is None) != (password is None):
        raise ValueError("a proxy user needs a password (user:pass@)")
    for value in (username, password):
        if value is not None and not 0 < len(value.encode()) <= MAX_CREDENTIAL:
            raise ValueError(f"proxy user and password are 1 to {MAX_CREDENTIAL} bytes")
    return ProxyUrl(scheme, host, port, username, password)


class ProxiedStream(TcpStream):
    """A TCP stream to the proxy that carries a tunnel to ``target``: the remote end is
    the target, not the proxy the socket is connected to."""

    def __init__(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, target: Address
    ) -> None:
        super().__init__(reader, writer)
        self.target = target

    @property
    def remote_address(self) -> Address | None:
        return self.target


class ProxyDialer:
    """A :class:`~btchat.net.transport.Dialer` whose every stream goes through ``proxy``."""

    def __init__(
        self, proxy: ProxyUrl, *, timeout: float = PROXY_TIMEOUT, limit: int = STREAM_LIMIT
    ) -> None:
        self.proxy = proxy
        self.timeout = timeout
        self.limit = limit
        self.last_error: str | None = None
        self.stats: dict[str, int] = {"dials": 0, "connected": 0, "failed": 0}

    async def dial(self, address: Address) -> ByteStream:
        """A tunnel to ``address`` (an IP literal or an onion address), or ProxyError."""
        host, port = address
        onion = is_onion(host)
        try:
            target = host.lower() if onion else _ip_literal(host, "a proxied address")
        except ValueError as exc:
            raise ProxyError(str(exc)) from None
        self.stats["dials"] += 1
        proxy = Proxy(
            PROXY_SCHEMES[self.proxy.scheme],
            self.proxy.host,
            self.proxy.port,
            username=self.proxy.username,
            password=self.proxy.password,
            # Numbers, or an onion name only Tor resolves: never a DNS lookup here.
            rdns=onion,
        )
        where = f"{target}:{port}" if ":" not in target else f"[{target}]:{port}"
        try:
            sock = await proxy.connect(target, port, timeout=self.timeout)
        except ProxyTimeoutError:
            raise self._failed(
                f"proxy {self.proxy} did not connect us to {where} within {self.timeout:g} s"
            ) from None
        except ProxyConnectionError as exc:
            why = os.strerror(exc.errno) if exc.errno else str(exc)
            raise self._failed(f"proxy {self.proxy} is not reachable: {why}") from None
        except SocksError as exc:
            raise self._failed(f"proxy {self.proxy} refused {where}: {exc}") from None
        except OSError as exc:  # e.g. the proxy closed the connection mid-handshake
            raise self._failed(f"proxy {self.proxy} failed on {where}: {exc}") from None
        try:
            reader, writer = await asyncio.open_connection(sock=sock, limit=self.limit)
        except BaseException:
            sock.close()
            raise
        self.stats["connected"] += 1
        if self.last_error is not None:
            log.warning("proxy %s works again", self.proxy)
            self.last_error = None
        return ProxiedStream(reader, writer, (target, port))

    def _failed(self, message: str) -> ProxyError:
        self.stats["failed"] += 1
        if message != self.last_error:  # say it once, not once per dial
            log.warning("%s", message)
        self.last_error = message
        return ProxyError(message)

    def status(self) -> dict[str, Any]:
        """What ``btchat status`` shows: the proxy (no password), counters, last error."""
        return {"url": str(self.proxy), **self.stats, "last_error": self.last_error}
