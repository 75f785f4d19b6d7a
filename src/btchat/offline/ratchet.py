"""Forward secrecy for offline messages: X3DH-style prekeys and the Double Ratchet, by Olm.

The cryptography is vodozemac's Olm (Rust, audited), used as a library: its 3DH with
one-time prekeys is X3DH's key agreement, and its sessions are the Double Ratchet. We
add only the binding to btchat identities (the Olm identity key and prekeys are always
carried under a signature of the btchat identity key) and persistence.

State each device keeps (all in the message database, pickled under a key derived
from the identity seed): one Olm account (long-term Curve25519 key, unpublished and
published one-time keys, a fallback key), and per contact the Olm sessions. Nothing is
cached in memory between calls: every operation unpickles, works, and returns the new
pickles for the caller to commit in the same transaction as the packet it made or
read, so the database can never hold a ratchet that is ahead of its messages.

If that state is lost (a new database, a restored backup), packets encrypted for the
old sessions cannot be decrypted any more: :class:`RatchetError` with code ``no_session``
tells the caller, who shows a notice and asks the sender to start again (a reset).
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from typing import Any

import vodozemac

from btchat.codec.bencode import encode
from btchat.errors import PeerError
from btchat.identity.keys import Identity
from btchat.offline.state import MailboxState, RatchetPickles

__all__ = [
    "BUNDLE_ONE_TIME_KEYS",
    "PREKEY_SALT",
    "Bundle",
    "Ratchet",
    "RatchetError",
    "pickle_key",
]

#: BEP 44 salt of the prekey bundle published under the identity key.
PREKEY_SALT = b"btchat/prekeys"
#: One-time keys published in the DHT bundle (the rest of a 1000-byte item is headroom).
BUNDLE_ONE_TIME_KEYS = 8


class RatchetError(PeerError):
    """A packet cannot be encrypted or decrypted; ``code`` says which case."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code  # no_prekey | no_session | bad_message | bad_bundle


def pickle_key(identity: Identity) -> bytes:
    return hashlib.blake2b(identity.seed, person=b"btchat-olm-pkl", digest_size=32).digest()


@dataclass(frozen=True)
class Bundle:
    """A contact's published prekeys: Olm identity key, fallback key, one-time keys."""

    olm_key: bytes
    fallback: bytes | None
    one_time: tuple[bytes, ...]

    def encode(self) -> bytes:
        d: dict[bytes, Any] = {b"k": self.olm_key, b"o": list(self.one_time)}
        if self.fallback is not None:
            d[b"f"] = self.fallback
        return encode(d)

    @classmethod
    def decode(cls, value: object) -> Bundle:
        if type(value) is not dict:
            raise RatchetError("bad_bundle", "prekey bundle is not a dictionary")
        key, fallback, one_time = value.get(b"k"), value.get(b"f"), value.get(b"o", [])
        if type(key) is not bytes or len(key) != 32:
            raise RatchetError("bad_bundle", "prekey bundle has no valid Olm key")
        if fallback is not None and (type(fallback) is not bytes or len(fallback) != 32):
            raise RatchetError("bad_bundle", "prekey bundle fallback key malformed")
        if type(one_time) is not list or len(one_time) > 64:
            raise RatchetError("bad_bundle", "prekey bundle one-time keys malformed")
        keys = tuple(k for k in one_time if type(k) is bytes and len(k) == 32)
        return cls(key, fallback, keys)

    def pick(self) -> bytes:
        """A prekey to start a session with: a random one-time key, else the fallback."""
        if self.one_time:
            return secrets.choice(self.one_time)
        if self.fallback is None:
            raise RatchetError("no_prekey", "the contact published no prekey")
        return self.fallback


class Ratchet:
    def __init__(self, identity: Identity, state: MailboxState) -> None:
        self.state = state
        self._key = pickle_key(identity)
        if state.account_pickle() is None:
            account = vodozemac.Account()
            account.generate_fallback_key()
            state.save_account(account.pickle(self._key))

    # --------------------------------------------------------------- account

    def _account(self) -> vodozemac.Account:
        pickle = self.state.account_pickle()
        assert pickle is not None
        return vodozemac.Account.from_pickle(pickle, self._key)

    @property
    def olm_key(self) -> bytes:
        return bytes(self._account().curve25519_key.to_bytes())

    def _fresh_one_time_keys(self, account: vodozemac.Account, count: int) -> list[bytes]:
        account.generate_one_time_keys(count)
        keys = [bytes(k.to_bytes()) for k in account.one_time_keys.values()]
        account.mark_keys_as_published()
        return keys

    def bundle(self) -> Bundle:
        """A fresh bundle for the DHT: new one-time keys each time it is republished (old
        ones stay valid in the account until used or pushed out by newer ones)."""
        account = self._account()
        # vodozemac lists the fallback key only until it is marked published (by any
        # earlier bundle or one_time_key()): rotate it then, so every bundle has one. The
        # account keeps the previous fallback key valid too.
        if not account.fallback_key:
            account.generate_fallback_key()
        fallback = [bytes(k.to_bytes()) for k in account.fallback_key.values()]
        keys = self._fresh_one_time_keys(account, BUNDLE_ONE_TIME_KEYS)
        self.state.save_account(account.pickle(self._key))
        return Bundle(
            bytes(account.curve25519_key.to_bytes()),
            fallback[0] if fallback else None,
            tuple(keys),
        )

    def one_time_key(self) -> tuple[bytes, bytes]:
        """(Olm identity key, a one-time key) to hand one contact over a live session."""
        account = self._account()
        (key,) = self._fresh_one_time_keys(account, 1)
        self.state.save_account(account.pickle(self._key))
        return bytes(account.curve25519_key.to_bytes()), key

    def has_session(self, peer: bytes) -> bool:
        return bool(self.state.session_pickles(peer))

    # ---------------------------------------------------------- encrypt/decrypt

    def encrypt(
        self, peer: bytes, plaintext: bytes, *, olm_key: bytes | None, prekey: bytes | None
    ) -> tuple[int, bytes, RatchetPickles]:
        """Encrypt with the newest session with ``peer``, or start one from the prekey.

        Returns (Olm message type, body, pickles to commit with the packet).
        """
        pickles = self.state.session_pickles(peer)
        if pickles:
            session = vodozemac.Session.from_pickle(pickles[0][1], self._key)
        elif olm_key is not None and prekey is not None:
            try:
                session = self._account().create_outbound_session(
                    vodozemac.Curve25519PublicKey.from_bytes(olm_key),
                    vodozemac.Curve25519PublicKey.from_bytes(prekey),
                )
            except (vodozemac.KeyException, ValueError) as exc:
                raise RatchetError("no_prekey", f"contact's prekey is unusable: {exc}") from None
        else:
            raise RatchetError("no_prekey", "no session and no prekey for this contact")
        message_type, body = session.encrypt(plaintext).to_parts()
        return (
            int(message_type),
            bytes(body),
            RatchetPickles(sessions=((session.session_id, session.pickle(self._key)),)),
        )

    def decrypt(
        self, peer: bytes, olm_key: bytes, message_type: int, body: bytes
    ) -> tuple[bytes, RatchetPickles]:
        """Decrypt a packet from ``peer``; returns the plaintext and pickles to commit."""
        try:
            message = vodozemac.AnyOlmMessage.from_parts(message_type, body)
        except (vodozemac.DecodeException, ValueError) as exc:
            raise RatchetError("bad_message", f"not an Olm message: {exc}") from None
        sessions = [
            vodozemac.Session.from_pickle(p, self._key) for _, p in self.state.session_pickles(peer)
        ]
        if message_type == 0:
            prekey_message = message.to_pre_key()
            for session in sessions:
                if session.session_matches(prekey_message):
                    return self._decrypt_with(session, message)
            account = self._account()
            try:
                session, plaintext = account.create_inbound_session(
                    vodozemac.Curve25519PublicKey.from_bytes(olm_key), prekey_message
                )
            except (vodozemac.SessionCreationException, vodozemac.KeyException) as exc:
                raise RatchetError(
                    "no_session", f"cannot start a session from this packet: {exc}"
                ) from None
            return bytes(plaintext), RatchetPickles(
                account=account.pickle(self._key),
                sessions=((session.session_id, session.pickle(self._key)),),
            )
        for session in sessions:
            try:
                return self._decrypt_with(session, message)
            except RatchetError:
                continue
        raise RatchetError("no_session", "no ratchet session with this contact decrypts it")

    def _decrypt_with(
        self, session: vodozemac.Session, message: vodozemac.AnyOlmMessage
    ) -> tuple[bytes, RatchetPickles]:
        try:
            plaintext = session.decrypt(message)
        except vodozemac.OlmDecryptionException as exc:
            raise RatchetError("no_session", f"ratchet refused the message: {exc}") from None
        return bytes(plaintext), RatchetPickles(
            sessions=((session.session_id, session.pickle(self._key)),)
        )


def decode_prekey_body(value: object) -> tuple[bytes, bytes]:
    """(Olm identity key, one-time key) from a ``prekey`` envelope body."""
    if type(value) is not dict:
        raise RatchetError("bad_bundle", "prekey body is not a dictionary")
    key, one_time = value.get(b"k"), value.get(b"o")
    if (
        type(key) is not bytes
        or len(key) != 32
        or type(one_time) is not bytes
        or len(one_time) != 32
    ):
        raise RatchetError("bad_bundle", "prekey body malformed")
    return key, one_time
