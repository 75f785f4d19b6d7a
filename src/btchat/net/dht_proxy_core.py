"""The sans-I/O core of the DHT through a contact: its messages and the server's limits.

How this works (docs/PROTOCOL.md "The DHT through a contact (1.5)"). A Tor-mode node
sends no DHT packet itself; a contact's node that announced capability bit 2 runs BEP 5
``get_peers`` and BEP 44 ``get``/``put`` for it and answers over the Noise session the
two already hold. Each message is one session DATA body: :data:`MAGIC` followed by one
bencoded dictionary, a request (``q``) or its answer (``r`` or ``e``), matched by ``t``.
There is no ``announce``: a BEP 5 announce stores the *sender's* IP, so a contact's
announce would publish the serving node's address as ours (useless to our contacts) and
let a contact list the server's IP in any swarm it names.

This module parses and builds those messages (a malformed one raises
:class:`~btchat.codec.bencode.DecodeError`, which the shell counts and drops) and
decides, given ``now``, whether the server takes a request (:class:`ServeLimits`).
Results are bounded here, on both sides: at most :data:`MAX_PEERS` peers, a BEP 44
value of at most 1000 bytes, at most :data:`MAX_ERRORS` short error texts.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

from btchat.codec import bencode
from btchat.codec.bencode import DecodeError
from btchat.dht import bep44
from btchat.dht.ids import decode_peers_counted, encode_peer
from btchat.net.relay_core import TokenBucket

__all__ = [
    "MAGIC",
    "MAX_MESSAGE",
    "MAX_PEERS",
    "Code",
    "DhtProxyLimits",
    "Failure",
    "GetItem",
    "GetPeers",
    "ItemFound",
    "PeersFound",
    "PutImmutable",
    "PutMutable",
    "Request",
    "Response",
    "ServeLimits",
    "Stored",
    "decode",
    "encode",
]

#: The first bytes of every DHT proxy DATA body (never an envelope, which begins with
#: ``d``, nor the capability announcement ``\x00btchat-caps\x00``).
MAGIC = b"\x00btchat-dht\x00"
#: Largest body after :data:`MAGIC`, either way (a put of a 1000-byte value is ~1.2 KiB).
MAX_MESSAGE = 4096
#: Most peers in a ``get_peers`` answer (BEP 5 answers carry ~100 at most per node).
MAX_PEERS = 64
#: Most error texts in a ``put`` answer, and bytes of each (and of a failure text).
MAX_ERRORS = 8
MAX_TEXT = 200
#: Request ids are 1 .. 2^32 - 1.
MAX_ID = 2**32 - 1
_INT_MAX = 2**53 - 1


class Code(enum.IntEnum):
    """Why a request got no result (``e`` of an answer)."""

    OFF = 1  # this node does not serve the DHT for others (its user turned it off)
    BUSY = 2  # too many of this peer's (or everyone's) requests are in flight
    RATE = 3  # this peer's operations or bytes per minute are used up
    MALFORMED = 4  # the request did not parse (counted; the session goes on)
    FAILED = 5  # the DHT operation itself failed (``m`` says why)
    NOT_JOINED = 6  # this node's own DHT has no nodes yet

    @property
    def retry_elsewhere(self) -> bool:
        """A refusal another serving contact may not give (all but a real DHT failure)."""
        return self is not Code.FAILED


# ------------------------------------------------------------------------ requests


@dataclass(frozen=True)
class GetPeers:
    """BEP 5 ``get_peers`` for ``infohash`` (our rendezvous lookups)."""

    infohash: bytes


@dataclass(frozen=True)
class GetItem:
    """BEP 44 ``get``: mutable (``public_key``, ``salt``) or immutable (``target``)."""

    public_key: bytes | None = None
    salt: bytes = b""
    target: bytes | None = None


@dataclass(frozen=True)
class PutMutable:
    item: bep44.MutableItem
    cas: int | None = None


@dataclass(frozen=True)
class PutImmutable:
    v_bencoded: bytes


Operation = GetPeers | GetItem | PutMutable | PutImmutable


@dataclass(frozen=True)
class Request:
    id: int
    op: Operation


# ------------------------------------------------------------------------ answers


@dataclass(frozen=True)
class PeersFound:
    peers: list[tuple[str, int]]
    queries: int = 0
    responded: int = 0


@dataclass(frozen=True)
class ItemFound:
    """A BEP 44 item (``v_bencoded`` None: nobody had it); the client verifies it."""

    v_bencoded: bytes | None
    seq: int | None = None
    signature: bytes | None = None
    queries: int = 0


@dataclass(frozen=True)
class Stored:
    stored_at: int
    errors: list[str] = field(default_factory=list)
    queries: int = 0
    #: The serving node's routing table size (how thin a put may be: rendezvous).
    nodes: int = 0


@dataclass(frozen=True)
class Failure:
    code: Code
    message: str = ""


Result = PeersFound | ItemFound | Stored | Failure


@dataclass(frozen=True)
class Response:
    id: int
    result: Result


Message = Request | Response


# ------------------------------------------------------------------------ encoding


def _text(s: str) -> bytes:
    """At most MAX_TEXT bytes of UTF-8, cut between characters."""
    return s.encode()[:MAX_TEXT].decode("utf-8", "ignore").encode()


def encode(message: Message) -> bytes:
    """The DATA body of ``message`` (:data:`MAGIC` included)."""
    d: dict[bytes, object] = {b"t": message.id}
    if isinstance(message, Request):
        op = message.op
        if isinstance(op, GetPeers):
            d.update({b"q": b"get_peers", b"ih": op.infohash})
        elif isinstance(op, GetItem):
            if op.public_key is not None:
                d.update({b"q": b"get", b"k": op.public_key, b"salt": op.salt})
            else:
                assert op.target is not None
                d.update({b"q": b"get", b"h": op.target})
        elif isinstance(op, PutMutable):
            item = op.item
            d.update({b"q": b"put", b"k": item.public_key, b"salt": item.salt,
                      b"seq": item.seq, b"v": item.v_bencoded, b"sig": item.signature})  # fmt: skip
            if op.cas is not None:
                d[b"cas"] = op.cas
        else:
            d.update({b"q": b"put", b"v": op.v_bencoded})
    else:
        r = message.result
        if isinstance(r, Failure):
            d.update({b"e": int(r.code), b"m": _text(r.message)})
        elif isinstance(r, PeersFound):
            peers = [encode_peer(a) for a in r.peers[:MAX_PEERS]]
            d[b"r"] = {b"p": peers, b"q": r.queries, b"n": r.responded}
        elif isinstance(r, ItemFound):
            found: dict[bytes, object] = {b"q": r.queries}
            if r.v_bencoded is not None:
                found[b"v"] = r.v_bencoded
                if r.seq is not None and r.signature is not None:
                    found.update({b"seq": r.seq, b"sig": r.signature})
            d[b"r"] = found
        else:
            errors = [_text(e) for e in r.errors[:MAX_ERRORS]]
            d[b"r"] = {b"s": r.stored_at, b"x": errors, b"q": r.queries, b"n": r.nodes}
    body = bencode.encode(d)
    if len(body) > MAX_MESSAGE:
        raise ValueError(f"a DHT proxy message of {len(body)} bytes exceeds {MAX_MESSAGE}")
    return MAGIC + body


def _bytes(d: dict[bytes, object], key: bytes, size: int | None = None, most: int = 0) -> bytes:
    v = d.get(key)
    if not isinstance(v, bytes):
        raise DecodeError(f"{key.decode()} must be a byte string")
    if (size is not None and len(v) != size) or (most and len(v) > most):
        raise DecodeError(f"{key.decode()} has a bad length")
    return v


def _int(d: dict[bytes, object], key: bytes, low: int = 0, high: int = _INT_MAX) -> int:
    v = d.get(key)
    if isinstance(v, bool) or not isinstance(v, int) or not low <= v <= high:
        raise DecodeError(f"{key.decode()} must be an integer in {low}..{high}")
    return v


def _value(v: bytes) -> bytes:
    """A BEP 44 ``v``: at most 1000 bytes of valid bencode."""
    try:
        bep44.check_immutable(v)
    except bep44.ItemError as exc:
        raise DecodeError(f"bad v: {exc}") from None
    return v


def decode(body: bytes) -> Message:
    """Parse a DATA body that begins with :data:`MAGIC`; DecodeError if malformed."""
    if not body.startswith(MAGIC):
        raise DecodeError("not a DHT proxy message")
    raw = body[len(MAGIC) :]
    if len(raw) > MAX_MESSAGE:
        raise DecodeError("DHT proxy message too large")
    d = bencode.decode(raw, max_depth=4, max_size=MAX_MESSAGE)
    if not isinstance(d, dict):
        raise DecodeError("a DHT proxy message is a dictionary")
    mid = _int(d, b"t", 1, MAX_ID)
    if b"q" in d:
        return Request(mid, _operation(d))
    if b"e" in d:
        try:
            code = Code(_int(d, b"e", 1, 255))
        except ValueError:
            raise DecodeError("unknown error code") from None
        m = d.get(b"m", b"")
        text = m[:MAX_TEXT].decode("utf-8", "replace") if isinstance(m, bytes) else ""
        return Response(mid, Failure(code, text))
    r = d.get(b"r")
    if not isinstance(r, dict):
        raise DecodeError("an answer has r or e")
    return Response(mid, _result(r))


def _operation(d: dict[bytes, object]) -> Operation:
    q = d.get(b"q")
    if q == b"get_peers":
        return GetPeers(_bytes(d, b"ih", 20))
    if q == b"get":
        if b"k" in d:
            salt = _bytes(d, b"salt", most=bep44.MAX_SALT_SIZE) if b"salt" in d else b""
            return GetItem(public_key=_bytes(d, b"k", 32), salt=salt)
        return GetItem(target=_bytes(d, b"h", 20))
    if q == b"put":
        v = _value(_bytes(d, b"v"))
        if b"k" not in d:
            return PutImmutable(v)
        salt = _bytes(d, b"salt", most=bep44.MAX_SALT_SIZE) if b"salt" in d else b""
        item = bep44.MutableItem(
            _bytes(d, b"k", 32), salt, _int(d, b"seq", 0, bep44.MAX_SEQ), v, _bytes(d, b"sig", 64)
        )
        cas = _int(d, b"cas", 0, bep44.MAX_SEQ) if b"cas" in d else None
        return PutMutable(item, cas)
    raise DecodeError("unknown operation")


def _result(r: dict[bytes, object]) -> Result:
    queries = _int(r, b"q") if b"q" in r else 0
    if b"p" in r:
        values = r[b"p"]
        if not isinstance(values, list) or len(values) > MAX_PEERS:
            raise DecodeError(f"p is a list of at most {MAX_PEERS} peers")
        peers, _ = decode_peers_counted(values)
        return PeersFound(peers, queries, _int(r, b"n") if b"n" in r else 0)
    if b"s" in r:
        x = r.get(b"x", [])
        if not isinstance(x, list) or len(x) > MAX_ERRORS:
            raise DecodeError(f"x is a list of at most {MAX_ERRORS} texts")
        errors = [e[:MAX_TEXT].decode("utf-8", "replace") for e in x if isinstance(e, bytes)]
        nodes = _int(r, b"n") if b"n" in r else 0
        return Stored(_int(r, b"s"), errors, queries, nodes)
    if b"v" not in r:
        return ItemFound(None, queries=queries)
    v = _value(_bytes(r, b"v"))
    if b"sig" in r:
        return ItemFound(v, _int(r, b"seq", 0, bep44.MAX_SEQ), _bytes(r, b"sig", 64), queries)
    return ItemFound(v, queries=queries)


# ------------------------------------------------------------------------ limits


@dataclass(frozen=True)
class DhtProxyLimits:
    """What a serving node spends on its contacts' DHT operations."""

    #: Serve at all (``--no-dht-proxy`` / ``BTCHAT_DHT_PROXY=0`` turns it off).
    enabled: bool = True
    #: Operations one peer (identity) may have running here at once, and everyone.
    in_flight: int = 8
    total_in_flight: int = 32
    #: Operations per minute per peer (token bucket, burst as large).
    per_minute: int = 120
    #: Request bytes per minute per peer (a put is at most ~1.2 KiB).
    bytes_per_minute: int = 256 * 1024
    #: Seconds one operation may run before it is answered ``failed``.
    timeout: float = 30.0

    def __post_init__(self) -> None:
        for name in ("in_flight", "total_in_flight", "per_minute", "bytes_per_minute"):
            if getattr(self, name) < 1:
                raise ValueError(f"DhtProxyLimits.{name} must be at least 1")
        if not self.timeout > 0:
            raise ValueError("DhtProxyLimits.timeout must be positive")


class ServeLimits:
    """Admission of requests by peer (an identity key): in flight, per minute, bytes.

    Buckets are kept per identity for the node's life, not per session, so a contact
    that reconnects does not get a fresh budget; only contacts hold sessions, so there
    are at most as many as contacts."""

    def __init__(self, limits: DhtProxyLimits) -> None:
        self.limits = limits
        self._in_flight: dict[bytes, int] = {}
        self._ops: dict[bytes, TokenBucket] = {}
        self._bytes: dict[bytes, TokenBucket] = {}
        #: The most operations one peer ever had in flight here (for tests and status).
        self.peak = 0

    @property
    def total(self) -> int:
        return sum(self._in_flight.values())

    def admit(self, peer: bytes, size: int, now: float) -> Code | None:
        """None if ``peer``'s request of ``size`` bytes may run now (it is then counted
        in flight until :meth:`done`), else why not."""
        lim = self.limits
        if not lim.enabled:
            return Code.OFF
        if self._in_flight.get(peer, 0) >= lim.in_flight or self.total >= lim.total_in_flight:
            return Code.BUSY
        ops = self._ops.setdefault(peer, TokenBucket(lim.per_minute / 60.0, lim.per_minute, now))
        nbytes = self._bytes.setdefault(
            peer, TokenBucket(lim.bytes_per_minute / 60.0, lim.bytes_per_minute, now)
        )
        # A refused request still costs its operation (and what bytes were left): a flood
        # of refused requests drains the budget as accepted ones would.
        if ops.take(1, now) < 1 or nbytes.take(size, now) < size:
            return Code.RATE
        self._in_flight[peer] = self._in_flight.get(peer, 0) + 1
        self.peak = max(self.peak, self._in_flight[peer])
        return None

    def done(self, peer: bytes) -> None:
        left = self._in_flight.get(peer, 0) - 1
        if left > 0:
            self._in_flight[peer] = left
        else:
            self._in_flight.pop(peer, None)
