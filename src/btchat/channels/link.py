"""A sans-I/O link between two members of one channel: Noise XXpsk3, then identity proofs.

Why not the 1:1 session (:mod:`btchat.session.core`): its Noise IK needs the
responder's static key in advance, but channel members find each other only as
``IP:port`` (DHT, trackers, LAN, peer exchange). What they share is the channel secret,
so a link is ``Noise_XXpsk3_25519_ChaChaPoly_BLAKE2b`` keyed by a PSK the channel code
derives from that secret, and each side then proves its Ed25519 identity by signing the
handshake hash.

This module is the handshake and the proofs; after them the link is the stream
layer's (:class:`btchat.stream.core.SecureStream`: framing, frame types, timers,
close, substreams), in the link dialect below.

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
from collections.abc import Callable
from dataclasses import dataclass

from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from noise.exceptions import NoisePSKError, NoiseValidationError

from btchat.identity.keys import Identity, verify_signature
from btchat.stream.core import ROLES, Phase, Role, SecureStream, StreamConfig
from btchat.stream.events import ConnectionClosed, ConnectionFailed, DataReceived, StreamEvent
from btchat.stream.frames import FRAME_HEADER, MAX_CLOSE_REASON, MAX_FRAME_BODY, Wire
from btchat.stream.noise import DHLEN, TAGLEN, NoiseError, NoiseHandshake, new_connection

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
MAX_PAYLOAD = MAX_FRAME_BODY
_ROLE_BYTE = {"initiator": b"i", "responder": b"r"}

# ----------------------------------------------------------------------------- Noise


def link_prologue(channel_id: bytes) -> bytes:
    """The Noise prologue of a link in channel ``channel_id``."""
    return PROLOGUE_PREFIX + channel_id


class XXpsk3Handshake(NoiseHandshake):
    """One party's state during an XXpsk3 handshake (Noise §7.5, §9)::

        -> e
        <- e, ee, s, es
        -> s, se, psk

    Driven by :class:`~btchat.stream.noise.NoiseHandshake`, as the session's IK is: every
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
        conn = new_connection(PROTOCOL_NAME, initiator, prologue, static_private, ephemeral_private)
        conn.set_psks(psk=bytes(psk))
        try:
            conn.start_handshake()
        except (NoisePSKError, NoiseValidationError) as exc:  # our arguments, not the peer's
            raise ValueError(f"cannot start the handshake: {exc}") from None
        super().__init__(conn, initiator=initiator)


# ----------------------------------------------------------------------------- config


@dataclass(frozen=True)
class LinkConfig(StreamConfig):
    """A link's timers (:class:`~btchat.stream.core.StreamConfig`); links never rekey."""

    #: Send a PING after this long without sending anything.
    keepalive: float = 15.0
    #: Fail after this long without receiving anything.
    idle_timeout: float = 45.0


# ----------------------------------------------------------------------------- events


@dataclass(frozen=True)
class LinkEstablished:
    """The peer holds the channel PSK, proved ``identity`` and was authorized."""

    identity: bytes
    #: Noise §11.2 channel binding: equal on both sides, unique to this link.
    handshake_hash: bytes


#: One DATA frame's payload, delivered in order, exactly once, authenticated.
LinkData = DataReceived
#: An orderly end: we called :meth:`Link.close`, or the peer sent CLOSE.
LinkClosed = ConnectionClosed
#: The link ended without an orderly CLOSE: refusal, bad input, timeout, lost stream.
LinkFailed = ConnectionFailed
LinkEvent = LinkEstablished | StreamEvent


class LinkFrameType(enum.IntEnum):
    """The first plaintext byte of every transport frame after the proofs (v1)."""

    DATA = 0  # body: application payload
    PING = 1  # body: empty; the peer answers PONG
    PONG = 2  # body: empty
    CLOSE = 3  # body: utf-8 reason; the last frame the sender sends


WIRE = Wire.of(
    "link",
    LinkFrameType,
    idle_reason="idle timeout: nothing received for {timeout:g} s",
    close_last=False,
)

#: ``authorize(identity_public_key) -> bool``: may this member link with us?
Authorize = Callable[[bytes], bool]


def proof_message(channel_id: bytes, role: Role, handshake_hash: bytes) -> bytes:
    """What the ``role`` side of a link signs with its identity key."""
    return PROOF_CONTEXT + channel_id + _ROLE_BYTE[role] + handshake_hash


# ----------------------------------------------------------------------------- link


class Link(SecureStream):
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
        config: StreamConfig = LinkConfig(),  # frozen, so one shared default is safe
        fixed_keys: tuple[bytes, bytes] | None = None,
    ) -> None:
        if role not in ROLES:
            raise ValueError(f"role must be 'initiator' or 'responder', not {role!r}")
        if not isinstance(identity, Identity):
            raise TypeError("identity must be an Identity")
        if len(channel_id) != 32:
            raise ValueError("a channel id is 32 bytes")
        if len(psk) != 32:
            raise ValueError("a link PSK is 32 bytes")
        super().__init__(role, WIRE, config, now)
        self.channel_id = bytes(channel_id)
        self._identity = identity
        self._authorize = authorize
        initiator = role == "initiator"
        self._peer_role: Role = "responder" if initiator else "initiator"
        # ``fixed_keys`` (static, ephemeral private keys) only for the published test
        # vectors (docs/vectors/sessions.json); a real link gets fresh keys.
        static, ephemeral = fixed_keys if fixed_keys is not None else (None, None)
        self._noise: XXpsk3Handshake | None = XXpsk3Handshake(
            initiator=initiator,
            psk=bytes(psk),
            prologue=link_prologue(self.channel_id),
            static_private=static,
            ephemeral_private=ephemeral,
        )
        self._step = 0  # index of the next handshake message, sent or received
        self._proving = False  # Split() done; waiting for the peer's proof
        self._hash: bytes | None = None  # after Split(); public only once established
        self._peer: bytes | None = None
        if initiator:
            self._write_handshake(now)

    # ------------------------------------------------------------------ properties

    @property
    def remote_identity(self) -> bytes | None:
        """The peer's proven, authorized identity key, once established."""
        return self._peer

    @property
    def handshake_hash(self) -> bytes | None:
        """The final handshake hash, once established (None before, so nobody binds to
        a link whose peer is not yet proven)."""
        return self._hash if self._peer is not None else None

    # ------------------------------------------------------------------ handshake

    def _handshake_length_ok(self, length: int) -> bool:
        # Every length is checked as soon as its two bytes arrive, before any body is
        # buffered: the handshake and the proof have exact sizes.
        if self._proving:
            if length != PROOF_MESSAGE_LEN:
                self._fail(f"expected the peer's identity proof first, got a {length}-byte frame")
                return False
            return True
        expected = HANDSHAKE_MESSAGE_LENGTHS[self._step]
        if length != expected:
            self._fail(f"handshake message {self._step + 1} must be {expected} bytes, not {length}")
            return False
        return True

    def _on_handshake_message(self, message: bytes, now: float) -> None:
        if self._proving:
            self._on_proof(message, now)
            return
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
        if self._state is Phase.ENDED or not noise.complete:
            return
        self._install_transport(noise.transport(), confirm=False)
        self._hash = noise.handshake_hash
        self._noise = None  # Noise §5: the HandshakeState is deleted after Split()
        self._proving = True
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
        self._proving = False
        self._peer = identity
        self._establish(now)
        self._emit(LinkEstablished(identity, self._hash))

    def _write_handshake(self, now: float) -> None:
        noise = self._noise
        assert noise is not None
        try:
            message = noise.write_message(b"")
        except NoiseError as exc:
            self._fail(f"handshake failed: the peer's ephemeral key is unusable ({exc})")
            return
        self._step += 1
        self._write_message(message, now)

    def _send_proof(self, now: float) -> None:
        assert self._hash is not None
        signed = proof_message(self.channel_id, self.role, self._hash)
        self._encrypt_message(self._identity.public_key + self._identity.sign(signed), now)

    def _fail(self, reason: str) -> None:
        self._noise = None
        super()._fail(reason)
