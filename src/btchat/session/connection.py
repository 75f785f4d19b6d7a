"""The asyncio shell that runs a sans-I/O :class:`~btchat.session.core.Session`.

How this works: the one pump for every secure stream, :func:`btchat.net.pump.run_stream`,
does the work; this module adds what is a session's own. :class:`SessionConnection` is
the caller's handle: ``send`` and ``close`` act on the session and write the result at
once, from any code running on the loop, including the event callback;
``await conn.wait_established()`` waits for the handshake.

Backpressure: ``send`` never blocks, so a caller pushing bulk data awaits
:meth:`SessionConnection.drain` between sends. The pump itself stops reading while
more than :data:`MAX_WRITE_BACKLOG` bytes wait for the stream, so the answers the
peer's frames cause (PONGs, an application's echoes) cannot pile up in memory when the
peer does not read; such a peer is dropped by the idle timeout, since nothing of its
is processed in the meantime.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from btchat.net.pump import READ_SIZE, Backpressure, StreamConnection, StreamEndedError, run_stream
from btchat.net.transport import CLOSE_LINGER, ByteStream, TcpStream
from btchat.session.core import HandshakeComplete, Session, SessionEvent

__all__ = [
    "CLOSE_LINGER",
    "MAX_WRITE_BACKLOG",
    "READ_SIZE",
    "SessionConnection",
    "SessionEndedError",
    "run_session",
    "run_session_over",
]

#: Bytes queued for the stream beyond which the pump stops reading until they drain.
#: Far above asyncio's 64 KiB high-water mark, so two peers that both ``drain()`` never
#: get here, yet a peer that floods PINGs without reading costs us at most this much.
MAX_WRITE_BACKLOG = 1 << 20

#: The session ended before the handshake completed; ``event`` says how.
SessionEndedError = StreamEndedError


class SessionConnection(StreamConnection):
    """A session bound to a TCP stream; create it inside the running event loop.

    :meth:`over` binds one to any :class:`~btchat.net.transport.ByteStream`.
    """

    core: Session

    def __init__(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        session: Session,
    ) -> None:
        super().__init__(session, TcpStream(reader, writer))
        self.reader = reader
        self.writer = writer

    @classmethod
    def over(cls, stream: ByteStream, session: Session) -> SessionConnection:
        """A handle for ``session`` over any byte stream."""
        conn = cls.__new__(cls)
        StreamConnection.__init__(conn, session, stream)
        return conn

    @property
    def session(self) -> Session:
        return self.core

    async def wait_established(self) -> HandshakeComplete:
        """Wait for the handshake; raise :class:`SessionEndedError` if the session ends first.

        Needs the pump running (:func:`run_session` with ``connection=self``).
        """
        event = await super().wait_established()
        assert isinstance(event, HandshakeComplete)
        return event

    def send(self, payload: bytes) -> None:
        """Queue ``payload`` as one DATA frame; it is written before the loop next waits.

        Frames sent in one turn of the event loop go out in one write, not one system
        call each. Raises ``RuntimeError`` if the session is not established or has
        ended, and ``ValueError`` if the payload exceeds ``MAX_PAYLOAD``.
        """
        self.core.send(payload, self._loop.time())
        self.flush_soon()


async def run_session(
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    session: Session,
    on_event: Callable[[SessionEvent], None],
    *,
    connection: SessionConnection | None = None,
) -> None:
    """Pump ``session`` over a TCP stream until it ends, then close the stream.

    A responder that refused the handshake keeps the stream open, discarding input,
    until ``session.linger_until``, so refusals cannot be told apart by timing.

    ``on_event`` is called for every event, in order, including the final
    ``SessionClosed`` or ``SessionFailed``. An exception from ``on_event`` ends the
    pump and propagates (after the stream is closed).
    """
    conn = connection if connection is not None else SessionConnection(reader, writer, session)
    await run_session_over(conn, on_event)


async def run_session_over(
    conn: SessionConnection, on_event: Callable[[SessionEvent], None]
) -> None:
    """:func:`run_session` for a connection over any byte stream."""
    await run_stream(
        conn, on_event, backpressure=Backpressure(pause_reading_above=MAX_WRITE_BACKLOG)
    )
