"""The asyncio shell that runs a sans-I/O :class:`~btchat.session.core.Session` over TCP.

How this works: :func:`run_session` loops feeding what the socket delivers into the
session, writing what the session wants sent, firing its one timer and handing its
events to a callback, until the session ends; then it closes the socket. The clock is
the event loop's (``loop.time()``), the same one callers pass as ``now`` when they
build a Session. :class:`SessionConnection` is the caller's handle: ``send`` and
``close`` act on the session and write the result at once, from any code running on
the loop, including the event callback; ``await conn.wait_established()`` waits for
the handshake.

Backpressure: ``send`` never blocks, so a caller pushing bulk data awaits
:meth:`SessionConnection.drain` between sends. The pump itself stops reading while
more than :data:`MAX_WRITE_BACKLOG` bytes wait for the socket, so the answers the
peer's frames cause (PONGs, an application's echoes) cannot pile up in memory when the
peer does not read; such a peer is dropped by the idle timeout, since nothing of its
is processed in the meantime.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from typing import Any

from btchat.session.core import (
    DataReceived,
    HandshakeComplete,
    Session,
    SessionClosed,
    SessionEvent,
    SessionFailed,
)

__all__ = [
    "CLOSE_LINGER",
    "MAX_WRITE_BACKLOG",
    "READ_SIZE",
    "SessionConnection",
    "SessionEndedError",
    "run_session",
]

#: Bytes asked of the socket per read: a few maximal frames (2 + 65535 each) at once.
READ_SIZE = 1 << 18
#: Seconds we wait for the kernel to take our last bytes (a CLOSE frame) before aborting.
CLOSE_LINGER = 5.0
#: Bytes queued for the socket beyond which the pump stops reading until they drain.
#: Far above asyncio's 64 KiB high-water mark, so two peers that both ``drain()`` never
#: get here, yet a peer that floods PINGs without reading costs us at most this much.
MAX_WRITE_BACKLOG = 1 << 20


class SessionEndedError(ConnectionError):
    """The session ended before the handshake completed; ``event`` says how."""

    def __init__(self, event: SessionClosed | SessionFailed) -> None:
        super().__init__(event.reason)
        self.event = event


class SessionConnection:
    """A session bound to a stream; create it inside the running event loop."""

    def __init__(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        session: Session,
    ) -> None:
        self.reader = reader
        self.writer = writer
        self.session = session
        self._loop = asyncio.get_running_loop()
        self._wakeup: asyncio.Future[None] | None = None
        self._flush_pending = False
        # Resolved with the first HandshakeComplete, or the end of the session before it.
        self._outcome: asyncio.Future[SessionEvent] = self._loop.create_future()

    async def wait_established(self) -> HandshakeComplete:
        """Wait for the handshake; raise :class:`SessionEndedError` if the session ends first.

        Needs the pump running (:func:`run_session` with ``connection=self``).
        """
        event = await asyncio.shield(self._outcome)
        if isinstance(event, SessionClosed | SessionFailed):
            raise SessionEndedError(event)
        assert isinstance(event, HandshakeComplete)
        return event

    def _observe(self, event: SessionEvent) -> None:
        if not self._outcome.done() and not isinstance(event, DataReceived):
            self._outcome.set_result(event)

    def send(self, payload: bytes) -> None:
        """Queue ``payload`` as one DATA frame; it is written before the loop next waits.

        Frames sent in one turn of the event loop go out in one write, not one system
        call each. Raises ``RuntimeError`` if the session is not established or has
        ended, and ``ValueError`` if the payload exceeds ``MAX_PAYLOAD``.
        """
        self.session.send(payload, self._loop.time())
        if not self._flush_pending:
            self._flush_pending = True
            self._loop.call_soon(self.flush)

    def close(self, reason: str) -> None:
        """Close the session (telling the peer why, if established); idempotent."""
        self.session.close(reason, self._loop.time())
        self.flush()
        if self._wakeup is not None and not self._wakeup.done():
            self._wakeup.set_result(None)  # let run_session notice and finish

    async def drain(self) -> None:
        """Wait until the socket's write buffer is below its high-water mark.

        ``send`` never blocks; callers pushing bulk data await this between sends.
        """
        self.flush()
        await self.writer.drain()

    def flush(self) -> None:
        """Write whatever the session has queued."""
        self._flush_pending = False
        data = self.session.data_to_send()
        if data and not self.writer.is_closing():
            self.writer.write(data)

    def _wait_for_wakeup(self) -> asyncio.Future[None]:
        if self._wakeup is None or self._wakeup.done():
            self._wakeup = self._loop.create_future()
        return self._wakeup


async def run_session(
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    session: Session,
    on_event: Callable[[SessionEvent], None],
    *,
    connection: SessionConnection | None = None,
) -> None:
    """Pump ``session`` over the stream until it ends, then close the stream.

    A responder that refused the handshake keeps the stream open, discarding input,
    until ``session.linger_until``, so refusals cannot be told apart by timing.

    ``on_event`` is called for every event, in order, including the final
    ``SessionClosed`` or ``SessionFailed``. An exception from ``on_event`` ends the
    pump and propagates (after the stream is closed).
    """
    conn = connection if connection is not None else SessionConnection(reader, writer, session)
    loop = asyncio.get_running_loop()
    read_task: asyncio.Task[bytes] | None = None
    drain_task: asyncio.Task[None] | None = None
    try:
        conn.flush()  # an initiator's message 1
        _dispatch(conn, on_event)
        while not session.closed:
            if drain_task is None and writer.transport.get_write_buffer_size() > MAX_WRITE_BACKLOG:
                drain_task = loop.create_task(writer.drain())
            if read_task is None and drain_task is None:
                read_task = loop.create_task(reader.read(READ_SIZE))
            waiting: list[asyncio.Future[Any]] = [conn._wait_for_wakeup()]
            waiting += [t for t in (read_task, drain_task) if t is not None]
            timer = session.get_timer()
            timeout = None if timer is None else max(0.0, timer - loop.time())
            await asyncio.wait(waiting, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
            now = loop.time()
            if drain_task is not None and drain_task.done():
                reset = drain_task.exception() is not None  # the peer reset the stream
                drain_task = None
                if reset:
                    session.connection_lost(now)
            if read_task is not None and read_task.done():
                try:
                    data = read_task.result()
                except OSError:  # reset, broken pipe: the same as EOF to us
                    data = b""
                read_task = None
                if data:
                    session.receive_data(data, now)
                else:
                    session.connection_lost(now)
            if timer is not None and now >= timer:
                session.handle_timer(now)
            conn.flush()
            _dispatch(conn, on_event)
        # A refusing responder hangs up only at its handshake deadline (core docstring).
        deadline = session.linger_until
        while deadline is not None and (remaining := deadline - loop.time()) > 0:
            if read_task is None:
                read_task = loop.create_task(reader.read(READ_SIZE))
            done, _ = await asyncio.wait((read_task,), timeout=remaining)
            if not done:
                break
            read_task = None
            try:
                if not done.pop().result():
                    break  # the prober hung up first
            except OSError:
                break
    finally:
        for task in (read_task, drain_task):
            if task is not None:
                # Not awaited: a cancellation aimed at this pump must not be swallowed.
                task.cancel()
        if not session.closed:
            # Cancelled, or on_event raised: the stream goes away, so later sends must
            # fail loudly rather than vanish, and wait_established must not hang.
            session.connection_lost(loop.time())
            while (event := session.next_event()) is not None:
                conn._observe(event)
        with contextlib.suppress(OSError):
            conn.flush()  # a CLOSE frame queued by the last close()
        await _close_stream(writer)


def _dispatch(conn: SessionConnection, on_event: Callable[[SessionEvent], None]) -> None:
    while (event := conn.session.next_event()) is not None:
        conn._observe(event)
        on_event(event)


async def _close_stream(writer: asyncio.StreamWriter) -> None:
    """Close gracefully (flushing a queued CLOSE frame), but never hang on a dead peer."""
    if not writer.is_closing():
        writer.close()
    try:
        await asyncio.wait_for(writer.wait_closed(), CLOSE_LINGER)
    except (TimeoutError, OSError):
        writer.transport.abort()
