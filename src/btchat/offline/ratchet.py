"""Forward secrecy for offline messages: X3DH-style prekeys and the Double Ratchet, by Olm.

The cryptography is vodozemac's Olm (Rust, audited), used as a library: its 3DH with
one-time prekeys is X3DH's key agreement, and its sessions are the Double Ratchet. We
add only the binding to btchat identities (the Olm identity key and prekeys are always
carried under a signature of the btchat identity key) and persistence.

State each device keeps (all in the message database, pickled under a key derived
from the identity seed): one Olm account (long-term Curve25519 key, one-time keys, the
current and previous fallback key), and per contact the Olm sessions.

Which prekey a sender may use is decided by who else can see it. A one-time key is
handed to one contact over a live session, so nobody else uses it. The DHT bundle is
public: one-time keys there would be picked alike by two senders (or by one sender
that lost its database, reading the same bundle again), and the second pre-key
message would be undecryptable for good, with no server to hand keys out exactly
once. So the bundle carries the fallback key, which any number of senders may use,
rotated once a day (the previous one stays valid: at least a day, at most two). Nothing is
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
    "FALLBACK_ROTATION_MS",
    "PREKEY_SALT",
    "Bundle",
    "Ratchet",
    "RatchetError",
    "device_prekey_salt",
    "pickle_key",
    "session_key",
]

#: BEP 44 salt of the prekey bundle published under the identity key (the mailbox
#: device's, read by 1.5 senders).
PREKEY_SALT = b"btchat/prekeys"


def device_prekey_salt(device_id: bytes) -> bytes:
    """The salt of one device's own bundle (1.6): every device of an identity publishes
    one, so a sender can wrap a v2 packet's key for each."""
    return PREKEY_SALT + b"/" + device_id


def session_key(peer: bytes, device_id: bytes) -> bytes:
    """Where a v2 sender keeps its Olm sessions with one device of ``peer``."""
    return peer + device_id


#: How long the bundle's fallback key is the current one (it then stays valid as the
#: previous one for as long again): the first message of a session started from the
#: bundle is exposed to a stolen device for at most twice this.
FALLBACK_ROTATION_MS = 86_400_000


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
        """A prekey to start a session with: the fallback key, which every sender may use.

        One-time keys of a bundle (published by versions before 1.3) are used only
        when it has no fallback key: other senders may have picked the same one."""
        if self.fallback is not None:
            return self.fallback
        if self.one_time:
            return secrets.choice(self.one_time)
        raise RatchetError("no_prekey", "the contact published no prekey")


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

    def bundle(self, now_ms: int) -> Bundle:
        """Our bundle for the DHT: the fallback key, rotated every FALLBACK_ROTATION_MS."""
        account = self._account()
        current = self.state.fallback()
        if current is not None and now_ms - current[1] < FALLBACK_ROTATION_MS:
            fallback = current[0]
        else:
            # vodozemac lists a fallback key only until it is marked published, then
            # keeps it valid as the previous one once the next is generated.
            if not account.fallback_key:
                account.generate_fallback_key()
            (key,) = account.fallback_key.values()
            fallback = bytes(key.to_bytes())
            account.mark_keys_as_published()
            self.state.save_fallback(fallback, now_ms, account.pickle(self._key))
        return Bundle(bytes(account.curve25519_key.to_bytes()), fallback, ())

    def one_time_key(self) -> tuple[bytes, bytes]:
        """(Olm identity key, a one-time key) to hand one contact over a live session."""
        account = self._account()
        account.generate_one_time_keys(1)
        (one_time,) = account.one_time_keys.values()
        account.mark_keys_as_published()
        key = bytes(one_time.to_bytes())
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
