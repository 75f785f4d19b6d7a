"""A narrow wrapper around ``noiseprotocol`` for ``Noise_IK_25519_ChaChaPoly_BLAKE2b``.

How this works: :class:`IKHandshake` drives the library's ``HandshakeState`` (Noise §5.3)
for one side of an IK handshake and, once ``Split()`` has run (§5.2), hands out a
:class:`Transport` holding the two transport ``CipherState`` objects. Everything the
library may raise on hostile input (``InvalidTag``, ``ValueError`` from X25519,
its own ad-hoc exceptions) is turned into one error type, :class:`NoiseError`, so the
session core has exactly one thing to catch.

Why the library and not our own code: ``noiseprotocol`` 0.3.1 reproduces every cacophony
vector for this protocol (``tests/test_session_noise.py`` runs them through this wrapper
with fixed ephemerals) and its ``CipherState.rekey()`` is the §4.2 default ``REKEY``
(first 32 bytes of ``ENCRYPT(k, 2^64-1, "", zeros)``, nonce unchanged, §11.3), which
the same tests check against an independent computation. It creates one AEAD object per
key and reuses it for every message.

The wrapper pins the protocol name: a btchat session never negotiates algorithms.
"""

from __future__ import annotations

from cryptography.exceptions import InvalidTag
from noise.connection import Keypair, NoiseConnection
from noise.exceptions import (
    NoiseHandshakeError,
    NoiseInvalidMessage,
    NoiseMaxNonceError,
    NoiseValueError,
)

from btchat.stream.core import CipherError

__all__ = [
    "DHLEN",
    "HASHLEN",
    "MAX_MESSAGE_LEN",
    "PROTOCOL_NAME",
    "TAGLEN",
    "IKHandshake",
    "NoiseError",
    "Transport",
]

#: The only protocol btchat sessions speak (Noise §8: pattern, DH, cipher, hash).
PROTOCOL_NAME = b"Noise_IK_25519_ChaChaPoly_BLAKE2b"
#: Noise §12.1: X25519 public keys and DH outputs are 32 bytes.
DHLEN = 32
#: Noise §12.8: BLAKE2b output, hence the handshake hash, is 64 bytes.
HASHLEN = 64
#: Noise §3: AEAD ciphertexts carry a 16-byte authentication tag.
TAGLEN = 16
#: Noise §3: no Noise message (handshake or transport) exceeds 65535 bytes.
MAX_MESSAGE_LEN = 65535

# What the library raises when a peer's bytes are bad: a failed AEAD tag (DECRYPT, §4.2),
# a wrong-length or low-order X25519 key (§4.1 allows signalling an error on an all-zero
# DH output; ``cryptography`` does), a message out of turn, or nonce exhaustion (§5.1).
_REMOTE_ERRORS = (
    InvalidTag,
    ValueError,
    NoiseValueError,
    NoiseInvalidMessage,
    NoiseHandshakeError,
    NoiseMaxNonceError,
)


class NoiseError(CipherError):
    """A Noise message was rejected: it does not authenticate, or is malformed."""


class IKHandshake:
    """One party's state during an IK handshake (Noise §7.5)::

        <- s
        ...
        -> e, es, s, ss
        <- e, ee, se

    The initiator must know the responder's static key in advance (the ``<- s``
    pre-message); the responder learns the initiator's from message 1.

    ``ephemeral_private`` exists only so tests can replay the cacophony vectors; a real
    session lets the library generate a fresh ephemeral key (Noise §4.1
    ``GENERATE_KEYPAIR``). Reusing an ephemeral key destroys forward secrecy.
    """

    def __init__(
        self,
        *,
        initiator: bool,
        static_private: bytes,
        prologue: bytes,
        remote_static: bytes | None = None,
        ephemeral_private: bytes | None = None,
    ) -> None:
        if initiator and remote_static is None:
            raise ValueError("an IK initiator must know the responder's static key")
        if not initiator and remote_static is not None:
            raise ValueError("an IK responder learns the initiator's static key from it")
        if len(static_private) != DHLEN:
            raise ValueError("a static X25519 private key is 32 bytes")
        if remote_static is not None and len(remote_static) != DHLEN:
            raise ValueError("a static X25519 public key is 32 bytes")
        conn = NoiseConnection.from_name(PROTOCOL_NAME)
        if initiator:
            conn.set_as_initiator()
        else:
            conn.set_as_responder()
        # Noise §6: both sides mix the prologue into h, so a mismatch fails the handshake.
        conn.set_prologue(prologue)
        conn.set_keypair_from_private_bytes(Keypair.STATIC, static_private)
        if remote_static is not None:
            conn.set_keypair_from_public_bytes(Keypair.REMOTE_STATIC, remote_static)
        if ephemeral_private is not None:
            conn.set_keypair_from_private_bytes(Keypair.EPHEMERAL, ephemeral_private)
        conn.start_handshake()
        self._conn = conn
        self._initiator = initiator
        self._remote_static = remote_static

    @property
    def initiator(self) -> bool:
        return self._initiator

    @property
    def complete(self) -> bool:
        """True once ``Split()`` has run (Noise §5.3, after the last pattern)."""
        return bool(self._conn.handshake_finished)

    @property
    def remote_static(self) -> bytes | None:
        """The peer's static public key: pre-known (initiator) or authenticated (responder).

        For a responder this is set only after message 1 decrypted, i.e. after the ``ss``
        and payload AEAD checks succeeded, so it is a key the sender holds.
        """
        return self._remote_static

    @property
    def handshake_hash(self) -> bytes:
        """``h`` after ``Split()``, for channel binding (Noise §11.2)."""
        if not self.complete:
            raise RuntimeError("the handshake hash is final only after the handshake")
        return bytes(self._conn.get_handshake_hash())

    def write_message(self, payload: bytes) -> bytes:
        """``WriteMessage`` (Noise §5.3): tokens of the next pattern, then the payload."""
        return bytes(self._conn.write_message(payload))

    def read_message(self, message: bytes) -> bytes:
        """``ReadMessage`` (Noise §5.3); raises :class:`NoiseError` on any bad input.

        Per §5 a failed handshake must be abandoned: after an error this object is
        unusable and the caller drops it.
        """
        if len(message) > MAX_MESSAGE_LEN:  # Noise §3
            raise NoiseError("handshake message longer than 65535 bytes")
        try:
            payload = bytes(self._conn.read_message(bytes(message)))
        except _REMOTE_ERRORS as exc:
            raise NoiseError(f"handshake message rejected ({type(exc).__name__})") from None
        if not self._initiator and self._remote_static is None:
            self._remote_static = _learned_remote_static(self._conn)
        return payload

    def transport(self) -> Transport:
        """The transport cipher states from ``Split()`` (Noise §5.2)."""
        if not self.complete:
            raise RuntimeError("the handshake is not complete")
        return Transport(self._conn)


def _learned_remote_static(conn: NoiseConnection) -> bytes:
    # The library has no public accessor for ``rs`` (Noise §5.3); it lives on the
    # HandshakeState until Split(), which in IK happens only after message 2.
    hs = getattr(conn.noise_protocol, "handshake_state", None)
    public = getattr(getattr(hs, "rs", None), "public_bytes", None)
    if not isinstance(public, bytes) or len(public) != DHLEN:
        raise NoiseError("handshake did not yield the peer's static key")
    return public


class Transport:
    """The sending and receiving ``CipherState`` after ``Split()`` (Noise §5.1, §5.2).

    Transport messages use zero-length associated data (§5). Each side's nonce counts
    up from 0 and is never sent, so a replayed, dropped or reordered message fails
    decryption (§11.4 describes what we deliberately do not do).

    It drives the library's own CipherState objects (the ones its public
    ``NoiseConnection.encrypt``/``rekey_outbound_cipher`` use) directly, which skips a
    per-message type check and a copy.
    """

    def __init__(self, conn: NoiseConnection) -> None:
        self._conn = conn
        self._send = conn.noise_protocol.cipher_state_encrypt
        self._recv = conn.noise_protocol.cipher_state_decrypt

    def encrypt(self, plaintext: bytes) -> bytes:
        """``EncryptWithAd("", plaintext)`` on the sending CipherState."""
        return self._send.encrypt_with_ad(b"", plaintext)  # type: ignore[no-any-return]

    def decrypt(self, ciphertext: bytes) -> bytes:
        """``DecryptWithAd("", ciphertext)``; raises :class:`NoiseError` if it fails.

        On failure the nonce is not advanced (§5.1); the session gives up anyway.
        """
        try:
            return self._recv.decrypt_with_ad(b"", ciphertext)  # type: ignore[no-any-return]
        except (InvalidTag, NoiseMaxNonceError):
            raise NoiseError("transport message failed authentication") from None

    def rekey_send(self) -> None:
        """``Rekey()`` the sending CipherState (§11.3): new k, same n."""
        self._send.rekey()

    def rekey_receive(self) -> None:
        """``Rekey()`` the receiving CipherState (§11.3): new k, same n."""
        self._recv.rekey()

    @property
    def send_nonce(self) -> int:
        return int(self._send.n)

    @property
    def receive_nonce(self) -> int:
        return int(self._recv.n)
