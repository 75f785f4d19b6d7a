"""A narrow wrapper around ``noiseprotocol`` for ``Noise_IK_25519_ChaChaPoly_BLAKE2b``.

How this works: :class:`IKHandshake` sets up the library's ``HandshakeState`` (Noise
§5.3) for one side of an IK handshake; driving it, the :class:`Transport` it hands out
after ``Split()`` and the one error type :class:`NoiseError` are the stream layer's
(:mod:`btchat.stream.noise`), shared with the channel link's XXpsk3.

Why the library and not our own code: ``noiseprotocol`` 0.3.1 reproduces every cacophony
vector for this protocol (``tests/test_session_noise.py`` runs them through this wrapper
with fixed ephemerals) and its ``CipherState.rekey()`` is the §4.2 default ``REKEY``
(first 32 bytes of ``ENCRYPT(k, 2^64-1, "", zeros)``, nonce unchanged, §11.3), which
the same tests check against an independent computation. It creates one AEAD object per
key and reuses it for every message.

The wrapper pins the protocol name: a btchat session never negotiates algorithms.
"""

from __future__ import annotations

from noise.connection import Keypair, NoiseConnection

from btchat.stream.noise import (
    DHLEN,
    HASHLEN,
    MAX_MESSAGE_LEN,
    TAGLEN,
    NoiseError,
    NoiseHandshake,
    Transport,
    new_connection,
)

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


class IKHandshake(NoiseHandshake):
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
        if remote_static is not None and len(remote_static) != DHLEN:
            raise ValueError("a static X25519 public key is 32 bytes")
        conn = new_connection(PROTOCOL_NAME, initiator, prologue, static_private, ephemeral_private)
        if remote_static is not None:
            conn.set_keypair_from_public_bytes(Keypair.REMOTE_STATIC, remote_static)
        conn.start_handshake()
        super().__init__(conn, initiator=initiator)
        self._remote_static = remote_static

    @property
    def remote_static(self) -> bytes | None:
        """The peer's static public key: pre-known (initiator) or authenticated (responder).

        For a responder this is set only after message 1 decrypted, i.e. after the ``ss``
        and payload AEAD checks succeeded, so it is a key the sender holds.
        """
        return self._remote_static

    def read_message(self, message: bytes) -> bytes:
        payload = super().read_message(message)
        if not self._initiator and self._remote_static is None:
            self._remote_static = _learned_remote_static(self._conn)
        return payload


def _learned_remote_static(conn: NoiseConnection) -> bytes:
    # The library has no public accessor for ``rs`` (Noise §5.3); it lives on the
    # HandshakeState until Split(), which in IK happens only after message 2.
    hs = getattr(conn.noise_protocol, "handshake_state", None)
    public = getattr(getattr(hs, "rs", None), "public_bytes", None)
    if not isinstance(public, bytes) or len(public) != DHLEN:
        raise NoiseError("handshake did not yield the peer's static key")
    return public
