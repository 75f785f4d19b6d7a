"""The sans-I/O secure stream that sessions and channel links speak after their handshakes.

How this works. :class:`SecureStream` owns everything a Noise-protected byte stream
needs once keys exist: length framing with bounds, the typed frames of one dialect
(:class:`~btchat.stream.frames.Wire`: DATA, PING/PONG, REKEY, CLOSE), keepalive and idle
timers, rekey accounting, close with a bounded reason, output accounting, and
multiplexed substreams. A handshake (Noise IK in :mod:`btchat.session.core`, XXpsk3
in :mod:`btchat.channels.link`) subclasses it: while ``_state`` is HANDSHAKE every
framed message goes to the subclass's ``_on_handshake_message``; when the subclass has
keys it calls ``_install_transport`` and ``_establish``, and from then on this class
decrypts and dispatches frames through a type -> handler table.

Substreams (``docs/PROTOCOL.md``): each side may open unidirectional substreams
(``open_stream(priority)``), ids odd for the initiator and even for the responder,
each with its own credit window so a receiver holds at most ``initial_window`` bytes per
stream it has not consumed. Control frames and DATA (the default stream, i.e. chat) are
encrypted into the output buffer at once; substream bytes wait in per-stream queues
and :meth:`data_to_send` adds at most ``burst`` bytes of them per call, chosen by the
:class:`~btchat.stream.scheduler.Scheduler` (strict priority between classes,
round-robin within one), so a chat frame waits behind at most one burst of bulk data.
Substream frames go only to a peer that announced them (a capabilities payload on the
default stream); a v1 peer never announces and so never receives one.

A peer that misbehaves never makes this code raise: the stream emits one
:class:`ConnectionFailed` and processes nothing more. A caller that misuses the API gets
a ``ValueError``, ``TypeError`` or ``RuntimeError`` at once.
"""

from __future__ import annotations

import enum
import struct
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, fields
from typing import Literal, Protocol

from btchat.stream.events import (
    ConnectionClosed,
    ConnectionFailed,
    DataReceived,
    StreamClosed,
    StreamData,
    StreamOpened,
    StreamReset,
    StreamsAvailable,
    StreamWritable,
)
from btchat.stream.frames import (
    CAPS_MAGIC,
    CAPS_SUBSTREAMS,
    CREDIT_BODY,
    FRAME_HEADER,
    ID,
    MAX_CLOSE_REASON,
    MAX_FRAME_BODY,
    MAX_STREAM_ID,
    MIN_TRANSPORT_MESSAGE,
    OPEN_BODY,
    Sub,
    Wire,
    encode_close_reason,
    frame,
)
from btchat.stream.scheduler import PRIORITY_LEVELS, Scheduler

__all__ = [
    "MAX_WINDOW",
    "ROLES",
    "Cipher",
    "CipherError",
    "Phase",
    "Role",
    "SecureStream",
    "StreamConfig",
]

#: Largest credit window a peer may grant on one substream (as HTTP/2, RFC 9113 §6.9.1).
MAX_WINDOW = 2**31 - 1
#: Which end of the handshake we are; also picks the parity of the substream ids we open.
Role = Literal["initiator", "responder"]
ROLES: tuple[Role, ...] = ("initiator", "responder")


class CipherError(Exception):
    """A transport message did not decrypt (tampered, replayed, reordered)."""


class Cipher(Protocol):
    """The transport cipher states a handshake hands over (Noise §5.1)."""

    def encrypt(self, plaintext: bytes) -> bytes: ...

    def decrypt(self, ciphertext: bytes | memoryview) -> bytes:
        """Raises :class:`CipherError` if the message does not authenticate."""
        ...

    def rekey_send(self) -> None: ...

    def rekey_receive(self) -> None: ...


@dataclass(frozen=True)
class StreamConfig:
    """Timers, rekey limits and substream bounds; durations in seconds of the caller's clock.

    ``keepalive`` must be shorter than ``idle_timeout``: our PINGs keep the peer's idle
    timer from firing, and theirs keep ours. The rekey limits apply only to dialects
    with a REKEY frame.
    """

    handshake_timeout: float = 10.0
    keepalive: float = 30.0
    idle_timeout: float = 90.0
    #: Rekey our sending CipherState after this many frames under one key (Noise §11.3)...
    rekey_messages: int = 2**20
    #: ... or this many ciphertext bytes ...
    rekey_bytes: int = 2**30
    #: ... or this long since the last rekey, for forward secrecy on quiet sessions.
    rekey_interval: float = 3600.0
    #: Announce substreams to the peer (off: the wire is exactly v1).
    substreams: bool = False
    #: Bytes a peer may send on one substream before we return credit.
    initial_window: int = 256 * 1024
    #: Substreams the peer may have open towards us at once.
    max_streams: int = 32
    #: Plaintext bytes of substream data per frame.
    chunk_size: int = 16 * 1024
    #: Substream bytes :meth:`SecureStream.data_to_send` adds per call, at most.
    burst: int = 64 * 1024
    #: Bytes we queue per outgoing substream before ``send_stream`` accepts less.
    stream_buffer: int = 1 << 20
    #: Further capability bits announced with substreams (e.g. ``frames.CAPS_RELAY``).
    extra_caps: int = 0

    def __post_init__(self) -> None:
        name = type(self).__name__
        for field in ("handshake_timeout", "keepalive", "idle_timeout", "rekey_interval"):
            if not getattr(self, field) > 0:
                raise ValueError(f"{name}.{field} must be positive")
        if self.rekey_messages < 1 or self.rekey_bytes < 1:
            raise ValueError(f"{name} rekey limits must be at least 1")
        if self.keepalive >= self.idle_timeout:
            raise ValueError(f"{name}.keepalive must be shorter than idle_timeout")
        if not 0 < self.chunk_size <= MAX_FRAME_BODY - ID.size:
            raise ValueError(f"{name}.chunk_size must be 1..{MAX_FRAME_BODY - ID.size}")
        for field in ("initial_window", "max_streams", "burst", "stream_buffer"):
            if getattr(self, field) < 1:
                raise ValueError(f"{name}.{field} must be at least 1")
        if self.initial_window > MAX_WINDOW:
            raise ValueError(f"{name}.initial_window exceeds {MAX_WINDOW}")


def config_fields(config: StreamConfig) -> dict[str, object]:
    """A config's values by name, to build another config class from them."""
    return {f.name: getattr(config, f.name) for f in fields(config)}


class Phase(enum.Enum):
    """Where a connection is; a handshake subclass reads it to know where it is."""

    HANDSHAKE = "handshake"  # the subclass's messages (and proofs) are in flight
    CONFIRMING = "confirming"  # keys installed, awaiting the peer's first frame
    ESTABLISHED = "established"
    ENDED = "ended"  # closed or failed; input is ignored from now on


@dataclass
class _Outgoing:
    """A substream we opened: bytes waiting, and what the peer lets us send."""

    priority: int
    credit: int
    queue: bytearray
    fin: bool = False  # close_stream() called: FIN after the queue
    blocked: bool = False  # send_stream() accepted less than offered


@dataclass
class _Incoming:
    """A substream the peer opened."""

    window: int  # bytes the peer may still send
    unconsumed: int = 0  # delivered, not yet handed back by stream_consumed()
    owed: int = 0  # consumed, credit not yet sent
    stopping: bool = False  # we reset it; the peer's data in flight is dropped


class SecureStream:
    """Framed, typed, timed, multiplexed transport over a Noise cipher, without I/O."""

    def __init__(self, role: Role, wire: Wire, config: StreamConfig, now: float) -> None:
        self.role: Role = role
        self.config = config
        self._wire = wire
        self._handlers: dict[int, Callable[[bytes, float, bool], None]] = {
            ftype: getattr(self, name) for ftype, name in _handler_names(wire).items()
        }
        self._transport: Cipher | None = None
        self._state = Phase.HANDSHAKE
        self._inbuf = bytearray()
        self._outbuf = bytearray()
        self._events: deque[object] = deque()
        self._handshake_deadline = now + config.handshake_timeout
        self._last_sent = now
        self._last_received = now
        # Sending-direction rekey accounting (Noise §11.3), reset at every rekey.
        self._key_frames = 0
        self._key_bytes = 0
        self._key_since = now
        self.frames_sent = 0
        self.frames_received = 0
        self.rekeys = 0
        #: Smoothed round-trip time in seconds (RFC 6298's SRTT, from our PINGs and
        #: their PONGs, which come back in order); None until the first sample.
        self.rtt: float | None = None
        self._pings_out: deque[float] = deque(maxlen=8)
        # Substreams.
        self._caps_received = False
        self._peer_substreams = False
        #: The capability bits the peer announced (0 until, or without, its announcement).
        self.peer_caps = 0
        self._next_id = 1 if role == "initiator" else 2
        self._peer_parity = 0 if role == "initiator" else 1
        self._peer_highest = 0
        self._outgoing: dict[int, _Outgoing] = {}
        self._incoming: dict[int, _Incoming] = {}
        self._ready = Scheduler()
        self._queued = 0

    # ------------------------------------------------------------------ properties

    @property
    def established(self) -> bool:
        """The handshake is complete and :meth:`send` may be called."""
        return self._state is Phase.ESTABLISHED

    @property
    def closed(self) -> bool:
        """The connection has ended, cleanly or not; it will process no more input."""
        return self._state is Phase.ENDED

    @property
    def linger_until(self) -> float | None:
        """Keep the byte stream open, discarding input, until then after the end (a
        refusing session responder sets it; see :mod:`btchat.session.core`)."""
        return None

    @property
    def pending_output(self) -> int:
        """Bytes ready for :meth:`data_to_send` (control and DATA frames)."""
        return len(self._outbuf)

    @property
    def queued_stream_bytes(self) -> int:
        """Substream bytes waiting for the scheduler (bounded by ``stream_buffer`` each)."""
        return self._queued

    @property
    def bulk_ready(self) -> bool:
        """Substream data (or a FIN) could go out now: call :meth:`data_to_send` again
        when the transport has room."""
        return bool(self._ready)

    @property
    def substreams(self) -> bool:
        """Both sides announced substreams: :meth:`open_stream` may be called."""
        return self.config.substreams and self._peer_substreams

    # ------------------------------------------------------------------ caller API

    def send(self, payload: bytes, now: float) -> None:
        """Queue one DATA frame. Raises on misuse; never on the peer's behaviour."""
        self._check_open()
        if not isinstance(payload, bytes | bytearray | memoryview):
            raise TypeError("payload must be bytes")
        if len(payload) > MAX_FRAME_BODY:
            raise ValueError(f"payload of {len(payload)} bytes exceeds {MAX_FRAME_BODY}")
        payload = bytes(payload)
        if payload.startswith(CAPS_MAGIC):
            raise ValueError("payload begins with the reserved capabilities prefix")
        self._send_frame(self._wire.data, payload, now)

    def close(self, reason: str, now: float) -> None:
        """End the connection; an established one tells the peer why. Idempotent.

        Substream bytes not yet scheduled are dropped: CLOSE is the last frame.
        """
        if self._state is Phase.ENDED:
            return
        if self._state is Phase.ESTABLISHED:
            self._send_frame(self._wire.close, encode_close_reason(reason), now)
        else:
            self._outbuf.clear()  # half a handshake is of no use to the peer
        self._end(ConnectionClosed(reason, by_peer=False))

    def abort(self, reason: str, now: float) -> None:
        """Fail at once, sending nothing more (for a shell: e.g. a peer that does not
        read). Idempotent."""
        if self._state is not Phase.ENDED:
            self._fail(reason)

    def connection_lost(self, now: float) -> None:
        """The byte stream ended (EOF or reset) under us."""
        if self._state is Phase.ESTABLISHED:
            self._fail("connection lost without CLOSE")
        elif self._state is not Phase.ENDED:
            self._fail("connection lost during the handshake")

    def data_to_send(self) -> bytes | bytearray:
        """Bytes to write now, in order: every control/DATA frame, then up to one burst
        of substream data. Empty when there are none; the caller owns what it gets."""
        if self._ready and self._state is Phase.ESTABLISHED:
            self._schedule_bulk()
        data = self._outbuf
        if not data:
            return b""
        # Handed over whole, not copied: we never touch this buffer again.
        self._outbuf = bytearray()
        return data

    def next_event(self) -> object | None:
        return self._events.popleft() if self._events else None

    def get_timer(self) -> float | None:
        """When :meth:`handle_timer` should next run, or None if never."""
        if self._state is Phase.ENDED:
            return None
        if self._state is not Phase.ESTABLISHED:
            return self._handshake_deadline
        due = min(self._idle_deadline(), self._keepalive_due())
        if self._wire.rekey is not None:
            due = min(due, self._rekey_due())
        return due

    # The deadlines are computed by these helpers and nowhere else, so handle_timer
    # fires exactly at the time get_timer announced ((a + b) - a may be < b in floats,
    # which would leave a shell spinning on a timer that never fires).
    def _idle_deadline(self) -> float:
        return self._last_received + self.config.idle_timeout

    def _keepalive_due(self) -> float:
        return self._last_sent + self.config.keepalive

    def _rekey_due(self) -> float:
        return self._key_since + self.config.rekey_interval

    def handle_timer(self, now: float) -> None:
        """Fire whatever is due: handshake timeout, idle timeout, rekey, keepalive."""
        if self._state is Phase.ENDED:
            return
        cfg = self.config
        if self._state is not Phase.ESTABLISHED:
            if now >= self._handshake_deadline:
                self._fail(f"handshake timed out after {cfg.handshake_timeout:g} s")
            return
        if now >= self._idle_deadline():
            self._fail(self._wire.idle_reason.format(timeout=cfg.idle_timeout))
            return
        if self._wire.rekey is not None and now >= self._rekey_due():
            self._send_frame(self._wire.rekey, b"", now)
        if now >= self._keepalive_due():
            self._send_frame(self._wire.ping, b"", now)

    def receive_data(self, data: bytes, now: float) -> None:
        """Feed bytes from the stream, in any chunking; never raises on their content."""
        if self._state is Phase.ENDED or not data:
            return  # the connection is over: nothing more is processed
        buf = self._inbuf
        buf += data
        end = len(buf)
        pos = 0
        with memoryview(buf) as view:
            while end - pos >= FRAME_HEADER and self._state is not Phase.ENDED:
                length = (buf[pos] << 8) | buf[pos + 1]
                # Reject a bad length as soon as its two bytes arrive, before buffering.
                if self._state is Phase.HANDSHAKE:
                    if not self._handshake_length_ok(length):
                        break
                elif length < MIN_TRANSPORT_MESSAGE:
                    # Noise §3: a transport message is at least its 16-byte tag.
                    self._fail(
                        f"malformed frame: {length} bytes is shorter than a transport message"
                    )
                    break
                start = pos + FRAME_HEADER
                if end - start < length:
                    break  # need more bytes
                pos = start + length
                if self._state is Phase.HANDSHAKE:
                    self._on_handshake_message(view[start:pos].tobytes(), now)
                else:
                    # Decrypted straight out of the input buffer, not copied first.
                    with view[start:pos] as message:
                        self._on_transport_message(message, now, more=pos < end)
        if self._state is Phase.ENDED:
            buf.clear()
        else:
            del buf[:pos]

    # ------------------------------------------------------------------ substreams API

    def open_stream(self, priority: int, now: float, service: int = 0) -> int:
        """Open a substream towards the peer; returns its id.

        ``priority`` 0 is the most urgent bulk class, 7 the least; all of them yield to
        control frames and the default stream. ``service`` (a :class:`Service`) tells
        the peer which of its handlers reads it.
        """
        self._check_open()
        if not self.substreams:
            raise RuntimeError("the peer has not announced substreams")
        if not 0 <= priority < PRIORITY_LEVELS:
            raise ValueError(f"priority must be 0..{PRIORITY_LEVELS - 1}")
        if not 0 <= service <= 255:
            raise ValueError("service must be 0..255")
        stream_id = self._next_id
        if stream_id > MAX_STREAM_ID:
            raise RuntimeError("substream ids are exhausted on this connection")
        self._next_id += 2
        self._outgoing[stream_id] = _Outgoing(priority, self.config.initial_window, bytearray())
        self._send_frame(Sub.OPEN, OPEN_BODY.pack(stream_id, priority, service), now)
        return stream_id

    def send_stream(self, stream_id: int, data: bytes, now: float) -> int:
        """Queue ``data`` on our substream; returns how many bytes were accepted.

        Fewer than offered when the stream's buffer (``stream_buffer``) is full: a
        :class:`StreamWritable` event follows once it has room again.
        """
        out = self._own_stream(stream_id)
        if out.fin:
            raise RuntimeError(f"substream {stream_id} is closed for sending")
        room = self.config.stream_buffer - len(out.queue)
        taken = data if room >= len(data) else data[: max(0, room)]  # no copy when it fits
        if len(taken) < len(data):
            out.blocked = True
        if taken:
            out.queue += taken
            self._queued += len(taken)
            if out.credit > 0:
                self._ready.add(stream_id, out.priority)
        return len(taken)

    def stream_backlog(self, stream_id: int) -> int:
        """Bytes queued on our substream and not yet scheduled (0 once it has ended)."""
        out = self._outgoing.get(stream_id)
        return len(out.queue) if out is not None else 0

    def close_stream(self, stream_id: int, now: float) -> None:
        """Finish our substream: FIN goes out after the bytes already queued."""
        out = self._own_stream(stream_id)
        if out.fin:
            return
        out.fin = True
        if not out.queue:
            self._finish(stream_id, now)

    def reset_stream(self, stream_id: int, reason: str, now: float) -> None:
        """Abandon a substream, ours (queued bytes are dropped) or the peer's (its bytes
        in flight are dropped). Idempotent for a stream already reset."""
        self._check_open()
        body = ID.pack(stream_id) + encode_close_reason(reason)
        if stream_id in self._outgoing:
            self._drop_outgoing(stream_id)
            self._send_frame(Sub.RESET, body, now)
        elif stream_id in self._incoming:
            inc = self._incoming[stream_id]
            if not inc.stopping:
                inc.stopping = True
                self._send_frame(Sub.RESET, body, now)
        else:
            raise ValueError(f"no open substream {stream_id}")

    def stream_consumed(self, stream_id: int, nbytes: int, now: float) -> None:
        """The application has processed ``nbytes`` of the peer's substream: the peer
        may send that much more (credit goes out once a quarter window is owed)."""
        inc = self._incoming.get(stream_id)
        if inc is None:
            return  # finished or reset meanwhile: nothing to give back
        if not 0 <= nbytes <= inc.unconsumed:
            raise ValueError(f"{nbytes} bytes were not delivered on substream {stream_id}")
        inc.unconsumed -= nbytes
        inc.owed += nbytes
        if inc.owed >= max(1, self.config.initial_window // 4) and not inc.stopping:
            self._send_frame(Sub.CREDIT, CREDIT_BODY.pack(stream_id, inc.owed), now)
            inc.window += inc.owed
            inc.owed = 0

    # ------------------------------------------------------------------ for handshakes

    def _handshake_length_ok(self, length: int) -> bool:
        raise NotImplementedError

    def _on_handshake_message(self, message: bytes, now: float) -> None:
        raise NotImplementedError

    def _on_confirmed(self, now: float) -> None:
        """The first transport frame from the peer decrypted (see ``_install_transport``)."""

    def _write_message(self, message: bytes, now: float) -> None:
        """A handshake message, length-prefixed, into the output."""
        self._outbuf += frame(message)
        self._last_sent = now

    def _install_transport(self, transport: Cipher, *, confirm: bool = True) -> None:
        """Keys exist: frames are encrypted from now on. With ``confirm`` the first
        frame that decrypts establishes the connection and calls :meth:`_on_confirmed`;
        without, messages keep going to the handshake (e.g. proofs) until it calls
        :meth:`_establish`."""
        self._transport = transport
        if confirm:
            self._state = Phase.CONFIRMING

    def _establish(self, now: float) -> None:
        """The peer is authenticated: frames flow; our capabilities go out first."""
        self._state = Phase.ESTABLISHED
        if self.config.substreams:
            flags = CAPS_SUBSTREAMS | (self.config.extra_caps & 0xFE)
            self._send_frame(self._wire.data, CAPS_MAGIC + bytes([flags]), now)

    def _emit(self, event: object) -> None:
        self._events.append(event)

    def _encrypt_message(self, plaintext: bytes, now: float) -> None:
        """Encrypt one transport message (outside the frame types) into the output."""
        transport = self._transport
        assert transport is not None
        ciphertext = transport.encrypt(plaintext)
        out = self._outbuf
        out += _LENGTH.pack(len(ciphertext))  # two appends: the ciphertext is copied once
        out += ciphertext
        self._last_sent = now
        self.frames_sent += 1
        self._key_frames += 1
        self._key_bytes += len(ciphertext)

    def _decrypt(self, message: bytes | memoryview, now: float) -> bytes | None:
        transport = self._transport
        assert transport is not None
        try:
            plaintext = transport.decrypt(message)
        except CipherError:
            # Noise §5: the implicit nonce makes tampered, replayed, reordered and
            # dropped frames all fail here; we end the connection rather than resync.
            self._fail("frame failed authentication (tampered, replayed or reordered)")
            return None
        self.frames_received += 1
        self._last_received = now
        return plaintext

    # ------------------------------------------------------------------ input

    def _on_transport_message(self, message: bytes | memoryview, now: float, *, more: bool) -> None:
        plaintext = self._decrypt(message, now)
        if plaintext is None:
            return
        if self._state is Phase.CONFIRMING:
            self._establish(now)
            self._on_confirmed(now)
        ftype = plaintext[0]
        handler = self._handlers.get(ftype)
        if handler is None or (ftype in _SUB_TYPES and not self.config.substreams):
            self._fail(f"unknown frame type {ftype}")
            return
        handler(plaintext, now, more)

    def _on_data(self, plaintext: bytes, now: float, more: bool) -> None:
        if plaintext.startswith(CAPS_MAGIC, 1):
            self._on_caps(plaintext[1 + len(CAPS_MAGIC) :])
            return
        self._emit(DataReceived(plaintext[1:]))

    def _on_caps(self, flags: bytes) -> None:
        if self._caps_received or len(flags) < 1:
            self._fail("malformed or repeated capabilities")
            return
        self._caps_received = True  # unknown flags and bytes are for later versions
        self.peer_caps = flags[0]
        if flags[0] & CAPS_SUBSTREAMS:
            self._peer_substreams = True
            if self.config.substreams:
                self._emit(StreamsAvailable())

    def _on_ping(self, plaintext: bytes, now: float, more: bool) -> None:
        if len(plaintext) != 1:
            self._fail("malformed PING frame")
            return
        self._send_frame(self._wire.pong, b"", now)

    def _on_pong(self, plaintext: bytes, now: float, more: bool) -> None:
        if len(plaintext) != 1:
            self._fail("malformed PONG frame")
            return
        if self._pings_out:  # an unasked PONG is harmless and measures nothing
            self._rtt_sample(now - self._pings_out.popleft())

    def _rtt_sample(self, sample: float) -> None:
        sample = max(sample, 0.0)
        self.rtt = sample if self.rtt is None else 0.875 * self.rtt + 0.125 * sample

    def _on_rekey(self, plaintext: bytes, now: float, more: bool) -> None:
        if len(plaintext) != 1:
            self._fail("malformed REKEY frame")
            return
        assert self._transport is not None
        # Noise §11.3: the peer rekeyed its sending CipherState right after this frame,
        # so every later frame from it is under REKEY(k); we follow.
        self._transport.rekey_receive()
        self.rekeys += 1

    def _on_close(self, plaintext: bytes, now: float, more: bool) -> None:
        if more and self._wire.close_last:
            self._fail("peer sent data after CLOSE")
            return
        # The reason is shown to users and logged: keep no more than we would send.
        reason = plaintext[1 : 1 + MAX_CLOSE_REASON].decode("utf-8", "replace")
        self._end(ConnectionClosed(reason, by_peer=True))

    def _stream_id(self, plaintext: bytes, size: int | None, what: str) -> int | None:
        """The substream id of a frame that only the opener's peer sends, checked."""
        if len(plaintext) < 1 + ID.size or (size is not None and len(plaintext) != 1 + size):
            self._fail(f"malformed {what} frame")
            return None
        (stream_id,) = ID.unpack_from(plaintext, 1)
        return stream_id

    def _on_open(self, plaintext: bytes, now: float, more: bool) -> None:
        stream_id = self._stream_id(plaintext, OPEN_BODY.size, "OPEN")
        if stream_id is None:
            return
        priority, service = plaintext[1 + ID.size], plaintext[2 + ID.size]
        if stream_id % 2 != self._peer_parity or stream_id <= self._peer_highest:
            self._fail(f"OPEN of substream {stream_id} is out of order or not the peer's")
        elif priority >= PRIORITY_LEVELS:
            self._fail(f"OPEN of substream {stream_id} with priority {priority}")
        elif len(self._incoming) >= self.config.max_streams:
            self._fail(f"peer opened more than {self.config.max_streams} substreams")
        else:
            self._peer_highest = stream_id
            self._incoming[stream_id] = _Incoming(self.config.initial_window)
            self._emit(StreamOpened(stream_id, priority, service))

    def _incoming_for(self, stream_id: int, what: str) -> _Incoming | None:
        inc = self._incoming.get(stream_id)
        if inc is None:
            if stream_id % 2 != self._peer_parity:
                self._fail(f"{what} on substream {stream_id}, which the peer did not open")
            elif stream_id <= self._peer_highest:
                self._fail(f"{what} on closed substream {stream_id}")
            else:
                self._fail(f"{what} on substream {stream_id}, which was never opened")
        return inc

    def _on_stream_data(self, plaintext: bytes, now: float, more: bool) -> None:
        stream_id = self._stream_id(plaintext, None, "SDATA")
        if stream_id is None:
            return
        inc = self._incoming_for(stream_id, "data")
        if inc is None:
            return
        data = plaintext[1 + ID.size :]
        if not data:
            self._fail("malformed SDATA frame")
        elif len(data) > inc.window:
            self._fail(f"peer overran the credit of substream {stream_id}")
        else:
            inc.window -= len(data)
            if not inc.stopping:  # a stopped stream's bytes in flight are dropped
                inc.unconsumed += len(data)
                self._emit(StreamData(stream_id, data))

    def _on_fin(self, plaintext: bytes, now: float, more: bool) -> None:
        stream_id = self._stream_id(plaintext, ID.size, "FIN")
        if stream_id is None or (inc := self._incoming_for(stream_id, "FIN")) is None:
            return
        del self._incoming[stream_id]
        if not inc.stopping:
            self._emit(StreamClosed(stream_id))

    def _on_credit(self, plaintext: bytes, now: float, more: bool) -> None:
        stream_id = self._stream_id(plaintext, CREDIT_BODY.size, "CREDIT")
        if stream_id is None:
            return
        _, increment = CREDIT_BODY.unpack_from(plaintext, 1)
        if not self._own_id(stream_id) or increment == 0:
            self._fail(f"CREDIT for substream {stream_id} is not ours or is empty")
            return
        out = self._outgoing.get(stream_id)
        if out is None:
            return  # finished or reset meanwhile: credit was in flight
        out.credit += increment
        if out.credit > MAX_WINDOW:
            self._fail(f"credit overflow on substream {stream_id}")
        elif out.queue or out.fin:
            self._ready.add(stream_id, out.priority)

    def _on_reset(self, plaintext: bytes, now: float, more: bool) -> None:
        stream_id = self._stream_id(plaintext, None, "RESET")
        if stream_id is None:
            return
        raw = plaintext[1 + ID.size :]
        if len(raw) > MAX_CLOSE_REASON:
            self._fail("malformed RESET frame")
            return
        reason = raw.decode("utf-8", "replace")
        if stream_id % 2 != self._peer_parity:  # the receiver stops one of ours
            if not self._own_id(stream_id):
                self._fail(f"RESET of substream {stream_id}, which was never opened")
            elif stream_id in self._outgoing:
                self._drop_outgoing(stream_id)
                # Answer, so the peer knows no more bytes of it are on their way.
                self._send_frame(Sub.RESET, ID.pack(stream_id), now)
                self._emit(StreamReset(stream_id, reason))
            return
        inc = self._incoming_for(stream_id, "RESET")
        if inc is not None:
            del self._incoming[stream_id]
            if not inc.stopping:
                self._emit(StreamReset(stream_id, reason))

    # ------------------------------------------------------------------ output

    def _send_frame(self, ftype: int, body: bytes, now: float) -> None:
        self._send_plaintext(ftype, _PREFIX[ftype] + body, now)

    def _send_plaintext(self, ftype: int, plaintext: bytes | bytearray, now: float) -> None:
        """Encrypt one frame whose plaintext (type byte first) is already built."""
        rekey = self._wire.rekey
        cfg = self.config
        if (
            rekey is not None
            and ftype != rekey
            and (
                self._key_frames >= cfg.rekey_messages
                or self._key_bytes >= cfg.rekey_bytes
                or now >= self._rekey_due()
            )
        ):
            self._send_frame(rekey, b"", now)
        self._encrypt_message(plaintext, now)
        if ftype == self._wire.ping:
            self._pings_out.append(now)
        if ftype == rekey:
            # Noise §11.3: k = REKEY(k), n unchanged, right after the REKEY frame.
            assert self._transport is not None
            self._transport.rekey_send()
            self.rekeys += 1
            self._key_frames = 0
            self._key_bytes = 0
            self._key_since = now

    def _schedule_bulk(self) -> None:
        """Move up to one burst of substream data into the output, by priority."""
        budget = self.config.burst
        now = self._last_sent  # bulk rides on the clock of the last call that queued
        while budget > 0 and (stream_id := self._ready.peek()) is not None:
            out = self._outgoing[stream_id]
            size = min(self.config.chunk_size, out.credit, len(out.queue), budget)
            if size > 0:
                # The frame's plaintext is built in one buffer: its bytes copied once.
                plaintext = bytearray(_SDATA_HEAD.pack(Sub.DATA, stream_id))
                with memoryview(out.queue) as queued:
                    plaintext += queued[:size]
                del out.queue[:size]
                out.credit -= size
                self._queued -= size
                budget -= size
                self._send_plaintext(Sub.DATA, plaintext, now)
                if out.blocked and len(out.queue) <= self.config.stream_buffer // 2:
                    out.blocked = False
                    self._emit(StreamWritable(stream_id))
            if not out.queue and out.fin:
                self._finish(stream_id, now)
            elif not out.queue or out.credit == 0:
                self._ready.remove(stream_id)  # back when data or credit arrives
            else:
                self._ready.rotate(stream_id)

    def _finish(self, stream_id: int, now: float) -> None:
        self._drop_outgoing(stream_id)
        self._send_frame(Sub.FIN, ID.pack(stream_id), now)

    def _drop_outgoing(self, stream_id: int) -> None:
        out = self._outgoing.pop(stream_id)
        self._queued -= len(out.queue)
        self._ready.remove(stream_id)

    def _own_id(self, stream_id: int) -> bool:
        return stream_id % 2 != self._peer_parity and 0 < stream_id < self._next_id

    def _own_stream(self, stream_id: int) -> _Outgoing:
        self._check_open()
        out = self._outgoing.get(stream_id)
        if out is None:
            raise ValueError(f"no open substream {stream_id} of ours")
        return out

    def _check_open(self) -> None:
        if self._state is Phase.ENDED:
            raise RuntimeError(f"the {self._wire.name} is closed")
        if self._state is not Phase.ESTABLISHED:
            raise RuntimeError(f"the {self._wire.name} is not established yet")

    # ------------------------------------------------------------------ endings

    def _fail(self, reason: str) -> None:
        # A failed connection sends nothing more: a refusing responder never answers,
        # and queued frames are dropped.
        self._outbuf.clear()
        self._end(ConnectionFailed(reason))

    def _end(self, event: ConnectionClosed | ConnectionFailed) -> None:
        self._state = Phase.ENDED
        self._transport = None  # drop the keys
        self._outgoing.clear()
        self._incoming.clear()
        self._ready = Scheduler()
        self._queued = 0
        self._events.append(event)


_PREFIX = {t: bytes([t]) for t in range(256)}
_SDATA_HEAD = struct.Struct(">BI")  # SDATA's type byte and stream id
_LENGTH = struct.Struct(">H")  # the frame's length prefix (frames.frame)
_SUB_TYPES = frozenset(Sub)


def _handler_names(wire: Wire) -> dict[int, str]:
    """Frame type -> handler method for one dialect; a type missing is a protocol error."""
    table = {
        wire.data: "_on_data",
        wire.ping: "_on_ping",
        wire.pong: "_on_pong",
        wire.close: "_on_close",
        Sub.OPEN: "_on_open",
        Sub.DATA: "_on_stream_data",
        Sub.CREDIT: "_on_credit",
        Sub.FIN: "_on_fin",
        Sub.RESET: "_on_reset",
    }
    if wire.rekey is not None:
        table[wire.rekey] = "_on_rekey"
    return table
