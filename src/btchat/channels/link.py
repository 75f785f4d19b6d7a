"""A sans-I/O link between two members of one channel: Noise XXpsk3, then identity proofs.

Why not the 1:1 session (:mod:`btchat.session.core`): its Noise IK needs the
responder's static key in advance, but channel members find each other only as
``IP:port`` (DHT, trackers, LAN, peer exchange). What they share is the channel secret,
so a link is ``Noise_XXpsk3_25519_ChaChaPoly_BLAKE2b`` keyed by a PSK the channel code
derives from that secret, and each side then proves its Ed25519 identity by signing the
handshake hash.

Wire format ("btchat channel link v1")::

    frame     = length:uint16be  noise_message              (Noise §3: <= 65535 bytes)
    prologue  = "btchat channel link v1" 0x00 || channel_id  (Noise §6)
    message 1 = -> e                  empty payload          48 bytes
    message 2 = <- e, ee, s, es       empty payload          96 bytes
    message 3 = -> s, se, psk         empty payload          64 bytes
    proof     = AEAD( identity:32 || Ed25519 signature:64 )  the first transport frame
    transport = AEAD( type:uint8 || body )                   (Noise §5, ad = "")

    signature = Ed25519(identity, PROOF_CONTEXT || channel_id || role || h)

``role`` is ``b"i"`` in the initiator's proof and ``b"r"`` in the responder's, so a
proof cannot be reflected back at its sender; ``h`` is the final handshake hash (Noise
§11.2 channel binding), so a proof cannot be replayed on another link or relayed by a
man in the middle who knows the PSK (each leg of such a relay has its own ``h``).

The Noise static keys are fresh random X25519 keys per link: they authenticate
nothing (the proofs do), so a prober without the channel secret learns only a random
key from message 2. Message 2 must be sent before the PSK can be checked (``psk3``
mixes it in message 3); that a port answers XX at all is the only thing a prober
learns, and it learns it from any XX responder.

Order of the proofs: the initiator sends its proof together with message 3; the
responder checks the PSK (message 3 decrypts), the initiator's proof and
``authorize(identity)``, and only then sends its own proof. A responder that refuses
sends nothing more, so only an authorized member learns who answered. Refusals need no
lingering (as :mod:`btchat.session.core` does): a prober cannot learn which check
refused it beyond what it already knows (whether it holds the PSK, and whether its
own proof is valid), and that it was refused it learns anyway from the missing proof.

No rekey (unlike sessions): a link lives for one TCP connection, minutes to days; at
a million frames a second its 2^64 nonces would last 580,000 years, and
ChaCha20-Poly1305 has no practical per-key limit below that. Forward secrecy comes per
link from the ephemeral keys: every reconnection has fresh keys. What links carry is
channel messages that are already signed and encrypted end to end under the channel's
own keys (:mod:`btchat.channels.messages`).

A peer that misbehaves never makes this code raise: the link emits one
:class:`LinkFailed` and processes nothing more. A caller that misuses the API gets a
``ValueError``, ``TypeError`` or ``RuntimeError`` at once.
"""

from __future__ import annotations

import enum
import struct
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from noise.connection import Keypair, NoiseConnection
from noise.exceptions import (
    NoiseHandshakeError,
    NoiseInvalidMessage,
    NoiseMaxNonceError,
    NoisePSKError,
    NoiseValidationError,
    NoiseValueError,
)

from btchat.identity.keys import Identity, verify_signature
from btchat.session.noise_ik import (
    DHLEN,
    MAX_MESSAGE_LEN,
    TAGLEN,
    NoiseError,
    Transport,
)

__all__ = [
    "FRAME_HEADER",
    "HANDSHAKE_MESSAGE_LENGTHS",
    "MAX_CLOSE_REASON",
    "MAX_PAYLOAD",
    "PROLOGUE_PREFIX",
    "PROOF_CONTEXT",
    "PROOF_MESSAGE_LEN",
    "PROOF_SIZE",
    "PROTOCOL_NAME",
    "Link",
    "LinkClosed",
    "LinkConfig",
    "LinkData",
    "LinkEstablished",
    "LinkEvent",
    "LinkFailed",
    "LinkFrameType",
    "NoiseError",
    "Role",
    "XXpsk3Handshake",
    "link_prologue",
    "proof_message",
]

#: The only protocol channel links speak (Noise §8, §9: ``psk3`` mixes the PSK last).
PROTOCOL_NAME = b"Noise_XXpsk3_25519_ChaChaPoly_BLAKE2b"
#: Noise §6: bound into ``h``, followed by the 32-byte channel id, so a link for another
#: channel (or another protocol or version) cannot complete.
PROLOGUE_PREFIX = b"btchat channel link v1\x00"
#: Domain separation of the identity proof from everything else an identity signs.
PROOF_CONTEXT = b"btchat channel link proof v1\x00"
#: Bytes of the big-endian length prefix in front of every Noise message.
FRAME_HEADER = 2
#: With empty payloads every XXpsk3 message has one exact length (each payload still
#: carries a tag, since ``psk`` modes key the cipher from message 1's ``e``, Noise §9.2).
HANDSHAKE_MESSAGE_LENGTHS = (
    DHLEN + TAGLEN,  # -> e
    DHLEN + (DHLEN + TAGLEN) + TAGLEN,  # <- e, ee, s, es
    (DHLEN + TAGLEN) + TAGLEN,  # -> s, se, psk
)
#: Plaintext of a proof: identity public key and Ed25519 signature.
PROOF_SIZE = 32 + 64
#: A proof on the wire: the plaintext plus its AEAD tag.
PROOF_MESSAGE_LEN = PROOF_SIZE + TAGLEN
#: Largest application payload per DATA frame: Noise §3 caps a transport message at
#: 65535 bytes, of which 16 are the AEAD tag and 1 is our frame type.
MAX_PAYLOAD = MAX_MESSAGE_LEN - TAGLEN - 1
#: Smallest transport frame after the proofs: a tag plus the 1-byte frame type.
MIN_TRANSPORT_MESSAGE = TAGLEN + 1
#: CLOSE reasons are for humans and logs; longer ones are cut (at a character boundary).
MAX_CLOSE_REASON = 256

_LENGTH = struct.Struct(">H")
_ROLE_BYTE = {"initiator": b"i", "responder": b"r"}

# What the library raises when a peer's bytes are bad (as in ``session/noise_ik.py``):
# a failed AEAD tag, an all-zero X25519 output from a low-order key (``cryptography``
# raises ValueError, Noise §4.1 allows it), a message out of turn, nonce exhaustion.
_REMOTE_ERRORS = (
    InvalidTag,
    ValueError,
    NoiseValueError,
    NoiseInvalidMessage,
    NoiseHandshakeError,
    NoiseMaxNonceError,
)


# ----------------------------------------------------------------------------- Noise


def link_prologue(channel_id: bytes) -> bytes:
    """The Noise prologue of a link in channel ``channel_id``."""
    return PROLOGUE_PREFIX + channel_id


class XXpsk3Handshake:
    """One party's state during an XXpsk3 handshake (Noise §7.5, §9)::

        -> e
        <- e, ee, s, es
        -> s, se, psk

    Wraps ``noiseprotocol`` like :class:`btchat.session.noise_ik.IKHandshake`: every
    library exception on hostile input becomes :class:`NoiseError`. ``static_private``
    and ``ephemeral_private`` exist only so tests can replay the cacophony vector; a link
    passes neither and gets fresh keys.
    """

    def __init__(
        self,
        *,
        initiator: bool,
        psk: bytes,
        prologue: bytes,
        static_private: bytes | None = None,
        ephemeral_private: bytes | None = None,
    ) -> None:
        if len(psk) != 32:
            raise ValueError("a Noise PSK is 32 bytes")  # Noise §9.1
        if static_private is None:
            static_private = X25519PrivateKey.generate().private_bytes_raw()
        if len(static_private) != DHLEN:
            raise ValueError("a static X25519 private key is 32 bytes")
        conn = NoiseConnection.from_name(PROTOCOL_NAME)
        if initiator:
            conn.set_as_initiator()
        else:
            conn.set_as_responder()
        conn.set_psks(psk=bytes(psk))
        conn.set_prologue(bytes(prologue))
        conn.set_keypair_from_private_bytes(Keypair.STATIC, static_private)
        if ephemeral_private is not None:
            conn.set_keypair_from_private_bytes(Keypair.EPHEMERAL, ephemeral_private)
        try:
            conn.start_handshake()
        except (NoisePSKError, NoiseValidationError) as exc:  # our arguments, not the peer's
            raise ValueError(f"cannot start the handshake: {exc}") from None
        self._conn = conn
        self._initiator = initiator

    @property
    def initiator(self) -> bool:
        return self._initiator

    @property
    def complete(self) -> bool:
        """True once ``Split()`` has run (after message 3)."""
        return bool(self._conn.handshake_finished)

    @property
    def handshake_hash(self) -> bytes:
        """``h`` after ``Split()``, for channel binding (Noise §11.2)."""
        if not self.complete:
            raise RuntimeError("the handshake hash is final only after the handshake")
        return bytes(self._conn.get_handshake_hash())

    def write_message(self, payload: bytes) -> bytes:
        """``WriteMessage`` (Noise §5.3); raises :class:`NoiseError` on a bad peer key.

        Writing can fail because of the peer: the responder computes ``ee`` while
        writing message 2, and a low-order ``e`` from message 1 makes that DH all zeros.
        """
        try:
            return bytes(self._conn.write_message(bytes(payload)))
        except _REMOTE_ERRORS as exc:
            raise NoiseError(f"handshake message not written ({type(exc).__name__})") from None

    def read_message(self, message: bytes) -> bytes:
        """``ReadMessage`` (Noise §5.3); raises :class:`NoiseError` on any bad input.

        After an error this object is unusable (Noise §5: abandon the handshake).
        """
        if len(message) > MAX_MESSAGE_LEN:
            raise NoiseError("handshake message longer than 65535 bytes")
        try:
            return bytes(self._conn.read_message(bytes(message)))
        except _REMOTE_ERRORS as exc:
            raise NoiseError(f"handshake message rejected ({type(exc).__name__})") from None

    def transport(self) -> Transport:
        """The transport cipher states from ``Split()`` (Noise §5.2)."""
        if not self.complete:
            raise RuntimeError("the handshake is not complete")
        # The library keeps the key pairs (our ephemeral private key included) after
        # Split(); nothing needs them any more, so drop them for forward secrecy.
        self._conn.noise_protocol.keypairs = dict.fromkeys(("s", "e", "rs", "re"))
        return Transport(self._conn)


# ----------------------------------------------------------------------------- config


@dataclass(frozen=True)
class LinkConfig:
    """Timers, in seconds of the caller's clock.

    ``keepalive`` must be shorter than ``idle_timeout``: our PINGs keep the peer's idle
    timer from firing, and theirs keep ours.
    """

    #: From construction until both proofs are checked.
    handshake_timeout: float = 10.0
    #: Send a PING after this long without sending anything.
    keepalive: float = 15.0
    #: Fail after this long without receiving anything.
    idle_timeout: float = 45.0

    def __post_init__(self) -> None:
        for name in ("handshake_timeout", "keepalive", "idle_timeout"):
            if not getattr(self, name) > 0:
                raise ValueError(f"LinkConfig.{name} must be positive")
        if self.keepalive >= self.idle_timeout:
            raise ValueError("LinkConfig.keepalive must be shorter than idle_timeout")


# ----------------------------------------------------------------------------- events


@dataclass(frozen=True)
class LinkEstablished:
    """The peer holds the channel PSK, proved ``identity`` and was authorized."""

    identity: bytes
    #: Noise §11.2 channel binding: equal on both sides, unique to this link.
    handshake_hash: bytes


@dataclass(frozen=True)
class LinkData:
    """One DATA frame's payload, delivered in order, exactly once, authenticated."""

    payload: bytes


@dataclass(frozen=True)
class LinkClosed:
    """An orderly end: we called :meth:`Link.close`, or the peer sent CLOSE."""

    reason: str
    #: Whether the peer's CLOSE ended the link (a local close's reason is the caller's).
    by_peer: bool = False


@dataclass(frozen=True)
class LinkFailed:
    """The link ended without an orderly CLOSE: refusal, bad input, timeout, lost stream."""

    reason: str


LinkEvent = LinkEstablished | LinkData | LinkClosed | LinkFailed


class LinkFrameType(enum.IntEnum):
    """The first plaintext byte of every transport frame after the proofs."""

    DATA = 0  # body: application payload
    PING = 1  # body: empty; the peer answers PONG
    PONG = 2  # body: empty
    CLOSE = 3  # body: utf-8 reason; the last frame the sender sends


_PREFIX = {t: bytes([t]) for t in LinkFrameType}


class _State(enum.Enum):
    HANDSHAKE = "handshake"  # Noise messages 1-3 in flight
    PROVING = "proving"  # Split() done; waiting for the peer's proof
    ESTABLISHED = "established"
    ENDED = "ended"  # closed or failed; input is ignored from now on


#: Which end of the TCP connection we are: the initiator dialled.
Role = Literal["initiator", "responder"]
#: ``authorize(identity_public_key) -> bool``: may this member link with us?
Authorize = Callable[[bytes], bool]


def proof_message(channel_id: bytes, role: Role, handshake_hash: bytes) -> bytes:
    """What the ``role`` side of a link signs with its identity key."""
    return PROOF_CONTEXT + channel_id + _ROLE_BYTE[role] + handshake_hash


# ----------------------------------------------------------------------------- link


class Link:
    """One link to one channel member, as a state machine without I/O.

    Feed what arrived with :meth:`receive_data`, write what :meth:`data_to_send` returns,
    arm one timer from :meth:`get_timer` and call :meth:`handle_timer` when it is due,
    and drain :meth:`next_event`. Every ``now`` comes from one monotonic clock.

    ``authorize(identity)`` is called once, after the peer's proof verified; only a
    return value of exactly ``True`` admits it (fail closed). If it raises, the link
    fails (the responder sending nothing) and the exception propagates out of
    :meth:`receive_data`: a bug in the caller's code, not the peer's doing.
    """

    def __init__(
        self,
        role: Role,
        *,
        identity: Identity,
        channel_id: bytes,
        psk: bytes,
        authorize: Authorize,
        now: float,
        config: LinkConfig = LinkConfig(),  # frozen, so one shared default is safe
    ) -> None:
        if role not in _ROLE_BYTE:
            raise ValueError(f"role must be 'initiator' or 'responder', not {role!r}")
        if not isinstance(identity, Identity):
            raise TypeError("identity must be an Identity")
        if len(channel_id) != 32:
            raise ValueError("a channel id is 32 bytes")
        if len(psk) != 32:
            raise ValueError("a link PSK is 32 bytes")
        self.role: Role = role
        self.config = config
        self.channel_id = bytes(channel_id)
        self._identity = identity
        self._authorize = authorize
        initiator = role == "initiator"
        self._peer_role: Role = "responder" if initiator else "initiator"
        self._noise: XXpsk3Handshake | None = XXpsk3Handshake(
            initiator=initiator, psk=bytes(psk), prologue=link_prologue(self.channel_id)
        )
        self._transport: Transport | None = None
        self._state = _State.HANDSHAKE
        self._step = 0  # index of the next handshake message, sent or received
        self._inbuf = bytearray()
        self._outbuf = bytearray()
        self._events: deque[LinkEvent] = deque()
        self._hash: bytes | None = None  # after Split(); public only once established
        self._peer: bytes | None = None
        self._handshake_deadline = now + config.handshake_timeout
        self._last_sent = now
        self._last_received = now
        if initiator:
            self._write_handshake(now)

    # ------------------------------------------------------------------ properties

    @property
    def established(self) -> bool:
        """Both proofs are checked and :meth:`send` may be called."""
        return self._state is _State.ESTABLISHED

    @property
    def closed(self) -> bool:
        """The link has ended, cleanly or not; it will process no more input."""
        return self._state is _State.ENDED

    @property
    def remote_identity(self) -> bytes | None:
        """The peer's proven, authorized identity key, once established."""
        return self._peer

    @property
    def handshake_hash(self) -> bytes | None:
        """The final handshake hash, once established (None before, so nobody binds to
        a link whose peer is not yet proven)."""
        return self._hash if self._peer is not None else None

    @property
    def pending_output(self) -> int:
        """Bytes queued for :meth:`data_to_send`, for a shell's write-backlog accounting."""
        return len(self._outbuf)

    # ------------------------------------------------------------------ caller API

    def send(self, payload: bytes, now: float) -> None:
        """Queue one DATA frame. Raises on misuse; never on the peer's behaviour."""
        if self._state is _State.ENDED:
            raise RuntimeError("the link is closed")
        if self._state is not _State.ESTABLISHED:
            raise RuntimeError("the link is not established yet")
        if not isinstance(payload, bytes | bytearray | memoryview):
            raise TypeError("payload must be bytes")
        if len(payload) > MAX_PAYLOAD:
            raise ValueError(f"payload of {len(payload)} bytes exceeds {MAX_PAYLOAD}")
        self._send_frame(LinkFrameType.DATA, bytes(payload), now)

    def close(self, reason: str, now: float) -> None:
        """End the link; an established one tells the peer why. Idempotent."""
        if self._state is _State.ENDED:
            return
        if self._state is _State.ESTABLISHED:
            body = reason.encode("utf-8")[:MAX_CLOSE_REASON]
            body = body.decode("utf-8", "ignore").encode("utf-8")  # whole characters
            self._send_frame(LinkFrameType.CLOSE, body, now)
        else:
            self._outbuf.clear()  # half a handshake is of no use to the peer
        self._end(LinkClosed(reason))

    def abort(self, reason: str, now: float) -> None:
        """Fail the link at once, sending nothing more (for the shell: e.g. a peer that
        does not read). Idempotent."""
        if self._state is not _State.ENDED:
            self._fail(reason)

    def connection_lost(self, now: float) -> None:
        """The stream ended (EOF or reset) under us."""
        if self._state is _State.ESTABLISHED:
            self._fail("connection lost without CLOSE")
        elif self._state is not _State.ENDED:
            self._fail("connection lost during the handshake")

    def data_to_send(self) -> bytes:
        """Bytes to write to the stream now, in order; empty when there are none."""
        if not self._outbuf:
            return b""
        data = bytes(self._outbuf)
        self._outbuf.clear()
        return data

    def next_event(self) -> LinkEvent | None:
        return self._events.popleft() if self._events else None

    def get_timer(self) -> float | None:
        """When :meth:`handle_timer` should next run, or None if never."""
        if self._state is _State.ENDED:
            return None
        if self._state is not _State.ESTABLISHED:
            return self._handshake_deadline
        return min(self._idle_deadline(), self._keepalive_due())

    # The deadlines come from these helpers only, so handle_timer fires exactly at the
    # time get_timer announced ((a + b) - a may be < b in floats).
    def _idle_deadline(self) -> float:
        return self._last_received + self.config.idle_timeout

    def _keepalive_due(self) -> float:
        return self._last_sent + self.config.keepalive

    def handle_timer(self, now: float) -> None:
        """Fire whatever is due: handshake timeout, idle timeout, keepalive."""
        if self._state is _State.ENDED:
            return
        cfg = self.config
        if self._state is not _State.ESTABLISHED:
            if now >= self._handshake_deadline:
                self._fail(f"handshake timed out after {cfg.handshake_timeout:g} s")
            return
        if now >= self._idle_deadline():
            self._fail(f"idle timeout: nothing received for {cfg.idle_timeout:g} s")
            return
        if now >= self._keepalive_due():
            self._send_frame(LinkFrameType.PING, b"", now)

    def receive_data(self, data: bytes, now: float) -> None:
        """Feed bytes from the stream, in any chunking; never raises on their content."""
        if self._state is _State.ENDED or not data:
            return
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
                elif self._state is _State.PROVING:
                    self._on_proof(message, now)
                else:
                    self._on_frame(message, now)
        if self._state is _State.ENDED:
            buf.clear()
        else:
            del buf[:pos]

    # ------------------------------------------------------------------ input

    def _length_ok(self, length: int) -> bool:
        # Every length is checked as soon as its two bytes arrive, before any body is
        # buffered: the handshake and the proof have exact sizes.
        if self._state is _State.HANDSHAKE:
            expected = HANDSHAKE_MESSAGE_LENGTHS[self._step]
            if length != expected:
                self._fail(
                    f"handshake message {self._step + 1} must be {expected} bytes, not {length}"
                )
                return False
        elif self._state is _State.PROVING:
            if length != PROOF_MESSAGE_LEN:
                self._fail(f"expected the peer's identity proof first, got a {length}-byte frame")
                return False
        elif length < MIN_TRANSPORT_MESSAGE:
            self._fail(f"malformed frame: {length} bytes is shorter than a transport message")
            return False
        return True

    def _on_handshake_message(self, message: bytes, now: float) -> None:
        noise = self._noise
        assert noise is not None
        number = self._step + 1
        try:
            payload = noise.read_message(message)
        except NoiseError as exc:
            if number == 3:
                reason = "message 3 does not authenticate (wrong channel key?)"
            else:
                reason = f"message {number} does not authenticate"
            self._fail(f"handshake failed: {reason} ({exc})")
            return
        if payload:
            self._fail(f"handshake failed: message {number} has a payload")
            return
        self._step += 1
        self._last_received = now
        if self.role == "initiator" or self._step == 1:
            self._write_handshake(now)  # message 2 (responder) or 3 (initiator)
        if self._state is _State.ENDED or not noise.complete:
            return
        self._transport = noise.transport()
        self._hash = noise.handshake_hash
        self._noise = None  # Noise §5: the HandshakeState is deleted after Split()
        self._state = _State.PROVING
        if self.role == "initiator":
            self._send_proof(now)  # in the same write as message 3

    def _on_proof(self, message: bytes, now: float) -> None:
        plaintext = self._decrypt(message, now)
        if plaintext is None:
            return
        identity, signature = plaintext[:32], plaintext[32:]
        assert self._hash is not None
        signed = proof_message(self.channel_id, self._peer_role, self._hash)
        if not verify_signature(identity, signature, signed):
            self._fail(f"the {self._peer_role}'s identity proof does not verify")
            return
        try:
            allowed = self._authorize(identity)
        except BaseException:
            self._fail(f"authorizing the {self._peer_role} raised an exception")
            raise
        if allowed is not True:  # fail closed: only an explicit True admits the peer
            self._fail(f"the {self._peer_role}'s identity is not authorized")
            return
        if self.role == "responder":
            self._send_proof(now)  # only now: an unauthorized peer learns nothing of us
        self._state = _State.ESTABLISHED
        self._peer = identity
        self._events.append(LinkEstablished(identity, self._hash))

    def _on_frame(self, message: bytes, now: float) -> None:
        plaintext = self._decrypt(message, now)
        if plaintext is None:
            return
        ftype, body = plaintext[0], plaintext[1:]
        if ftype == LinkFrameType.DATA:
            self._events.append(LinkData(body))
        elif ftype == LinkFrameType.PING:
            if body:
                self._fail("malformed PING frame")
                return
            self._send_frame(LinkFrameType.PONG, b"", now)
        elif ftype == LinkFrameType.PONG:
            if body:
                self._fail("malformed PONG frame")
        elif ftype == LinkFrameType.CLOSE:
            # Shown to users and logged: keep no more than we would send.
            reason = body[:MAX_CLOSE_REASON].decode("utf-8", "replace")
            self._end(LinkClosed(reason, by_peer=True))
        else:
            self._fail(f"unknown frame type {ftype}")

    def _decrypt(self, message: bytes, now: float) -> bytes | None:
        transport = self._transport
        assert transport is not None
        try:
            plaintext = transport.decrypt(message)
        except NoiseError:
            # The implicit nonce (Noise §5) makes tampered, replayed, reordered and
            # dropped frames all fail here; we end the link rather than resynchronise.
            self._fail("frame failed authentication (tampered, replayed or reordered)")
            return None
        self._last_received = now
        return plaintext

    # ------------------------------------------------------------------ output

    def _write_handshake(self, now: float) -> None:
        noise = self._noise
        assert noise is not None
        try:
            message = noise.write_message(b"")
        except NoiseError as exc:
            self._fail(f"handshake failed: the peer's ephemeral key is unusable ({exc})")
            return
        self._step += 1
        self._outbuf += _LENGTH.pack(len(message))
        self._outbuf += message
        self._last_sent = now

    def _send_proof(self, now: float) -> None:
        assert self._hash is not None
        signed = proof_message(self.channel_id, self.role, self._hash)
        proof = self._identity.public_key + self._identity.sign(signed)
        self._write_transport(proof, now)

    def _send_frame(self, ftype: LinkFrameType, body: bytes, now: float) -> None:
        self._write_transport(_PREFIX[ftype] + body, now)

    def _write_transport(self, plaintext: bytes, now: float) -> None:
        transport = self._transport
        assert transport is not None
        ciphertext = transport.encrypt(plaintext)
        out = self._outbuf
        out += _LENGTH.pack(len(ciphertext))
        out += ciphertext
        self._last_sent = now

    # ------------------------------------------------------------------ endings

    def _fail(self, reason: str) -> None:
        # A failed link sends nothing more: in particular a refusing responder never
        # sends its proof, and queued frames are dropped.
        self._outbuf.clear()
        self._end(LinkFailed(reason))

    def _end(self, event: LinkClosed | LinkFailed) -> None:
        self._state = _State.ENDED
        self._noise = None
        self._transport = None  # drop the keys
        self._events.append(event)
