"""Linking a second device with a one-time code: code, PAKE, sealed transfer (sans-I/O).

How this works: the device that has the identity (the *linker*) makes a code
``<nameplate>-<word>-<word>`` (``37-cobalt-tiger``) and waits where the nameplate alone
points in the DHT (:func:`link_infohash`: the words never leave the two devices, so a
DHT observer cannot test codes offline). The new device (the *joiner*) dials what it
finds there and both run SPAKE2 (the ``spake2`` package, as magic-wormhole) with the
whole code as the password: linker side A, joiner side B. Each then proves it holds the
same key (HMAC-SHA256 over the two SPAKE2 messages, the linker first) before anything
secret moves, so a wrong code fails on both sides and the joiner receives no sealed
byte. After that, messages are split into length-prefixed frames sealed with
ChaCha20-Poly1305 under per-direction keys (counter nonces): the linker sends the
:class:`LinkPayload` (identity seed, its device certificates, the contact book, the
profile), the joiner answers with its own new device certificate, the linker keeps it
and says done.

A guess costs the guesser the offer: :class:`LinkOffer` allows one attempt that gets
past the PAKE, and ends (failed) when that attempt does not confirm; it expires after
:data:`OFFER_LIFETIME`. Both ends are :class:`LinkerConnection` and :class:`Joiner`:
bytes in (``receive_data``), bytes out (``data_to_send``), events out (``next_event``).
Everything a peer sends is bounded; bad input fails the attempt with a reason, never
raises out of ``receive_data``.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import struct
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from spake2 import SPAKE2_A, SPAKE2_B
from spake2.ed25519_basic import NotOnCurve
from spake2.spake2 import SPAKEError

from btchat.codec.bencode import DecodeError, decode, encode
from btchat.errors import PeerError, UsageError
from btchat.identity.keys import MAX_CERT_SIZE, CertificateError, DeviceCertificate, Identity
from btchat.identity.linkwords import WORDS, word_for

__all__ = [
    "FAIL_REASONS",
    "LINK_PERSON",
    "MAX_FRAME",
    "MAX_TRANSFER",
    "OFFER_LIFETIME",
    "CertificateReceived",
    "Failed",
    "Joiner",
    "LinkCode",
    "LinkError",
    "LinkKeys",
    "LinkOffer",
    "LinkPayload",
    "Linked",
    "LinkedContact",
    "LinkerConnection",
    "OfferClosed",
    "PayloadReceived",
    "Sealer",
    "link_infohash",
    "parse_code",
]

#: BLAKE2b personalisation of the rendezvous infohash (zero-padded to 16 bytes).
LINK_PERSON = b"btchat-link-v1"
#: Label hashed before the nameplate, so the infohash means nothing else.
LINK_CONTEXT = b"btchat link rendezvous v1"
NAMEPLATE_MAX = 999
#: An offer waits this long (seconds) for the new device, then ends (as magic-wormhole).
OFFER_LIFETIME = 600.0
#: SPAKE2 identities of the two sides (bound into its key).
ID_LINKER, ID_JOINER = b"btchat link v1 linker", b"btchat link v1 joiner"
#: HKDF-SHA256 info labels; the salt is the transcript (linker's then joiner's message).
INFO_CONFIRM_LINKER = b"btchat link v1 confirm linker"
INFO_CONFIRM_JOINER = b"btchat link v1 confirm joiner"
INFO_LINKER_TO_JOINER = b"btchat link v1 linker to joiner"
INFO_JOINER_TO_LINKER = b"btchat link v1 joiner to linker"

#: Frame types: u32be(len(body)) || body, body = u8(type) || data.
T_PAKE, T_CONFIRM, T_SEALED = 0x01, 0x02, 0x03
SPAKE2_MSG = 33  # one side byte and a 32-byte Ed25519 group element
CONFIRM_SIZE = 32  # HMAC-SHA256
TAG = 16  # Poly1305
#: Largest frame body we accept: bounds a frame a peer can make us buffer.
MAX_FRAME = 65536
#: Plaintext of one sealed frame: flags byte and chunk; the tag rides on top.
MAX_CHUNK = MAX_FRAME - 1 - 1 - TAG
#: The whole transfer, one message: the contact book fits (10,000 contacts of ~300 B).
MAX_TRANSFER = 4 * 1024 * 1024
#: What the joiner sends back (its certificate) and the final word: small.
MAX_REPLY = MAX_CERT_SIZE + 64
MAX_CONTACTS = 10_000
MAX_CONTACT_CERTS = 32  # as messaging/contacts.py MAX_CERTS
MAX_DEVICES = 5  # as a device list (discovery/rendezvous.py)
MAX_TEXT = 1024  # a petname, a profile name or status (bytes)
#: Why an attempt failed, as events and the API say it.
FAIL_REASONS = ("wrong_code", "protocol", "too_large", "closed", "bad_certificate", "expired")

Random = Callable[[int], bytes]


class LinkError(PeerError):
    """The other device sent something malformed (``protocol``) or over a limit
    (``too_large``); ``reason`` is one of FAIL_REASONS."""

    def __init__(self, detail: str, reason: str = "protocol") -> None:
        super().__init__(detail)
        self.reason = reason


class OfferClosed(UsageError):
    """The offer is no longer open (used, failed, expired or cancelled)."""


# ------------------------------------------------------------------ the code


@dataclass(frozen=True)
class LinkCode:
    """``<nameplate>-<word>-<word>``: the nameplate says where, the words are the secret."""

    nameplate: int
    words: tuple[str, str]

    def __str__(self) -> str:
        return f"{self.nameplate}-{self.words[0]}-{self.words[1]}"

    @property
    def password(self) -> bytes:
        """The PAKE password: the whole code, spelled canonically."""
        return str(self).encode("ascii")

    @classmethod
    def generate(cls, rng: Random = os.urandom) -> LinkCode:
        r = rng(4)
        nameplate = int.from_bytes(r[:2], "big") % NAMEPLATE_MAX + 1
        return cls(nameplate, (WORDS[r[2]], WORDS[r[3]]))


def parse_code(text: str) -> LinkCode:
    """A code as typed: any case, spaces or dashes between parts, words by a prefix of
    three letters or more. Raises UsageError with a sentence to show."""
    parts = text.strip().lower().replace(" ", "-").split("-")
    parts = [p for p in parts if p]
    if len(parts) != 3 or not parts[0].isdigit() or len(parts[0]) > 3:
        raise UsageError("a link code looks like 37-cobalt-tiger (a number and two words)")
    nameplate = int(parts[0])
    if not 1 <= nameplate <= NAMEPLATE_MAX:
        raise UsageError(f"a link code starts with a number from 1 to {NAMEPLATE_MAX}")
    words = [word_for(p) for p in parts[1:]]
    if words[0] is None or words[1] is None:
        raise UsageError("the words of this link code are not in btchat's word list")
    return LinkCode(nameplate, (words[0], words[1]))


def link_infohash(nameplate: int) -> bytes:
    """Where an offer with this nameplate waits in the DHT (20 bytes). The words are not
    hashed in: 999 nameplates are public anyway, and the words must stay off the DHT."""
    if not 1 <= nameplate <= NAMEPLATE_MAX:
        raise UsageError(f"a nameplate is 1 to {NAMEPLATE_MAX}")
    data = LINK_CONTEXT + struct.pack(">H", nameplate)
    return hashlib.blake2b(data, digest_size=20, person=LINK_PERSON).digest()


# ------------------------------------------------------------------ keys and frames


def _hkdf(key: bytes, salt: bytes, info: bytes) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=salt, info=info).derive(key)


@dataclass(frozen=True)
class LinkKeys:
    """Everything derived from the SPAKE2 key and the transcript."""

    confirm_linker: bytes
    confirm_joiner: bytes
    linker_to_joiner: bytes
    joiner_to_linker: bytes
    transcript: bytes

    @classmethod
    def derive(cls, spake_key: bytes, msg_linker: bytes, msg_joiner: bytes) -> LinkKeys:
        t = msg_linker + msg_joiner
        return cls(
            _hkdf(spake_key, t, INFO_CONFIRM_LINKER),
            _hkdf(spake_key, t, INFO_CONFIRM_JOINER),
            _hkdf(spake_key, t, INFO_LINKER_TO_JOINER),
            _hkdf(spake_key, t, INFO_JOINER_TO_LINKER),
            t,
        )

    def confirmation(self, linker: bool) -> bytes:
        key = self.confirm_linker if linker else self.confirm_joiner
        return hmac.new(key, self.transcript, hashlib.sha256).digest()


def frame(kind: int, data: bytes) -> bytes:
    return struct.pack(">IB", len(data) + 1, kind) + data


class Sealer:
    """One direction's ChaCha20-Poly1305: nonce = 4 zero bytes || u64be(frame number)."""

    def __init__(self, key: bytes) -> None:
        self._aead = ChaCha20Poly1305(key)
        self.counter = 0

    def _nonce(self) -> bytes:
        nonce = b"\x00" * 4 + struct.pack(">Q", self.counter)
        self.counter += 1
        return nonce

    def seal_message(self, message: bytes) -> bytes:
        """``message`` as sealed frames: each ``u8(flags) || chunk``, flags 1 on the last."""
        out = []
        chunks = [message[i : i + MAX_CHUNK] for i in range(0, len(message), MAX_CHUNK)] or [b""]
        for n, chunk in enumerate(chunks):
            last = n == len(chunks) - 1
            plain = bytes([1 if last else 0]) + chunk
            out.append(frame(T_SEALED, self._aead.encrypt(self._nonce(), plain, None)))
        return b"".join(out)

    def open(self, sealed: bytes) -> tuple[bool, bytes]:
        """(last?, chunk); raises LinkError if it does not authenticate."""
        try:
            plain = self._aead.decrypt(self._nonce(), sealed, None)
        except InvalidTag:
            raise LinkError("a sealed frame does not authenticate") from None
        if not plain or plain[0] not in (0, 1):
            raise LinkError("a sealed frame has bad flags")
        return plain[0] == 1, plain[1:]


class _Reader:
    """Frames out of a byte stream, each bounded by MAX_FRAME before it is buffered."""

    def __init__(self) -> None:
        self._buf = bytearray()

    def feed(self, data: bytes) -> list[tuple[int, bytes]]:
        self._buf += data
        out = []
        while len(self._buf) >= 4:
            (size,) = struct.unpack_from(">I", self._buf)
            if size == 0 or size > MAX_FRAME:
                raise LinkError(f"a frame of {size} bytes (at most {MAX_FRAME})", "too_large")
            if len(self._buf) < 4 + size:
                break
            body = bytes(self._buf[4 : 4 + size])
            del self._buf[: 4 + size]
            out.append((body[0], body[1:]))
        return out


# ------------------------------------------------------------------ the payload


def _text(value: object, what: str) -> str:
    if not isinstance(value, bytes) or len(value) > MAX_TEXT:
        raise LinkError(f"{what} is not text of at most {MAX_TEXT} bytes")
    return value.decode("utf-8", "replace")


def _flag(d: dict[bytes, Any], key: bytes) -> bool:
    value = d.get(key, 0)
    if value not in (0, 1) or isinstance(value, bool):
        raise LinkError("a contact flag is not 0 or 1")
    return bool(value)


@dataclass(frozen=True)
class LinkedContact:
    """One entry of the contact book as it moves: what ``messaging/contacts.py`` keeps
    that is not per-device state (presence and last seen are not sent)."""

    pk: bytes
    name: str
    added_ms: int
    verified: bool
    blocked: bool
    certs: tuple[DeviceCertificate, ...]

    def to_wire(self) -> dict[bytes, Any]:
        return {
            b"k": self.pk,
            b"n": self.name.encode(),
            b"a": self.added_ms,
            b"v": int(self.verified),
            b"b": int(self.blocked),
            b"c": [c.encode() for c in self.certs],
        }

    @classmethod
    def from_wire(cls, d: object) -> LinkedContact:
        if not isinstance(d, dict):
            raise LinkError("a contact is not a dictionary")
        pk, added, certs = d.get(b"k"), d.get(b"a", 0), d.get(b"c", [])
        if not isinstance(pk, bytes) or len(pk) != 32:
            raise LinkError("a contact key is not 32 bytes")
        if not isinstance(added, int) or isinstance(added, bool) or not 0 <= added < 2**53:
            raise LinkError("a contact's added time is not a time")
        if not isinstance(certs, list) or len(certs) > MAX_CONTACT_CERTS:
            raise LinkError(f"a contact has more than {MAX_CONTACT_CERTS} certificates")
        return cls(
            pk,
            _text(d.get(b"n", b""), "a petname"),
            added,
            _flag(d, b"v"),
            _flag(d, b"b"),
            tuple(DeviceCertificate.all_of(pk, certs)),  # a bad one is dropped
        )


@dataclass(frozen=True)
class LinkPayload:
    """What the linker hands the new device: the identity, its devices, contacts, profile."""

    seed: bytes
    devices: tuple[DeviceCertificate, ...]
    contacts: tuple[LinkedContact, ...]
    profile_name: str | None = None
    profile_status: str | None = None

    def __repr__(self) -> str:  # the seed never goes to a log
        return f"LinkPayload({len(self.devices)} devices, {len(self.contacts)} contacts)"

    @property
    def identity(self) -> Identity:
        return Identity.from_seed(self.seed)

    def encode(self) -> bytes:
        profile: dict[bytes, Any] = {}
        if self.profile_name:
            profile[b"n"] = self.profile_name.encode()
        if self.profile_status:
            profile[b"s"] = self.profile_status.encode()
        return encode(
            {
                b"v": 1,
                b"seed": self.seed,
                b"devices": [c.encode() for c in self.devices],
                b"contacts": [c.to_wire() for c in self.contacts],
                b"profile": profile,
            }
        )

    @classmethod
    def decode(cls, data: bytes) -> LinkPayload:
        """Parse and check; unknown keys are ignored (a later version may add some)."""
        try:
            d = decode(data, max_size=MAX_TRANSFER)
        except DecodeError as exc:
            raise LinkError(f"the payload is not bencode: {exc}") from None
        if not isinstance(d, dict) or d.get(b"v") != 1:
            raise LinkError("the payload is not a version 1 dictionary")
        seed = d.get(b"seed")
        if not isinstance(seed, bytes) or len(seed) != 32:
            raise LinkError("the payload's seed is not 32 bytes")
        me = Identity.from_seed(seed).public_key
        raw_devices = d.get(b"devices")
        if not isinstance(raw_devices, list) or len(raw_devices) > MAX_DEVICES:
            raise LinkError(f"the payload lists more than {MAX_DEVICES} devices")
        devices = DeviceCertificate.all_of(me, raw_devices)
        if not devices or len(devices) != len(raw_devices):
            raise LinkError("a device certificate in the payload is not one of this identity")
        raw_contacts = d.get(b"contacts", [])
        if not isinstance(raw_contacts, list) or len(raw_contacts) > MAX_CONTACTS:
            raise LinkError(f"the payload has more than {MAX_CONTACTS} contacts")
        contacts = tuple(LinkedContact.from_wire(c) for c in raw_contacts)
        if len({c.pk for c in contacts}) != len(contacts) or me in {c.pk for c in contacts}:
            raise LinkError("the payload repeats a contact or lists ourselves")
        profile = d.get(b"profile", {})
        if not isinstance(profile, dict):
            raise LinkError("the payload's profile is not a dictionary")
        name = _text(profile[b"n"], "the profile name") if b"n" in profile else None
        status = _text(profile[b"s"], "the profile status") if b"s" in profile else None
        return cls(seed, tuple(devices), contacts, name, status)


# ------------------------------------------------------------------ events


@dataclass(frozen=True)
class PayloadReceived:
    """Joiner: the linker's payload arrived; answer with :meth:`Joiner.send_certificate`."""

    payload: LinkPayload


@dataclass(frozen=True)
class CertificateReceived:
    """Linker: the new device's certificate (by our identity, verified); keep it, then
    :meth:`LinkerConnection.accept`."""

    cert: DeviceCertificate


@dataclass(frozen=True)
class Linked:
    """Both sides: done. The linker has kept the certificate; the joiner may save."""


@dataclass(frozen=True)
class Failed:
    reason: str  # one of FAIL_REASONS
    detail: str = ""


Event = PayloadReceived | CertificateReceived | Linked | Failed


# ------------------------------------------------------------------ the two sides


class _Side:
    """What both ends share: frames in, bytes and events out, one failure and done."""

    linker: bool

    def __init__(self, code: LinkCode, rng: Random) -> None:
        self.code = code
        self._rng = rng
        self._reader = _Reader()
        self._out = bytearray()
        self._events: deque[Event] = deque()
        self._keys: LinkKeys | None = None
        self._seal: Sealer | None = None
        self._open: Sealer | None = None
        self._message = bytearray()
        self.state = "start"
        self.pake_done = False
        self.sealed_frames_received = 0
        #: Why the attempt failed, once it has.
        self.failure: Failed | None = None

    @property
    def finished(self) -> bool:
        return self.state in ("linked", "failed")

    def data_to_send(self) -> bytes:
        out, self._out = bytes(self._out), bytearray()
        return out

    def next_event(self) -> Event | None:
        return self._events.popleft() if self._events else None

    def receive_data(self, data: bytes) -> None:
        """Bytes from the other device; bad ones end the attempt (a Failed event)."""
        if self.finished:
            return
        try:
            for kind, body in self._reader.feed(data):
                if self.finished:
                    return
                self._frame(kind, body)
        except LinkError as exc:
            self._fail(exc.reason, str(exc))

    def connection_lost(self) -> None:
        """The stream ended. After the PAKE without confirmation: the guess was made."""
        if self.finished:
            return
        if self.pake_done and self.state == "confirm":
            self._fail("wrong_code", "the other device left before confirming the code")
        else:
            self._fail("closed", "the connection closed before linking finished")

    def _fail(self, reason: str, detail: str = "") -> None:
        if not self.finished:
            self.state = "failed"
            self._out.clear()
            self.failure = Failed(reason, detail)
            self._events.append(self.failure)

    def _keys_from(self, spake: SPAKE2_A | SPAKE2_B, ours: bytes, theirs: bytes) -> None:
        try:
            key = spake.finish(theirs)
        except (SPAKEError, ValueError, NotOnCurve) as exc:
            raise LinkError(f"a bad SPAKE2 message: {exc}") from None
        msg_linker, msg_joiner = (ours, theirs) if self.linker else (theirs, ours)
        self._keys = LinkKeys.derive(key, msg_linker, msg_joiner)
        self.pake_done = True

    def _start_sealing(self) -> None:
        assert self._keys is not None
        k = self._keys
        mine, theirs = (
            (k.linker_to_joiner, k.joiner_to_linker)
            if self.linker
            else (k.joiner_to_linker, k.linker_to_joiner)
        )
        self._seal, self._open = Sealer(mine), Sealer(theirs)

    def _check_confirm(self, body: bytes) -> bool:
        assert self._keys is not None
        expected = self._keys.confirmation(linker=not self.linker)
        if len(body) != CONFIRM_SIZE or not hmac.compare_digest(body, expected):
            self._fail("wrong_code", "the code does not match")
            return False
        return True

    def _sealed(self, body: bytes, limit: int) -> bytes | None:
        """A chunk in; the whole message once its last chunk came, else None."""
        assert self._open is not None
        self.sealed_frames_received += 1
        last, chunk = self._open.open(body)
        if len(self._message) + len(chunk) > limit:
            raise LinkError(f"a message of more than {limit} bytes", "too_large")
        self._message += chunk
        if not last:
            return None
        message, self._message = bytes(self._message), bytearray()
        return message

    def _send(self, message: bytes) -> None:
        assert self._seal is not None
        self._out += self._seal.seal_message(message)

    def _frame(self, kind: int, body: bytes) -> None:
        raise NotImplementedError


class LinkerConnection(_Side):
    """The linker's end of one attempt (made by :meth:`LinkOffer.attempt`)."""

    linker = True

    def __init__(self, code: LinkCode, payload: bytes, identity: bytes, rng: Random) -> None:
        super().__init__(code, rng)
        self._payload = payload
        self._identity = identity
        self._spake = SPAKE2_A(code.password, idA=ID_LINKER, idB=ID_JOINER, entropy_f=rng)
        self.state = "pake"  # waiting for the joiner's SPAKE2 message
        self.cert: DeviceCertificate | None = None

    def _frame(self, kind: int, body: bytes) -> None:
        if self.state == "pake" and kind == T_PAKE and len(body) == SPAKE2_MSG:
            ours = self._spake.start()
            self._keys_from(self._spake, ours, body)
            assert self._keys is not None
            self._out += frame(T_PAKE, ours) + frame(T_CONFIRM, self._keys.confirmation(True))
            self.state = "confirm"
        elif self.state == "confirm" and kind == T_CONFIRM:
            if self._check_confirm(body):
                self._start_sealing()  # only now: a wrong code never sees a sealed byte
                self._send(self._payload)
                self.state = "cert"
        elif self.state == "cert" and kind == T_SEALED:
            message = self._sealed(body, MAX_REPLY)
            if message is not None:
                self._certificate(message)
        else:
            raise LinkError(f"frame type {kind} ({len(body)} bytes) in state {self.state}")

    def _certificate(self, message: bytes) -> None:
        try:
            d = decode(message, max_size=MAX_REPLY)
            cert = DeviceCertificate.decode(d[b"cert"]) if isinstance(d, dict) else None
        except (DecodeError, CertificateError, KeyError, TypeError):
            cert = None
        if cert is None or cert.identity != self._identity:
            self._fail("bad_certificate", "the new device's certificate is not by our identity")
            return
        self.cert = cert
        self.state = "keeping"
        self._events.append(CertificateReceived(cert))

    def accept(self) -> None:
        """The certificate is kept (persisted): tell the new device it is linked."""
        if self.state != "keeping":
            raise UsageError("nothing to accept")
        self._send(encode({b"ok": 1}))
        self.state = "linked"
        self._events.append(Linked())


class Joiner(_Side):
    """The new device's end: sends its SPAKE2 message at once (see ``data_to_send``)."""

    linker = False

    def __init__(self, code: LinkCode, rng: Random = os.urandom) -> None:
        super().__init__(code, rng)
        self._spake = SPAKE2_B(code.password, idA=ID_LINKER, idB=ID_JOINER, entropy_f=rng)
        self._ours = self._spake.start()
        self._out += frame(T_PAKE, self._ours)
        self.state = "pake"
        self.payload: LinkPayload | None = None

    def _frame(self, kind: int, body: bytes) -> None:
        if self.state == "pake" and kind == T_PAKE and len(body) == SPAKE2_MSG:
            self._keys_from(self._spake, self._ours, body)
            self.state = "confirm"
        elif self.state == "confirm" and kind == T_CONFIRM:
            if self._check_confirm(body):
                assert self._keys is not None
                self._out += frame(T_CONFIRM, self._keys.confirmation(False))
                self._start_sealing()
                self.state = "payload"
        elif self.state == "payload" and kind == T_SEALED:
            message = self._sealed(body, MAX_TRANSFER)
            if message is not None:
                self.payload = LinkPayload.decode(message)
                self.state = "answer"
                self._events.append(PayloadReceived(self.payload))
        elif self.state == "done" and kind == T_SEALED:
            message = self._sealed(body, MAX_REPLY)
            if message is not None:
                if message != encode({b"ok": 1}):
                    raise LinkError("the linker's last word is not ok")
                self.state = "linked"
                self._events.append(Linked())
        else:
            raise LinkError(f"frame type {kind} ({len(body)} bytes) in state {self.state}")

    def send_certificate(self, cert: DeviceCertificate) -> None:
        """Our new device's certificate, made with the received seed."""
        if self.state != "answer" or self.payload is None:
            raise UsageError("no payload to answer yet")
        if cert.identity != self.payload.identity.public_key:
            raise UsageError("the certificate is not by the received identity")
        self._send(encode({b"cert": cert.encode()}))
        self.state = "done"


# ------------------------------------------------------------------ the offer


class LinkOffer:
    """One code, one chance: at most one attempt at a time, and the first attempt that
    gets past the PAKE decides (linked, or the offer fails). Expires after
    OFFER_LIFETIME seconds."""

    def __init__(
        self,
        payload: LinkPayload,
        now: float,
        *,
        code: LinkCode | None = None,
        rng: Random = os.urandom,
        lifetime: float = OFFER_LIFETIME,
    ) -> None:
        self.code = code if code is not None else LinkCode.generate(rng)
        self._payload = payload.encode()
        if len(self._payload) > MAX_TRANSFER:
            raise UsageError("the contact book is too large to link a device")
        self._identity = payload.identity.public_key
        self._rng = rng
        self.expires_at = now + lifetime
        self.state = "waiting"  # waiting, busy, linked, failed, expired, cancelled
        self.reason: str | None = None
        self._current: LinkerConnection | None = None

    @property
    def open(self) -> bool:
        return self.state in ("waiting", "busy")

    def expire(self, now: float) -> bool:
        """True if the offer has just expired (not when already closed)."""
        if self.open and now >= self.expires_at:
            self.state, self.reason = "expired", "expired"
            return True
        return False

    def cancel(self) -> None:
        if self.open:
            self.state, self.reason = "cancelled", "cancelled"

    def attempt(self, now: float) -> LinkerConnection | None:
        """A new attempt for an incoming connection; None while another runs (the
        shell closes the newcomer). Raises OfferClosed if the offer is over."""
        self.expire(now)
        if not self.open:
            raise OfferClosed(f"the link offer is {self.state}")
        if self.state == "busy":
            return None
        self.state = "busy"
        self._current = LinkerConnection(self.code, self._payload, self._identity, self._rng)
        return self._current

    def attempt_ended(self, conn: LinkerConnection) -> None:
        """Call when an attempt's connection is gone: it decides the offer once it got
        past the PAKE (a guess was made), else the offer waits again."""
        if conn is not self._current:
            return
        self._current = None
        if not conn.finished:
            conn.connection_lost()
        if self.state != "busy":
            return
        if conn.state == "linked":
            self.state = "linked"
        elif conn.pake_done:
            self.state = "failed"
            self.reason = conn.failure.reason if conn.failure is not None else "wrong_code"
        else:
            self.state = "waiting"
