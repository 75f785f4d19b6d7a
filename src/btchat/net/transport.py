"""The transport seam: "a reliable byte stream", and who makes one.

Why a seam: sessions and channel links need only an ordered, reliable byte stream;
whether TCP, a UDP path with its own reliability, a relayed stream or a SOCKS-proxied
one carries it is not their business. Peering and the channel service therefore ask a
:class:`Dialer` for a :class:`ByteStream` ("connect me to this address") and accept
them from a :class:`Listener`; :mod:`btchat.net.pump` runs a stream core over any
:class:`ByteStream`. Only this module opens TCP connections; a new carrier is a new
``ByteStream`` + ``Dialer`` (and, if it can accept, a listener) here, nothing else.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections.abc import Awaitable, Callable, Iterator
from typing import Protocol, runtime_checkable

from btchat.net.admission import Admission, Ticket

__all__ = [
    "CLOSE_LINGER",
    "STREAM_LIMIT",
    "Address",
    "ByteStream",
    "Dialer",
    "Listener",
    "TcpDialer",
    "TcpListener",
    "TcpStream",
    "WatchedStream",
    "admitted",
    "listen_v6",
]

log = logging.getLogger(__name__)

#: ``(host, port)``; for carriers without ports (relays) the dialer defines its meaning.
Address = tuple[str, int]
#: asyncio's StreamReader buffer limit for our streams: two maximal frames (2 + 65535).
STREAM_LIMIT = 1 << 17
#: Seconds we wait for the kernel to take our last bytes (a CLOSE frame) before aborting.
CLOSE_LINGER = 5.0


@runtime_checkable
class ByteStream(Protocol):
    """One reliable, ordered, bidirectional byte stream."""

    @property
    def remote_address(self) -> Address | None:
        """Who is at the other end, as the carrier sees it (None if unknown)."""
        ...

    async def read(self, n: int) -> bytes:
        """Up to ``n`` bytes; ``b""`` at EOF. May raise OSError on a reset."""
        ...

    def write(self, data: bytes) -> None:
        """Queue ``data``; never blocks (see :meth:`drain`)."""
        ...

    def write_buffer_size(self) -> int:
        """Bytes queued and not yet taken by the carrier."""
        ...

    async def drain(self) -> None:
        """Wait until the write buffer is below the carrier's high-water mark."""
        ...

    def is_closing(self) -> bool: ...

    async def aclose(self) -> None:
        """Close gracefully (flushing what is queued), never hanging on a dead peer."""
        ...

    def abort(self) -> None:
        """Close at once, dropping what is queued."""
        ...


class Dialer(Protocol):
    """Makes outgoing streams: "connect me to this address"."""

    async def dial(self, address: Address) -> ByteStream:
        """A connected stream, or OSError/TimeoutError."""
        ...


class Listener(Protocol):
    """Accepts incoming streams until closed."""

    @property
    def port(self) -> int: ...

    async def aclose(self) -> None: ...


OnStream = Callable[[ByteStream], Awaitable[None]]


class TcpStream:
    """A :class:`ByteStream` over an asyncio TCP connection."""

    def __init__(self, reader: asyncio.StreamReader | None, writer: asyncio.StreamWriter) -> None:
        # ``reader`` may be None for a handle that only writes (see net/pump.py).
        self.reader = reader
        self.writer = writer

    @property
    def remote_address(self) -> Address | None:
        peer = self.writer.get_extra_info("peername")
        return (str(peer[0]), int(peer[1])) if peer else None

    async def read(self, n: int) -> bytes:
        if self.reader is None:
            raise RuntimeError("this TcpStream has no reader")
        return await self.reader.read(n)

    def write(self, data: bytes) -> None:
        self.writer.write(data)

    def write_buffer_size(self) -> int:
        return self.writer.transport.get_write_buffer_size()

    async def drain(self) -> None:
        await self.writer.drain()

    def is_closing(self) -> bool:
        return self.writer.is_closing()

    async def aclose(self) -> None:
        if not self.writer.is_closing():
            self.writer.close()
        try:
            await asyncio.wait_for(self.writer.wait_closed(), CLOSE_LINGER)
        except (TimeoutError, OSError):
            self.writer.transport.abort()

    def abort(self) -> None:
        self.writer.transport.abort()


class TcpDialer:
    """A :class:`Dialer` that opens plain TCP connections.

    ``make_socket`` makes the (unconnected) socket, for a caller that must choose where
    it lives, e.g. a test node in a network namespace; by default asyncio makes it.
    """

    def __init__(
        self,
        *,
        timeout: float = 10.0,
        limit: int = STREAM_LIMIT,
        make_socket: Callable[[], socket.socket] | None = None,
    ) -> None:
        self.timeout = timeout
        self.limit = limit
        self.make_socket = make_socket

    async def dial(self, address: Address) -> ByteStream:
        async with asyncio.timeout(self.timeout):  # not wait_for: it can lose a cancellation
            if self.make_socket is None:
                reader, writer = await asyncio.open_connection(*address, limit=self.limit)
            else:
                sock = self.make_socket()
                sock.setblocking(False)
                try:
                    await asyncio.get_running_loop().sock_connect(sock, address)
                except BaseException:
                    sock.close()
                    raise
                reader, writer = await asyncio.open_connection(sock=sock, limit=self.limit)
        return TcpStream(reader, writer)


class TcpListener:
    """A :class:`Listener` on a TCP port; each accepted connection runs ``on_stream``."""

    def __init__(
        self,
        server: asyncio.Server,
        accept: Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]],
        limit: int = STREAM_LIMIT,
    ) -> None:
        self._server = server
        self._accept = accept
        self._limit = limit
        #: More addresses the same sessions are accepted on (an IPv6 one: see listen_also).
        self._more: list[asyncio.Server] = []

    @classmethod
    async def start(
        cls, host: str, port: int, on_stream: OnStream, *, limit: int = STREAM_LIMIT
    ) -> TcpListener:
        async def accept(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await on_stream(TcpStream(reader, writer))

        return cls(await asyncio.start_server(accept, host, port, limit=limit), accept, limit)

    async def listen_also(self, host: str, port: int) -> int:
        """Accept on ``host:port`` too (asyncio sets IPV6_V6ONLY on an IPv6 host, so this
        socket and the IPv4 one share nothing); returns the port bound."""
        server = await asyncio.start_server(self._accept, host, port, limit=self._limit)
        self._more.append(server)
        return int(server.sockets[0].getsockname()[1])

    @property
    def port(self) -> int:
        return int(self._server.sockets[0].getsockname()[1])

    def close(self) -> None:
        """Stop accepting (connections already accepted go on)."""
        for server in (self._server, *self._more):
            server.close()

    async def aclose(self) -> None:
        for server in (self._server, *self._more):
            server.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(server.wait_closed(), 2)


async def listen_v6(listener: TcpListener, dht_addr6: tuple[str, int]) -> None:
    """Accept sessions on IPv6 too, at the DHT's IPv6 address and port: the rendezvous
    announces that socket over IPv6 (``implied_port``), so a contact dials it there. Not
    fatal when it cannot bind: IPv4 still works."""
    try:
        await listener.listen_also(dht_addr6[0], dht_addr6[1])
    except OSError as exc:
        log.info("sessions do not listen on IPv6 [%s]:%d: %s", *dht_addr6, exc)


class WatchedStream:
    """A :class:`ByteStream` that calls ``on_first_bytes`` once, when bytes first
    arrive (admission control times out connections that never send any)."""

    def __init__(self, inner: ByteStream, on_first_bytes: Callable[[], None]) -> None:
        self.inner = inner
        self._on_first: Callable[[], None] | None = on_first_bytes

    async def read(self, n: int) -> bytes:
        data = await self.inner.read(n)
        if data and self._on_first is not None:
            callback, self._on_first = self._on_first, None
            callback()
        return data

    def __getattr__(self, name: str) -> object:
        return getattr(self.inner, name)


@contextlib.contextmanager
def admitted(admission: Admission, stream: ByteStream) -> Iterator[tuple[Ticket, ByteStream]]:
    """An inbound ``stream`` admitted (:mod:`btchat.net.admission`): its ticket, and the
    stream to run, which tells admission when bytes first arrive. One that stays silent
    past its deadline is aborted; the ticket is released on exit, whatever happened."""
    loop = asyncio.get_running_loop()
    remote = stream.remote_address
    ticket = admission.admit(remote[0] if remote else None, loop.time(), stream.abort)

    def silent() -> None:
        if admission.check_silent(ticket, loop.time()):
            stream.abort()

    timer = loop.call_at(admission.deadline(ticket) + 0.01, silent)
    try:
        yield ticket, WatchedStream(stream, lambda: admission.heard(ticket))
    finally:
        timer.cancel()
        admission.release(ticket)
