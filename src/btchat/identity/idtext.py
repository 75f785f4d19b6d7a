"""User IDs as text a person can read aloud, paste, or put in a link, with a typo check.

An ID is ``"bt"`` followed by the lowercase, unpadded RFC 4648 base32 of the 32-byte
Ed25519 public key and a 3-byte checksum, the first 3 bytes of
``BLAKE2b-512(b"btchat-id-v1" || public_key)``. 35 bytes are exactly 56 base32 characters,
so there are no padding bits and every key has exactly one spelling. The checksum is what
stops a mistyped ID from silently naming a stranger: every single-character substitution
is caught (a substitution in the checksum part always is; one in the key part is missed
with probability 2**-24), and so are almost all adjacent transpositions.

Parsing is forgiving where that cannot change the meaning: the text is NFKC-normalised
(full-width letters from some input methods become ASCII), case does not matter, and
separators are dropped: whitespace, ``_``, ``.``, any Unicode dash (``-``, en dash, minus
sign: some chat apps "prettify" hyphens) and invisible format characters (zero-width
spaces, byte-order marks) that copy and paste brings along. The RFC 4648 alphabet has no
``0``, ``1``, ``8`` or ``9``; ``0`` is read as ``o`` and ``8`` as ``b`` (each looks like only
one letter of the alphabet), but ``1`` is refused, because it could be ``l`` or ``i``, and
guessing would weaken the checksum. None of this can make a wrong ID parse: the checksum
is still checked on the result.

A link is ``btchat:<id>`` with an optional ``?name=<percent-encoded petname>``, the name
the sender suggests for themselves. Suggested names come from strangers: they are cleaned
of control and bidi-override characters and capped in length before anyone sees them.
"""

from __future__ import annotations

import base64
import hashlib
import unicodedata
import urllib.parse

from nacl.bindings import crypto_sign_ed25519_pk_to_curve25519
from nacl.exceptions import CryptoError
from nacl.exceptions import RuntimeError as NaclRuntimeError

from btchat.errors import UsageError
from btchat.identity.names import clean_suggestion

__all__ = [
    "ID_LENGTH",
    "ID_PREFIX",
    "MAX_NAME_LENGTH",
    "URI_SCHEME",
    "IdError",
    "format_id",
    "format_uri",
    "id_checksum",
    "parse_contact_ref",
    "parse_id",
    "parse_uri",
]

ID_PREFIX = "bt"
URI_SCHEME = "btchat"
#: Domain separation for the checksum hash.
CHECKSUM_CONTEXT = b"btchat-id-v1"
CHECKSUM_SIZE = 3
KEY_SIZE = 32
_BODY_LENGTH = 56  # base32 of 35 bytes, no padding
#: Characters in an unseparated ID.
ID_LENGTH = len(ID_PREFIX) + _BODY_LENGTH
#: Characters per group in ``format_id(pk, grouped=True)``.
GROUP_SIZE = 4
#: Longest suggested name kept from a link (characters, after cleaning).
MAX_NAME_LENGTH = 64
#: Longest text we try to parse at all, so a pasted novel fails fast.
_MAX_INPUT = 1024

_ALPHABET = frozenset("abcdefghijklmnopqrstuvwxyz234567")
# Only where the look-alike is unambiguous in the RFC 4648 alphabet (no 0, 1, 8, 9).
_LOOKALIKES = str.maketrans({"0": "o", "8": "b"})
_SEPARATOR_CHARS = frozenset("_.\u2212")  # plus whitespace, dashes, format characters


class IdError(UsageError):
    """Text is not a valid btchat ID, link, or public key."""


def id_checksum(public_key: bytes) -> bytes:
    """The 3 checksum bytes appended to a key in its text form."""
    return hashlib.blake2b(CHECKSUM_CONTEXT + public_key).digest()[:CHECKSUM_SIZE]


def _check_key_bytes(public_key: bytes) -> None:
    if not isinstance(public_key, bytes) or len(public_key) != KEY_SIZE:
        raise IdError("a public key is 32 bytes")


def _check_valid_point(public_key: bytes) -> None:
    """Refuse keys no one can hold: not a curve point, or of small order.

    libsodium's Ed25519-to-X25519 conversion performs exactly these checks, and the
    rendezvous derivation needs that conversion to succeed anyway.
    """
    try:
        crypto_sign_ed25519_pk_to_curve25519(public_key)
    except (NaclRuntimeError, CryptoError, ValueError):
        raise IdError("not a valid Ed25519 public key") from None


def format_id(pk: bytes, grouped: bool = False) -> str:
    """The text ID of a public key; ``grouped`` splits it into dash-separated blocks."""
    _check_key_bytes(pk)
    body = base64.b32encode(pk + id_checksum(pk)).decode("ascii").lower()
    if not grouped:
        return ID_PREFIX + body
    groups = [body[i : i + GROUP_SIZE] for i in range(0, len(body), GROUP_SIZE)]
    return "-".join([ID_PREFIX, *groups])


def _is_separator(c: str) -> bool:
    return c.isspace() or c in _SEPARATOR_CHARS or unicodedata.category(c) in ("Pd", "Cf")


def _normalise(text: str) -> str:
    if not isinstance(text, str):
        raise IdError("an ID is text")
    if len(text) > _MAX_INPUT:
        raise IdError("too long to be an ID")
    kept = "".join(c for c in unicodedata.normalize("NFKC", text) if not _is_separator(c))
    return kept.lower().translate(_LOOKALIKES)


def parse_id(text: str) -> bytes:
    """The public key named by a text ID; raises :class:`IdError` saying what is wrong."""
    s = _normalise(text)
    if not s:
        raise IdError("empty ID")
    if not s.startswith(ID_PREFIX):
        raise IdError(f"an ID starts with {ID_PREFIX!r}")
    body = s[len(ID_PREFIX) :]
    bad = sorted({c for c in body if c not in _ALPHABET})
    if bad:
        shown = ", ".join(repr(c) for c in bad)
        hint = " ('1' could be 'l' or 'i')" if "1" in bad else ""
        raise IdError(f"invalid character(s) in ID: {shown}{hint}")
    if len(body) < _BODY_LENGTH:
        raise IdError(
            f"too short: an ID has {ID_LENGTH} characters, this has {len(ID_PREFIX) + len(body)}"
        )
    if len(body) > _BODY_LENGTH:
        raise IdError(
            f"too long: an ID has {ID_LENGTH} characters, this has {len(ID_PREFIX) + len(body)}"
        )
    raw = base64.b32decode(body.upper())
    pk, checksum = raw[:KEY_SIZE], raw[KEY_SIZE:]
    if id_checksum(pk) != checksum:
        raise IdError("checksum mismatch: a character was mistyped")
    _check_valid_point(pk)
    return pk


def _clean_name(name: str) -> str | None:
    """A suggested name made safe to display: no control, format or bidi characters."""
    return clean_suggestion(name, MAX_NAME_LENGTH)


def format_uri(pk: bytes, name: str | None = None) -> str:
    """A ``btchat:`` link for a public key, optionally suggesting a name."""
    uri = f"{URI_SCHEME}:{format_id(pk)}"
    cleaned = _clean_name(name) if name is not None else None
    if cleaned is not None:
        uri += "?" + urllib.parse.urlencode({"name": cleaned}, quote_via=urllib.parse.quote)
    return uri


def parse_uri(text: str) -> tuple[bytes, str | None]:
    """The public key and suggested name (cleaned, or None) in a ``btchat:`` link."""
    if not isinstance(text, str):
        raise IdError("a link is text")
    text = text.strip()
    if len(text) > _MAX_INPUT:
        raise IdError("too long to be a btchat link")
    scheme, colon, rest = text.partition(":")
    if not colon or scheme.lower() != URI_SCHEME:
        raise IdError(f"not a {URI_SCHEME}: link")
    rest = rest.removeprefix("//")
    ident, _, query = rest.partition("?")
    ident = ident.split("#", 1)[0]
    query = query.split("#", 1)[0]
    pk = parse_id(urllib.parse.unquote(ident))
    name: str | None = None
    if query:
        try:
            params = urllib.parse.parse_qs(query, strict_parsing=True, errors="strict")
        except (ValueError, UnicodeDecodeError):
            raise IdError("malformed query in btchat: link") from None
        values = params.get("name")
        if values:
            if len(values) > 1:
                raise IdError("a btchat: link has more than one name")
            name = _clean_name(values[0])
    return pk, name


def parse_contact_ref(text: str) -> tuple[bytes, str | None]:
    """Whatever a user pasted to name a contact: an ID, a ``btchat:`` link, or hex key.

    Returns ``(public_key, suggested_name or None)``.
    """
    if not isinstance(text, str):
        raise IdError("a contact reference is text")
    s = text.strip()
    if not s:
        raise IdError("empty contact reference")
    if s.lower().startswith(URI_SCHEME + ":"):
        return parse_uri(s)
    if len(s) == 2 * KEY_SIZE and all(c in "0123456789abcdefABCDEF" for c in s):
        pk = bytes.fromhex(s)
        _check_valid_point(pk)
        return pk, None
    return parse_id(s), None
