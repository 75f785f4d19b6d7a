"""A btchat protocol-1 peer written from ``docs/PROTOCOL.md`` and ``docs/vectors/`` alone.

It MUST NOT import anything from ``btchat``: it stands for another implementation, one
that only read the specification, so that the tests built on it fail when the daemon
stops talking to such a peer or when the specification stops being enough to write one.
Dependencies: the standard library, ``noiseprotocol`` (Noise IK), ``cryptography``
(Ed25519, X25519, ChaCha20-Poly1305) and PyNaCl (the Ed25519 -> X25519 point check).

What it speaks: IDs as text, device certificates and device lists, envelopes (text and
receipts; every other type is verified and ignored), and a session over TCP as the
dialler or the responder: Noise IK, the key-confirmation PING, DATA / PING / PONG /
REKEY / CLOSE. It never announces substreams ("Substreams"), so it is a v1 peer.
"""

from __future__ import annotations

import base64
import hashlib
import itertools
import os
import socket
import struct
import time
import unicodedata
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import nacl.bindings
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from noise.connection import Keypair, NoiseConnection

# Constants ("Constants" and the sections that use them).
ID_CONTEXT = b"btchat-id-v1"
CERT_CONTEXT = b"btchat device certificate v1\0"
ENVELOPE_CONTEXT = b"btchat envelope v1\0"
PROTOCOL_NAME = b"Noise_IK_25519_ChaChaPoly_BLAKE2b"
PROLOGUE = b"btchat session v1"
MAX_CERT = 512
MAX_ENVELOPE = 65536
MAX_TEXT = 16384
MAX_RECEIPT_IDS = 500
MAX_INT = 2**53 - 1
MAX_AGE_MS = 15 * 86400 * 1000
MAX_AHEAD_MS = 10 * 60 * 1000
MAX_HANDSHAKE = 608
MAX_DATA = 65518
MAX_REASON = 256
DATA, PING, PONG, REKEY, CLOSE = 0, 1, 2, 3, 4
FRAME_NAMES = {DATA: "DATA", PING: "PING", PONG: "PONG", REKEY: "REKEY", CLOSE: "CLOSE"}
PRESENCE_STATES = (b"online", b"away", b"busy", b"offline")


# --- Bencode ("Bencode (BEP 3)": canonical, nesting at most 32, integers at most 32 digits).


def bencode(value: Any) -> bytes:
    if isinstance(value, bool):
        raise TypeError("bencode has no booleans")
    if isinstance(value, int):
        return b"i%de" % value
    if isinstance(value, str):
        value = value.encode()
    if isinstance(value, bytes):
        return b"%d:%s" % (len(value), value)
    if isinstance(value, list):
        return b"l" + b"".join(bencode(v) for v in value) + b"e"
    if isinstance(value, dict):
        keys = sorted(k.encode() if isinstance(k, str) else k for k in value)
        items = {k.encode() if isinstance(k, str) else k: v for k, v in value.items()}
        return b"d" + b"".join(bencode(k) + bencode(items[k]) for k in keys) + b"e"
    raise TypeError(f"cannot bencode {type(value).__name__}")


def bdecode(data: bytes) -> Any:
    """Decode one canonical bencoded value that fills ``data`` exactly (ValueError)."""
    value, end = _decode(data, 0, 0)
    if end != len(data):
        raise ValueError("bytes after the value")
    return value


def _decode(data: bytes, pos: int, depth: int) -> tuple[Any, int]:
    if depth > 32 or pos >= len(data):
        raise ValueError("too deep or truncated")
    lead = data[pos : pos + 1]
    if lead == b"i":
        end = data.index(b"e", pos)
        digits = data[pos + 1 : end]
        if len(digits.lstrip(b"-")) > 32 or not _canonical_int(digits):
            raise ValueError("non-canonical integer")
        return int(digits), end + 1
    if lead.isdigit():
        colon = data.index(b":", pos)
        digits = data[pos:colon]
        if not digits.isdigit() or (digits[:1] == b"0" and len(digits) > 1):
            raise ValueError("non-canonical length")
        end = colon + 1 + int(digits)
        if end > len(data):
            raise ValueError("truncated string")
        return data[colon + 1 : end], end
    if lead in (b"l", b"d"):
        items: list[Any] = []
        pos += 1
        while data[pos : pos + 1] != b"e":
            item, pos = _decode(data, pos, depth + 1)
            items.append(item)
        if lead == b"l":
            return items, pos + 1
        keys, values = items[0::2], items[1::2]
        if len(keys) != len(values) or not all(isinstance(k, bytes) for k in keys):
            raise ValueError("bad dictionary")
        if any(a >= b for a, b in itertools.pairwise(keys)):
            raise ValueError("dictionary keys not strictly increasing")
        return dict(zip(keys, values, strict=True)), pos + 1
    raise ValueError("not bencode")


def _canonical_int(digits: bytes) -> bool:
    body = digits[1:] if digits[:1] == b"-" else digits
    if not body.isdigit():
        return False
    return digits == b"0" or (body[:1] != b"0")


# --- Identities, IDs as text, device certificates ("Identities and devices", "IDs as text").


@dataclass(frozen=True)
class Identity:
    seed: bytes

    @classmethod
    def generate(cls) -> Identity:
        return cls(os.urandom(32))

    @property
    def public_key(self) -> bytes:
        key = Ed25519PrivateKey.from_private_bytes(self.seed).public_key()
        return key.public_bytes(Encoding.Raw, PublicFormat.Raw)

    def sign(self, message: bytes) -> bytes:
        return Ed25519PrivateKey.from_private_bytes(self.seed).sign(message)


def verify(public_key: bytes, signature: bytes, message: bytes) -> bool:
    try:
        Ed25519PublicKey.from_public_bytes(public_key).verify(signature, message)
    except (InvalidSignature, ValueError):
        return False
    return True


def x25519_public(private: bytes) -> bytes:
    key = X25519PrivateKey.from_private_bytes(private).public_key()
    return key.public_bytes(Encoding.Raw, PublicFormat.Raw)


def id_checksum(public_key: bytes) -> bytes:
    return hashlib.blake2b(ID_CONTEXT + public_key, digest_size=64).digest()[:3]


def id_text(public_key: bytes) -> str:
    return "bt" + base64.b32encode(public_key + id_checksum(public_key)).decode().lower()


def parse_id(text: str) -> bytes:
    """The public key an ID spells, after the parser rules of "IDs as text" (ValueError)."""
    if len(text) > 1024:
        raise ValueError("too long")
    kept = [
        c
        for c in unicodedata.normalize("NFKC", text)
        if not (c.isspace() or c in "_.\u2212" or unicodedata.category(c) in ("Pd", "Cf"))
    ]
    cleaned = "".join(kept).lower().replace("0", "o").replace("8", "b")
    if any(c not in "abcdefghijklmnopqrstuvwxyz234567" for c in cleaned):
        raise ValueError("a character outside the alphabet")
    if len(cleaned) != 58 or not cleaned.startswith("bt"):
        raise ValueError("not 58 characters starting with bt")
    raw = base64.b32decode(cleaned[2:].upper())
    public_key, checksum = raw[:32], raw[32:]
    if checksum != id_checksum(public_key):
        raise ValueError("checksum mismatch")
    try:
        nacl.bindings.crypto_sign_ed25519_pk_to_curve25519(public_key)
    except Exception as exc:  # nacl raises RuntimeError for a key off the curve
        raise ValueError("not an Ed25519 point") from exc
    return public_key


@dataclass(frozen=True)
class Certificate:
    created: int
    device_id: bytes
    identity: bytes
    device_key: bytes
    signature: bytes

    def unsigned(self) -> bytes:
        return bencode(
            {"c": self.created, "d": self.device_id, "i": self.identity, "k": self.device_key}
        )

    def encode(self) -> bytes:
        return bencode(
            {
                "c": self.created,
                "d": self.device_id,
                "i": self.identity,
                "k": self.device_key,
                "s": self.signature,
            }
        )

    @classmethod
    def decode(cls, data: bytes) -> Certificate:
        """Parse and verify a certificate; ValueError for everything the spec refuses."""
        if len(data) > MAX_CERT:
            raise ValueError("certificate over 512 bytes")
        fields = bdecode(data)
        if not isinstance(fields, dict) or set(fields) != {b"c", b"d", b"i", b"k", b"s"}:
            raise ValueError("certificate key set")
        c, d, i, k, s = (fields[x] for x in (b"c", b"d", b"i", b"k", b"s"))
        if not isinstance(c, int) or c < 0:
            raise ValueError("certificate c")
        for value, size in ((d, 16), (i, 32), (k, 32), (s, 64)):
            if not isinstance(value, bytes) or len(value) != size:
                raise ValueError("certificate field size")
        cert = cls(c, d, i, k, s)
        if not verify(i, s, CERT_CONTEXT + cert.unsigned()):
            raise ValueError("certificate signature")
        return cert


def certify(identity: Identity, device_key: bytes, device_id: bytes, created: int) -> Certificate:
    unsigned = Certificate(created, device_id, identity.public_key, device_key, b"")
    return Certificate(
        created,
        device_id,
        identity.public_key,
        device_key,
        identity.sign(CERT_CONTEXT + unsigned.unsigned()),
    )


def parse_device_list(value: bytes, identity: bytes) -> list[Certificate]:
    """The certificates of a device list value (BEP 44 ``v``), the reader's rules."""
    decoded = bdecode(value)
    entries = decoded.get(b"certs", []) if isinstance(decoded, dict) else []
    certs = []
    for entry in entries if isinstance(entries, list) else []:
        if not isinstance(entry, bytes):
            continue
        try:
            cert = Certificate.decode(entry)
        except ValueError:
            continue
        if cert.identity == identity:
            certs.append(cert)
    return certs[:5]


# --- Envelopes ("Envelopes").

ENVELOPE_KEYS = {b"v", b"id", b"from", b"dev", b"to", b"ts", b"lc", b"type", b"body", b"n", b"sig"}


class Refused(ValueError):
    """An envelope a receiver refuses; ``reason`` is the spec's name for it."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class Envelope:
    fields: dict[bytes, Any]
    wire: bytes

    @property
    def id(self) -> bytes:
        return bytes(self.fields[b"id"])

    @property
    def type(self) -> str:
        return bytes(self.fields[b"type"]).decode()

    @property
    def body(self) -> dict[bytes, Any]:
        return dict(self.fields[b"body"])

    @property
    def lc(self) -> int:
        return int(self.fields[b"lc"])

    @property
    def sender(self) -> bytes:
        return bytes(self.fields[b"from"])


def make_envelope(
    identity: Identity,
    device_id: bytes,
    to: bytes,
    kind: str,
    body: dict[Any, Any],
    lc: int,
    ts_ms: int | None = None,
    message_id: bytes | None = None,
    nonce: bytes | None = None,
) -> bytes:
    fields: dict[str, Any] = {
        "v": 1,
        "id": message_id if message_id is not None else os.urandom(16),
        "from": identity.public_key,
        "dev": device_id,
        "to": to,
        "ts": ts_ms if ts_ms is not None else int(time.time() * 1000),
        "lc": lc,
        "type": kind.encode(),
        "body": body,
        "n": nonce if nonce is not None else os.urandom(16),
    }
    fields["sig"] = identity.sign(ENVELOPE_CONTEXT + bencode(fields))
    return bencode(fields)


def open_envelope(
    wire: bytes, *, sender: bytes, device: bytes, recipient: bytes, now: float
) -> Envelope:
    """Check a received envelope in the spec's order; :class:`Refused` names the reason."""
    if len(wire) > MAX_ENVELOPE:
        raise Refused("too_large")
    try:
        fields = bdecode(wire)
    except ValueError:
        raise Refused("malformed") from None
    if not isinstance(fields, dict) or set(fields) != ENVELOPE_KEYS:
        raise Refused("malformed")
    sizes = {b"id": 16, b"from": 32, b"dev": 16, b"to": 32, b"n": 16, b"sig": 64}
    if any(not isinstance(fields[k], bytes) or len(fields[k]) != n for k, n in sizes.items()):
        raise Refused("malformed")
    for k in (b"v", b"ts", b"lc"):
        if not isinstance(fields[k], int) or not 0 <= fields[k] <= MAX_INT:
            raise Refused("malformed")
    kind = fields[b"type"]
    if (
        not isinstance(kind, bytes)
        or not 1 <= len(kind) <= 32
        or any(chr(c) not in "abcdefghijklmnopqrstuvwxyz0123456789_.-" for c in kind)
        or not isinstance(fields[b"body"], dict)
    ):
        raise Refused("malformed")
    if fields[b"v"] != 1:
        raise Refused("bad_version")
    _check_body(kind.decode(), fields[b"body"])
    if fields[b"from"] != sender:
        raise Refused("wrong_sender")
    if fields[b"to"] != recipient:
        raise Refused("wrong_recipient")
    unsigned = {k: v for k, v in fields.items() if k != b"sig"}
    if not verify(sender, fields[b"sig"], ENVELOPE_CONTEXT + bencode(unsigned)):
        raise Refused("bad_signature")
    now_ms = int(now * 1000)
    if fields[b"ts"] < now_ms - MAX_AGE_MS:
        raise Refused("too_old")
    if fields[b"ts"] > now_ms + MAX_AHEAD_MS:
        raise Refused("in_future")
    if fields[b"dev"] != device:
        raise Refused("wrong_device")
    return Envelope(fields, wire)


def _check_body(kind: str, body: dict[bytes, Any]) -> None:
    """Body rules of the types this client knows; unknown keys in a body are allowed."""
    ok = True
    if kind == "text":
        t = body.get(b"t")
        ok = isinstance(t, bytes) and 1 <= len(t) <= MAX_TEXT and _utf8(t)
    elif kind == "receipt":
        ids = body.get(b"ids")
        ok = (
            isinstance(ids, list)
            and 1 <= len(ids) <= MAX_RECEIPT_IDS
            and all(isinstance(i, bytes) and len(i) == 16 for i in ids)
            and body.get(b"s") in (b"delivered", b"read")
        )
    elif kind == "typing":
        ok = body.get(b"on") in (0, 1)
    elif kind == "presence":
        note = body.get(b"n", b"")
        ok = (
            body.get(b"s") in PRESENCE_STATES
            and isinstance(body.get(b"ls"), int)
            and isinstance(note, bytes)
            and len(note) <= 140
            and _utf8(note)
        )
    if not ok:
        raise Refused("bad_body")


def _utf8(data: bytes) -> bool:
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


@dataclass
class LamportClock:
    """One conversation's clock ("Order"): next value to send, and what receiving does."""

    local: int = 0

    def tick(self) -> int:
        self.local = min(self.local + 1, MAX_INT)
        return self.local

    def seen(self, lc: int) -> None:
        self.local = min(max(self.local, lc) + 1, MAX_INT)


# --- Sessions ("Sessions": Noise IK over u16be-length frames, then typed transport frames).


class SessionError(Exception):
    """The session is over: a protocol error, an authentication failure or a refusal."""


def frame(message: bytes) -> bytes:
    return struct.pack(">H", len(message)) + message


@dataclass
class V1Session:
    """One side of a session, sans I/O: feed :meth:`receive`, send :meth:`data_to_send`.

    ``peer_device_key`` (dialler) is the responder's certified device key; ``accept``
    decides whether a peer certificate's identity is authorized. ``ephemeral_private``
    fixes the Noise ephemeral key (test vectors only).
    """

    initiator: bool
    device_private: bytes
    certificate: Certificate
    accept: Callable[[Certificate], bool]
    peer_device_key: bytes | None = None
    ephemeral_private: bytes | None = None
    peer: Certificate | None = None
    established: bool = False
    closed: str | None = None
    _noise: NoiseConnection = field(init=False)
    _inbox: bytes = b""
    _outbox: bytes = b""

    def __post_init__(self) -> None:
        noise = NoiseConnection.from_name(PROTOCOL_NAME)
        noise.set_as_initiator() if self.initiator else noise.set_as_responder()
        noise.set_prologue(PROLOGUE)
        noise.set_keypair_from_private_bytes(Keypair.STATIC, self.device_private)
        if self.ephemeral_private is not None:
            noise.set_keypair_from_private_bytes(Keypair.EPHEMERAL, self.ephemeral_private)
        if self.initiator:
            if self.peer_device_key is None:
                raise ValueError("the dialler must know the responder's device key")
            noise.set_keypair_from_public_bytes(Keypair.REMOTE_STATIC, self.peer_device_key)
        noise.start_handshake()
        self._noise = noise
        if self.initiator:
            self._outbox += frame(bytes(noise.write_message(self.certificate.encode())))

    def data_to_send(self) -> bytes:
        out, self._outbox = self._outbox, b""
        return out

    def send(self, kind: int, body: bytes = b"") -> None:
        if self.closed is not None or not self._noise.handshake_finished:
            raise SessionError("session not open")
        if kind == DATA and len(body) > MAX_DATA:
            raise ValueError("DATA body over 65518 bytes")
        self._outbox += frame(self._noise.encrypt(bytes([kind]) + body))
        if kind == REKEY:
            _rekey(self._noise.noise_protocol.cipher_state_encrypt)
        if kind == CLOSE:
            self.closed = body.decode()

    def receive(self, data: bytes) -> list[tuple[int, bytes]]:
        """Every transport frame in ``data``, as ``(type, body)``; PINGs are answered."""
        self._inbox += data
        frames: list[tuple[int, bytes]] = []
        while len(self._inbox) >= 2 and self.closed is None:
            (length,) = struct.unpack_from(">H", self._inbox)
            if len(self._inbox) < 2 + length:
                break
            message, self._inbox = self._inbox[2 : 2 + length], self._inbox[2 + length :]
            if not self._noise.handshake_finished:
                self._handshake(message)
                continue
            try:
                plain = self._noise.decrypt(message)
            except Exception as exc:
                raise SessionError("a frame failed authentication") from exc
            self.established = True  # responder: key confirmation
            kind, body = plain[0], plain[1:]
            if kind not in FRAME_NAMES:
                raise SessionError(f"unknown frame type 0x{kind:02x}")
            frames.append((kind, body))
            if kind == PING:
                self.send(PONG)
            elif kind == REKEY:
                _rekey(self._noise.noise_protocol.cipher_state_decrypt)
            elif kind == CLOSE:
                self.closed = body.decode("utf-8", "replace")
        return frames

    def _handshake(self, message: bytes) -> None:
        if len(message) > MAX_HANDSHAKE:
            raise SessionError("handshake message too long")
        try:
            if self.initiator:
                payload = bytes(self._noise.read_message(message))
                static = self.peer_device_key
            else:
                payload = bytes(self._noise.read_message(message))
                static = self._noise.noise_protocol.handshake_state.rs.public_bytes
        except Exception as exc:
            raise SessionError("handshake failed") from exc
        try:
            cert = Certificate.decode(payload)
        except ValueError as exc:
            raise SessionError(f"bad peer certificate: {exc}") from exc
        if cert.device_key != static or not self.accept(cert):
            raise SessionError("peer not authorized")  # a responder stays silent
        self.peer = cert
        if self.initiator:
            self.established = True
            self.send(PING)  # key confirmation, right after message 2
        else:
            self._outbox += frame(bytes(self._noise.write_message(self.certificate.encode())))

    @property
    def handshake_hash(self) -> bytes:
        return bytes(self._noise.get_handshake_hash())


def _rekey(state: Any) -> None:
    """Noise §11.3: k = ENCRYPT(k, 2^64 - 1, "", 32 zero bytes)[0:32]; the nonce goes on."""
    nonce = b"\0\0\0\0" + struct.pack("<Q", 2**64 - 1)
    key = ChaCha20Poly1305(state.k).encrypt(nonce, b"\0" * 32, b"")[:32]
    n = state.n
    state.initialize_key(key)
    state.n = n


# --- A peer on a TCP socket.


@dataclass
class Received:
    """What the client saw on a session, for the tests to inspect."""

    frames: list[tuple[int, bytes]] = field(default_factory=list)
    envelopes: list[Envelope] = field(default_factory=list)
    undecodable: list[bytes] = field(default_factory=list)
    refused: list[tuple[str, bytes]] = field(default_factory=list)


class V1Client:
    """One device of one identity dialling a daemon over TCP as a protocol-1 peer.

    It answers every ``text`` with a ``delivered`` receipt, verifies every envelope and
    ignores the types it does not know, and drops DATA payloads that are not envelopes.
    """

    def __init__(self, identity: Identity | None = None) -> None:
        self.identity = identity or Identity.generate()
        self.device_private = os.urandom(32)
        self.device_id = os.urandom(16)
        self.certificate = certify(
            self.identity, x25519_public(self.device_private), self.device_id, int(time.time())
        )
        self.clock = LamportClock()
        self.received = Received()
        self.session: V1Session | None = None
        self.sock: socket.socket | None = None

    @property
    def id(self) -> str:
        return id_text(self.identity.public_key)

    def connect(self, host: str, port: int, peer: Certificate, timeout: float = 10.0) -> None:
        """Dial ``peer``'s device and complete the handshake (SessionError, OSError)."""
        self.sock = socket.create_connection((host, port), timeout=timeout)
        self.session = V1Session(
            initiator=True,
            device_private=self.device_private,
            certificate=self.certificate,
            accept=lambda cert: cert.identity == peer.identity,
            peer_device_key=peer.device_key,
        )
        self._flush()
        deadline = time.monotonic() + timeout
        while self.session.peer is None:
            if time.monotonic() > deadline:
                raise SessionError("no handshake answer")
            self._read(deadline - time.monotonic())

    def send_envelope(self, kind: str, body: dict[Any, Any]) -> bytes:
        """Sign and send one envelope; returns its id."""
        session = self._open()
        assert session.peer is not None
        message_id = os.urandom(16)
        wire = make_envelope(
            self.identity,
            self.device_id,
            session.peer.identity,
            kind,
            body,
            self.clock.tick(),
            message_id=message_id,
        )
        session.send(DATA, wire)
        self._flush()
        return message_id

    def send_text(self, text: str) -> bytes:
        return self.send_envelope("text", {"t": text.encode()})

    def send_frame(self, kind: int, body: bytes = b"") -> None:
        """A bare transport frame, e.g. ``REKEY`` (our direction is rekeyed after it)."""
        self._open().send(kind, body)
        self._flush()

    def poll(self, seconds: float) -> None:
        """Read and handle whatever arrives in the next ``seconds``."""
        deadline = time.monotonic() + seconds
        while (left := deadline - time.monotonic()) > 0 and self._open().closed is None:
            self._read(left)

    def wait(self, pred: Callable[[Received], bool], timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while not pred(self.received):
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out after {timeout} s waiting for {what}")
            self.poll(min(0.2, deadline - time.monotonic()))

    def close(self, reason: str = "bye") -> None:
        if self.session is not None and self.session.closed is None:
            try:
                self.session.send(CLOSE, reason.encode())
                self._flush()
            except (SessionError, OSError):
                pass
        if self.sock is not None:
            self.sock.close()
            self.sock = None

    def _open(self) -> V1Session:
        if self.session is None or self.sock is None:
            raise SessionError("not connected")
        return self.session

    def _flush(self) -> None:
        out = self._open().data_to_send()
        if out:
            assert self.sock is not None
            self.sock.sendall(out)

    def _read(self, timeout: float) -> None:
        session = self._open()
        assert self.sock is not None
        self.sock.settimeout(max(timeout, 0.01))
        try:
            data = self.sock.recv(65536)
        except TimeoutError:
            return
        if not data:
            session.closed = session.closed or "connection closed"
            return
        for kind, body in session.receive(data):
            self.received.frames.append((kind, body))
            if kind == DATA:
                self._on_data(body)
        self._flush()

    def _on_data(self, payload: bytes) -> None:
        session = self._open()
        assert session.peer is not None
        if payload[:1] != b"d":  # not a bencoded dictionary, so not an envelope: dropped
            self.received.undecodable.append(payload)
            return
        try:
            envelope = open_envelope(
                payload,
                sender=session.peer.identity,
                device=session.peer.device_id,
                recipient=self.identity.public_key,
                now=time.time(),
            )
        except Refused as refused:
            self.received.refused.append((refused.reason, payload))
            return
        self.clock.seen(envelope.lc)
        self.received.envelopes.append(envelope)
        if envelope.type == "text":
            self.send_envelope("receipt", {"ids": [envelope.id], "s": b"delivered"})
