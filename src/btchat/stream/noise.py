"""The Noise layer under every secure stream: one wrapper around ``noiseprotocol``.

How this works: a handshake pattern (IK for sessions in :mod:`btchat.session.noise_ik`,
XXpsk3 for channel links in :mod:`btchat.channels.link`) builds and starts a library
``NoiseConnection``; :class:`NoiseHandshake` then drives its ``HandshakeState``
(Noise §5.3) the same way for both, and once ``Split()`` has run (§5.2) hands out a
:class:`Transport` holding the two transport ``CipherState`` objects, which is the
:class:`~btchat.stream.core.Cipher` the stream core runs on. Everything the library may
raise on hostile input (``InvalidTag``, ``ValueError`` from X25519, its own ad-hoc
exceptions) becomes one error type, :class:`NoiseError`, so the cores have exactly one
thing to catch.
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
from btchat.stream.frames import MAX_MESSAGE_LEN, TAGLEN

__all__ = [
    "DHLEN",
    "HASHLEN",
    "MAX_MESSAGE_LEN",
    "TAGLEN",
    "NoiseError",
    "NoiseHandshake",
    "Transport",
    "new_connection",
]

#: Noise §12.1: X25519 public keys and DH outputs are 32 bytes.
DHLEN = 32
#: Noise §12.8: BLAKE2b output, hence the handshake hash, is 64 bytes.
HASHLEN = 64

# What the library raises when a peer's bytes are bad: a failed AEAD tag (DECRYPT, §4.2),
# a wrong-length or low-order X25519 key (§4.1 allows signalling an error on an all-zero
# DH output; ``cryptography`` does), a message out of turn, or nonce exhaustion (§5.1).
REMOTE_ERRORS = (
    InvalidTag,
    ValueError,
    NoiseValueError,
    NoiseInvalidMessage,
    NoiseHandshakeError,
    NoiseMaxNonceError,
)


class NoiseError(CipherError):
    """A Noise message was rejected: it does not authenticate, or is malformed."""


def new_connection(
    protocol_name: bytes,
    initiator: bool,
    prologue: bytes,
    static_private: bytes,
    ephemeral_private: bytes | None = None,
) -> NoiseConnection:
    """A library connection for one handshake, set up but not started: the role, the
    prologue (Noise §6: both sides mix it into ``h``, so a mismatch fails the
    handshake), our static key and, only to replay test vectors, a fixed ephemeral key
    (a real handshake lets the library generate one, §4.1). The pattern adds the rest
    (a PSK, the peer's static key) and calls ``start_handshake``."""
    if len(static_private) != DHLEN:
        raise ValueError("a static X25519 private key is 32 bytes")
    conn = NoiseConnection.from_name(protocol_name)
    if initiator:
        conn.set_as_initiator()
    else:
        conn.set_as_responder()
    conn.set_prologue(bytes(prologue))
    conn.set_keypair_from_private_bytes(Keypair.STATIC, static_private)
    if ephemeral_private is not None:
        conn.set_keypair_from_private_bytes(Keypair.EPHEMERAL, ephemeral_private)
    return conn


class NoiseHandshake:
    """One party's state during a Noise handshake, over a started ``NoiseConnection``."""

    def __init__(self, conn: NoiseConnection, *, initiator: bool) -> None:
        self._conn = conn
        self._initiator = initiator

    @property
    def initiator(self) -> bool:
        return self._initiator

    @property
    def complete(self) -> bool:
        """True once ``Split()`` has run (Noise §5.3, after the last pattern)."""
        return bool(self._conn.handshake_finished)

    @property
    def handshake_hash(self) -> bytes:
        """``h`` after ``Split()``, for channel binding (Noise §11.2)."""
        if not self.complete:
            raise RuntimeError("the handshake hash is final only after the handshake")
        return bytes(self._conn.get_handshake_hash())

    def write_message(self, payload: bytes) -> bytes:
        """``WriteMessage`` (Noise §5.3); raises :class:`NoiseError` on a bad peer key.

        Writing can fail because of the peer: a DH with a low-order key it sent in an
        earlier message is all zeros.
        """
        try:
            return bytes(self._conn.write_message(bytes(payload)))
        except REMOTE_ERRORS as exc:
            raise NoiseError(f"handshake message not written ({type(exc).__name__})") from None

    def read_message(self, message: bytes) -> bytes:
        """``ReadMessage`` (Noise §5.3); raises :class:`NoiseError` on any bad input.

        Per §5 a failed handshake must be abandoned: after an error this object is
        unusable and the caller drops it.
        """
        if len(message) > MAX_MESSAGE_LEN:  # Noise §3
            raise NoiseError("handshake message longer than 65535 bytes")
        try:
            return bytes(self._conn.read_message(bytes(message)))
        except REMOTE_ERRORS as exc:
            raise NoiseError(f"handshake message rejected ({type(exc).__name__})") from None

    def transport(self) -> Transport:
        """The transport cipher states from ``Split()`` (Noise §5.2)."""
        if not self.complete:
            raise RuntimeError("the handshake is not complete")
        # The library keeps the key pairs (our ephemeral private key included) after
        # Split(); nothing needs them any more, so drop them for forward secrecy.
        self._conn.noise_protocol.keypairs = dict.fromkeys(("s", "e", "rs", "re"))
        return Transport(self._conn)


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

    def decrypt(self, ciphertext: bytes | memoryview) -> bytes:
        """``DecryptWithAd("", ciphertext)``; raises :class:`NoiseError` if it fails.

        On failure the nonce is not advanced (§5.1); the stream gives up anyway.
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
