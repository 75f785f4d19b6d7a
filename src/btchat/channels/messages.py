"""Channel messages: signed by their author, encrypted for the channel or for a few members.

A message is one canonical bencoded dictionary that any member may relay: relays
check the author's signature and the channel, and de-duplicate by id, without being
able to change anything. The content is encrypted with the channel's traffic key of a
generation (everyone in the channel), or, for a private or group conversation inside
the channel, with a fresh key sealed (libsodium sealed box) to each chosen member.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, replace
from typing import Any, ClassVar

from nacl.bindings import (
    crypto_aead_xchacha20poly1305_ietf_decrypt,
    crypto_aead_xchacha20poly1305_ietf_encrypt,
    crypto_sign_ed25519_pk_to_curve25519,
)
from nacl.exceptions import CryptoError
from nacl.public import PrivateKey, PublicKey, SealedBox

from btchat.codec.bencode import DecodeError, decode, encode
from btchat.errors import PeerError
from btchat.identity.keys import Identity, Signed
from btchat.transfer.manifest import Manifest, ManifestError, parse_manifest

__all__ = [
    "FILE",
    "KINDS",
    "MAX_MESSAGE",
    "MAX_RECIPIENTS",
    "ChannelMessage",
    "MessageError",
    "file_of",
    "open_content",
    "seal_message",
]

CONTEXT = b"btchat channel message v1\x00"
MAX_MESSAGE = 64 * 1024
MAX_TEXT = 16 * 1024
MAX_RECIPIENTS = 64
TEXT, PRESENCE, FILE = b"text", b"presence", b"file"
KINDS = (TEXT, PRESENCE, FILE)
MAX_INT = 2**53 - 1
_KEYS = frozenset({b"v", b"c", b"id", b"f", b"lc", b"ts", b"k", b"g", b"r", b"n", b"e", b"s"})


class MessageError(PeerError):
    """A channel message that is malformed, forged, or not for this channel."""


@dataclass(frozen=True)
class ChannelMessage(Signed):
    CONTEXT: ClassVar[bytes] = CONTEXT

    channel: bytes
    id: bytes
    author: bytes
    lamport: int
    ts_ms: int
    kind: bytes
    generation: int
    recipients: tuple[tuple[bytes, bytes], ...]  # (member key, sealed content key); () = all
    nonce: bytes
    ciphertext: bytes
    signature: bytes = b""

    def _fields(self) -> dict[bytes, Any]:
        return {
            b"v": 1,
            b"c": self.channel,
            b"id": self.id,
            b"f": self.author,
            b"lc": self.lamport,
            b"ts": self.ts_ms,
            b"k": self.kind,
            b"g": self.generation,
            b"r": [[k, x] for k, x in self.recipients],
            b"n": self.nonce,
            b"e": self.ciphertext,
        }

    @property
    def private(self) -> bool:
        return bool(self.recipients)

    @classmethod
    def parse(cls, data: bytes, channel: bytes) -> ChannelMessage:
        """Structure, channel and signature; MessageError otherwise."""
        if len(data) > MAX_MESSAGE:
            raise MessageError(f"message of {len(data)} bytes exceeds {MAX_MESSAGE}")
        try:
            d = decode(bytes(data), max_depth=4, max_size=MAX_MESSAGE)
        except DecodeError as exc:
            raise MessageError(f"message is not canonical bencode: {exc}") from None
        if type(d) is not dict or d.keys() != _KEYS or d[b"v"] != 1:
            raise MessageError("message has the wrong fields or version")
        sizes = {b"c": 32, b"id": 16, b"f": 32, b"n": 24, b"s": 64}
        for key, size in sizes.items():
            if type(d[key]) is not bytes or len(d[key]) != size:
                raise MessageError(f"message field {key.decode()} must be {size} bytes")
        for key in (b"lc", b"ts", b"g"):
            if type(d[key]) is not int or not 0 <= d[key] <= MAX_INT:
                raise MessageError(f"message field {key.decode()} out of range")
        if d[b"k"] not in KINDS or type(d[b"e"]) is not bytes:
            raise MessageError("unknown message kind or bad ciphertext")
        recipients = d[b"r"]
        if type(recipients) is not list or len(recipients) > MAX_RECIPIENTS:
            raise MessageError("bad recipient list")
        pairs = []
        for entry in recipients:
            if (
                type(entry) is not list
                or len(entry) != 2
                or type(entry[0]) is not bytes
                or len(entry[0]) != 32
                or type(entry[1]) is not bytes
                or len(entry[1]) > 128
            ):
                raise MessageError("bad recipient entry")
            pairs.append((entry[0], entry[1]))
        msg = cls(
            d[b"c"],
            d[b"id"],
            d[b"f"],
            d[b"lc"],
            d[b"ts"],
            d[b"k"],
            d[b"g"],
            tuple(pairs),
            d[b"n"],
            d[b"e"],
            d[b"s"],
        )
        if msg.channel != channel:
            raise MessageError("message is for another channel")
        if not msg.signed_by(msg.author):
            raise MessageError("message signature does not verify")
        return msg


def _ad(channel: bytes, msg_id: bytes, author: bytes) -> bytes:
    return CONTEXT + channel + msg_id + author


def seal_message(
    author: Identity,
    channel: bytes,
    *,
    kind: bytes,
    body: dict[bytes, Any],
    lamport: int,
    now: float,
    generation: int,
    traffic_key: bytes | None,
    recipients: list[bytes] | None = None,
    msg_id: bytes | None = None,
    nonce: bytes | None = None,
) -> ChannelMessage:
    """Encrypt ``body`` for the channel (``traffic_key``) or for ``recipients`` (each
    gets the content key sealed to its X25519 key; the author is always included so it
    can read its own message), then sign. ``msg_id`` and ``nonce`` are fixed only by
    test vectors; a real author always draws fresh ones."""
    msg_id = os.urandom(16) if msg_id is None else msg_id
    sealed: tuple[tuple[bytes, bytes], ...] = ()
    if recipients:
        key = os.urandom(32)
        keys = sorted({*recipients, author.public_key})
        if len(keys) > MAX_RECIPIENTS:
            raise ValueError(f"at most {MAX_RECIPIENTS} recipients")
        sealed = tuple(
            (k, SealedBox(PublicKey(crypto_sign_ed25519_pk_to_curve25519(k))).encrypt(key))
            for k in keys
        )
    else:
        if traffic_key is None:
            raise ValueError("a channel-wide message needs the traffic key")
        key = traffic_key
    nonce = os.urandom(24) if nonce is None else nonce
    ciphertext = crypto_aead_xchacha20poly1305_ietf_encrypt(
        encode(body), _ad(channel, msg_id, author.public_key), nonce, key
    )
    unsigned = ChannelMessage(
        channel,
        msg_id,
        author.public_key,
        lamport,
        int(now * 1000),
        kind,
        generation,
        sealed,
        nonce,
        ciphertext,
    )
    if len(unsigned.encode()) + 64 > MAX_MESSAGE:
        raise ValueError("message too large")
    return replace(unsigned, signature=author.sign(unsigned.signed_bytes()))


def open_content(
    msg: ChannelMessage, me: Identity, traffic_key: bytes | None
) -> dict[bytes, Any] | None:
    """The decrypted body, or None if this member cannot read it (not a recipient, or
    no key for its generation); MessageError if it should decrypt but does not."""
    if msg.private:
        sealed = dict(msg.recipients).get(me.public_key)
        if sealed is None:
            return None
        secret = me.x25519_private()
        try:
            key = SealedBox(PrivateKey(secret)).decrypt(sealed)
        except CryptoError:
            raise MessageError("content key not sealed to us") from None
    else:
        if traffic_key is None:
            return None
        key = traffic_key
    try:
        plain = crypto_aead_xchacha20poly1305_ietf_decrypt(
            msg.ciphertext, _ad(msg.channel, msg.id, msg.author), msg.nonce, key
        )
        body = decode(plain, max_depth=3, max_size=MAX_MESSAGE)
    except (CryptoError, DecodeError, ValueError):
        raise MessageError("message content does not decrypt") from None
    if type(body) is not dict:
        raise MessageError("message content is not a dictionary")
    return body


def text_of(body: dict[bytes, Any]) -> str:
    text = body.get(b"t")
    if type(text) is not bytes or not 0 < len(text) <= MAX_TEXT:
        raise MessageError("text body malformed")
    try:
        return text.decode("utf-8")
    except UnicodeDecodeError:
        raise MessageError("text is not UTF-8") from None


def file_of(body: dict[bytes, Any]) -> Manifest:
    """A ``file`` message's manifest (the 1:1 offer's body rules; no inline bytes)."""
    if b"d" in body:
        raise MessageError("a channel file carries no inline bytes")
    try:
        return parse_manifest(body)
    except ManifestError as exc:
        raise MessageError(f"file body malformed: {exc}") from None
