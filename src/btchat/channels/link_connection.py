"""The asyncio shell that runs a sans-I/O :class:`~btchat.channels.link.Link` over TCP.

How this works (as :mod:`btchat.session.connection` does for sessions): :func:`run_link`
loops feeding what the socket delivers into the link, writing what the link wants sent,
firing its one timer and handing its events to a callback, until the link ends; then
it closes the socket. The clock is the event loop's (``loop.time()``): build the Link
with ``now=asyncio.get_running_loop().time()``. :class:`LinkConnection` is the caller's
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
import contextlib
from collections.abc import Callable

from btchat.channels.link import Link, LinkEvent

__all__ = [
    "ABORT_WRITE_BACKLOG",
    "CLOSE_LINGER",
    "MAX_WRITE_BACKLOG",
    "READ_SIZE",
    "LinkConnection",
    "run_link",
]

#: Bytes asked of the socket per read: a few maximal frames (2 + 65535 each) at once.
READ_SIZE = 1 << 18
#: Seconds we wait for the kernel to take our last bytes (a CLOSE frame) before aborting.
CLOSE_LINGER = 5.0
#: Bytes queued for the socket beyond which :meth:`LinkConnection.send` refuses. Far
#: above asyncio's 64 KiB high-water mark, so a sender that awaits ``drain()`` never
#: sees a refusal.
MAX_WRITE_BACKLOG = 1 << 20
#: Bytes queued beyond which the pump fails the link: only the pump's own answers can
#: get here, and only if the peer keeps sending without reading.
ABORT_WRITE_BACKLOG = 2 * MAX_WRITE_BACKLOG


class LinkConnection:
    """A link bound to a stream's writer; create it inside the running event loop."""

    def __init__(self, link: Link, writer: asyncio.StreamWriter) -> None:
        self.link = link
        self.writer = writer
        self._loop = asyncio.get_running_loop()
        self._wakeup: asyncio.Future[None] | None = None
        self._flush_pending = False

    @property
    def backlog(self) -> int:
        """Bytes queued and not yet taken by the kernel: ours plus the transport's."""
        return self.link.pending_output + self.writer.transport.get_write_buffer_size()

    def send(self, payload: bytes) -> bool:
        """Queue ``payload`` as one DATA frame; False if it was not queued.

        Not queued: the link is not established (yet, or any more), the stream is
        closing, or the peer is not reading (:data:`MAX_WRITE_BACKLOG`). Frames sent in
        one turn of the event loop go out in one write. Raises ``ValueError`` above
        ``MAX_PAYLOAD`` bytes (a bug, not a condition of the network).
        """
        if not self.link.established or self.writer.is_closing():
            return False
        if self.backlog > MAX_WRITE_BACKLOG:
            return False
        self.link.send(payload, self._loop.time())
        if not self._flush_pending:
            self._flush_pending = True
            self._loop.call_soon(self.flush)
        return True

    def close(self, reason: str) -> None:
        """Close the link (telling the peer why, if established); idempotent."""
        self.link.close(reason, self._loop.time())
        self.flush()
        if self._wakeup is not None and not self._wakeup.done():
            self._wakeup.set_result(None)  # let run_link notice and finish

    async def drain(self) -> None:
        """Wait until the socket's write buffer is below its high-water mark."""
        self.flush()
        await self.writer.drain()

    def flush(self) -> None:
        """Write whatever the link has queued."""
        self._flush_pending = False
        data = self.link.data_to_send()
        if data and not self.writer.is_closing():
            self.writer.write(data)

    def _wait_for_wakeup(self) -> asyncio.Future[None]:
        if self._wakeup is None or self._wakeup.done():
            self._wakeup = self._loop.create_future()
        return self._wakeup


async def run_link(
    link: Link,
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    *,
    on_event: Callable[[LinkEvent], None],
    connection: LinkConnection | None = None,
) -> None:
    """Pump ``link`` over the stream until it ends, then close the stream.

    ``on_event`` is called for every event, in order, including the final
    ``LinkClosed`` or ``LinkFailed``. An exception from ``on_event`` or from the link's
    ``authorize`` ends the pump and propagates (after the stream is closed); so does a
    cancellation. In those cases the link ends (if it has not: as "connection lost")
    without a further call to ``on_event``, and later sends return False.

    Pass ``connection`` to hold the handle before the pump starts (e.g. to use it in
    ``on_event``); it must wrap the same link and writer.
    """
    conn = connection if connection is not None else LinkConnection(link, writer)
    if conn.link is not link or conn.writer is not writer:
        raise ValueError("the connection wraps another link or stream")
    loop = asyncio.get_running_loop()
    read_task: asyncio.Task[bytes] | None = None
    overflowed = False
    try:
        timer = link.get_timer()
        if timer is not None and timer > loop.time() + link.config.handshake_timeout + 1.0:
            # A deadline this far ahead means ``now`` came from another clock (such as
            # time.time()): the handshake timeout would never fire, and a silent peer
            # would hold its slot for ever.
            raise ValueError("build the Link with now=asyncio.get_running_loop().time()")
        conn.flush()  # an initiator's message 1
        _dispatch(link, on_event)
        while not link.closed:
            if read_task is None:
                read_task = loop.create_task(reader.read(READ_SIZE))
            timer = link.get_timer()
            timeout = None if timer is None else max(0.0, timer - loop.time())
            await asyncio.wait(
                (conn._wait_for_wakeup(), read_task),
                timeout=timeout,
                return_when=asyncio.FIRST_COMPLETED,
            )
            now = loop.time()
            if read_task.done():
                try:
                    data = read_task.result()
                except OSError:  # reset, broken pipe: the same as EOF to us
                    data = b""
                read_task = None
                if data:
                    link.receive_data(data, now)
                else:
                    link.connection_lost(now)
            if timer is not None and now >= timer:
                link.handle_timer(now)
            conn.flush()
            if conn.backlog > ABORT_WRITE_BACKLOG:
                overflowed = True
                link.abort(f"peer is not reading: over {ABORT_WRITE_BACKLOG} bytes queued", now)
            _dispatch(link, on_event)
    finally:
        if read_task is not None:
            # Not awaited: a cancellation aimed at this pump must not be swallowed.
            read_task.cancel()
        if not link.closed:
            link.connection_lost(loop.time())
            while link.next_event() is not None:
                pass
        with contextlib.suppress(OSError):
            conn.flush()  # a CLOSE frame queued by the last close()
        if overflowed:
            writer.transport.abort()  # the peer does not read: nothing to wait for
        else:
            await _close_stream(writer)


def _dispatch(link: Link, on_event: Callable[[LinkEvent], None]) -> None:
    while (event := link.next_event()) is not None:
        on_event(event)


async def _close_stream(writer: asyncio.StreamWriter) -> None:
    """Close gracefully (flushing a queued CLOSE frame), but never hang on a dead peer."""
    if not writer.is_closing():
        writer.close()
    try:
        await asyncio.wait_for(writer.wait_closed(), CLOSE_LINGER)
    except (TimeoutError, OSError):
        writer.transport.abort()
