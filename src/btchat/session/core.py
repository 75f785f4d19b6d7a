"""The sans-I/O btchat session: a Noise IK handshake, then framed, rekeyed transport.

How this works. A :class:`Session` is a plain object driven by bytes, calls and ``now``;
it reads no clock and does no I/O (``connection.py`` is the asyncio shell). Feed it what
arrived with :meth:`Session.receive_data`, send what :meth:`Session.data_to_send`
returns, arm one timer from :meth:`Session.get_timer`, and drain
:meth:`Session.next_event`.

Wire format ("btchat sessions v1")::

    frame     = length:uint16be  noise_message            (Noise §3: <= 65535 bytes)
    message 1 = IK  -> e, es, s, ss  + payload: initiator's DeviceCertificate
    message 2 = IK  <- e, ee, se     + payload: responder's DeviceCertificate
    transport = AEAD( type:uint8 || body )                 (Noise §5, ad = "")

The initiator dials a device key it already knows (IK's ``<- s`` pre-message). Each
side accepts the other only if the certificate verifies, names the static key Noise
authenticated, and ``authorize(identity, cert)`` agrees. A responder that refuses, or
cannot decrypt message 1, sends nothing at all: an active prober learns nothing about
who listens on a port (Noise §7.8 identity hiding, kept at the application layer).

Replay of message 1 (Noise §7.7: IK message 1 payload has no replay protection) is
harmless here: the responder declares the session established only after the
initiator's first transport frame decrypts, which proves the sender holds the
initiator ephemeral key. The initiator sends that frame (a PING) at once.

Refusals are also indistinguishable in time: device keys are public (the DHT device
list), so a prober can build a valid message 1 for a key and time how fast we hang up,
since a wrong key fails at the first AEAD check and a right one after two DHs and a
signature check. A responder that refuses therefore sets :attr:`Session.linger_until`
to its handshake deadline; the shell keeps the stream open, discarding input, until
then. Every refusal looks alike: silence, then a close at the handshake timeout.

A peer that misbehaves never makes this code raise: the session emits one
:class:`SessionFailed` and stops processing. A caller that misuses the API gets a
``ValueError`` or ``RuntimeError`` at once.
"""

from __future__ import annotations

import enum
import struct
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from btchat.identity.keys import MAX_CERT_SIZE, CertificateError, DeviceCertificate, DeviceKey
from btchat.session.noise_ik import (
    DHLEN,
    MAX_MESSAGE_LEN,
    TAGLEN,
    IKHandshake,
    NoiseError,
    Transport,
)

__all__ = [
    "FRAME_HEADER",
    "MAX_CLOSE_REASON",
    "MAX_HANDSHAKE_MESSAGE",
    "MAX_PAYLOAD",
    "PROLOGUE",
    "Authorize",
    "DataReceived",
    "FrameType",
    "HandshakeComplete",
    "Role",
    "Session",
    "SessionClosed",
    "SessionConfig",
    "SessionEvent",
    "SessionFailed",
]

#: Noise §6: bound into the handshake hash, so a peer speaking another protocol or
#: version cannot complete a handshake with us.
PROLOGUE = b"btchat session v1"
#: Bytes of the big-endian length prefix in front of every Noise message.
FRAME_HEADER = 2
#: Largest application payload per DATA frame: Noise §3 caps a transport message at
#: 65535 bytes, of which 16 are the AEAD tag and 1 is our frame type.
MAX_PAYLOAD = MAX_MESSAGE_LEN - TAGLEN - 1
#: Largest handshake message we wait for: IK message 1 is e (32) + encrypted s (32+16)
#: + encrypted payload; the payload is one certificate (``MAX_CERT_SIZE``). A longer
#: length prefix before the handshake is garbage and is refused without buffering it.
MAX_HANDSHAKE_MESSAGE = DHLEN + (DHLEN + TAGLEN) + (MAX_CERT_SIZE + TAGLEN)
#: Smallest transport message: a tag plus the 1-byte frame type.
MIN_TRANSPORT_MESSAGE = TAGLEN + 1
#: CLOSE reasons are for humans and logs; longer ones are cut (at a character boundary).
MAX_CLOSE_REASON = 256

_LENGTH = struct.Struct(">H")


class FrameType(enum.IntEnum):
    """The first plaintext byte of every transport message."""

    DATA = 0  # body: application payload
    PING = 1  # body: empty; the peer answers PONG
    PONG = 2  # body: empty
    REKEY = 3  # body: empty; the sender's next frame uses Rekey()ed k (Noise §11.3)
    CLOSE = 4  # body: utf-8 reason; the last frame the sender sends


# Pre-built one-byte type prefixes, so building a frame is a single concatenation.
_PREFIX = {t: bytes([t]) for t in FrameType}


@dataclass(frozen=True)
class SessionConfig:
    """Timers and rekey limits; all durations in seconds of the caller's clock.

    ``keepalive`` must be shorter than ``idle_timeout``: our PINGs keep the peer's idle
    timer from firing, and theirs keep ours.
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

    def __post_init__(self) -> None:
        for name in ("handshake_timeout", "keepalive", "idle_timeout", "rekey_interval"):
            if not getattr(self, name) > 0:
                raise ValueError(f"SessionConfig.{name} must be positive")
        if self.rekey_messages < 1 or self.rekey_bytes < 1:
            raise ValueError("SessionConfig rekey limits must be at least 1")
        if self.keepalive >= self.idle_timeout:
            raise ValueError("SessionConfig.keepalive must be shorter than idle_timeout")


# ----------------------------------------------------------------------------- events


@dataclass(frozen=True)
class HandshakeComplete:
    """The peer proved its device key and its certificate was authorized."""

    remote_identity: bytes
    remote_certificate: DeviceCertificate
    #: Noise §11.2 channel binding: equal on both sides, unique to this session.
    handshake_hash: bytes


@dataclass(frozen=True)
class DataReceived:
    """One DATA frame's payload, delivered in order, exactly once, authenticated."""

    payload: bytes


@dataclass(frozen=True)
class SessionClosed:
    """An orderly end: we called :meth:`Session.close`, or the peer sent CLOSE."""

    reason: str
    by_peer: bool


@dataclass(frozen=True)
class SessionFailed:
    """The session ended without an orderly CLOSE: bad input, timeout, lost link."""

    reason: str


SessionEvent = HandshakeComplete | DataReceived | SessionClosed | SessionFailed


class _State(enum.Enum):
    HANDSHAKE = "handshake"  # waiting for message 1 (responder) or 2 (initiator)
    CONFIRMING = "confirming"  # responder: message 2 sent, awaiting the first frame
    ESTABLISHED = "established"
    ENDED = "ended"  # closed or failed; input is ignored from now on


#: Which end of the handshake we are: the dialer knows the peer's device key in advance.
Role = Literal["initiator", "responder"]
ROLES: tuple[Role, ...] = ("initiator", "responder")
#: ``authorize(identity_public_key, certificate) -> bool``: may this peer have a session?
Authorize = Callable[[bytes, DeviceCertificate], bool]


class Session:
    """One btchat session with one peer device, as a state machine without I/O.

    ``authorize(identity, certificate)`` decides whether the authenticated peer is
    welcome: a responder passes "is a contact and not blocked", an initiator "is the
    identity I meant to dial". It is called once, after the certificate verified and
    matched the Noise static key. Only a return value of exactly ``True`` admits the
    peer (fail closed). If it raises, the session fails as a refusal (sending nothing)
    and the exception propagates out of :meth:`receive_data`: a bug in the caller's
    code, not the peer's doing.
    """

    def __init__(
        self,
        role: Role,
        device: DeviceKey,
        certificate: DeviceCertificate,
        authorize: Authorize,
        *,
        remote_static: bytes | None = None,
        now: float,
        config: SessionConfig = SessionConfig(),  # frozen, so one shared default is safe
    ) -> None:
        if role not in ROLES:
            raise ValueError(f"role must be 'initiator' or 'responder', not {role!r}")
        if certificate.device_key != device.public_key:
            raise ValueError("the certificate is not for this device key")
        initiator = role == "initiator"
        if initiator and (remote_static is None or len(remote_static) != DHLEN):
            raise ValueError("an initiator needs the responder's 32-byte device key")
        if not initiator and remote_static is not None:
            raise ValueError("a responder learns the initiator's key from the handshake")
        self.role: Role = role
        self.config = config
        self._authorize = authorize
        self._cert_bytes = certificate.encode()
        self._noise: IKHandshake | None = IKHandshake(
            initiator=initiator,
            static_private=device.private_bytes,
            prologue=PROLOGUE,
            remote_static=remote_static,
        )
        self._transport: Transport | None = None
        self._state = _State.HANDSHAKE
        self._inbuf = bytearray()
        self._outbuf = bytearray()
        self._events: deque[SessionEvent] = deque()
        # Checked but not yet confirmed (responder in CONFIRMING), then confirmed.
        self._remote_cert: DeviceCertificate | None = None
        self._peer: DeviceCertificate | None = None
        self._handshake_hash: bytes | None = None
        self._handshake_deadline = now + config.handshake_timeout
        self._linger_until: float | None = None
        self._last_sent = now
        self._last_received = now
        # Sending-direction rekey accounting (Noise §11.3), reset at every rekey.
        self._key_frames = 0
        self._key_bytes = 0
        self._key_since = now
        self.frames_sent = 0
        self.frames_received = 0
        self.rekeys = 0
        if initiator:
            # Noise §7.5 IK message 1: -> e, es, s, ss, with our certificate as payload.
            self._write_handshake(self._noise.write_message(self._cert_bytes), now)

    # ------------------------------------------------------------------ properties

    @property
    def established(self) -> bool:
        """Both keys are confirmed and :meth:`send` may be called."""
        return self._state is _State.ESTABLISHED

    @property
    def closed(self) -> bool:
        """The session has ended, cleanly or not; it will process no more input."""
        return self._state is _State.ENDED

    @property
    def remote_identity(self) -> bytes | None:
        """The peer's identity key, once the handshake completed."""
        return None if self._peer is None else self._peer.identity

    @property
    def remote_certificate(self) -> DeviceCertificate | None:
        """The peer's verified, authorized certificate, once the handshake completed."""
        return self._peer

    @property
    def handshake_hash(self) -> bytes | None:
        return self._handshake_hash

    @property
    def linger_until(self) -> float | None:
        """After a responder refused a handshake: keep the stream open until then.

        The shell reads and discards until this time (or the peer's EOF) before it
        closes, so a prober cannot time which check refused it (module docstring).
        """
        return self._linger_until

    # ------------------------------------------------------------------ caller API

    def send(self, payload: bytes, now: float) -> None:
        """Queue one DATA frame. Raises on misuse; never on the peer's behaviour."""
        if self._state is _State.ENDED:
            raise RuntimeError("the session is closed")
        if self._state is not _State.ESTABLISHED:
            raise RuntimeError("the session is not established yet")
        if not isinstance(payload, bytes | bytearray | memoryview):
            raise TypeError("payload must be bytes")
        if len(payload) > MAX_PAYLOAD:
            raise ValueError(f"payload of {len(payload)} bytes exceeds {MAX_PAYLOAD}")
        self._send_frame(FrameType.DATA, bytes(payload), now)

    def close(self, reason: str, now: float) -> None:
        """End the session; an established one tells the peer why. Idempotent."""
        if self._state is _State.ENDED:
            return
        if self._state is _State.ESTABLISHED:
            body = reason.encode("utf-8")[:MAX_CLOSE_REASON]
            # Cut at a character boundary so the peer sees valid UTF-8.
            body = body.decode("utf-8", "ignore").encode("utf-8")
            self._send_frame(FrameType.CLOSE, body, now)
        self._end(SessionClosed(reason, by_peer=False))

    def data_to_send(self) -> bytes:
        """Bytes to write to the stream now, in order; empty when there are none."""
        if not self._outbuf:
            return b""
        data = bytes(self._outbuf)
        self._outbuf.clear()
        return data

    def next_event(self) -> SessionEvent | None:
        return self._events.popleft() if self._events else None

    def get_timer(self) -> float | None:
        """When :meth:`handle_timer` should next run, or None if never."""
        if self._state is _State.ENDED:
            return None
        if self._state is not _State.ESTABLISHED:
            return self._handshake_deadline
        return min(self._idle_deadline(), self._keepalive_due(), self._rekey_due())

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
        if self._state is _State.ENDED:
            return
        cfg = self.config
        if self._state is not _State.ESTABLISHED:
            if now >= self._handshake_deadline:
                self._fail(f"handshake timed out after {cfg.handshake_timeout:g} s")
            return
        if now >= self._idle_deadline():
            self._fail(f"peer silent for {cfg.idle_timeout:g} s")
            return
        if now >= self._rekey_due():
            self._send_frame(FrameType.REKEY, b"", now)
        if now >= self._keepalive_due():
            self._send_frame(FrameType.PING, b"", now)

    def connection_lost(self, now: float) -> None:
        """The stream ended (EOF or reset) under us."""
        if self._state is _State.ENDED:
            return
        if self._state is _State.ESTABLISHED:
            self._fail("connection lost without CLOSE")
        else:
            self._fail("connection lost during the handshake")

    def receive_data(self, data: bytes, now: float) -> None:
        """Feed bytes from the stream, in any chunking; never raises on their content."""
        if self._state is _State.ENDED or not data:
            return  # the session is over: nothing more is processed
        buf = self._inbuf
        buf += data
        end = len(buf)
        pos = 0
        with memoryview(buf) as view:
            while end - pos >= FRAME_HEADER and self._state is not _State.ENDED:
                length = (buf[pos] << 8) | buf[pos + 1]
                if not self._length_ok(length):
                    break
                start = pos + FRAME_HEADER
                if end - start < length:
                    break  # need more bytes
                pos = start + length
                message = view[start:pos].tobytes()
                if self._state is _State.HANDSHAKE:
                    self._on_handshake_message(message, now)
                else:
                    self._on_transport_message(message, now, more=pos < end)
        if self._state is _State.ENDED:
            buf.clear()
        else:
            del buf[:pos]

    # ------------------------------------------------------------------ input

    def _length_ok(self, length: int) -> bool:
        # Reject a bad length as soon as its two bytes arrive, before buffering a body.
        if self._state is _State.HANDSHAKE:
            if length > MAX_HANDSHAKE_MESSAGE:
                self._fail(f"handshake message of {length} bytes exceeds {MAX_HANDSHAKE_MESSAGE}")
                return False
        elif length < MIN_TRANSPORT_MESSAGE:
            # Noise §3: a transport message is at least its 16-byte tag; we add a type.
            self._fail(f"malformed frame: {length} bytes is shorter than a transport message")
            return False
        return True

    def _on_handshake_message(self, message: bytes, now: float) -> None:
        noise = self._noise
        assert noise is not None
        try:
            payload = noise.read_message(message)
        except NoiseError as exc:
            if noise.initiator:
                self._fail(f"handshake failed: responder's reply does not authenticate ({exc})")
            else:
                # Not addressed to our device key, tampered, or not Noise at all.
                self._fail(f"handshake failed: message 1 does not authenticate ({exc})")
            return
        side = "responder" if noise.initiator else "initiator"
        cert = self._check_peer(payload, noise.remote_static, side)
        if cert is None:
            return  # a responder that refuses sends nothing at all
        self._remote_cert = cert
        self._last_received = now
        if noise.initiator:
            # Message 2 read: Split() ran (Noise §5.3), both directions are keyed.
            self._start_transport(noise)
            self._state = _State.ESTABLISHED
            # Key confirmation for the responder (see the module docstring): our first
            # transport frame, sent before anything the application queues.
            self._send_frame(FrameType.PING, b"", now)
            self._emit_established()
        else:
            # Noise §7.5 IK message 2: <- e, ee, se, with our certificate as payload.
            self._write_handshake(noise.write_message(self._cert_bytes), now)
            self._start_transport(noise)
            self._state = _State.CONFIRMING

    def _check_peer(
        self, payload: bytes, remote_static: bytes | None, side: str
    ) -> DeviceCertificate | None:
        try:
            cert = DeviceCertificate.decode(payload)
        except CertificateError as exc:
            self._fail(f"handshake failed: {side}'s certificate is invalid: {exc}")
            return None
        if remote_static is None or cert.device_key != remote_static:
            # The certificate must name the key Noise proved the peer holds; otherwise
            # anyone could present someone else's (public) certificate.
            self._fail(f"handshake failed: {side}'s certificate is for another device key")
            return None
        try:
            allowed = self._authorize(cert.identity, cert)
        except BaseException:
            self._fail(f"handshake failed: authorizing the {side} raised an exception")
            raise
        if allowed is not True:  # fail closed: only an explicit True admits the peer
            self._fail(f"handshake failed: {side}'s identity is not authorized")
            return None
        return cert

    def _start_transport(self, noise: IKHandshake) -> None:
        self._transport = noise.transport()
        self._handshake_hash = noise.handshake_hash
        self._noise = None  # Noise §5: the HandshakeState is deleted after Split()

    def _emit_established(self) -> None:
        cert = self._remote_cert
        assert cert is not None and self._handshake_hash is not None
        self._peer = cert
        self._events.append(HandshakeComplete(cert.identity, cert, self._handshake_hash))

    def _on_transport_message(self, message: bytes, now: float, *, more: bool) -> None:
        transport = self._transport
        assert transport is not None
        try:
            plaintext = transport.decrypt(message)
        except NoiseError:
            # Noise §5: the implicit nonce makes tampered, replayed and reordered
            # frames all fail here; we end the session rather than resynchronise.
            self._fail("frame failed authentication (tampered, replayed or reordered)")
            return
        self.frames_received += 1
        self._last_received = now
        if self._state is _State.CONFIRMING:
            # The initiator's ephemeral key is proven: message 1 was not a replay.
            self._state = _State.ESTABLISHED
            self._emit_established()
        ftype = plaintext[0]
        handler = _HANDLERS.get(ftype)
        if handler is None:
            self._fail(f"unknown frame type {ftype}")
            return
        handler(self, plaintext, now, more)

    def _on_data(self, plaintext: bytes, now: float, more: bool) -> None:
        self._events.append(DataReceived(plaintext[1:]))

    def _on_ping(self, plaintext: bytes, now: float, more: bool) -> None:
        if len(plaintext) != 1:
            self._fail("malformed PING frame")
            return
        self._send_frame(FrameType.PONG, b"", now)

    def _on_pong(self, plaintext: bytes, now: float, more: bool) -> None:
        if len(plaintext) != 1:
            self._fail("malformed PONG frame")

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
        if more:
            self._fail("peer sent data after CLOSE")
            return
        # The reason is shown to users and logged: keep no more than we would send.
        reason = plaintext[1 : 1 + MAX_CLOSE_REASON].decode("utf-8", "replace")
        self._end(SessionClosed(reason, by_peer=True))

    # ------------------------------------------------------------------ output

    def _write_handshake(self, message: bytes, now: float) -> None:
        self._outbuf += _LENGTH.pack(len(message))
        self._outbuf += message
        self._last_sent = now

    def _send_frame(self, ftype: FrameType, body: bytes, now: float) -> None:
        transport = self._transport
        assert transport is not None
        cfg = self.config
        if ftype is not FrameType.REKEY and (
            self._key_frames >= cfg.rekey_messages
            or self._key_bytes >= cfg.rekey_bytes
            or now >= self._rekey_due()
        ):
            self._send_frame(FrameType.REKEY, b"", now)
        ciphertext = transport.encrypt(_PREFIX[ftype] + body)
        out = self._outbuf
        out += _LENGTH.pack(len(ciphertext))
        out += ciphertext
        self.frames_sent += 1
        self._last_sent = now
        if ftype is FrameType.REKEY:
            # Noise §11.3: k = REKEY(k), n unchanged, right after the REKEY frame.
            transport.rekey_send()
            self.rekeys += 1
            self._key_frames = 0
            self._key_bytes = 0
            self._key_since = now
        else:
            self._key_frames += 1
            self._key_bytes += len(ciphertext)

    # ------------------------------------------------------------------ endings

    def _fail(self, reason: str) -> None:
        # A failed session sends nothing more: in particular a responder that rejects
        # message 1 never answers, and hangs up only at its handshake deadline (see the
        # module docstring).
        self._outbuf.clear()
        if self.role == "responder" and self._state is _State.HANDSHAKE:
            self._linger_until = self._handshake_deadline
        self._end(SessionFailed(reason))

    def _end(self, event: SessionClosed | SessionFailed) -> None:
        self._state = _State.ENDED
        self._noise = None
        self._transport = None  # drop the keys
        self._events.append(event)


# Frame type -> handler; a type missing here is a protocol error.
_HANDLERS: dict[int, Callable[[Session, bytes, float, bool], None]] = {
    FrameType.DATA: Session._on_data,
    FrameType.PING: Session._on_ping,
    FrameType.PONG: Session._on_pong,
    FrameType.REKEY: Session._on_rekey,
    FrameType.CLOSE: Session._on_close,
}
