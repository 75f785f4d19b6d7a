"""The ``.chat`` file: everything needed to join a channel, like a ``.torrent``.

Wire form, a canonical bencoded dictionary with a closed key set (a new field is a new
major version)::

    {v: 1, name: UTF-8, secret: 32 bytes, trackers: [URL, ...],
     opts: {invite: 0|1, history: n}, created: unix seconds,
     owner: 32 bytes, sig: 64 bytes,      (invite-only channels only)
     mac: 32 bytes}

``mac`` is HMAC-SHA256 under a key derived from the secret (``keys.LABEL_FILE_MAC``)
over the bencoded dictionary without ``mac``; ``sig`` is Ed25519 by ``owner`` over
``CHATFILE_CONTEXT`` followed by the bencoded dictionary without ``mac`` and ``sig``.

What each protects: the MAC catches any corrupted or edited byte (a truncated paste, a
tool rewriting the name) but not a deliberate edit by someone who holds the file, since
the file carries the secret. In an open channel that is inherent: holding the file *is*
membership. In an invite-only channel the owner's signature protects name, trackers and
options from every other holder, and swapping the owner key (and re-signing) yields a
different channel, because the owner is bound into the key schedule.

Anything wrong with outside input raises :class:`ChatFileError` (a ``ValueError``) with
a ``code`` from :data:`REASON_CODES` and nothing else.
"""

from __future__ import annotations

import base64
import binascii
import functools
import os
import unicodedata
import urllib.parse
from collections.abc import Iterable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.constant_time import bytes_eq

from btchat.channels.keys import ChannelKeys, hmac_sha256
from btchat.codec.bencode import decode_dict, encode
from btchat.errors import PeerError
from btchat.files import write_atomic
from btchat.identity.idtext import URI_SCHEME
from btchat.identity.keys import Identity, verify_signature
from btchat.identity.names import BIDI_CONTROLS

__all__ = [
    "CHATFILE_CONTEXT",
    "CHATFILE_SUFFIX",
    "DEFAULT_HISTORY",
    "MAX_CHATFILE",
    "MAX_HISTORY",
    "MAX_NAME_BYTES",
    "MAX_TRACKERS",
    "MAX_TRACKER_URL",
    "MAX_URI",
    "REASON_CODES",
    "TRACKER_SCHEMES",
    "URI_PATH",
    "VERSION",
    "ChatFile",
    "ChatFileError",
    "is_channel_uri",
]

VERSION = 1
#: Domain separation of the owner's signature from everything else the identity signs.
CHATFILE_CONTEXT = b"btchat chat file v1\x00"
CHATFILE_SUFFIX = ".chat"
#: Largest encoded file: 8 trackers of 256 bytes, a 100-byte name and the fixed fields
#: fit in under 2.8 KiB.
MAX_CHATFILE = 4096
MAX_NAME_BYTES = 100
MAX_TRACKERS = 8
MAX_TRACKER_URL = 256
TRACKER_SCHEMES = ("http", "https", "udp")
DEFAULT_HISTORY = 100
MAX_HISTORY = 10_000
#: Largest ``created``: exact in every JSON client, beyond any real clock.
MAX_TIME = 2**53 - 1
#: The path of a channel link: ``btchat:channel?d=<base32>``. Contact IDs start with
#: "bt", so no channel link can ever parse as a contact link, nor the reverse.
URI_PATH = "channel"
#: Longest link we try to parse: base32 of MAX_CHATFILE plus the prefix.
MAX_URI = 7000

_FIXED = frozenset({b"v", b"name", b"secret", b"trackers", b"opts", b"created", b"mac"})
_SIGNED = frozenset({b"owner", b"sig"})
_OPTS = frozenset({b"invite", b"history"})

#: Every ``ChatFileError.code``.
REASON_CODES = frozenset(
    {
        "malformed",  # not bencode, not a dictionary, or a field of the wrong type or size
        "too_large",  # over MAX_CHATFILE bytes (or MAX_URI characters)
        "bad_version",  # missing or unsupported ``v``
        "missing_field",
        "unknown_field",
        "bad_name",  # empty, padded, too long, not UTF-8, control/line-break/bidi characters
        "bad_tracker",  # not http/https/udp, malformed, too long, too many, duplicated
        "bad_options",
        "bad_owner",  # an owner on an open channel, or none on an invite-only one
        "tampered",  # the MAC does not match: a byte was changed
        "bad_signature",  # the MAC matches but the owner's signature (or key) does not
        "bad_uri",  # not a btchat:channel link, or its data is not base32
        "io",  # reading or writing a file failed
    }
)


class ChatFileError(PeerError):
    """A ``.chat`` file or link is refused; ``code`` is one of :data:`REASON_CODES`."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message


# ------------------------------------------------------------------------------ checks


def _check_name(name: str) -> None:
    if not name or name != name.strip():
        raise ChatFileError("bad_name", "a channel name is not empty nor starts/ends with spaces")
    size = len(name.encode("utf-8", "surrogatepass"))
    if size > MAX_NAME_BYTES:
        raise ChatFileError("bad_name", f"a channel name is at most {MAX_NAME_BYTES} bytes")
    for c in name:
        if unicodedata.category(c) in ("Cc", "Cs", "Zl", "Zp") or c in BIDI_CONTROLS:
            raise ChatFileError("bad_name", f"a channel name may not contain U+{ord(c):04X}")


def _decode_name(raw: bytes) -> str:
    try:
        name = raw.decode("utf-8")  # strict: no surrogates, overlongs or truncation
    except UnicodeDecodeError:
        raise ChatFileError("bad_name", "the channel name is not valid UTF-8") from None
    _check_name(name)
    return name


def _check_tracker(url: str) -> None:
    """Accept only what a tracker client can use, spelled one way (lowercase scheme).

    Credentials (``user@host``) are refused: they would be shared with every holder of
    the file, and ``http://good.example@evil.example`` misleads a reader.
    """
    if len(url) > MAX_TRACKER_URL:
        raise ChatFileError("bad_tracker", f"a tracker URL is at most {MAX_TRACKER_URL} bytes")
    if not url.isascii() or any(not c.isprintable() or c.isspace() for c in url):
        raise ChatFileError("bad_tracker", f"tracker URL {url!r} has characters not allowed")
    try:
        parts = urllib.parse.urlsplit(url)
        port = parts.port
    except ValueError:
        raise ChatFileError("bad_tracker", f"tracker URL {url!r} is malformed") from None
    if parts.scheme not in TRACKER_SCHEMES or not url.startswith(parts.scheme + "://"):
        raise ChatFileError(
            "bad_tracker", f"tracker URL {url!r}: only http://, https:// and udp:// are allowed"
        )
    if "@" in parts.netloc:
        raise ChatFileError("bad_tracker", f"tracker URL {url!r} carries credentials")
    if not parts.hostname or parts.fragment or "#" in url:
        raise ChatFileError("bad_tracker", f"tracker URL {url!r} has no host, or a fragment")
    if parts.scheme == "udp" and port is None:
        raise ChatFileError("bad_tracker", f"udp tracker URL {url!r} needs a port")
    if port == 0:
        raise ChatFileError("bad_tracker", f"tracker URL {url!r} has port 0")


def _check_trackers(urls: Iterable[str]) -> tuple[str, ...]:
    result = tuple(urls)
    if len(result) > MAX_TRACKERS:
        raise ChatFileError("bad_tracker", f"at most {MAX_TRACKERS} trackers")
    for url in result:
        _check_tracker(url)
    if len(set(result)) != len(result):
        raise ChatFileError("bad_tracker", "a tracker URL is listed twice")
    return result


def _normalise_tracker(url: str) -> str:
    """Lowercase the scheme, the one part users often type in capitals."""
    url = url.strip()
    scheme, sep, rest = url.partition("://")
    return scheme.lower() + sep + rest if sep else url


def _is_uint(value: object, limit: int) -> bool:
    return type(value) is int and 0 <= value <= limit


# ----------------------------------------------------------------------------- the file


@dataclass(frozen=True)
class ChatFile:
    """One channel's join information. Build with :meth:`create` or :meth:`from_bytes`;
    both guarantee a consistent, verifiable file."""

    name: str
    secret: bytes
    trackers: tuple[str, ...]
    invite_only: bool
    history: int
    created: int
    owner: bytes | None
    signature: bytes | None
    mac: bytes
    version: int = VERSION

    def __repr__(self) -> str:
        # Never print the secret: reprs end up in logs and bug reports.
        kind = "invite-only" if self.invite_only else "open"
        return f"ChatFile(name={self.name!r}, {kind}, trackers={len(self.trackers)})"

    @classmethod
    def create(
        cls,
        name: str,
        *,
        invite_only: bool = False,
        trackers: Iterable[str] = (),
        history: int = DEFAULT_HISTORY,
        owner: Identity | None = None,
        now: float,
        secret: bytes | None = None,
    ) -> ChatFile:
        """A new channel with a fresh random secret.

        An invite-only channel needs ``owner`` (who signs the file and the member
        lists); an open one must not have one. User-supplied values that break the
        rules raise :class:`ChatFileError` (``bad_name``, ``bad_tracker``, ...).
        ``secret`` is fixed only by test vectors; a real channel always gets a fresh one.
        """
        if invite_only != (owner is not None):
            raise ChatFileError("bad_owner", "an invite-only channel, and only one, has an owner")
        name = unicodedata.normalize("NFC", name).strip()
        _check_name(name)
        urls = _check_trackers(_normalise_tracker(u) for u in trackers)
        if not _is_uint(history, MAX_HISTORY):
            raise ChatFileError("bad_options", f"history is 0 to {MAX_HISTORY} messages")
        if not 0 <= now <= MAX_TIME:
            raise ChatFileError("malformed", "creation time out of range")
        owner_pk = owner.public_key if owner is not None else None
        if secret is None:
            secret = os.urandom(32)
        elif type(secret) is not bytes or len(secret) != 32:
            raise ValueError("a channel secret is 32 bytes")
        draft = cls(name, secret, urls, invite_only, history, int(now), owner_pk, None, b"")
        if owner is not None:
            signature = owner.sign(CHATFILE_CONTEXT + encode(draft._fields(signed=False)))
            draft = replace(draft, signature=signature)
        return replace(draft, mac=draft._mac())

    # --------------------------------------------------------------------- derived values

    @functools.cached_property
    def keys(self) -> ChannelKeys:
        """The channel's key schedule (the owner is bound in for invite-only channels)."""
        return ChannelKeys.derive(self.secret, self.owner)

    @property
    def channel_id(self) -> bytes:
        return self.keys.channel_id

    # ----------------------------------------------------------------------- encoding

    def _fields(self, *, signed: bool) -> dict[bytes, Any]:
        fields: dict[bytes, Any] = {
            b"v": self.version,
            b"name": self.name.encode("utf-8"),
            b"secret": self.secret,
            b"trackers": [u.encode("ascii") for u in self.trackers],
            b"opts": {b"invite": int(self.invite_only), b"history": self.history},
            b"created": self.created,
        }
        if self.owner is not None:
            fields[b"owner"] = self.owner
            if signed:
                fields[b"sig"] = self.signature
        return fields

    def _mac(self) -> bytes:
        return hmac_sha256(self.keys.file_mac_key, encode(self._fields(signed=True)))

    def to_bytes(self) -> bytes:
        return encode({**self._fields(signed=True), b"mac": self.mac})

    @classmethod
    def from_bytes(cls, data: bytes) -> ChatFile:
        """Parse and check a ``.chat`` file: structure, then MAC, then owner signature,
        then content rules; raises :class:`ChatFileError` on anything wrong."""
        if not isinstance(data, bytes | bytearray | memoryview):
            raise ChatFileError("malformed", "a chat file is bytes")
        d = decode_dict(
            bytes(data), "chat file", max_size=MAX_CHATFILE, max_depth=3, error=ChatFileError
        )
        if b"v" not in d:
            raise ChatFileError("bad_version", "the chat file has no version")
        if d[b"v"] != VERSION:
            shown = d[b"v"] if type(d[b"v"]) is int else "?"
            raise ChatFileError("bad_version", f"chat file version {shown} is not supported")
        keys = set(d)
        missing = _FIXED - keys
        if missing:
            shown = ", ".join(sorted(k.decode("latin-1") for k in missing))
            raise ChatFileError("missing_field", f"the chat file lacks {shown}")
        unknown = keys - _FIXED - _SIGNED
        if unknown:
            shown = ", ".join(sorted(repr(k)[1:] for k in unknown))
            raise ChatFileError("unknown_field", f"the chat file has unknown field(s) {shown}")
        if len(keys & _SIGNED) == 1:
            raise ChatFileError("missing_field", "the chat file has owner or sig without the other")
        name, secret, trackers, opts, created, mac = (
            d[k] for k in (b"name", b"secret", b"trackers", b"opts", b"created", b"mac")
        )
        owner, sig = d.get(b"owner"), d.get(b"sig")
        if not (
            type(name) is bytes
            and type(secret) is bytes
            and len(secret) == 32
            and type(trackers) is list
            and all(type(u) is bytes for u in trackers)
            and type(opts) is dict
            and _is_uint(created, MAX_TIME)
            and type(mac) is bytes
            and len(mac) == 32
            and (owner is None or (type(owner) is bytes and len(owner) == 32))
            and (sig is None or (type(sig) is bytes and len(sig) == 64))
        ):
            raise ChatFileError("malformed", "a chat file field has the wrong type or size")
        if set(opts) != _OPTS:
            raise ChatFileError("bad_options", "opts must hold exactly invite and history")
        invite, history = opts[b"invite"], opts[b"history"]
        if invite not in (0, 1) or type(invite) is not int:
            raise ChatFileError("bad_options", "opts.invite is 0 or 1")
        if not _is_uint(history, MAX_HISTORY):
            raise ChatFileError("bad_options", f"opts.history is 0 to {MAX_HISTORY}")
        if len(trackers) > MAX_TRACKERS:
            raise ChatFileError("bad_tracker", f"at most {MAX_TRACKERS} trackers")
        # Integrity first: a flipped byte is reported as tampering, not as whatever rule
        # the damaged field now happens to break.
        keys_ = ChannelKeys.derive(secret, owner)
        unmac = {k: v for k, v in d.items() if k != b"mac"}
        if not bytes_eq(hmac_sha256(keys_.file_mac_key, encode(unmac)), mac):
            raise ChatFileError("tampered", "the chat file was altered or corrupted (bad MAC)")
        if owner is not None:
            # libsodium also refuses owner keys that are not usable points (small order,
            # non-canonical), so such an owner fails here too.
            unsigned = {k: v for k, v in unmac.items() if k != b"sig"}
            assert sig is not None
            if not verify_signature(owner, sig, CHATFILE_CONTEXT + encode(unsigned)):
                raise ChatFileError("bad_signature", "the owner's signature does not verify")
        if bool(invite) != (owner is not None):
            raise ChatFileError("bad_owner", "an invite-only channel, and only one, has an owner")
        try:
            urls = _check_trackers(u.decode("ascii") for u in trackers)
        except UnicodeDecodeError:
            raise ChatFileError("bad_tracker", "a tracker URL is not ASCII") from None
        result = cls(
            _decode_name(name), secret, urls, bool(invite), history, created, owner, sig, mac
        )
        result.__dict__["keys"] = keys_  # already derived; cached_property slot
        return result

    # ----------------------------------------------------------------------------- links

    def to_uri(self) -> str:
        """``btchat:channel?d=<lowercase unpadded base32 of the file>``: fits a QR code
        (about 240 characters for a file without trackers)."""
        data = base64.b32encode(self.to_bytes()).decode("ascii").rstrip("=").lower()
        return f"{URI_SCHEME}:{URI_PATH}?d={data}"

    @classmethod
    def from_uri(cls, text: str) -> ChatFile:
        """Parse a channel link; any case, whitespace inside the data is ignored (links
        get wrapped). Raises :class:`ChatFileError`."""
        if not isinstance(text, str):
            raise ChatFileError("bad_uri", "a channel link is text")
        if len(text) > MAX_URI:
            raise ChatFileError("too_large", "too long to be a channel link")
        if not is_channel_uri(text):
            raise ChatFileError("bad_uri", f"not a {URI_SCHEME}:{URI_PATH} link")
        query = text.strip().partition("?")[2].split("#", 1)[0]
        try:
            params = urllib.parse.parse_qs(query, strict_parsing=True, errors="strict")
        except (ValueError, UnicodeDecodeError):
            raise ChatFileError("bad_uri", "malformed query in channel link") from None
        # Parameter names in either case: QR scanners may return the link upper-cased.
        values = [v for k, vs in params.items() if k.lower() == "d" for v in vs]
        if len(values) != 1:
            raise ChatFileError("bad_uri", "a channel link has exactly one d= parameter")
        return cls.from_bytes(_b32decode("".join(values[0].split())))

    # ----------------------------------------------------------------------------- files

    def save(self, path: str | os.PathLike[str], *, overwrite: bool = False) -> None:
        """Write atomically with mode 0600 from the start (the file holds the secret).

        Refuses to replace an existing file unless ``overwrite``: that could destroy the
        only copy of another channel's secret.
        """
        target = Path(path)
        try:
            write_atomic(target, self.to_bytes(), replace=overwrite)
        except FileExistsError:
            raise ChatFileError("io", f"{target} already exists") from None
        except OSError as exc:
            raise ChatFileError("io", f"cannot write {target}: {exc.strerror}") from None

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> ChatFile:
        """Read and check a ``.chat`` file; ChatFileError (``io`` if unreadable)."""
        try:
            with open(path, "rb") as f:
                data = f.read(MAX_CHATFILE + 1)
        except OSError as exc:
            raise ChatFileError("io", f"cannot read {path}: {exc.strerror}") from None
        return cls.from_bytes(data)


def _b32decode(data: str) -> bytes:
    """Strict unpadded base32 (either case): exactly one spelling per byte string."""
    if not data.isascii():
        raise ChatFileError("bad_uri", "channel link data is not base32")
    upper = data.upper()
    try:
        raw = base64.b32decode(upper + "=" * (-len(upper) % 8))
    except (binascii.Error, ValueError):
        raise ChatFileError("bad_uri", "channel link data is not base32") from None
    if base64.b32encode(raw).decode("ascii").rstrip("=") != upper:
        raise ChatFileError("bad_uri", "channel link data is not canonical base32")
    return raw


def is_channel_uri(text: str) -> bool:
    """True if ``text`` is a ``btchat:channel`` link (well-formed or not), so a caller
    can route pasted text: channel links here, everything else to
    ``idtext.parse_contact_ref`` (which refuses channel links: they are not IDs)."""
    if not isinstance(text, str) or len(text) > MAX_URI:
        return False
    scheme, colon, rest = text.strip().partition(":")
    if not colon or scheme.lower() != URI_SCHEME:
        return False
    path = rest.removeprefix("//").partition("?")[0].split("#", 1)[0]
    return path.lower() == URI_PATH
