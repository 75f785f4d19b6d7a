"""The sans-I/O btchat session: a Noise IK handshake, then framed, rekeyed transport.

How this works. A :class:`Session` is a plain object driven by bytes, calls and ``now``;
it reads no clock and does no I/O (``connection.py`` is the asyncio shell). Feed it what
arrived with :meth:`Session.receive_data`, send what :meth:`Session.data_to_send`
returns, arm one timer from :meth:`Session.get_timer`, and drain
:meth:`Session.next_event`. This module is the IK handshake only: framing, frame types,
timers, rekey, close and substreams are the stream layer's
(:class:`btchat.stream.core.SecureStream`), which the session hands its keys to.

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
from collections.abc import Callable
from dataclasses import dataclass

from btchat.identity.keys import MAX_CERT_SIZE, CertificateError, DeviceCertificate, DeviceKey
from btchat.session.noise_ik import (
    DHLEN,
    TAGLEN,
    IKHandshake,
    NoiseError,
)
from btchat.stream.core import ROLES, Phase, Role, SecureStream, StreamConfig
from btchat.stream.events import ConnectionClosed, ConnectionFailed, DataReceived, StreamEvent
from btchat.stream.frames import FRAME_HEADER, MAX_CLOSE_REASON, MAX_FRAME_BODY, Wire

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
#: Largest application payload per DATA frame: Noise §3 caps a transport message at
#: 65535 bytes, of which 16 are the AEAD tag and 1 is our frame type.
MAX_PAYLOAD = MAX_FRAME_BODY
#: Largest handshake message we wait for: IK message 1 is e (32) + encrypted s (32+16)
#: + encrypted payload; the payload is one certificate (``MAX_CERT_SIZE``). A longer
#: length prefix before the handshake is garbage and is refused without buffering it.
MAX_HANDSHAKE_MESSAGE = DHLEN + (DHLEN + TAGLEN) + (MAX_CERT_SIZE + TAGLEN)


class FrameType(enum.IntEnum):
    """The first plaintext byte of every transport message (v1; substreams add 0x10+)."""

    DATA = 0  # body: application payload
    PING = 1  # body: empty; the peer answers PONG
    PONG = 2  # body: empty
    REKEY = 3  # body: empty; the sender's next frame uses Rekey()ed k (Noise §11.3)
    CLOSE = 4  # body: utf-8 reason; the last frame the sender sends


WIRE = Wire.of("session", FrameType, idle_reason="peer silent for {timeout:g} s", close_last=True)


@dataclass(frozen=True)
class SessionConfig(StreamConfig):
    """A session's timers and rekey limits (:class:`~btchat.stream.core.StreamConfig`)."""


# ----------------------------------------------------------------------------- events


@dataclass(frozen=True)
class HandshakeComplete:
    """The peer proved its device key and its certificate was authorized."""

    remote_identity: bytes
    remote_certificate: DeviceCertificate
    #: Noise §11.2 channel binding: equal on both sides, unique to this session.
    handshake_hash: bytes


#: An orderly end: we called :meth:`Session.close`, or the peer sent CLOSE.
SessionClosed = ConnectionClosed
#: The session ended without an orderly CLOSE: bad input, timeout, lost link.
SessionFailed = ConnectionFailed
SessionEvent = HandshakeComplete | StreamEvent

#: ``authorize(identity_public_key, certificate) -> bool``: may this peer have a session?
Authorize = Callable[[bytes, DeviceCertificate], bool]


class Session(SecureStream):
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
        config: StreamConfig = SessionConfig(),  # frozen, so one shared default is safe
        ephemeral_private: bytes | None = None,
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
        super().__init__(role, WIRE, config, now)
        self._authorize = authorize
        self._cert_bytes = certificate.encode()
        self._noise: IKHandshake | None = IKHandshake(
            initiator=initiator,
            static_private=device.private_bytes,
            prologue=PROLOGUE,
            remote_static=remote_static,
            # Only the published test vectors fix it (docs/vectors/sessions.json): a
            # reused ephemeral key destroys forward secrecy.
            ephemeral_private=ephemeral_private,
        )
        # Checked but not yet confirmed (responder in CONFIRMING), then confirmed.
        self._remote_cert: DeviceCertificate | None = None
        self._peer: DeviceCertificate | None = None
        self._handshake_hash: bytes | None = None
        self._linger_until: float | None = None
        self._message2_at: float | None = None
        if initiator:
            # Noise §7.5 IK message 1: -> e, es, s, ss, with our certificate as payload.
            self._write_message(self._noise.write_message(self._cert_bytes), now)

    # ------------------------------------------------------------------ properties

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

    # ------------------------------------------------------------------ handshake

    def _handshake_length_ok(self, length: int) -> bool:
        if length > MAX_HANDSHAKE_MESSAGE:
            self._fail(f"handshake message of {length} bytes exceeds {MAX_HANDSHAKE_MESSAGE}")
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
            # Key confirmation for the responder (see the module docstring): our first
            # transport frame, sent before anything the application queues.
            self._state = Phase.ESTABLISHED
            self._send_frame(FrameType.PING, b"", now)
            self._establish(now)
            self._on_confirmed(now)
        else:
            # Noise §7.5 IK message 2: <- e, ee, se, with our certificate as payload.
            self._write_message(noise.write_message(self._cert_bytes), now)
            self._message2_at = now  # to the key-confirmation PING: one round trip
            self._start_transport(noise)  # established once the first frame decrypts

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
        self._install_transport(noise.transport())
        self._handshake_hash = noise.handshake_hash
        self._noise = None  # Noise §5: the HandshakeState is deleted after Split()

    def _on_confirmed(self, now: float) -> None:
        # Responder: the initiator's ephemeral key is proven, message 1 was no replay.
        cert = self._remote_cert
        assert cert is not None and self._handshake_hash is not None
        if self._message2_at is not None:
            self._rtt_sample(now - self._message2_at)
        self._peer = cert
        self._emit(HandshakeComplete(cert.identity, cert, self._handshake_hash))

    def _fail(self, reason: str) -> None:
        # A responder that rejects message 1 never answers, and hangs up only at its
        # handshake deadline (see the module docstring).
        if self.role == "responder" and self._state is Phase.HANDSHAKE:
            self._linger_until = self._handshake_deadline
        self._noise = None
        super()._fail(reason)
