"""The file manifest: what an offer says about a file, and its bounds.

A ``file`` envelope's body (``docs/PROTOCOL.md``, "Files")::

    {n: name (UTF-8, 1..255 bytes), s: size, m: media type, p: piece size, r: root,
     d?: the file's bytes, for a file of at most MAX_INLINE bytes ("inline")}

``r`` is the content id (:mod:`btchat.transfer.tree`). The piece size is a power of two
from 16 KiB to 8 MiB, chosen so that a file has at most :data:`MAX_PIECES` pieces: the
piece layer a receiver fetches and keeps is then at most 256 KiB whatever the file size.
The bounds are checked on parse; the name is checked as text here and made safe only
where it becomes a path (:func:`btchat.transfer.names.safe_name`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from btchat.errors import PeerError
from btchat.transfer.tree import EMPTY_ROOT, LEAF_SIZE, piece_count

__all__ = [
    "DEFAULT_PIECE_SIZE",
    "MAX_FILE_SIZE",
    "MAX_INLINE",
    "MAX_PIECES",
    "MAX_PIECE_SIZE",
    "Manifest",
    "ManifestError",
    "choose_piece_size",
    "parse_manifest",
]

DEFAULT_PIECE_SIZE = 256 * 1024
#: Largest piece: bounds what a receiver holds in memory before it is verified.
MAX_PIECE_SIZE = 8 * 1024 * 1024
#: Most pieces in one file: bounds the piece layer (32 bytes each: 256 KiB).
MAX_PIECES = 8192
#: Largest file an offer may describe (64 GiB); a contact's own limit is usually lower.
MAX_FILE_SIZE = MAX_PIECES * MAX_PIECE_SIZE
MAX_NAME = 255
#: Largest file whose bytes travel inside its offer (key ``d``, "inline"): one 16 KiB
#: hash-tree leaf, so its content id is SHA-256 of the bytes, and an offer with a
#: maximal name still fits one offline packet (``MAX_OLM_BODY``, 20 KiB) with room.
MAX_INLINE = 16 * 1024
MAX_MEDIA_TYPE = 127
#: RFC 6838 §4.2 restricted names, lower-cased.
_MEDIA_RE = re.compile(rb"[a-z0-9][a-z0-9!#$&^_.+-]{0,62}/[a-z0-9][a-z0-9!#$&^_.+-]{0,62}")


class ManifestError(PeerError):
    """An offer's manifest breaks its rules; the message says which."""


@dataclass(frozen=True)
class Manifest:
    name: str
    size: int
    media_type: str
    piece_size: int
    root: bytes

    @property
    def pieces(self) -> int:
        return piece_count(self.size, self.piece_size)

    def piece_length(self, index: int) -> int:
        """Bytes in piece ``index`` (the last one may be shorter)."""
        return min(self.piece_size, self.size - index * self.piece_size)

    def to_json(self) -> dict[str, Any]:
        """As records and the API keep it (root in hex)."""
        return {
            "name": self.name,
            "size": self.size,
            "media_type": self.media_type,
            "piece_size": self.piece_size,
            "root": self.root.hex(),
        }

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Manifest:
        """A record's manifest (our own file: raises KeyError, TypeError, ValueError)."""
        return cls(d["name"], d["size"], d["media_type"], d["piece_size"], bytes.fromhex(d["root"]))

    def body(self) -> dict[bytes, Any]:
        return {
            b"n": self.name.encode("utf-8"),
            b"s": self.size,
            b"m": self.media_type.encode("ascii"),
            b"p": self.piece_size,
            b"r": self.root,
        }


def choose_piece_size(size: int) -> int:
    """256 KiB, doubled until the file has at most MAX_PIECES pieces."""
    if not 0 <= size <= MAX_FILE_SIZE:
        raise ValueError(f"a file is at most {MAX_FILE_SIZE} bytes")
    piece = DEFAULT_PIECE_SIZE
    while piece_count(size, piece) > MAX_PIECES:
        piece *= 2
    return piece


def parse_manifest(body: object) -> Manifest:
    """The manifest in an offer's body; raises only :class:`ManifestError`."""
    if type(body) is not dict:
        raise ManifestError("file body must be a dictionary")
    name, size, media = body.get(b"n"), body.get(b"s"), body.get(b"m")
    piece, root = body.get(b"p"), body.get(b"r")
    if type(name) is not bytes or not 1 <= len(name) <= MAX_NAME:
        raise ManifestError(f"file name must be 1 to {MAX_NAME} bytes")
    try:
        text = name.decode("utf-8")
    except UnicodeDecodeError:
        raise ManifestError("file name is not valid UTF-8") from None
    if type(size) is not int or not 0 <= size <= MAX_FILE_SIZE:
        raise ManifestError(f"file size must be 0 to {MAX_FILE_SIZE}")
    if type(media) is not bytes or len(media) > MAX_MEDIA_TYPE or not _MEDIA_RE.fullmatch(media):
        raise ManifestError("media type must be a lower-case type/subtype")
    if type(piece) is not int or not LEAF_SIZE <= piece <= MAX_PIECE_SIZE or piece & (piece - 1):
        raise ManifestError("piece size must be a power of two from 16 KiB to 8 MiB")
    if piece_count(size, piece) > MAX_PIECES:
        raise ManifestError(f"a file has at most {MAX_PIECES} pieces")
    if type(root) is not bytes or len(root) != 32:
        raise ManifestError("root must be 32 bytes")
    if size == 0 and root != EMPTY_ROOT:
        raise ManifestError("the empty file's root is SHA-256 of nothing")
    return Manifest(text, size, media.decode("ascii"), piece, root)
