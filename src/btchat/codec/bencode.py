"""Strict bencode (BEP 3), as every KRPC packet and BEP 44 signature depends on it.

Decoding accepts only the canonical form, because BEP 44 signs the *encoded* value: if
two encodings of one value were both accepted, a signature check over a re-encoding could
pass on bytes the signer never saw. So we reject unsorted or duplicate dict keys, integers
with leading zeros or ``-0``, and trailing bytes, and bound nesting depth and input size.

Remote nodes are not all so careful: libtorrent accepts a KRPC packet with unsorted keys
or trailing bytes, and so does ``decode(..., strict=False)``, which KRPC envelopes use.
It still refuses duplicate keys (two readings of one packet), non-canonical integers and
everything past the bounds; and a value a signature covers (BEP 44 ``v``) is checked over
its canonical re-encoding, so leniency never lets a signature pass over other bytes.

Decoded values are ``bytes``, ``int``, ``list`` and ``dict[bytes, ...]``. Anything wrong
with remote input raises :class:`DecodeError` and nothing else; encoding a value of an
unsupported type is a programming error and raises ``TypeError``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from btchat.errors import PeerError

__all__ = [
    "MAX_DEPTH",
    "MAX_INPUT",
    "Bencodable",
    "DecodeError",
    "Raw",
    "decode",
    "decode_dict",
    "encode",
]

Bencodable = bytes | int | list[Any] | dict[bytes, Any]

#: Deepest nesting we decode. KRPC needs 3 levels; BEP 44 values are user data, so allow
#: more, but a bound keeps hostile input from exhausting the Python stack.
MAX_DEPTH = 32
#: Largest input we decode. A UDP datagram is at most 64 KiB; KRPC packets are ~1.5 KiB.
MAX_INPUT = 65536
#: Longest integer literal (digits). 2**64 has 20 digits; anything much longer is abuse.
MAX_INT_DIGITS = 32


class DecodeError(PeerError):
    """The input is not canonical bencode within our limits."""


class Raw(bytes):
    """Bytes that are already bencoded, spliced into the output unchanged.

    Lets a node serve a stored BEP 44 value byte for byte as it was signed, without
    decoding and re-encoding it.
    """


def decode(
    data: bytes, *, max_depth: int = MAX_DEPTH, max_size: int = MAX_INPUT, strict: bool = True
) -> Any:
    """Decode exactly one canonical bencoded value occupying all of ``data``.

    With ``strict=False``, dictionary keys may come in any order (never twice) and bytes
    after the value are ignored.
    """
    if not isinstance(data, bytes):
        if not isinstance(data, bytearray | memoryview):
            raise DecodeError("input is not bytes")
        data = bytes(data)
    if len(data) > max_size:
        raise DecodeError(f"input of {len(data)} bytes exceeds limit of {max_size}")
    if not data:
        raise DecodeError("empty input")
    try:
        value, end = _decode(data, 0, max_depth, strict)
    except IndexError:
        raise DecodeError("truncated input") from None
    except RecursionError:  # pragma: no cover - max_depth keeps us far below the limit
        raise DecodeError("nesting too deep") from None
    if end != len(data) and strict:
        raise DecodeError(f"{len(data) - end} trailing bytes")
    return value


def decode_dict(
    data: bytes,
    what: str,
    *,
    max_size: int,
    max_depth: int,
    error: Callable[[str, str], Exception],
) -> dict[bytes, Any]:
    """``data`` as the one bencoded dictionary a ``what`` ("chat file") is.

    For formats whose errors carry a reason code: over ``max_size`` bytes raises
    ``error("too_large", ...)``, not bencode or not a dictionary ``error("malformed", ...)``.
    """
    if len(data) > max_size:
        raise error("too_large", f"a {what} is at most {max_size} bytes")
    try:
        d = decode(data, max_depth=max_depth, max_size=max_size)
    except DecodeError as exc:
        raise error("malformed", f"not a {what} (bencode: {exc})") from None
    if not isinstance(d, dict):
        raise error("malformed", f"not a {what} (not a dictionary)")
    return d


def _canonical_int(digits: bytes, pos: int) -> int:
    """Parse a decimal integer, accepting only its one canonical spelling.

    ``int()`` also takes ``+1``, `` 1``, ``1_0``, ``01`` and ``-0``; formatting the
    result back and comparing rejects every such variant in one step.
    """
    if len(digits) - digits.startswith(b"-") > MAX_INT_DIGITS:  # the sign is not a digit
        raise DecodeError(f"integer too long at offset {pos}")
    try:
        value = int(digits)
    except ValueError:
        raise DecodeError(f"malformed integer at offset {pos}") from None
    if b"%d" % value != digits:
        raise DecodeError(f"non-canonical integer at offset {pos}")
    return value


def _decode_str(data: bytes, pos: int) -> tuple[bytes, int]:
    colon = data.find(b":", pos, pos + MAX_INT_DIGITS + 1)
    if colon < 0:
        raise DecodeError(f"malformed string length at offset {pos}")
    if colon == pos + 1:  # one digit (the caller saw it), canonical whatever it is
        end = colon + 1 + data[pos] - 0x30
    else:
        digits = data[pos:colon]
        # Canonical length: ASCII digits only, no leading zero (a sign cannot occur:
        # the caller saw a digit first).
        if not digits.isdigit() or data[pos] == 0x30:
            raise DecodeError(f"malformed string length at offset {pos}")
        end = colon + 1 + int(digits)
    if end > len(data):
        raise DecodeError(f"string at offset {pos} runs past end of input")
    return data[colon + 1 : end], end


def _decode(data: bytes, pos: int, depth: int, strict: bool) -> tuple[Any, int]:
    c = data[pos]
    if 0x30 <= c <= 0x39:  # byte string: <len>:<bytes>
        return _decode_str(data, pos)
    if c == 0x69:  # i<int>e
        end = data.find(b"e", pos + 1, pos + MAX_INT_DIGITS + 3)
        if end < 0:
            raise DecodeError(f"unterminated integer at offset {pos}")
        return _canonical_int(data[pos + 1 : end], pos + 1), end + 1
    if depth <= 0:
        raise DecodeError("nesting too deep")
    if c == 0x64:  # d<key><value>...e, keys sorted as raw byte strings, no duplicates
        return _decode_dict(data, pos + 1, depth, strict)
    if c == 0x6C:  # l<items>e
        items: list[Any] = []
        pos += 1
        while (c := data[pos]) != 0x65:
            if 0x30 <= c <= 0x39:
                item, pos = _decode_str(data, pos)
            else:
                item, pos = _decode(data, pos, depth - 1, strict)
            items.append(item)
        return items, pos + 1
    raise DecodeError(f"unexpected byte {c:#04x} at offset {pos}")


def _decode_dict(data: bytes, pos: int, depth: int, strict: bool) -> tuple[Any, int]:
    """A dictionary's body from ``pos`` (past the ``d``). Every KRPC packet is one, so
    its string keys and values are read in this loop, without a call each (the hot
    path): it alternates between a key and its value, and one block reads a string."""
    result: dict[bytes, Any] = {}
    key: bytes | None = None  # None: a key comes next; else its value does
    previous = b""
    size = len(data)
    find = data.find
    while True:
        c = data[pos]
        if not 0x30 <= c <= 0x39:
            if key is None:
                if c == 0x65:
                    return result, pos + 1
                raise DecodeError(f"dictionary key at offset {pos} is not a string")
            result[key], pos = _decode(data, pos, depth - 1, strict)
            key = None
            continue
        # A string, as _decode_str reads one.
        colon = find(b":", pos, pos + MAX_INT_DIGITS + 1)
        if colon < 0:
            raise DecodeError(f"malformed string length at offset {pos}")
        if colon == pos + 1:
            end = colon + 1 + c - 0x30
        else:
            digits = data[pos:colon]
            if not digits.isdigit() or c == 0x30:
                raise DecodeError(f"malformed string length at offset {pos}")
            end = colon + 1 + int(digits)
        if end > size:
            raise DecodeError(f"string at offset {pos} runs past end of input")
        string = data[colon + 1 : end]
        pos = end
        if key is not None:
            result[key] = string
            key = None
            continue
        if (result and string <= previous and (strict or string in result)) or (
            not strict and string in result
        ):
            raise DecodeError(f"dictionary keys unsorted or duplicated at offset {pos}")
        previous = key = string


def encode(value: Any) -> bytes:
    """Encode ``value`` canonically (dict keys sorted). Raises TypeError on other types."""
    out: list[bytes] = []
    _encode(value, out)
    return b"".join(out)


def _encode(value: Any, out: list[bytes]) -> None:
    # Exact-type checks first: this runs for every packet a node sends.
    t = type(value)
    if t is bytes:
        out.append(b"%d:%s" % (len(value), value))
    elif t is dict:
        out.append(b"d")
        for key in sorted(value):
            if type(key) is not bytes:
                raise TypeError(f"dictionary key {key!r} is not bytes")
            item = value[key]
            if type(item) is bytes:
                out.append(b"%d:%s%d:%s" % (len(key), key, len(item), item))
            else:
                out.append(b"%d:%s" % (len(key), key))
                _encode(item, out)
        out.append(b"e")
    elif t is int:
        out.append(b"i%de" % value)
    elif t is Raw:
        out.append(value)
    elif t is list or t is tuple:
        out.append(b"l")
        for item in value:
            _encode(item, out)
        out.append(b"e")
    elif isinstance(value, bool):
        raise TypeError("bencode has no booleans; use 0 or 1")
    elif isinstance(value, bytes | bytearray | memoryview):
        _encode(bytes(value), out)
    elif isinstance(value, int):
        _encode(int(value), out)
    elif isinstance(value, dict):
        _encode(dict(value), out)
    elif isinstance(value, list | tuple):
        _encode(list(value), out)
    else:
        raise TypeError(f"cannot bencode {type(value).__name__}")
