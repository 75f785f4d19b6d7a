"""The signed message envelope: what one identity says to another, end to end.

The session (Noise) already authenticates the device on the other end of a link, but a
message outlives its session: it is queued in the outbox, resent after a lost receipt,
stored in the history and may one day travel through an offline mailbox. So each
envelope carries its own Ed25519 signature by the sender's identity, names its recipient
(a signed message cannot be redirected) and has a random id plus a timestamp, so that the
receiver's table of seen ids refuses replays while the time window keeps that table finite.

Wire form, a canonical bencoded dictionary (``docs/schemas/envelope.schema.json``)::

    {v: 1, id: 16 bytes, from: 32, dev: 16, to: 32, ts: ms, lc: lamport,
     type: bytes, body: dict, n: 16 bytes, sig: 64 bytes}

``sig`` is Ed25519 by ``from`` over ``ENVELOPE_CONTEXT + bencode(dict without sig)``.
The decoder accepts only canonical bencode, so re-encoding the parsed fields reproduces
exactly the bytes that were signed: a signature cannot be moved onto another encoding.

Sans-I/O: callers pass ``now`` (Unix seconds). :func:`parse_envelope` checks structure
only (no keys, no clock); :func:`verify_envelope` checks signature, sender, recipient and
time. Anything wrong with remote input raises :class:`EnvelopeError` and nothing else.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, replace
from typing import Any, ClassVar, Protocol

from btchat.codec.bencode import DecodeError, Raw, decode, encode
from btchat.errors import PeerError
from btchat.identity.keys import Signed
from btchat.transfer.manifest import MAX_INLINE, Manifest, ManifestError, parse_manifest
from btchat.transfer.tree import PieceHasher

__all__ = [
    "ENVELOPE_CONTEXT",
    "KNOWN_TYPES",
    "MAX_ENVELOPE",
    "MAX_INT",
    "MAX_NOTE",
    "MAX_RECEIPT_IDS",
    "MAX_TEXT",
    "PRESENCE_STATES",
    "REASON_CODES",
    "RECEIPT_STATES",
    "VERSION",
    "Envelope",
    "EnvelopeError",
    "create",
    "decode_file",
    "decode_inline",
    "decode_presence",
    "decode_receipt",
    "decode_text",
    "decode_typing",
    "encode_envelope",
    "file_body",
    "lamport_tick",
    "parse_envelope",
    "presence_body",
    "receipt_body",
    "resign",
    "text_body",
    "typing_body",
    "verify_envelope",
]

#: Domain separation: an envelope signature can never pass as a signature over a device
#: certificate or anything else the identity key signs, and vice versa.
ENVELOPE_CONTEXT = b"btchat envelope v1\x00"
#: Major version. A receiver refuses other majors (``bad_version``) rather than guess;
#: compatible additions go into new types or new body keys (ignored when unknown).
VERSION = 1
#: Largest encoded envelope we parse or create: bounds memory per message from a peer.
MAX_ENVELOPE = 64 * 1024
#: Largest message text in UTF-8 bytes.
MAX_TEXT = 16 * 1024
#: Most message ids one receipt may acknowledge.
MAX_RECEIPT_IDS = 500
#: Longest presence note in UTF-8 bytes.
MAX_NOTE = 140
#: Largest ``ts``/``lc``/``ls``: 2**53 - 1 is exact in every JSON/JavaScript client and
#: far inside SQLite's signed 64-bit INTEGER, so no remote integer can overflow either.
MAX_INT = 2**53 - 1


def lamport_tick(local: int, seen: int | None) -> int:
    """A conversation's clock after an envelope (``seen``: a received ``lc``; None: one
    we create): ``max(local, seen) + 1``, clamped at 2**53 - 1 so a peer inflating its
    clock can make ties, never overflow."""
    observed = min(max(int(seen or 0), 0), MAX_INT)
    return min(max(local, observed) + 1, MAX_INT)


#: Bencode nesting we decode: envelope -> body -> list -> item, with room for new types.
MAX_DEPTH = 8

TEXT, RECEIPT, TYPING, PRESENCE = b"text", b"receipt", b"typing", b"presence"
#: A file offer (``docs/PROTOCOL.md``, "Files"): a message in the history, like a text.
FILE = b"file"
KNOWN_TYPES = (TEXT, RECEIPT, TYPING, PRESENCE, FILE)
RECEIPT_STATES = (b"delivered", b"read")
PRESENCE_STATES = ("online", "away", "busy", "offline")

ID_LEN, KEY_LEN, DEVICE_LEN, NONCE_LEN, SIG_LEN = 16, 32, 16, 16, 64
#: v1 has a closed key set: a new top-level field is a new major version.
_KEYS = frozenset(
    {b"v", b"id", b"from", b"dev", b"to", b"ts", b"lc", b"type", b"body", b"n", b"sig"}
)
#: Type names are short lowercase tokens, so they are safe in logs, JSON and SQL text.
_TYPE_RE = re.compile(rb"[a-z0-9_.-]{1,32}")

#: Every ``EnvelopeError.code``, for callers that map them to metrics or API errors.
REASON_CODES = frozenset(
    {
        "malformed",  # not canonical bencode, wrong/missing/unknown field, wrong size or range
        "too_large",  # over MAX_ENVELOPE
        "bad_version",  # a major version other than 1
        "bad_body",  # a known type whose body breaks its rules
        "wrong_type",  # decode_<type>() on an envelope of another type
        "bad_signature",
        "wrong_sender",  # validly signed, but not by the identity the session authenticated
        "wrong_recipient",
        "too_old",
        "in_future",
    }
)


class EnvelopeError(PeerError):
    """An envelope is malformed or refused; ``code`` is one of :data:`REASON_CODES`."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message


class _Signer(Protocol):
    """What :func:`create` needs of an identity (``btchat.identity.keys.Identity``)."""

    @property
    def public_key(self) -> bytes: ...

    def sign(self, message: bytes) -> bytes: ...


@dataclass(frozen=True)
class Envelope(Signed):
    """One parsed or created envelope. ``body`` is signed: treat it as read-only.

    :func:`parse_envelope` and :func:`create` leave the wire bytes, the signed bytes and
    "structure checked" on the instance (outside the dataclass fields, so equality and
    ``dataclasses.replace`` ignore them): a message is then encoded and checked once on
    each side instead of once per call on the hot path.
    """

    CONTEXT: ClassVar[bytes] = ENVELOPE_CONTEXT
    SIGNATURE_KEY: ClassVar[bytes] = b"sig"

    version: int
    id: bytes
    sender: bytes
    device: bytes
    recipient: bytes
    ts_ms: int
    lamport: int
    type: bytes
    body: dict[bytes, Any]
    nonce: bytes
    signature: bytes

    def _fields(self) -> dict[bytes, Any]:
        return {
            b"v": self.version,
            b"id": self.id,
            b"from": self.sender,
            b"dev": self.device,
            b"to": self.recipient,
            b"ts": self.ts_ms,
            b"lc": self.lamport,
            b"type": self.type,
            b"body": self.body,
            b"n": self.nonce,
        }

    def signed_bytes(self) -> bytes:
        """Exactly what ``sig`` covers: the context, then every field except ``sig``."""
        signed = self.__dict__.get("_signed")
        if signed is None:
            signed = ENVELOPE_CONTEXT + encode(self._fields())
            object.__setattr__(self, "_signed", signed)
        return signed

    @property
    def known_type(self) -> bool:
        """False for types this version does not know; callers ignore those."""
        return self.type in KNOWN_TYPES


# --------------------------------------------------------------------------- structure


def _is_bytes(value: object, length: int) -> bool:
    return type(value) is bytes and len(value) == length


def _is_uint(value: object) -> bool:
    # type() rather than isinstance(): a bool where an integer belongs is a bug, not a 1.
    return type(value) is int and 0 <= value <= MAX_INT


def _utf8(value: object, max_bytes: int, what: str, *, allow_empty: bool) -> str:
    if type(value) is not bytes:
        raise EnvelopeError("bad_body", f"{what} is missing or not a byte string")
    if len(value) > max_bytes or (not value and not allow_empty):
        low = 0 if allow_empty else 1
        raise EnvelopeError("bad_body", f"{what} must be {low} to {max_bytes} bytes")
    try:
        return value.decode("utf-8")  # strict: no surrogates, overlongs or truncation
    except UnicodeDecodeError:
        raise EnvelopeError("bad_body", f"{what} is not valid UTF-8") from None


def _check_text(body: dict[bytes, Any]) -> str:
    return _utf8(body.get(b"t"), MAX_TEXT, "text", allow_empty=False)


def _check_receipt(body: dict[bytes, Any]) -> tuple[list[bytes], bytes]:
    ids, state = body.get(b"ids"), body.get(b"s")
    if type(ids) is not list or not 1 <= len(ids) <= MAX_RECEIPT_IDS:
        raise EnvelopeError("bad_body", f"receipt ids must be a list of 1 to {MAX_RECEIPT_IDS}")
    if not all(_is_bytes(i, ID_LEN) for i in ids):
        raise EnvelopeError("bad_body", "every receipt id must be 16 bytes")
    if type(state) is not bytes or state not in RECEIPT_STATES:
        raise EnvelopeError("bad_body", "receipt state must be delivered or read")
    return list(ids), state


def _check_typing(body: dict[bytes, Any]) -> bool:
    on = body.get(b"on")
    if type(on) is not int or on not in (0, 1):
        raise EnvelopeError("bad_body", "typing flag must be 0 or 1")
    return on == 1


def _check_presence(body: dict[bytes, Any]) -> tuple[str, int, str | None]:
    status, last_seen = body.get(b"s"), body.get(b"ls")
    if type(status) is not bytes or status.decode("latin-1") not in PRESENCE_STATES:
        raise EnvelopeError("bad_body", f"presence must be one of {', '.join(PRESENCE_STATES)}")
    if not _is_uint(last_seen):
        raise EnvelopeError("bad_body", "presence last-seen must be an integer in [0, 2**53)")
    note = body.get(b"n")
    text = None if note is None else _utf8(note, MAX_NOTE, "presence note", allow_empty=True)
    return status.decode("ascii"), last_seen, text


def _check_file(body: dict[bytes, Any]) -> Manifest:
    try:
        manifest = parse_manifest(body)
    except ManifestError as exc:
        raise EnvelopeError("bad_body", str(exc)) from None
    data = body.get(b"d")
    if data is not None:
        # An inline file: the bytes themselves, which must be what the offer names.
        if type(data) is not bytes or len(data) != manifest.size:
            raise EnvelopeError("bad_body", "inline file bytes must be exactly the size")
        if manifest.size > MAX_INLINE:
            raise EnvelopeError("bad_body", f"an inline file is at most {MAX_INLINE} bytes")
        hasher = PieceHasher(manifest.size, manifest.piece_size)
        hasher.update(data)
        if hasher.root() != manifest.root:
            raise EnvelopeError("bad_body", "inline file bytes do not match the root")
    return manifest


#: type -> body check; each returns the decoded body.
_BODY_CHECKS: dict[bytes, Any] = {
    TEXT: _check_text,
    FILE: _check_file,
    RECEIPT: _check_receipt,
    TYPING: _check_typing,
    PRESENCE: _check_presence,
}


def _check_structure(env: Envelope) -> None:
    """Every field has its type, size and range, and a known type has a valid body.

    Checking known bodies here (not only in the decoders) means an envelope that passed
    parse and verify decodes without a further error path in the caller. Unknown body
    keys are allowed (and signed), so later versions can extend a body compatibly.
    """
    if env.version != VERSION or type(env.version) is not int:
        raise EnvelopeError("bad_version", f"unsupported envelope version {env.version!r}")
    if not _is_bytes(env.id, ID_LEN):
        raise EnvelopeError("malformed", "id must be 16 bytes")
    if not _is_bytes(env.sender, KEY_LEN):
        raise EnvelopeError("malformed", "from must be 32 bytes")
    if not _is_bytes(env.device, DEVICE_LEN):
        raise EnvelopeError("malformed", "dev must be 16 bytes")
    if not _is_bytes(env.recipient, KEY_LEN):
        raise EnvelopeError("malformed", "to must be 32 bytes")
    if not _is_uint(env.ts_ms):
        raise EnvelopeError("malformed", "ts must be an integer in [0, 2**53)")
    if not _is_uint(env.lamport):
        raise EnvelopeError("malformed", "lc must be an integer in [0, 2**53)")
    if type(env.type) is not bytes or not _TYPE_RE.fullmatch(env.type):
        raise EnvelopeError("malformed", "type must be 1 to 32 bytes of [a-z0-9_.-]")
    if type(env.body) is not dict:
        raise EnvelopeError("malformed", "body must be a dictionary")
    if not _is_bytes(env.nonce, NONCE_LEN):
        raise EnvelopeError("malformed", "n must be 16 bytes")
    if not _is_bytes(env.signature, SIG_LEN):
        raise EnvelopeError("malformed", "sig must be 64 bytes")
    check = _BODY_CHECKS.get(env.type)
    if check is not None:
        check(env.body)


# --------------------------------------------------------------------------- wire


def encode_envelope(env: Envelope) -> bytes:
    """The wire bytes: canonical bencode of every field including ``sig``."""
    wire = env.__dict__.get("_wire")
    if wire is None:
        wire = encode({**env._fields(), b"sig": env.signature})
        object.__setattr__(env, "_wire", wire)
    return wire


#: The ``sig`` entry's key in the canonical dictionary; its value is 64 bytes.
_SIG_ENTRY = b"3:sig64:"


def _tail(env: Envelope) -> bytes:
    """The end of the canonical encoding after ``sig``: the entries whose keys sort after
    it (``to``, ``ts``, ``type``, ``v``) and the dictionary's ``e``, the same with and
    without ``sig``. Only for an envelope whose structure is checked."""
    return b"2:to32:%s2:tsi%de4:type%d:%s1:vi%dee" % (
        env.recipient,
        env.ts_ms,
        len(env.type),
        env.type,
        env.version,
    )


def _cache(env: Envelope, signed: bytes, wire: bytes) -> Envelope:
    object.__setattr__(env, "_signed", signed)
    object.__setattr__(env, "_wire", wire)
    object.__setattr__(env, "_checked", True)
    return env


def _signed_from_wire(env: Envelope, wire: bytes) -> bytes | None:
    """The signed bytes of canonical ``wire``: the same bytes with the ``sig`` entry cut
    out (a dictionary's entries encode independently), or None if it is not where the
    canonical order puts it."""
    tail = _tail(env)
    cut = len(wire) - len(tail) - len(_SIG_ENTRY) - SIG_LEN
    if not wire.endswith(tail) or wire[cut : cut + len(_SIG_ENTRY)] != _SIG_ENTRY:
        return None
    if wire[cut + len(_SIG_ENTRY) : cut + len(_SIG_ENTRY) + SIG_LEN] != env.signature:
        return None
    return ENVELOPE_CONTEXT + wire[:cut] + tail


def parse_envelope(data: bytes) -> Envelope:
    """Decode and check the structure (not the signature); raises only EnvelopeError.

    An unknown *major* version is refused here already (``bad_version``), before the key
    check, because another major's fields cannot be interpreted.
    """
    if not isinstance(data, bytes | bytearray | memoryview):
        raise EnvelopeError("malformed", "envelope is not bytes")
    if len(data) > MAX_ENVELOPE:
        raise EnvelopeError("too_large", f"envelope of {len(data)} bytes exceeds {MAX_ENVELOPE}")
    try:
        d = decode(bytes(data), max_depth=MAX_DEPTH, max_size=MAX_ENVELOPE)
    except DecodeError as exc:
        raise EnvelopeError("malformed", f"not canonical bencode: {exc}") from None
    if type(d) is not dict:
        raise EnvelopeError("malformed", "envelope is not a dictionary")
    version = d.get(b"v")
    if type(version) is not int:
        raise EnvelopeError("malformed", "missing or non-integer version")
    if version != VERSION:
        raise EnvelopeError("bad_version", f"unsupported envelope version {version}")
    if d.keys() != _KEYS:
        missing = sorted(k.decode("latin-1") for k in _KEYS - d.keys())
        extra = sorted(k.decode("latin-1")[:32] for k in d.keys() - _KEYS)[:8]
        raise EnvelopeError("malformed", f"wrong fields (missing {missing}, unknown {extra})")
    env = Envelope(
        version=version,
        id=d[b"id"],
        sender=d[b"from"],
        device=d[b"dev"],
        recipient=d[b"to"],
        ts_ms=d[b"ts"],
        lamport=d[b"lc"],
        type=d[b"type"],
        body=d[b"body"],
        nonce=d[b"n"],
        signature=d[b"sig"],
    )
    _check_structure(env)
    wire = bytes(data)
    signed = _signed_from_wire(env, wire)
    if signed is None:  # cannot happen for canonical input; recompute rather than trust
        signed = ENVELOPE_CONTEXT + encode(env._fields())
    return _cache(env, signed, wire)


def create(
    identity: _Signer,
    device_id: bytes,
    to: bytes,
    type: bytes,  # shadows the builtin: it is the wire field's name
    body: dict[bytes, Any],
    *,
    lamport: int,
    now: float,
    msg_id: bytes | None = None,
    nonce: bytes | None = None,
) -> Envelope:
    """Build and sign an envelope; refuses (EnvelopeError) what a receiver would refuse.

    ``msg_id`` reuses an id (see :func:`resign`); by default a fresh random one is drawn.
    ``nonce`` is fixed only by test vectors: a real sender always draws a fresh one.
    """
    try:  # a deep copy in wire form, so the envelope equals what a receiver parses
        raw = encode(body)
        body = decode(raw, max_depth=MAX_DEPTH - 1, max_size=len(raw))
    except (TypeError, DecodeError) as exc:  # a bug: fail here, not on the peer
        raise EnvelopeError("bad_body", f"body cannot be bencoded: {exc}") from None
    unsigned = Envelope(
        version=VERSION,
        id=os.urandom(ID_LEN) if msg_id is None else msg_id,
        sender=identity.public_key,
        device=device_id,
        recipient=to,
        ts_ms=int(now * 1000),
        lamport=lamport,
        type=type,
        body=body,
        nonce=os.urandom(NONCE_LEN) if nonce is None else nonce,
        signature=bytes(SIG_LEN),
    )
    _check_structure(unsigned)
    # The body is encoded once (``raw``); the wire bytes are the signed bytes with the
    # ``sig`` entry inserted before the entries that sort after it.
    signed = ENVELOPE_CONTEXT + encode({**unsigned._fields(), b"body": Raw(raw)})
    env = replace(unsigned, signature=identity.sign(signed))
    cut = len(signed) - len(_tail(env))
    wire = signed[len(ENVELOPE_CONTEXT) : cut] + _SIG_ENTRY + env.signature + signed[cut:]
    if len(wire) > MAX_ENVELOPE:
        raise EnvelopeError("too_large", f"envelope of {len(wire)} bytes exceeds {MAX_ENVELOPE}")
    return _cache(env, signed, wire)


def resign(
    identity: _Signer, env: Envelope, *, now: float, device: bytes | None = None
) -> Envelope:
    """The same message (id, lamport, body) with a fresh ``ts``, nonce and signature.

    A message queued longer than the receiver's window would be refused as ``too_old``;
    re-signing keeps the id, so a receiver that already has it still drops the copy.
    ``device`` names another of the sender's devices: one that offers a message written
    on another over its own session (which must name the device it authenticates).
    """
    if identity.public_key != env.sender:
        raise EnvelopeError("wrong_sender", "only the sender can re-sign an envelope")
    return create(
        identity,
        env.device if device is None else device,
        env.recipient,
        env.type,
        env.body,
        lamport=env.lamport,
        now=now,
        msg_id=env.id,
    )


def verify_envelope(
    env: Envelope,
    *,
    expected_sender: bytes | None,
    expected_recipient: bytes,
    now: float,
    max_age: float = 15 * 86400,
    max_skew: float = 600,
) -> None:
    """Check who wrote it, for whom, its signature and time window; raises EnvelopeError.

    ``expected_sender`` is the identity the session authenticated (None accepts any
    signer, e.g. for a relayed copy): a peer must not deliver envelopes signed by someone
    else. The window bounds replay state: ids older than ``max_age + max_skew`` may be
    forgotten because such envelopes are refused here anyway.
    """
    if not env.__dict__.get("_checked"):  # parsed and created ones are checked already
        _check_structure(env)
    if expected_sender is not None and env.sender != expected_sender:
        raise EnvelopeError("wrong_sender", "envelope is not from the session's identity")
    if env.recipient != expected_recipient:
        raise EnvelopeError("wrong_recipient", "envelope is addressed to someone else")
    if not env.signed_by(env.sender):
        raise EnvelopeError("bad_signature", "signature does not verify")
    now_ms = now * 1000
    if env.ts_ms > now_ms + max_skew * 1000:
        raise EnvelopeError("in_future", "envelope timestamp is too far in the future")
    if env.ts_ms < now_ms - max_age * 1000:
        raise EnvelopeError("too_old", "envelope is older than the replay window")


# --------------------------------------------------------------------------- bodies


def _encode_text(text: str, what: str) -> bytes:
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate from a JSON client, say
        raise EnvelopeError("bad_body", f"{what} is not valid Unicode") from None


def text_body(text: str) -> dict[bytes, Any]:
    """``{t: utf-8}``; the length limit is checked by :func:`create`."""
    return {b"t": _encode_text(text, "text")}


def receipt_body(ids: list[bytes], state: bytes) -> dict[bytes, Any]:
    """``{ids: [16-byte ids], s: delivered|read}``."""
    return {b"ids": list(ids), b"s": state}


def presence_body(status: str, last_seen_ms: int, note: str | None = None) -> dict[bytes, Any]:
    """``{s: status, ls: ms, n?: utf-8}``; ``n`` is omitted when there is no note."""
    body: dict[bytes, Any] = {b"s": status.encode("utf-8"), b"ls": last_seen_ms}
    if note is not None:
        body[b"n"] = _encode_text(note, "presence note")
    return body


def typing_body(on: bool) -> dict[bytes, Any]:
    """``{on: 0|1}`` (bencode has no booleans)."""
    return {b"on": 1 if on else 0}


def _body_of(env: Envelope, kind: bytes) -> dict[bytes, Any]:
    if env.type != kind:
        raise EnvelopeError("wrong_type", f"envelope is {env.type!r}, not {kind!r}")
    if type(env.body) is not dict:
        raise EnvelopeError("malformed", "body must be a dictionary")
    return env.body


def decode_text(env: Envelope) -> str:
    return _check_text(_body_of(env, TEXT))


def decode_receipt(env: Envelope) -> tuple[list[bytes], bytes]:
    return _check_receipt(_body_of(env, RECEIPT))


def decode_presence(env: Envelope) -> tuple[str, int, str | None]:
    return _check_presence(_body_of(env, PRESENCE))


def decode_typing(env: Envelope) -> bool:
    return _check_typing(_body_of(env, TYPING))


def decode_file(env: Envelope) -> Manifest:
    return _check_file(_body_of(env, FILE))


def decode_inline(env: Envelope) -> bytes | None:
    """An inline file offer's bytes (checked against its root), or None for a normal offer."""
    body = _body_of(env, FILE)
    _check_file(body)
    data = body.get(b"d")
    return data if type(data) is bytes else None


def file_body(manifest: Manifest, data: bytes | None = None) -> dict[bytes, Any]:
    """A ``file`` body; with ``data`` (at most MAX_INLINE bytes) the bytes travel in it."""
    body = manifest.body()
    if data is not None:
        body[b"d"] = data
    return body
