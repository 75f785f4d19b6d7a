"""KRPC (BEP 5) messages: parse a datagram into one of three frozen dataclasses, or fail.

Parsing checks only the envelope (BEP 5 "KRPC Protocol"): the transaction id, the type
``y``, the sender ``id`` and the optional keys every message may carry (``v`` client
version, BEP 43 ``ro``, BEP 42 ``ip``). Method-specific arguments are validated by their
handlers, because a bad argument there earns an error reply (203) rather than a silent
drop. Everything wrong raises :class:`KrpcError`, a :class:`DecodeError`.
"""

from __future__ import annotations

import socket
import struct
from dataclasses import dataclass
from typing import Any

from btchat.codec.bencode import DecodeError, decode, encode
from btchat.dht.ids import ID_BYTES, Addr, encode_peer

__all__ = [
    "ERROR_GENERIC",
    "ERROR_METHOD_UNKNOWN",
    "ERROR_PROTOCOL",
    "ERROR_SERVER",
    "MAX_PACKET",
    "Error",
    "KrpcError",
    "Message",
    "Query",
    "Response",
    "encode_error",
    "encode_query",
    "encode_response",
    "parse_message",
]

# BEP 5 "Errors": the four codes every node understands.
ERROR_GENERIC = 201
ERROR_SERVER = 202
ERROR_PROTOCOL = 203
ERROR_METHOD_UNKNOWN = 204

#: Largest datagram we accept. KRPC packets fit one Ethernet frame (~1500 bytes);
#: BEP 44 items are <= 1000 bytes of value plus envelope. Anything larger is abuse.
MAX_PACKET = 2048
#: Longest transaction id we accept; BEP 5 clients use 2-4 bytes.
MAX_TID = 16
#: Longest client version string (BEP 5 "v": 2-byte client id + 2-byte version).
MAX_VERSION = 16
#: Longest error message we keep from a remote.
MAX_ERROR_TEXT = 256


class KrpcError(DecodeError):
    """The datagram is not a well-formed KRPC message."""


@dataclass(frozen=True, slots=True)
class Query:
    tid: bytes
    method: bytes
    args: dict[bytes, Any]
    sender_id: bytes
    read_only: bool  # BEP 43: the sender wants no routing-table entry and no queries
    version: bytes | None


@dataclass(frozen=True, slots=True)
class Response:
    tid: bytes
    values: dict[bytes, Any]
    sender_id: bytes
    ip: Addr | None  # BEP 42: our address as the responder saw it
    version: bytes | None


@dataclass(frozen=True, slots=True)
class Error:
    tid: bytes
    code: int
    text: str
    version: bytes | None


Message = Query | Response | Error


def _decode_ip(blob: Any) -> Addr | None:
    if not isinstance(blob, bytes):
        return None
    if len(blob) == 6:
        return socket.inet_ntoa(blob[:4]), struct.unpack("!H", blob[4:])[0]
    if len(blob) == 18:
        return socket.inet_ntop(socket.AF_INET6, blob[:16]), struct.unpack("!H", blob[16:])[0]
    return None


def _sender_id(body: Any) -> bytes:
    if not isinstance(body, dict):
        raise KrpcError("message body is not a dictionary")
    node_id = body.get(b"id")
    if not isinstance(node_id, bytes) or len(node_id) != ID_BYTES:
        raise KrpcError("missing or malformed sender id")
    return node_id


def parse_message(data: bytes) -> Message:
    """Parse one KRPC datagram. Raises KrpcError (a DecodeError) on anything malformed."""
    if len(data) > MAX_PACKET:
        raise KrpcError(f"datagram of {len(data)} bytes exceeds {MAX_PACKET}")
    # Lenient like libtorrent: unsorted keys and trailing bytes are accepted here; BEP 44
    # values are re-encoded canonically before any signature check (bencode module doc).
    msg = decode(data, max_size=MAX_PACKET, strict=False)
    if not isinstance(msg, dict):
        raise KrpcError("top level is not a dictionary")
    tid = msg.get(b"t")
    if not isinstance(tid, bytes) or len(tid) > MAX_TID:
        raise KrpcError("missing or malformed transaction id")
    version = msg.get(b"v")
    if not isinstance(version, bytes) or len(version) > MAX_VERSION:
        version = None
    kind = msg.get(b"y")
    if kind == b"q":
        method = msg.get(b"q")
        if not isinstance(method, bytes) or not method:
            raise KrpcError("query without method name")
        args = msg.get(b"a")
        sender = _sender_id(args)
        return Query(tid, method, args, sender, msg.get(b"ro") == 1, version)
    if kind == b"r":
        values = msg.get(b"r")
        sender = _sender_id(values)
        return Response(tid, values, sender, _decode_ip(msg.get(b"ip")), version)
    if kind == b"e":
        err = msg.get(b"e")
        if (
            not isinstance(err, list)
            or len(err) < 2
            or not isinstance(err[0], int)
            or not isinstance(err[1], bytes)
        ):
            raise KrpcError("malformed error body")
        text = err[1][:MAX_ERROR_TEXT].decode("utf-8", "replace")
        return Error(tid, err[0], text, version)
    raise KrpcError("unknown message type")


def encode_query(
    tid: bytes,
    method: bytes,
    args: dict[bytes, Any],
    *,
    version: bytes | None,
    read_only: bool = False,
) -> bytes:
    msg: dict[bytes, Any] = {b"t": tid, b"y": b"q", b"q": method, b"a": args}
    if version:
        msg[b"v"] = version
    if read_only:
        msg[b"ro"] = 1  # BEP 43
    return encode(msg)


def encode_response(
    tid: bytes, values: dict[bytes, Any], *, version: bytes | None, requester: Addr | None
) -> bytes:
    """``encode({"ip": ..., "r": values, "t": tid, "v": version, "y": "r"})``, the
    envelope written directly: every query we answer goes through here."""
    parts = [b"d"]
    if requester is not None:
        ip = encode_peer(requester)  # BEP 42: tell the requester its external IP
        parts.append(b"2:ip%d:%s" % (len(ip), ip))
    parts.append(b"1:r")
    parts.append(encode(values))
    parts.append(b"1:t%d:%s" % (len(tid), tid))
    if version:
        parts.append(b"1:v%d:%s" % (len(version), version))
    parts.append(b"1:y1:re")
    return b"".join(parts)


def encode_error(tid: bytes, code: int, text: str, *, version: bytes | None) -> bytes:
    msg: dict[bytes, Any] = {b"t": tid, b"y": b"e", b"e": [code, text.encode()]}
    if version:
        msg[b"v"] = version
    return encode(msg)
