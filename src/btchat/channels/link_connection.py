"""The asyncio shell that runs a sans-I/O :class:`~btchat.channels.link.Link`.

How this works: the one pump for every secure stream, :func:`btchat.net.pump.run_stream`,
does the work; this module adds what is a link's own. Build the Link with
``now=asyncio.get_running_loop().time()``. :class:`LinkConnection` is the caller's
handle: ``send`` and ``close`` act on the link and write the result at once, from any
code running on the loop, including the event callback.

Backpressure differs from sessions on purpose. A channel pushes whatever the mesh
relays, so :meth:`LinkConnection.send` never blocks: it refuses (returns False) while
more than :data:`MAX_WRITE_BACKLOG` bytes wait for a peer that is not reading, and the
channel's anti-entropy repairs what was refused. The pump keeps reading meanwhile, so
two members that both push cannot deadlock each other (each stopping reading until the
other reads). What the pump itself answers (PONGs) can grow the backlog only beyond
that cap up to :data:`ABORT_WRITE_BACKLOG`; a peer that pushes us there, sending PINGs
without reading, is dropped.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from btchat.channels.link import Link, LinkEvent
from btchat.net.pump import READ_SIZE, Backpressure, StreamConnection, run_stream
from btchat.net.transport import CLOSE_LINGER, ByteStream, TcpStream

__all__ = [
    "ABORT_WRITE_BACKLOG",
    "CLOSE_LINGER",
    "MAX_WRITE_BACKLOG",
    "READ_SIZE",
    "LinkConnection",
    "run_link",
    "run_link_over",
]

#: Bytes queued for the stream beyond which :meth:`LinkConnection.send` refuses. Far
#: above asyncio's 64 KiB high-water mark, so a sender that awaits ``drain()`` never
#: sees a refusal.
MAX_WRITE_BACKLOG = 1 << 20
#: Bytes queued beyond which the pump fails the link: only the pump's own answers can
#: get here, and only if the peer keeps sending without reading.
ABORT_WRITE_BACKLOG = 2 * MAX_WRITE_BACKLOG


class LinkConnection(StreamConnection):
    """A link bound to a stream's writer; create it inside the running event loop.

    :meth:`over` binds one to any :class:`~btchat.net.transport.ByteStream`.
    """

    core: Link

    def __init__(self, link: Link, writer: asyncio.StreamWriter) -> None:
        super().__init__(link, TcpStream(None, writer))  # run_link supplies the reader
        self.writer: asyncio.StreamWriter | None = writer

    @classmethod
    def over(cls, stream: ByteStream, link: Link) -> LinkConnection:
        """A handle for ``link`` over any byte stream."""
        conn = cls.__new__(cls)
        StreamConnection.__init__(conn, link, stream)
        conn.writer = None
        return conn

    @property
    def link(self) -> Link:
        return self.core

    def send(self, payload: bytes) -> bool:
        """Queue ``payload`` as one DATA frame; False if it was not queued.

        Not queued: the link is not established (yet, or any more), the stream is
        closing, or the peer is not reading (:data:`MAX_WRITE_BACKLOG`). Frames sent in
        one turn of the event loop go out in one write. Raises ``ValueError`` above
        ``MAX_PAYLOAD`` bytes (a bug, not a condition of the network).
        """
        if not self.core.established or self.stream.is_closing():
            return False
        if self.backlog > MAX_WRITE_BACKLOG:
            return False
        self.core.send(payload, self._loop.time())
        self.flush_soon()
        return True


async def run_link(
    link: Link,
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    *,
    on_event: Callable[[LinkEvent], None],
    connection: LinkConnection | None = None,
) -> None:
    """Pump ``link`` over a TCP stream until it ends, then close the stream.

    ``on_event`` is called for every event, in order, including the final
    ``LinkClosed`` or ``LinkFailed``. An exception from ``on_event`` or from the link's
    ``authorize`` ends the pump and propagates (after the stream is closed); so does a
    cancellation. In those cases the link ends (if it has not: as "connection lost")
    without a further call to ``on_event``, and later sends return False.

    Pass ``connection`` to hold the handle before the pump starts (e.g. to use it in
    ``on_event``); it must wrap the same link and writer.
    """
    conn = connection if connection is not None else LinkConnection(link, writer)
    if conn.core is not link or conn.writer is not writer:
        raise ValueError("the connection wraps another link or stream")
    conn.stream = TcpStream(reader, writer)
    await run_link_over(conn, on_event)


async def run_link_over(conn: LinkConnection, on_event: Callable[[LinkEvent], None]) -> None:
    """:func:`run_link` for a connection over any byte stream."""
    # Read at call time, so a test may lower the bounds.
    await run_stream(conn, on_event, backpressure=Backpressure(abort_above=ABORT_WRITE_BACKLOG))
