"""BitTorrent tracker announces, sans-I/O: build requests and parse answers, or fail.

Two wire protocols find the members of a swarm (for us: of a chat channel, by its
infohash):

* HTTP(S) trackers (BEP 3 "trackers"): a GET with the request in the query string, a
  bencoded dictionary back, with peers either as a list of dictionaries (BEP 3) or packed
  (BEP 23: 6 bytes per IPv4 peer under ``peers``; BEP 7: 18 bytes per IPv6 peer under
  ``peers6``).
* UDP trackers (BEP 15): connect (get a connection id), then announce; every answer
  echoes our 32-bit transaction id, and action 3 carries an error message.

Everything here is a pure function of its arguments, so the asyncio clients in
:mod:`btchat.discovery.trackers.http` and :mod:`btchat.discovery.trackers.udp` stay thin
and the parsers can be fuzzed. Anything wrong with what a tracker sends raises
:class:`TrackerError` and nothing else; a caller passing a bad infohash or port gets a
``ValueError`` at once, as everywhere in btchat (API misuse, not a remote's fault).
"""

from __future__ import annotations

import ipaddress
import secrets
import struct
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import SplitResult, quote_from_bytes, urlsplit

from btchat.codec.bencode import MAX_DEPTH, DecodeError, decode
from btchat.errors import NetworkError

__all__ = [
    "ACTION_ANNOUNCE",
    "ACTION_CONNECT",
    "ACTION_ERROR",
    "CONNECTION_ID_LIFETIME",
    "EVENTS",
    "MAX_HTTP_RESPONSE",
    "MAX_MESSAGE",
    "MAX_PEERS",
    "MAX_UDP_PACKET",
    "MAX_URL",
    "PROTOCOL_ID",
    "AnnounceRequest",
    "AnnounceResult",
    "TrackerError",
    "TrackerUrl",
    "TransactionIdMismatch",
    "build_http_announce_url",
    "build_udp_announce",
    "build_udp_connect",
    "decode_compact_peers",
    "decode_response",
    "http_failure_reason",
    "new_key",
    "new_transaction_id",
    "parse_http_announce_response",
    "parse_tracker_url",
    "parse_udp_announce_response",
    "parse_udp_connect_response",
]

# BEP 15 "Connect": the magic constant that opens every connect request.
PROTOCOL_ID = 0x41727101980
# BEP 15 actions.
ACTION_CONNECT = 0
ACTION_ANNOUNCE = 1
ACTION_ERROR = 3
#: BEP 15: "A client can use a connection ID until one minute after it has received it."
CONNECTION_ID_LIFETIME = 60.0
#: BEP 15 event codes; BEP 3 spells the same events in the query string ("" = regular).
EVENTS: dict[str, int] = {"": 0, "completed": 1, "started": 2, "stopped": 3}

#: Largest HTTP body we read. A compact answer with 200 peers is ~1.3 KiB; a BEP 3 list of
#: dictionaries at most ~300 bytes a peer (BEP 23's bound). Anything larger is abuse.
MAX_HTTP_RESPONSE = 256 * 1024
#: Largest UDP answer we look at (the largest UDP payload there is).
MAX_UDP_PACKET = 65535
#: Most peers we return from one answer; the rest are ignored.
MAX_PEERS = 1000
#: Longest tracker-supplied text (failure reason, warning, UDP error) we keep.
MAX_MESSAGE = 512
#: Longest announce URL we accept.
MAX_URL = 2048

_U32 = 2**32
_U63 = 2**63

_CONNECT_REQUEST = struct.Struct(">QII")  # protocol_id, action, transaction_id
_HEADER = struct.Struct(">II")  # action, transaction_id
_CONNECT_RESPONSE = struct.Struct(">IIQ")  # action, transaction_id, connection_id
# connection_id, action, transaction_id, info_hash, peer_id, downloaded, left, uploaded,
# event, IP address, key, num_want, port (BEP 15 "IPv4 announce request", 98 bytes)
_ANNOUNCE_REQUEST = struct.Struct(">QII20s20sQQQIIIiH")
_ANNOUNCE_RESPONSE = struct.Struct(">IIIII")  # action, tid, interval, leechers, seeders


class TrackerError(NetworkError):
    """A tracker announce failed; the message says why, in words meant for a user."""


class TransactionIdMismatch(TrackerError):
    """A UDP answer carries another transaction id than ours.

    BEP 15 says to check it; the UDP client drops such a packet (it may be a spoof or a
    stray) and keeps waiting, instead of failing the announce on a stranger's word.
    """


def _text(raw: bytes) -> str:
    """Tracker-supplied text, bounded and printable, for error messages and warnings."""
    text = raw[:MAX_MESSAGE].decode("utf-8", errors="replace")
    return "".join(c if c.isprintable() else "?" for c in text)


def new_transaction_id() -> int:
    """A random 32-bit BEP 15 transaction id (random, so off-path spoofers must guess)."""
    return secrets.randbits(32)


def new_key() -> int:
    """A random 32-bit announce key (BEP 7: "at least 32bits worth of entropy")."""
    return secrets.randbits(32)


@dataclass(frozen=True, slots=True)
class AnnounceRequest:
    """What we tell a tracker: the BEP 3 query keys, which BEP 15 packs in binary.

    ``numwant=-1`` leaves the number of peers to the tracker (BEP 15's default).
    ``key`` (BEP 7, BEP 15) lets a tracker recognise us across address changes; it should
    stay the same for one infohash during a session, so callers that announce repeatedly
    pass their own.
    """

    info_hash: bytes
    peer_id: bytes
    port: int
    event: str = ""
    numwant: int = 50
    uploaded: int = 0
    downloaded: int = 0
    left: int = 0
    key: int = field(default_factory=new_key)

    def __post_init__(self) -> None:
        if not isinstance(self.info_hash, bytes) or len(self.info_hash) != 20:
            raise ValueError("info_hash must be 20 bytes")
        if not isinstance(self.peer_id, bytes) or len(self.peer_id) != 20:
            raise ValueError("peer_id must be 20 bytes")
        if not 0 < self.port < 65536:
            raise ValueError(f"port {self.port} out of range 1-65535")
        if self.event not in EVENTS:
            raise ValueError(f"event must be one of {sorted(EVENTS)}, not {self.event!r}")
        if not -1 <= self.numwant < 2**31:
            raise ValueError("numwant must be -1 (tracker's default) or a 31-bit count")
        for name in ("uploaded", "downloaded", "left"):
            if not 0 <= getattr(self, name) < _U63:
                raise ValueError(f"{name} must be a non-negative 63-bit integer")
        if not 0 <= self.key < _U32:
            raise ValueError("key must be an unsigned 32-bit integer")


@dataclass(frozen=True, slots=True)
class AnnounceResult:
    """A tracker's answer to an announce.

    ``interval`` is the tracker's request for the time between regular announces, in
    seconds, as sent (callers clamp it to their own bounds); ``min_interval`` is the HTTP
    ``min interval`` key when present. ``complete``/``incomplete`` are the seeder/leecher
    counts (BEP 15 seeders/leechers), ``None`` when an HTTP tracker omits them.
    ``peers`` are unique ``(ip, port)`` pairs, IP addresses in canonical text form.
    """

    interval: int
    peers: list[tuple[str, int]]
    complete: int | None = None
    incomplete: int | None = None
    warning: str | None = None
    min_interval: int | None = None


@dataclass(frozen=True, slots=True)
class TrackerUrl:
    """An announce URL taken apart: ``scheme`` is ``http``, ``https`` or ``udp``."""

    url: str
    scheme: str
    host: str
    port: int


# --- URLs ---------------------------------------------------------------------------

_DEFAULT_PORTS = {"http": 80, "https": 443}


def parse_tracker_url(url: str) -> TrackerUrl:
    """Check an announce URL and take it apart; a bad one raises :class:`TrackerError`.

    UDP URLs need an explicit port (there is no default UDP tracker port); their path is
    ignored (BEP 15 requests carry no path). HTTP(S) URLs keep their path and query, to
    which :func:`build_http_announce_url` appends ours.
    """
    if not isinstance(url, str):
        raise TrackerError("tracker URL is not a string")
    if len(url) > MAX_URL:
        raise TrackerError(f"tracker URL longer than {MAX_URL} characters")
    if any(c.isspace() or not c.isprintable() for c in url):
        raise TrackerError(f"tracker URL {url!r} contains spaces or control characters")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise TrackerError(f"bad tracker URL {url!r}: {exc}") from None
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https", "udp"):
        raise TrackerError(f"unsupported tracker URL scheme in {url!r} (http, https, udp)")
    host = parts.hostname
    if not host:
        raise TrackerError(f"tracker URL {url!r} has no host")
    if parts.username is not None or parts.password is not None:
        raise TrackerError(f"tracker URL {url!r} carries credentials; not supported")
    if parts.fragment:
        raise TrackerError(f"tracker URL {url!r} has a fragment")
    if port is None:
        if scheme == "udp":
            raise TrackerError(f"UDP tracker URL {url!r} has no port")
        port = _DEFAULT_PORTS[scheme]
    if not 0 < port < 65536:
        raise TrackerError(f"tracker URL {url!r} has port {port} out of range")
    return TrackerUrl(url=url, scheme=scheme, host=host, port=port)


def build_http_announce_url(url: str, request: AnnounceRequest, *, compact: bool = True) -> str:
    """The GET URL for an HTTP announce: the tracker's URL plus the BEP 3 query keys.

    Binary values are percent-encoded byte by byte (every byte outside the unreserved
    set), so the result must be sent as is, not re-quoted. ``compact=1`` asks for the BEP
    23 packed form (advisory: we parse both). An existing query (e.g. a passkey) is kept.
    ``key`` goes as 8 hex digits: it is opaque to the tracker, and BEP 3 leaves its form
    open.
    """
    parts: SplitResult = urlsplit(parse_tracker_url(url).url)
    if parts.scheme.lower() not in ("http", "https"):
        raise TrackerError(f"{url!r} is not an HTTP tracker URL")
    params = [
        ("info_hash", quote_from_bytes(request.info_hash, safe="")),
        ("peer_id", quote_from_bytes(request.peer_id, safe="")),
        ("port", str(request.port)),
        ("uploaded", str(request.uploaded)),
        ("downloaded", str(request.downloaded)),
        ("left", str(request.left)),
        ("compact", "1" if compact else "0"),
        ("key", f"{request.key:08x}"),
    ]
    if request.numwant >= 0:
        params.append(("numwant", str(request.numwant)))
    if request.event:
        params.append(("event", request.event))
    query = "&".join(f"{k}={v}" for k, v in params)
    if parts.query:
        query = f"{parts.query}&{query}"
    return parts._replace(query=query, fragment="").geturl()


# --- bencode --------------------------------------------------------------------------


def decode_response(body: bytes, *, max_size: int = MAX_HTTP_RESPONSE) -> Any:
    """Decode a tracker's bencoded body: canonical first, then a lenient second try.

    Our codec accepts only canonical bencode, because BEP 44 signatures depend on it. A
    tracker answer is signed by nobody, and trackers in the wild write dictionary keys in
    any order (BEP 3 asks for sorted keys, not every tracker obliges), so this falls back
    to a decoder that accepts unsorted keys. Everything else stays strict: duplicate keys,
    non-canonical integers, trailing bytes, nesting and size limits.
    """
    if len(body) > max_size:
        raise TrackerError(f"tracker answer of {len(body)} bytes exceeds limit of {max_size}")
    try:
        return decode(body, max_size=max_size)
    except DecodeError as strict_error:
        try:
            return _lenient_decode(body)
        except DecodeError:
            raise TrackerError(f"tracker answer is not bencoded: {strict_error}") from None


def _lenient_decode(data: bytes) -> Any:
    if not data:
        raise DecodeError("empty input")
    try:
        value, end = _lenient_value(data, 0, MAX_DEPTH)
    except IndexError:
        raise DecodeError("truncated input") from None
    if end != len(data):
        raise DecodeError(f"{len(data) - end} trailing bytes")
    return value


def _lenient_int(digits: bytes) -> int:
    if len(digits) > 32:
        raise DecodeError("integer too long")
    try:
        value = int(digits)
    except ValueError:
        raise DecodeError("malformed integer") from None
    if b"%d" % value != digits:
        raise DecodeError("non-canonical integer")
    return value


def _lenient_str(data: bytes, pos: int) -> tuple[bytes, int]:
    colon = data.find(b":", pos, pos + 33)
    if colon < 0:
        raise DecodeError("malformed string length")
    digits = data[pos:colon]
    if not digits.isdigit() or (digits[0] == 0x30 and len(digits) > 1):
        raise DecodeError("malformed string length")
    end = colon + 1 + int(digits)
    if end > len(data):
        raise DecodeError("string runs past end of input")
    return data[colon + 1 : end], end


def _lenient_value(data: bytes, pos: int, depth: int) -> tuple[Any, int]:
    c = data[pos]
    if 0x30 <= c <= 0x39:
        return _lenient_str(data, pos)
    if c == 0x69:  # i<int>e
        end = data.find(b"e", pos + 1, pos + 35)
        if end < 0:
            raise DecodeError("unterminated integer")
        return _lenient_int(data[pos + 1 : end]), end + 1
    if depth <= 0:
        raise DecodeError("nesting too deep")
    if c == 0x64:  # dictionary, keys in any order but each once
        result: dict[bytes, Any] = {}
        pos += 1
        while data[pos] != 0x65:
            if not 0x30 <= data[pos] <= 0x39:
                raise DecodeError("dictionary key is not a string")
            key, pos = _lenient_str(data, pos)
            if key in result:
                raise DecodeError("duplicate dictionary key")
            result[key], pos = _lenient_value(data, pos, depth - 1)
        return result, pos + 1
    if c == 0x6C:
        items: list[Any] = []
        pos += 1
        while data[pos] != 0x65:
            item, pos = _lenient_value(data, pos, depth - 1)
            items.append(item)
        return items, pos + 1
    raise DecodeError(f"unexpected byte {c:#04x}")


# --- peers ----------------------------------------------------------------------------


def decode_compact_peers(data: bytes, *, ipv6: bool = False) -> list[tuple[str, int]]:
    """Unpack BEP 23 (6 bytes: IPv4, port) or BEP 7 ``peers6`` (18 bytes: IPv6, port).

    Big-endian throughout. A length that is not a whole number of entries is malformed.
    Entries with port 0 are dropped (nobody listens there); duplicates are dropped.
    """
    stride = 18 if ipv6 else 6
    if len(data) % stride:
        kind = "peers6" if ipv6 else "peers"
        raise TrackerError(f"compact {kind} of {len(data)} bytes is not a multiple of {stride}")
    peers: list[tuple[str, int]] = []
    for offset in range(0, min(len(data), stride * MAX_PEERS), stride):
        raw_ip = data[offset : offset + stride - 2]
        port = int.from_bytes(data[offset + stride - 2 : offset + stride], "big")
        ip = str(ipaddress.IPv6Address(raw_ip) if ipv6 else ipaddress.IPv4Address(raw_ip))
        peers.append((ip, port))
    return _clean_peers(peers)


def _clean_peers(peers: list[tuple[str, int]]) -> list[tuple[str, int]]:
    seen: set[tuple[str, int]] = set()
    out: list[tuple[str, int]] = []
    for peer in peers:
        if peer[1] == 0 or peer in seen:
            continue
        seen.add(peer)
        out.append(peer)
        if len(out) >= MAX_PEERS:
            break
    return out


def _dict_peers(value: list[Any]) -> list[tuple[str, int]]:
    """BEP 3 peers: dictionaries with ``ip`` and ``port`` (``peer id`` is ignored).

    ``ip`` may be a DNS name per BEP 3; such entries are skipped, because resolving names
    a tracker hands us would let it make us query any name. Only IP literals are kept.
    """
    peers: list[tuple[str, int]] = []
    for entry in value[: MAX_PEERS * 2]:
        if not isinstance(entry, dict):
            raise TrackerError("peer list entry is not a dictionary")
        ip = entry.get(b"ip")
        port = entry.get(b"port")
        if not isinstance(ip, bytes) or type(port) is not int:
            raise TrackerError("peer list entry lacks a string 'ip' or an integer 'port'")
        if not 0 <= port < 65536:
            raise TrackerError(f"peer list entry has port {port} out of range")
        try:
            address = ipaddress.ip_address(ip.decode("ascii"))
        except (UnicodeDecodeError, ValueError):
            continue  # a host name (or garbage): not dialled on a tracker's word
        peers.append((str(address), port))
    return _clean_peers(peers)


# --- HTTP answers ---------------------------------------------------------------------


def _optional_count(body: dict[bytes, Any], key: bytes) -> int | None:
    value = body.get(key)
    if value is None:
        return None
    if type(value) is not int or not 0 <= value < 2**63:
        raise TrackerError(f"tracker answer has a bad {key.decode()!r}")
    return value


def parse_http_announce_response(body: bytes) -> AnnounceResult:
    """Parse the body of an HTTP announce answer (BEP 3, BEP 23, BEP 7 ``peers6``).

    ``failure reason`` becomes a :class:`TrackerError` with the tracker's words.
    Otherwise ``interval`` and ``peers`` are required (BEP 3), where a tracker that gives
    only ``peers6`` counts as giving ``peers``. ``warning message``, ``min interval``,
    ``complete`` and ``incomplete`` are read when present: they are not in BEP 3, but
    trackers commonly send them (bittorrent-tracker sends the last two).
    """
    value = decode_response(body)
    if not isinstance(value, dict):
        raise TrackerError("tracker answer is not a dictionary")
    if b"failure reason" in value:
        reason = value[b"failure reason"]
        if not isinstance(reason, bytes):
            raise TrackerError("tracker refused the announce (malformed failure reason)")
        raise TrackerError(f"tracker refused the announce: {_text(reason)}")
    interval = value.get(b"interval")
    if type(interval) is not int:
        raise TrackerError("tracker answer has no integer 'interval'")
    if not 0 <= interval < _U32:
        raise TrackerError(f"tracker answer has interval {interval} out of range")
    min_interval = _optional_count(value, b"min interval")
    warning = value.get(b"warning message")
    if warning is not None and not isinstance(warning, bytes):
        raise TrackerError("tracker answer has a malformed 'warning message'")
    peers_value = value.get(b"peers")
    peers6_value = value.get(b"peers6")
    if peers_value is None and peers6_value is None:
        raise TrackerError("tracker answer has no 'peers'")
    peers: list[tuple[str, int]] = []
    if isinstance(peers_value, bytes):
        peers += decode_compact_peers(peers_value)
    elif isinstance(peers_value, list):
        peers += _dict_peers(peers_value)
    elif peers_value is not None:
        raise TrackerError("tracker answer has 'peers' that is neither a string nor a list")
    if isinstance(peers6_value, bytes):
        peers += decode_compact_peers(peers6_value, ipv6=True)
    elif peers6_value is not None:
        raise TrackerError("tracker answer has 'peers6' that is not a string")
    return AnnounceResult(
        interval=interval,
        peers=_clean_peers(peers),
        complete=_optional_count(value, b"complete"),
        incomplete=_optional_count(value, b"incomplete"),
        warning=_text(warning) if warning is not None else None,
        min_interval=min_interval,
    )


def http_failure_reason(body: bytes) -> str | None:
    """The ``failure reason`` in a body, if it is a bencoded dictionary with one.

    Some trackers send their refusal with a non-200 status; this lets the HTTP client
    report the tracker's words instead of only the status code.
    """
    try:
        value = decode_response(body)
    except TrackerError:
        return None
    if isinstance(value, dict) and isinstance(value.get(b"failure reason"), bytes):
        return _text(value[b"failure reason"])
    return None


# --- UDP packets ----------------------------------------------------------------------


def build_udp_connect(transaction_id: int) -> bytes:
    """BEP 15 connect request: protocol_id, action 0, transaction_id (16 bytes)."""
    return _CONNECT_REQUEST.pack(PROTOCOL_ID, ACTION_CONNECT, transaction_id)


def build_udp_announce(connection_id: int, transaction_id: int, request: AnnounceRequest) -> bytes:
    """BEP 15 announce request (98 bytes). IP address 0: the tracker uses our source."""
    return _ANNOUNCE_REQUEST.pack(
        connection_id,
        ACTION_ANNOUNCE,
        transaction_id,
        request.info_hash,
        request.peer_id,
        request.downloaded,
        request.left,
        request.uploaded,
        EVENTS[request.event],
        0,
        request.key,
        request.numwant,
        request.port,
    )


def _check_header(data: bytes, transaction_id: int, action: int, min_size: int) -> None:
    """The checks BEP 15 lists for every answer, and action 3 (error) handling.

    Order: at least 8 bytes to read a header; our transaction id (else the packet is not
    an answer to us: :class:`TransactionIdMismatch`); an error packet becomes a
    :class:`TrackerError` with its message; then the expected action and size.
    """
    if len(data) > MAX_UDP_PACKET:
        raise TrackerError(f"tracker sent a UDP packet of {len(data)} bytes")
    if len(data) < _HEADER.size:
        raise TransactionIdMismatch(f"tracker sent a UDP packet of only {len(data)} bytes")
    got_action, got_tid = _HEADER.unpack_from(data)
    if got_tid != transaction_id:
        raise TransactionIdMismatch(
            f"UDP answer has transaction id {got_tid:#010x}, expected {transaction_id:#010x}"
        )
    if got_action == ACTION_ERROR:
        message = _text(data[_HEADER.size :]) or "(no message)"
        raise TrackerError(f"tracker returned an error: {message}")
    if got_action != action:
        raise TrackerError(f"UDP answer has action {got_action}, expected {action}")
    if len(data) < min_size:
        raise TrackerError(f"UDP answer of {len(data)} bytes is shorter than {min_size}")


def parse_udp_connect_response(data: bytes, transaction_id: int) -> int:
    """The connection id from a BEP 15 connect answer (extra trailing bytes ignored)."""
    _check_header(data, transaction_id, ACTION_CONNECT, _CONNECT_RESPONSE.size)
    return int(_CONNECT_RESPONSE.unpack_from(data)[2])


def parse_udp_announce_response(
    data: bytes, transaction_id: int, *, ipv6: bool = False
) -> AnnounceResult:
    """A BEP 15 announce answer: interval, leechers, seeders, then packed peers.

    The peer stride follows the address family of the packet (BEP 15 "IPv6"): 6 bytes
    over IPv4, 18 over IPv6; the caller says which.
    """
    _check_header(data, transaction_id, ACTION_ANNOUNCE, _ANNOUNCE_RESPONSE.size)
    _, _, interval, leechers, seeders = _ANNOUNCE_RESPONSE.unpack_from(data)
    peers = decode_compact_peers(data[_ANNOUNCE_RESPONSE.size :], ipv6=ipv6)
    return AnnounceResult(interval=interval, peers=peers, complete=seeders, incomplete=leechers)
