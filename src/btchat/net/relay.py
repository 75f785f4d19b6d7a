"""The asyncio shell of 1:1 relays: circuits over sessions' substreams.

How this works (docs/PROTOCOL.md "Relayed sessions"; decisions in
:mod:`btchat.net.relay_core`). :class:`RelayService` sits beside peering and sees every
substream event of every live session. It plays the three parts of a circuit:

- **asker** (A): :meth:`RelayService.dial_via` opens a substream to the relay with a
  Connect header and waits for the Answer on the substream the relay opens back; the
  two become a :class:`RelayStream`, a :class:`~btchat.net.transport.ByteStream` that
  peering runs its normal Noise IK dial over (:class:`RelayDialer`);
- **relay** (C): a Connect from a contact opens an Incoming hop to the target's session;
  on the target's OK the relay answers the asker and splices the two hops, giving the
  sending side credit only as the other hop's queue takes the bytes (paced by the
  core's token bucket), so it buffers at most a window per direction and circuit;
- **target** (B): an Incoming header is answered and the pair handed, as a
  :class:`RelayStream`, to peering's accept path (admission, silent refusal, authorize).

Relay substreams use bulk priority :data:`PRIORITY`, below chat and control frames,
so relaying never delays the relay's own chat. Remote garbage (a bad header, an
Answer nobody asked for) resets that substream and is counted, never raised.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from btchat.codec.bencode import DecodeError
from btchat.net.pump import StreamConnection
from btchat.net.relay_core import (
    ANSWER_SIZE,
    HOP_SIZE,
    Answer,
    Connect,
    Expired,
    Grant,
    HeaderReader,
    Incoming,
    PeerKey,
    RelayCore,
    RelayLimits,
    Status,
    encode_header,
)
from btchat.net.transport import Address, ByteStream
from btchat.stream.events import StreamClosed, StreamData, StreamOpened, StreamReset, StreamWritable
from btchat.stream.frames import CAPS_RELAY, Service

__all__ = ["PRIORITY", "RelayDialer", "RelayRefusedError", "RelayService", "RelayStream"]

log = logging.getLogger(__name__)

#: Substream priority of every relay hop: the least urgent bulk class but one.
PRIORITY = 6

_Key = tuple[int, int]  # (id of the session connection, substream id)


class RelayRefusedError(ConnectionError):
    """The relay (or the target through it) refused the circuit; ``status`` says why."""

    def __init__(self, status: Status | int) -> None:
        reason = Status(status).reason if status in Status._value2member_map_ else f"code {status}"
        super().__init__(f"relay refused: {reason}")
        self.status = status


def relay_capable(conn: StreamConnection) -> bool:
    """The peer of ``conn`` announced substreams and relaying, and we speak substreams."""
    return conn.core.substreams and bool(conn.core.peer_caps & CAPS_RELAY)


def _quiet(call: Callable[..., Any], *args: Any) -> None:
    """A substream call on a hop that may have ended meanwhile (then it is a no-op)."""
    with contextlib.suppress(ValueError, RuntimeError):
        call(*args)


class RelayStream:
    """A :class:`ByteStream` over two substreams of one session: ours out, theirs in."""

    def __init__(
        self,
        conn: StreamConnection,
        out_sid: int,
        relay: bytes,
        on_end: Callable[[RelayStream], None],
    ) -> None:
        self.conn = conn
        self.out_sid = out_sid
        self.in_sid: int | None = None
        #: Identity key of the relay that carries this stream.
        self.relay = relay
        self._on_end = on_end
        self._buf = bytearray()
        self._pending = bytearray()  # what the substream's queue has not taken yet
        self._eof = False
        self._closing = False
        self._out_open = True
        self._readable = asyncio.Event()
        self._writable = asyncio.Event()
        self._writable.set()

    # Events from the session, routed by RelayService.

    def on_data(self, data: bytes) -> None:
        self._buf += data
        self._readable.set()

    def on_fin(self) -> None:
        self._eof = True
        self._readable.set()
        self._maybe_end()

    def on_reset(self, sid: int) -> None:
        if sid == self.out_sid:
            self._out_open = False
        self._eof = True
        self._closing = True
        self._pending.clear()
        self._readable.set()
        self._writable.set()
        self._maybe_end()

    def on_writable(self) -> None:
        self._push()

    def _maybe_end(self) -> None:
        if self._eof and (self._closing or not self._out_open):
            self._on_end(self)

    # ByteStream.

    @property
    def remote_address(self) -> Address | None:
        return None  # the relay knows where the peer is; we do not

    async def read(self, n: int) -> bytes:
        while not self._buf and not self._eof:
            self._readable.clear()
            await self._readable.wait()
        if not self._buf:
            return b""
        data = bytes(self._buf[:n])
        del self._buf[:n]
        if self.in_sid is not None:
            _quiet(self.conn.stream_consumed, self.in_sid, len(data))
        return data

    def write(self, data: bytes) -> None:
        if self._closing or not data:
            return
        self._pending += data
        self._push()

    def _push(self) -> None:
        while self._pending and self._out_open and not self.conn.core.closed:
            try:
                taken = self.conn.send_stream(self.out_sid, bytes(self._pending))
            except (ValueError, RuntimeError):
                self._pending.clear()
                break
            del self._pending[:taken]
            if taken == 0:
                break
        if self._pending:
            self._writable.clear()
        else:
            self._writable.set()

    def write_buffer_size(self) -> int:
        return len(self._pending) + self.conn.core.stream_backlog(self.out_sid)

    async def drain(self) -> None:
        while self._pending and not self._closing:
            await self._writable.wait()

    def is_closing(self) -> bool:
        return self._closing

    async def aclose(self) -> None:
        if not self._closing:
            self._closing = True
            if self._out_open:
                self._out_open = False
                _quiet(self.conn.close_stream, self.out_sid)
        self._maybe_end()

    def abort(self) -> None:
        self._closing = True
        self._eof = True
        self._pending.clear()
        for sid in (self.out_sid, self.in_sid):
            if sid is not None:
                _quiet(self.conn.reset_stream, sid, "relayed stream aborted")
        self._out_open = False
        self._readable.set()
        self._writable.set()
        self._on_end(self)


class RelayDialer:
    """A :class:`~btchat.net.transport.Dialer` through one relay to one device; the
    address is ignored (the relay knows the way)."""

    def __init__(self, service: RelayService, relay: PeerKey, target: PeerKey) -> None:
        self.service = service
        self.relay = relay
        self.target = target

    async def dial(self, address: Address) -> ByteStream:
        return await self.service.dial_via(self.relay, self.target)


class _Dial:
    """An asker's circuit waiting for its Answer."""

    def __init__(self, stream: RelayStream, future: asyncio.Future[RelayStream]) -> None:
        self.stream = stream
        self.future = future


class _Splice:
    """A circuit at the relay: asker hop (a) and target hop (b), two legs."""

    def __init__(
        self,
        cid: int,
        asker_circuit: int,
        conn_a: StreamConnection,
        a_in: int,
        conn_b: StreamConnection,
        b_out: int,
    ) -> None:
        self.cid = cid
        self.asker_circuit = asker_circuit
        self.conn_a, self.conn_b = conn_a, conn_b
        # leg 0: a_in -> b_out; leg 1: b_in -> a_out
        self.src: list[tuple[StreamConnection, int | None]] = [(conn_a, a_in), (conn_b, None)]
        self.dst: list[tuple[StreamConnection, int | None]] = [(conn_b, b_out), (conn_a, None)]
        self.pending = [bytearray(), bytearray()]
        self.fin = [False, False]


class RelayService:
    """All three parts of a circuit for one node (module docstring)."""

    def __init__(
        self,
        me: bytes,
        limits: RelayLimits,
        *,
        session_of: Callable[[PeerKey], StreamConnection | None],
        on_incoming: Callable[[RelayStream], Awaitable[None]],
        spawn: Callable[[Any], asyncio.Task[Any]],
        timeout: float = 10.0,
    ) -> None:
        self.me = me
        self.core = RelayCore(limits)
        self._session_of = session_of
        self._on_incoming = on_incoming
        self._spawn = spawn
        self.timeout = timeout
        # Every substream we track: (conn, sid) -> what it belongs to, plus the session
        # peer of each connection (for Connect/Incoming headers) and header readers.
        self._owner: dict[_Key, RelayStream | _Splice | _Dial | HeaderReader] = {}
        self._peer_of: dict[int, PeerKey] = {}
        self._dials: dict[tuple[int, int], _Dial] = {}
        self._splices: dict[int, _Splice] = {}
        self._next_dial = 1
        self._timer: asyncio.TimerHandle | None = None
        self.stats: dict[str, int] = {"dials": 0, "dials_refused": 0, "relayed_in": 0}

    # ------------------------------------------------------------------ the session's events

    def on_stream_event(self, peer: PeerKey, conn: StreamConnection, event: object) -> None:
        """Every substream event of a live session ``conn`` with ``peer``."""
        self._peer_of[id(conn)] = peer
        if isinstance(event, StreamOpened):
            # The peer's ids never collide with ours (parity); its first bytes are a
            # header. At most max_streams (32) of these per session, by the stream layer.
            self._owner[(id(conn), event.stream_id)] = HeaderReader()
            return
        if not isinstance(event, StreamData | StreamClosed | StreamReset | StreamWritable):
            return
        key = (id(conn), event.stream_id)
        owner = self._owner.get(key)
        if owner is None:
            if isinstance(event, StreamData):
                self.core.stats["bad_header"] += 1
                _quiet(conn.reset_stream, event.stream_id, "not a relay substream")
            return
        if isinstance(event, StreamData):
            if isinstance(owner, HeaderReader):
                self._read_header(conn, event.stream_id, owner, event.data)
            elif isinstance(owner, RelayStream):
                owner.on_data(event.data)
            elif isinstance(owner, _Splice):
                leg = 0 if owner.src[0] == (conn, event.stream_id) else 1
                owner.pending[leg] += event.data
                self._push(owner, leg)
        elif isinstance(event, StreamClosed):
            if isinstance(owner, RelayStream):
                owner.on_fin()
            elif isinstance(owner, _Splice):
                leg = 0 if owner.src[0] == (conn, event.stream_id) else 1
                owner.fin[leg] = True
                self._push(owner, leg)
            else:
                self._owner.pop(key, None)
        elif isinstance(event, StreamReset):
            if isinstance(owner, RelayStream):
                owner.on_reset(event.stream_id)
            elif isinstance(owner, _Splice):
                self._teardown(owner, "the other hop reset")
            elif isinstance(owner, _Dial):
                self._fail_dial(owner, ConnectionResetError("relay reset the circuit"))
            else:
                self._owner.pop(key, None)
        elif isinstance(event, StreamWritable):
            if isinstance(owner, RelayStream):
                owner.on_writable()
            elif isinstance(owner, _Splice):
                for leg in (0, 1):
                    if owner.dst[leg] == (conn, event.stream_id):
                        self._push(owner, leg)

    def session_ended(self, conn: StreamConnection) -> None:
        """A session went away: every circuit and stream on it ends."""
        self._peer_of.pop(id(conn), None)
        gone = [(key, owner) for key, owner in self._owner.items() if key[0] == id(conn)]
        for key, owner in gone:
            self._owner.pop(key, None)
            if isinstance(owner, RelayStream):
                owner.on_reset(key[1])
                owner.on_reset(owner.out_sid)
            elif isinstance(owner, _Splice):
                self._teardown(owner, "a hop's session ended")
            elif isinstance(owner, _Dial):
                self._fail_dial(owner, ConnectionResetError("the relay's session ended"))

    # ------------------------------------------------------------------ headers

    def _read_header(
        self, conn: StreamConnection, sid: int, reader: HeaderReader, data: bytes
    ) -> None:
        try:
            header = reader.feed(data)
        except DecodeError as exc:
            self._bad(conn, sid, str(exc))
            return
        if header is None:
            return
        # Every byte delivered so far is the header's but ``rest`` (over several chunks,
        # perhaps): credit for the header goes back now, for ``rest`` when it is used.
        _quiet(conn.stream_consumed, sid, ANSWER_SIZE if isinstance(header, Answer) else HOP_SIZE)
        peer = self._peer_of[id(conn)]
        if isinstance(header, Connect):
            self._on_connect(conn, sid, peer, header, reader.rest)
        elif isinstance(header, Incoming):
            self._on_incoming_header(conn, sid, peer, header, reader.rest)
        else:
            self._on_answer(conn, sid, header, reader.rest)

    def _bad(self, conn: StreamConnection, sid: int, why: str) -> None:
        self.core.stats["bad_header"] += 1
        log.info("dropped a relay substream: %s", why)
        self._owner.pop((id(conn), sid), None)
        _quiet(conn.reset_stream, sid, "bad relay header")

    def _answer(self, conn: StreamConnection, circuit: int, status: Status) -> int | None:
        """Open the return substream with an Answer; a refusal is finished at once."""
        try:
            sid = conn.open_stream(PRIORITY, Service.RELAY)
        except (RuntimeError, ValueError):
            return None
        conn.send_stream(sid, encode_header(Answer(circuit, status)))
        if status is not Status.OK:
            conn.close_stream(sid)
        return sid

    # ------------------------------------------------------------------ asker

    async def dial_via(self, relay: PeerKey, target: PeerKey) -> RelayStream:
        """A stream to ``target`` through our live session with ``relay``."""
        conn = self._session_of(relay)
        if conn is None or not relay_capable(conn):
            raise ConnectionRefusedError("no relay-capable session to that relay")
        self.stats["dials"] += 1
        self._peer_of[id(conn)] = relay
        circuit = self._next_dial
        self._next_dial = self._next_dial % (2**32 - 1) + 1
        sid = conn.open_stream(PRIORITY, Service.RELAY)
        conn.send_stream(sid, encode_header(Connect(circuit, target[0], target[1])))
        stream = RelayStream(conn, sid, relay[0], self._stream_ended)
        future: asyncio.Future[RelayStream] = asyncio.get_running_loop().create_future()
        dial = _Dial(stream, future)
        self._dials[(id(conn), circuit)] = dial
        self._owner[(id(conn), sid)] = dial
        try:
            async with asyncio.timeout(self.timeout):
                return await asyncio.shield(future)
        except BaseException:
            if self._owner.get((id(conn), sid)) is dial:
                del self._owner[(id(conn), sid)]
            stream.abort()  # no-op if the refusal already did
            raise
        finally:
            self._dials.pop((id(conn), circuit), None)

    def _on_answer(self, conn: StreamConnection, sid: int, answer: Answer, rest: bytes) -> None:
        dial = self._dials.get((id(conn), answer.circuit))
        if dial is not None and not dial.future.done():
            stream = dial.stream
            if answer.status != Status.OK:
                self.stats["dials_refused"] += 1
                self._owner.pop((id(conn), sid), None)
                self._fail_dial(dial, RelayRefusedError(answer.status))
                return
            stream.in_sid = sid
            self._owner[(id(conn), sid)] = stream
            self._owner[(id(conn), stream.out_sid)] = stream
            if rest:
                stream.on_data(rest)
            dial.future.set_result(stream)
            return
        splice = self._splices.get(answer.circuit)
        if splice is not None and splice.conn_b is conn and splice.src[1][1] is None:
            self._on_target_answer(splice, sid, answer, rest)
            return
        self._bad(conn, sid, f"an Answer for circuit {answer.circuit} nobody asked for")

    def _fail_dial(self, dial: _Dial, exc: BaseException) -> None:
        stream = dial.stream
        self._owner.pop((id(stream.conn), stream.out_sid), None)
        stream.abort()
        if not dial.future.done():
            dial.future.set_exception(exc)

    # ------------------------------------------------------------------ relay

    def _on_connect(
        self, conn: StreamConnection, sid: int, peer: PeerKey, header: Connect, rest: bytes
    ) -> None:
        target = (header.identity, header.device)
        conn_b = self._session_of(target)
        routable = conn_b is not None and conn_b is not conn and conn_b.core.substreams
        loop = asyncio.get_running_loop()
        got = self.core.request(peer, target, self.me, routable, loop.time())
        if isinstance(got, Status):
            log.info("refused to relay %s: %s", peer[0].hex()[:16], got.reason)
            self._owner.pop((id(conn), sid), None)
            # No RESET of the asker's substream: it is a control frame and would overtake
            # the Answer; the asker resets its own when it reads the refusal.
            self._answer(conn, header.circuit, got)
            return
        assert conn_b is not None
        try:
            b_out = conn_b.open_stream(PRIORITY, Service.RELAY)
        except (RuntimeError, ValueError):
            self.core.close(got)
            self._owner.pop((id(conn), sid), None)
            self._answer(conn, header.circuit, Status.NO_ROUTE)
            return
        conn_b.send_stream(b_out, encode_header(Incoming(got, peer[0], peer[1])))
        splice = _Splice(got, header.circuit, conn, sid, conn_b, b_out)
        self._splices[got] = splice
        self._owner[(id(conn), sid)] = splice
        self._owner[(id(conn_b), b_out)] = splice
        splice.pending[0] += rest
        self._arm()

    def _on_target_answer(self, splice: _Splice, sid: int, answer: Answer, rest: bytes) -> None:
        conn_a, conn_b = splice.conn_a, splice.conn_b
        if answer.status != Status.OK:
            self._answer(conn_a, splice.asker_circuit, Status.REFUSED)
            self._teardown(splice, "target refused", answered=True)
            return
        a_out = self._answer(conn_a, splice.asker_circuit, Status.OK)
        if a_out is None:
            self._teardown(splice, "asker's session ended")
            return
        self.core.established(splice.cid, asyncio.get_running_loop().time())
        splice.src[1] = (conn_b, sid)
        splice.dst[1] = (conn_a, a_out)
        self._owner[(id(conn_b), sid)] = splice
        self._owner[(id(conn_a), a_out)] = splice
        splice.pending[1] += rest
        self._push(splice, 0)
        self._push(splice, 1)
        self._arm()

    def _push(self, splice: _Splice, leg: int) -> None:
        """Move what leg ``leg`` holds into the other hop's queue; credit what it took."""
        dst_conn, dst_sid = splice.dst[leg]
        src_conn, src_sid = splice.src[leg]
        pending = splice.pending[leg]
        if dst_sid is None or src_sid is None:
            return  # the target has not answered yet: bytes wait (within one window)
        now = asyncio.get_running_loop().time()
        while pending:
            try:
                taken = dst_conn.send_stream(dst_sid, bytes(pending))
            except (ValueError, RuntimeError):
                self._teardown(splice, "a hop ended")
                return
            if taken == 0:
                break
            del pending[:taken]
            granted = self.core.forwarded(splice.cid, leg, taken, now)
            if granted:
                _quiet(src_conn.stream_consumed, src_sid, granted)
        if not pending and splice.fin[leg]:
            splice.fin[leg] = False
            _quiet(dst_conn.close_stream, dst_sid)
            self._owner.pop((id(src_conn), src_sid), None)
            self._owner.pop((id(dst_conn), dst_sid), None)
            if not any(key for key, o in self._owner.items() if o is splice):
                self._close_splice(splice)
        self._arm()

    def _teardown(self, splice: _Splice, why: str, *, answered: bool = False) -> None:
        """End a circuit; after a refusal Answer the asker's substream is left for the
        asker to reset (a RESET would overtake the Answer)."""
        for conn, sid in (*splice.src, *splice.dst):
            if sid is not None and self._owner.get((id(conn), sid)) is splice:
                self._owner.pop((id(conn), sid), None)
                if not (answered and (conn, sid) == splice.src[0]):
                    _quiet(conn.reset_stream, sid, why)
        self._close_splice(splice)

    def _close_splice(self, splice: _Splice) -> None:
        self._splices.pop(splice.cid, None)
        self.core.close(splice.cid)

    # ------------------------------------------------------------------ target

    def _on_incoming_header(
        self, conn: StreamConnection, sid: int, relay: PeerKey, header: Incoming, rest: bytes
    ) -> None:
        if not self.core.accept_incoming(relay[0]):
            self._owner.pop((id(conn), sid), None)
            self._answer(conn, header.circuit, Status.REFUSED)  # the relay resets its own
            return
        out = self._answer(conn, header.circuit, Status.OK)
        if out is None:
            self.core.incoming_done(relay[0])
            return
        stream = RelayStream(conn, out, relay[0], self._stream_ended)
        stream.in_sid = sid
        self._owner[(id(conn), sid)] = stream
        self._owner[(id(conn), out)] = stream
        if rest:
            stream.on_data(rest)
        self.stats["relayed_in"] += 1
        self._spawn(self._serve_incoming(stream))

    async def _serve_incoming(self, stream: RelayStream) -> None:
        try:
            await self._on_incoming(stream)
        finally:
            if not stream.is_closing():
                stream.abort()  # not after a graceful close: FIN follows its last bytes
            self.core.incoming_done(stream.relay)

    def _stream_ended(self, stream: RelayStream) -> None:
        for sid in (stream.out_sid, stream.in_sid):
            key = (id(stream.conn), sid) if sid is not None else None
            if key is not None and self._owner.get(key) is stream:
                del self._owner[key]

    # ------------------------------------------------------------------ timer

    def _arm(self) -> None:
        due = self.core.get_timer()
        if self._timer is not None:
            if due is not None and self._timer.when() == due:
                return
            self._timer.cancel()
            self._timer = None
        if due is not None:
            self._timer = asyncio.get_running_loop().call_at(due, self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        self.core.handle_timer(asyncio.get_running_loop().time())
        while (event := self.core.next_event()) is not None:
            splice = self._splices.get(event.circuit)
            if splice is None:
                continue
            if isinstance(event, Grant):
                conn, sid = splice.src[event.direction]
                if sid is not None:
                    _quiet(conn.stream_consumed, sid, event.nbytes)
            elif isinstance(event, Expired):
                answered = event.status is Status.TIMEOUT
                if answered:
                    self._answer(splice.conn_a, splice.asker_circuit, Status.TIMEOUT)
                self._teardown(splice, "circuit expired", answered=answered)
        self._arm()

    def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
