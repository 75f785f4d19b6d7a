"""The one asyncio pump that runs a sans-I/O secure stream over any :class:`ByteStream`.

How this works: :func:`run_stream` loops feeding what the stream delivers into the
core (a :class:`~btchat.stream.core.SecureStream`: a session or a channel link), writing
what the core wants sent, firing its one timer and handing its events to a callback,
until the core ends; then it closes the stream. The clock is the event loop's
(``loop.time()``), the same one callers pass as ``now`` when they build the core.
:class:`StreamConnection` is the caller's handle: ``close``, ``drain`` and the
substream calls act on the core and write the result at once, from any code running
on the loop, including the event callback; ``await conn.wait_established()`` waits for
the handshake.

Output: control and DATA frames are written as soon as the core queues them (several
in one loop turn go out in one write). Substream data is written one burst at a time
while the stream's write buffer is below :data:`BULK_HIGH_WATER`, and the pump awaits
``drain()`` for more, so a chat frame queued meanwhile waits behind at most that much.

Backpressure (:class:`Backpressure`) is the one thing sessions and links do
differently, on purpose. A session's pump stops reading while more than
``pause_reading_above`` bytes wait for the peer, so the answers its frames cause
cannot pile up when the peer does not read (the idle timeout then drops it). A link
keeps reading (two members that both push must not deadlock), its ``send`` refuses
above a bound, and the pump aborts a peer that pushes the backlog past
``abort_above`` with PINGs it never reads the answers to.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from btchat.net.transport import ByteStream
from btchat.stream.core import SecureStream
from btchat.stream.events import ConnectionClosed, ConnectionFailed

__all__ = [
    "BULK_HIGH_WATER",
    "READ_SIZE",
    "Backpressure",
    "StreamConnection",
    "StreamEndedError",
    "run_stream",
]

#: Bytes asked of the stream per read: a few maximal frames (2 + 65535 each) at once.
READ_SIZE = 1 << 18
#: Substream bursts are written while the write buffer holds less than this (asyncio's
#: default high-water mark, so ``drain()`` then really waits).
BULK_HIGH_WATER = 64 * 1024


class StreamEndedError(ConnectionError):
    """The connection ended before the handshake completed; ``event`` says how."""

    def __init__(self, event: ConnectionClosed | ConnectionFailed) -> None:
        super().__init__(event.reason)
        self.event = event


@dataclass(frozen=True)
class Backpressure:
    """What the pump does when the peer does not read (module docstring)."""

    #: Stop reading while more than this many bytes wait for the stream (None: never).
    pause_reading_above: int | None = None
    #: Fail the connection, aborting the stream, beyond this backlog (None: never).
    abort_above: int | None = None


class StreamConnection:
    """A secure stream core bound to a byte stream; create it inside the running loop."""

    def __init__(self, core: SecureStream, stream: ByteStream) -> None:
        self.core = core
        self.stream = stream
        self._loop = asyncio.get_running_loop()
        self._wakeup: asyncio.Future[None] | None = None
        self._flush_pending = False
        # The first event: the handshake's (established), or the end before it.
        self._outcome: asyncio.Future[object] = self._loop.create_future()

    @property
    def backlog(self) -> int:
        """Bytes queued and not yet taken by the carrier: the core's plus the stream's."""
        return self.core.pending_output + self.stream.write_buffer_size()

    async def wait_established(self) -> Any:
        """The handshake's event; raises :class:`StreamEndedError` if the core ends first.

        Needs the pump running (:func:`run_stream` on this connection).
        """
        event = await asyncio.shield(self._outcome)
        if isinstance(event, ConnectionClosed | ConnectionFailed):
            raise StreamEndedError(event)
        return event

    def _observe(self, event: object) -> None:
        if not self._outcome.done():
            self._outcome.set_result(event)

    def close(self, reason: str) -> None:
        """Close the connection (telling the peer why, if established); idempotent."""
        self.core.close(reason, self._loop.time())
        self.flush()
        self.wake()  # let run_stream notice and finish

    async def drain(self) -> None:
        """Wait until the stream's write buffer is below its high-water mark.

        Sends never block, so callers pushing bulk DATA await this between sends.
        """
        self.flush()
        await self.stream.drain()

    def flush(self) -> None:
        """Write whatever the core has queued (and substream bursts while there is room)."""
        self._flush_pending = False
        if self.stream.is_closing():
            return
        data = self.core.data_to_send()
        while data:
            self.stream.write(data)
            if not self.core.bulk_ready or self.stream.write_buffer_size() >= BULK_HIGH_WATER:
                break
            data = self.core.data_to_send()

    def flush_soon(self) -> None:
        """Write before the loop next waits: frames of one loop turn go in one write."""
        if not self._flush_pending:
            self._flush_pending = True
            self._loop.call_soon(self.flush)

    def wake(self) -> None:
        """Make the pump look at the core again (new bulk data, a close)."""
        if self._wakeup is not None and not self._wakeup.done():
            self._wakeup.set_result(None)

    # Substreams: the core's calls with the loop's clock, written soon.

    def open_stream(self, priority: int, service: int = 0) -> int:
        stream_id = self.core.open_stream(priority, self._loop.time(), service)
        self.flush_soon()
        return stream_id

    def send_stream(self, stream_id: int, data: bytes) -> int:
        accepted = self.core.send_stream(stream_id, data, self._loop.time())
        self.flush_soon()
        self.wake()  # the pump keeps the bursts going while the stream has room
        return accepted

    def close_stream(self, stream_id: int) -> None:
        self.core.close_stream(stream_id, self._loop.time())
        self.flush_soon()

    def reset_stream(self, stream_id: int, reason: str) -> None:
        self.core.reset_stream(stream_id, reason, self._loop.time())
        self.flush_soon()

    def stream_consumed(self, stream_id: int, nbytes: int) -> None:
        self.core.stream_consumed(stream_id, nbytes, self._loop.time())
        self.flush_soon()

    def _wait_for_wakeup(self) -> asyncio.Future[None]:
        if self._wakeup is None or self._wakeup.done():
            self._wakeup = self._loop.create_future()
        return self._wakeup


async def run_stream(
    conn: StreamConnection,
    on_event: Callable[[Any], None],
    *,
    backpressure: Backpressure = Backpressure(),  # frozen, so one shared default is safe
) -> None:
    """Pump ``conn.core`` over ``conn.stream`` until it ends, then close the stream.

    A responder that refused the handshake keeps the stream open, discarding input,
    until the core's ``linger_until``, so refusals cannot be told apart by timing.

    ``on_event`` is called for every event, in order, including the final
    ``ConnectionClosed`` or ``ConnectionFailed``. An exception from ``on_event`` (or
    from the core's ``authorize``) ends the pump and propagates after the stream is
    closed; so does a cancellation. Then the core ends (if it has not: as "connection
    lost") without a further call to ``on_event``.
    """
    core, stream = conn.core, conn.stream
    loop = asyncio.get_running_loop()
    read_task: asyncio.Task[bytes] | None = None
    drain_task: asyncio.Task[None] | None = None
    overflowed = False
    pause_above = backpressure.pause_reading_above
    try:
        timer = core.get_timer()
        if timer is not None and timer > loop.time() + core.config.handshake_timeout + 1.0:
            # A deadline this far ahead means ``now`` came from another clock (such as
            # time.time()): the handshake timeout would never fire, and a silent peer
            # would hold its slot for ever.
            raise ValueError("build the core with now=asyncio.get_running_loop().time()")
        conn.flush()  # an initiator's message 1
        _dispatch(conn, on_event)
        while not core.closed:
            backlog = stream.write_buffer_size()
            paused = pause_above is not None and backlog > pause_above
            if drain_task is None and (paused or (core.bulk_ready and backlog > 0)):
                drain_task = loop.create_task(stream.drain())
            if read_task is None and not paused:
                read_task = loop.create_task(stream.read(READ_SIZE))
            waiting: list[asyncio.Future[Any]] = [conn._wait_for_wakeup()]
            waiting += [t for t in (read_task, drain_task) if t is not None]
            timer = core.get_timer()
            timeout = None if timer is None else max(0.0, timer - loop.time())
            await asyncio.wait(waiting, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
            now = loop.time()
            if drain_task is not None and drain_task.done():
                reset = drain_task.exception() is not None  # the peer reset the stream
                drain_task = None
                if reset:
                    core.connection_lost(now)
            if read_task is not None and read_task.done():
                try:
                    data = read_task.result()
                except OSError:  # reset, broken pipe: the same as EOF to us
                    data = b""
                read_task = None
                if data:
                    core.receive_data(data, now)
                else:
                    core.connection_lost(now)
            if timer is not None and now >= timer:
                core.handle_timer(now)
            conn.flush()
            abort_above = backpressure.abort_above
            if abort_above is not None and conn.backlog > abort_above:
                overflowed = True
                core.abort(f"peer is not reading: over {abort_above} bytes queued", now)
            _dispatch(conn, on_event)
        # A refusing responder hangs up only at its handshake deadline (session core).
        deadline = core.linger_until
        while deadline is not None and (remaining := deadline - loop.time()) > 0:
            if read_task is None:
                read_task = loop.create_task(stream.read(READ_SIZE))
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
        if not core.closed:
            # Cancelled, or on_event raised: the stream goes away, so later sends must
            # fail loudly rather than vanish, and wait_established must not hang.
            core.connection_lost(loop.time())
            while (event := core.next_event()) is not None:
                conn._observe(event)
        with contextlib.suppress(OSError):
            conn.flush()  # a CLOSE frame queued by the last close()
        if overflowed:
            stream.abort()  # the peer does not read: nothing to wait for
        else:
            await stream.aclose()


def _dispatch(conn: StreamConnection, on_event: Callable[[Any], None]) -> None:
    while (event := conn.core.next_event()) is not None:
        conn._observe(event)
        on_event(event)
