"""Transfer messages on a session substream, and the bounded reader that cuts them out.

A side that takes part in file transfer opens two substreams once the peer announced
substreams: a control stream (priority 6: requests, cancels) and a bulk stream
(priority 7, the lowest: the piece layer and pieces), so chat (the default stream) and
even our requests never wait behind file data. Both carry the same framing::

    message = length:u32be  kind:u8  offer:16 bytes  rest      (length counts kind..rest)
    GET_LAYER 0x01  rest = ""
    GET       0x02  rest = index:u32be * (1..MAX_GET)
    CANCEL    0x03  rest = reason, UTF-8, <= 256 bytes
    BITFIELD  0x04  rest = the pieces held, bit 7 of byte 0 is piece 0 (<= 1024 bytes)
    HAVE      0x05  rest = index:u32be (one more piece held)
    LAYER     0x81  rest = 32-byte hashes * (1..8192)
    PIECE     0x82  rest = index:u32be  bytes of the piece

``offer`` is the id of the signed ``file`` envelope (1:1) or channel message (channels)
that offered the file; BITFIELD and HAVE travel only on channel links, where a file has
many sources (:mod:`btchat.transfer.swarm`). Anything
malformed raises :class:`WireError`, the one error remote input can cause here.
"""

from __future__ import annotations

import enum
import struct
from dataclasses import dataclass

from btchat.errors import PeerError
from btchat.transfer.manifest import MAX_PIECE_SIZE, MAX_PIECES

__all__ = [
    "BULK_PRIORITY",
    "CONTROL_PRIORITY",
    "MAX_BITFIELD",
    "MAX_GET",
    "MAX_MESSAGE",
    "PIECE_HEAD",
    "Bitfield",
    "Cancel",
    "Get",
    "GetLayer",
    "Have",
    "Kind",
    "Layer",
    "Message",
    "Piece",
    "Reader",
    "WireError",
    "encode",
    "piece_head",
]

CONTROL_PRIORITY = 6
BULK_PRIORITY = 7
#: Pieces one GET may ask for.
MAX_GET = 64
MAX_REASON = 256
#: Bytes of a BITFIELD: one bit per piece of the largest file.
MAX_BITFIELD = MAX_PIECES // 8
_HEAD = struct.Struct(">IB16s")
_INDEX = struct.Struct(">I")
_PIECE_HEAD = struct.Struct(">IB16sI")
#: Bytes of a PIECE message before its data (:func:`piece_head`).
PIECE_HEAD = _PIECE_HEAD.size
OFFER_LEN = 16
#: Largest message: a maximal piece with its header (a layer is smaller).
MAX_MESSAGE = 1 + OFFER_LEN + _INDEX.size + max(MAX_PIECE_SIZE, 32 * MAX_PIECES)


class WireError(PeerError):
    """A transfer message broke the framing or its body rules."""


class Kind(enum.IntEnum):
    GET_LAYER = 0x01
    GET = 0x02
    CANCEL = 0x03
    BITFIELD = 0x04
    HAVE = 0x05
    LAYER = 0x81
    PIECE = 0x82


@dataclass(frozen=True)
class GetLayer:
    offer: bytes


@dataclass(frozen=True)
class Get:
    offer: bytes
    indices: tuple[int, ...]


@dataclass(frozen=True)
class Cancel:
    offer: bytes
    reason: str


@dataclass(frozen=True)
class Bitfield:
    """The pieces the sender holds (empty: none yet, but it wants to hear of them)."""

    offer: bytes
    bits: bytes


@dataclass(frozen=True)
class Have:
    offer: bytes
    index: int


@dataclass(frozen=True)
class Layer:
    offer: bytes
    hashes: tuple[bytes, ...]


@dataclass(frozen=True)
class Piece:
    offer: bytes
    index: int
    data: bytes


Message = GetLayer | Get | Cancel | Bitfield | Have | Layer | Piece


def encode(msg: Message) -> bytes:
    """The framed bytes of one message (callers build only valid ones)."""
    if isinstance(msg, GetLayer):
        kind, rest = Kind.GET_LAYER, b""
    elif isinstance(msg, Get):
        if not 1 <= len(msg.indices) <= MAX_GET:
            raise ValueError(f"a GET asks for 1 to {MAX_GET} pieces")
        kind, rest = Kind.GET, b"".join(_INDEX.pack(i) for i in msg.indices)
    elif isinstance(msg, Cancel):
        reason = msg.reason.encode("utf-8")[:MAX_REASON].decode("utf-8", "ignore")
        kind, rest = Kind.CANCEL, reason.encode("utf-8")
    elif isinstance(msg, Bitfield):
        if len(msg.bits) > MAX_BITFIELD:
            raise ValueError(f"a BITFIELD is at most {MAX_BITFIELD} bytes")
        kind, rest = Kind.BITFIELD, msg.bits
    elif isinstance(msg, Have):
        kind, rest = Kind.HAVE, _INDEX.pack(msg.index)
    elif isinstance(msg, Layer):
        kind, rest = Kind.LAYER, b"".join(msg.hashes)
    else:
        return piece_head(msg.offer, msg.index, len(msg.data)) + msg.data
    return _HEAD.pack(1 + OFFER_LEN + len(rest), kind, msg.offer) + rest


def piece_head(offer: bytes, index: int, length: int) -> bytes:
    """The bytes of a PIECE message before its ``length`` bytes of data: a sender
    reads the piece from disk straight in behind them (one copy, not three)."""
    return _PIECE_HEAD.pack(1 + OFFER_LEN + _INDEX.size + length, Kind.PIECE, offer, index)


def _decode(kind: int, offer: bytes, body: memoryview) -> Message:
    if kind == Kind.PIECE:  # the bulk of the traffic: its data is copied once, here
        if len(body) < _INDEX.size + 1:
            raise WireError("PIECE without data")
        return Piece(offer, _INDEX.unpack_from(body)[0], bytes(body[_INDEX.size :]))
    rest = bytes(body)
    if kind == Kind.GET_LAYER:
        if rest:
            raise WireError("GET_LAYER has no body")
        return GetLayer(offer)
    if kind == Kind.GET:
        if not rest or len(rest) % 4 or len(rest) // 4 > MAX_GET:
            raise WireError(f"GET asks for 1 to {MAX_GET} 4-byte indices")
        return Get(offer, tuple(i for (i,) in _INDEX.iter_unpack(rest)))
    if kind == Kind.CANCEL:
        if len(rest) > MAX_REASON:
            raise WireError("CANCEL reason too long")
        try:
            return Cancel(offer, rest.decode("utf-8"))
        except UnicodeDecodeError:
            raise WireError("CANCEL reason is not UTF-8") from None
    if kind == Kind.BITFIELD:
        if len(rest) > MAX_BITFIELD:
            raise WireError(f"BITFIELD of more than {MAX_BITFIELD} bytes")
        return Bitfield(offer, rest)
    if kind == Kind.HAVE:
        if len(rest) != _INDEX.size:
            raise WireError("HAVE holds one 4-byte index")
        return Have(offer, _INDEX.unpack(rest)[0])
    if kind == Kind.LAYER:
        if not rest or len(rest) % 32 or len(rest) // 32 > MAX_PIECES:
            raise WireError(f"LAYER holds 1 to {MAX_PIECES} hashes")
        return Layer(offer, tuple(rest[i : i + 32] for i in range(0, len(rest), 32)))
    raise WireError(f"unknown transfer message kind 0x{kind:02x}")


class Reader:
    """Cuts messages out of one substream's bytes; holds at most one message."""

    def __init__(self, max_message: int = MAX_MESSAGE) -> None:
        self.max_message = max_message
        self._buf = bytearray()

    def feed(self, data: bytes) -> list[Message]:
        """The whole messages ``data`` completes; raises :class:`WireError`."""
        buf = self._buf
        buf += data
        out: list[Message] = []
        pos, end = 0, len(buf)
        try:
            with memoryview(buf) as view:
                while end - pos >= 4:
                    (length,) = _INDEX.unpack_from(buf, pos)
                    if not 1 + OFFER_LEN <= length <= self.max_message:
                        raise WireError(f"transfer message of {length} bytes")
                    if end - pos < 4 + length:
                        break
                    kind, offer = buf[pos + 4], bytes(view[pos + 5 : pos + 5 + OFFER_LEN])
                    with view[pos + 5 + OFFER_LEN : pos + 4 + length] as body:
                        pos += 4 + length
                        out.append(_decode(kind, offer, body))
        finally:
            del buf[:pos]  # what was cut out, even when a later message is malformed
        return out

    @property
    def buffered(self) -> int:
        return len(self._buf)
