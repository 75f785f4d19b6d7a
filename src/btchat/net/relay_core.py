"""The sans-I/O core of 1:1 relays: circuit headers, the circuit table and its limits.

How this works (docs/PROTOCOL.md "Relayed sessions"). A relay C is a contact with live
sessions to both A and B; it relays only between its own contacts. A circuit hop is a
pair of one-way substreams on a session: the side that asks opens one that begins with
a :class:`Connect` ("to this device of this identity") or :class:`Incoming` ("from this
device of this identity") header, and the other side answers on a substream it opens,
beginning with an :class:`Answer` (status 0, or a refusal code). After the headers the
bytes are the end-to-end Noise session of A and B, which C splices without reading.

This module decides, without I/O: whether a circuit may open (:meth:`RelayCore.request`:
relaying on, not a loop, a route, per-peer and total caps), how fast each direction may
go (a token bucket per circuit and direction that paces the *credit* C returns, so C
never buffers more than one window per direction), when a circuit's setup or lifetime
runs out, and how many relayed sessions a target accepts through one relay. The asyncio
shell (:mod:`btchat.net.relay`) feeds it calls and ``now`` and acts on its events.
A bad header raises :class:`~btchat.codec.bencode.DecodeError` only from the parsers;
the shell drops the substream and counts it.
"""

from __future__ import annotations

import enum
import struct
from collections import deque
from dataclasses import dataclass, field

from btchat.codec.bencode import DecodeError

__all__ = [
    "ANSWER_SIZE",
    "HOP_SIZE",
    "VERSION",
    "Answer",
    "Connect",
    "Expired",
    "Grant",
    "Header",
    "HeaderReader",
    "Incoming",
    "Kind",
    "RelayCore",
    "RelayLimits",
    "Status",
    "TokenBucket",
    "encode_header",
    "parse_header",
]

#: Version byte of every relay header; another version is dropped (and counted).
VERSION = 1
#: ``version u8 | kind u8 | circuit u32be``: the start of every header.
_START = struct.Struct(">BBI")
#: Identity keys are Ed25519 public keys; device ids are 16 bytes (identity/keys.py).
IDENTITY_SIZE = 32
DEVICE_SIZE = 16
#: Size of a Connect/Incoming header and of an Answer header, in bytes.
HOP_SIZE = _START.size + IDENTITY_SIZE + DEVICE_SIZE
ANSWER_SIZE = _START.size + 1

#: A peer is one device of one identity: (identity key, device id).
PeerKey = tuple[bytes, bytes]


class Kind(enum.IntEnum):
    CONNECT = 1  # A -> C: relay me to (identity, device)
    INCOMING = 2  # C -> B: a circuit from (identity, device)
    ANSWER = 3  # the answer on the return substream


class Status(enum.IntEnum):
    """An Answer's status: 0 is success, every other value a refusal the dialler shows."""

    OK = 0
    RELAY_OFF = 1  # the relay does not relay for others (its user turned it off)
    NO_ROUTE = 2  # the relay has no live relay-capable session to that device
    PEER_LIMIT = 3  # this peer already holds the most circuits it may through the relay
    BUSY = 4  # the relay holds the most circuits it will
    REFUSED = 5  # the target refused the circuit (its own limit)
    TIMEOUT = 6  # the target did not answer in time
    LOOP = 7  # the target is the asker or the relay itself

    @property
    def reason(self) -> str:
        return _REASONS[self]


_REASONS = {
    Status.OK: "ok",
    Status.RELAY_OFF: "the relay does not relay for others",
    Status.NO_ROUTE: "the relay has no session to that device",
    Status.PEER_LIMIT: "too many circuits from us through this relay",
    Status.BUSY: "the relay is busy (circuit limit)",
    Status.REFUSED: "the target refused the relayed circuit",
    Status.TIMEOUT: "the target did not answer the relay in time",
    Status.LOOP: "a relay cannot relay to the asker or to itself",
}


@dataclass(frozen=True)
class Connect:
    circuit: int
    identity: bytes
    device: bytes


@dataclass(frozen=True)
class Incoming:
    circuit: int
    identity: bytes
    device: bytes


@dataclass(frozen=True)
class Answer:
    circuit: int
    status: int  # a Status value, or an unknown code from a later version


Header = Connect | Incoming | Answer


def encode_header(header: Header) -> bytes:
    """The wire form of ``header``; raises ``ValueError`` on a malformed one (misuse)."""
    if not 0 < header.circuit < 2**32:
        raise ValueError("circuit id must be 1..2**32-1")
    if isinstance(header, Answer):
        if not 0 <= header.status < 256:
            raise ValueError("status must be a byte")
        return _START.pack(VERSION, Kind.ANSWER, header.circuit) + bytes([header.status])
    if len(header.identity) != IDENTITY_SIZE or len(header.device) != DEVICE_SIZE:
        raise ValueError("identity must be 32 bytes and device 16")
    kind = Kind.CONNECT if isinstance(header, Connect) else Kind.INCOMING
    return _START.pack(VERSION, kind, header.circuit) + header.identity + header.device


def _size(kind: int) -> int:
    if kind == Kind.ANSWER:
        return ANSWER_SIZE
    if kind in (Kind.CONNECT, Kind.INCOMING):
        return HOP_SIZE
    raise DecodeError(f"unknown relay header kind {kind}")


def parse_header(data: bytes) -> Header:
    """Exactly one header; :class:`DecodeError` for anything else."""
    if len(data) < _START.size:
        raise DecodeError("relay header is truncated")
    version, kind, circuit = _START.unpack_from(data)
    if version != VERSION:
        raise DecodeError(f"relay header version {version} is not {VERSION}")
    if len(data) != _size(kind):
        raise DecodeError(f"relay header of kind {kind} has {len(data)} bytes")
    if circuit == 0:
        raise DecodeError("relay circuit id 0 is reserved")
    if kind == Kind.ANSWER:
        return Answer(circuit, data[_START.size])
    identity = data[_START.size : _START.size + IDENTITY_SIZE]
    device = data[_START.size + IDENTITY_SIZE :]
    return (Connect if kind == Kind.CONNECT else Incoming)(circuit, identity, device)


class HeaderReader:
    """Reads the one header at the start of a substream, in any chunking.

    :meth:`feed` returns None while more bytes are needed, then the header; the bytes
    after it are in :attr:`rest`. At most :data:`HOP_SIZE` bytes are ever buffered.
    """

    def __init__(self) -> None:
        self._buf = bytearray()
        self.rest = b""

    def feed(self, data: bytes) -> Header | None:
        self._buf += data
        if len(self._buf) < 2:
            return None
        if self._buf[0] != VERSION:
            raise DecodeError(f"relay header version {self._buf[0]} is not {VERSION}")
        size = _size(self._buf[1])
        if len(self._buf) < size:
            return None
        header = parse_header(bytes(self._buf[:size]))
        self.rest = bytes(self._buf[size:])
        self._buf.clear()
        return header


@dataclass(frozen=True)
class RelayLimits:
    """What a relay spends on others, and what a target accepts through one relay."""

    #: Relay for our contacts at all (``--no-relay`` / ``BTCHAT_RELAY=0`` turns it off).
    enabled: bool = True
    #: Circuits one peer (identity) may hold through us, as asker or target.
    per_peer: int = 4
    #: Circuits we hold at once for everyone.
    total: int = 16
    #: Bytes per second per circuit and direction (token bucket), and its burst.
    rate: float = 8 * 1024 * 1024
    burst: int = 1024 * 1024
    #: A circuit ends after this long (the session then redials, direct if it can).
    lifetime: float = 6 * 3600.0
    #: Seconds the target has to answer an Incoming header.
    setup_timeout: float = 10.0
    #: Relayed sessions we accept as target through one relay at once.
    incoming_per_relay: int = 8

    def __post_init__(self) -> None:
        for name in ("per_peer", "total", "burst", "incoming_per_relay"):
            if getattr(self, name) < 1:
                raise ValueError(f"RelayLimits.{name} must be at least 1")
        for name in ("rate", "lifetime", "setup_timeout"):
            if not getattr(self, name) > 0:
                raise ValueError(f"RelayLimits.{name} must be positive")


class TokenBucket:
    """``rate`` tokens per second up to ``burst``; starts full."""

    def __init__(self, rate: float, burst: int, now: float) -> None:
        self.rate = rate
        self.burst = burst
        self.tokens = float(burst)
        self.last = now

    def _refill(self, now: float) -> None:
        if now > self.last:
            self.tokens = min(float(self.burst), self.tokens + (now - self.last) * self.rate)
            self.last = now

    def take(self, n: int, now: float) -> int:
        """Up to ``n`` tokens, as many as there are now."""
        self._refill(now)
        granted = min(n, int(self.tokens))
        self.tokens -= granted
        return granted

    def ready_at(self, n: int) -> float:
        """When ``n`` tokens (at most a burst) will be there."""
        need = min(n, self.burst) - self.tokens
        # One token of slack: at exactly ``need / rate`` float rounding may leave
        # ``n - 1e-9`` tokens, and a timer that grants nothing would fire again at once.
        return self.last if need <= 0 else self.last + (need + 1) / self.rate


@dataclass(frozen=True)
class Grant:
    """Credit the shell may now return for ``nbytes`` of ``circuit``'s ``direction``."""

    circuit: int
    direction: int  # 0: asker -> target, 1: target -> asker
    nbytes: int


@dataclass(frozen=True)
class Expired:
    """A circuit's setup or lifetime ran out: the shell tears it down."""

    circuit: int
    status: Status  # TIMEOUT for a setup that took too long, OK for a lifetime's end


#: Grants smaller than this wait for more tokens (a chunk, PROTOCOL.md "Substreams").
_MIN_GRANT = 16 * 1024


@dataclass
class _Circuit:
    source: PeerKey
    target: PeerKey
    deadline: float  # setup deadline, then end of lifetime
    buckets: tuple[TokenBucket, TokenBucket]
    owed: list[int] = field(default_factory=lambda: [0, 0])
    established: bool = False


class RelayCore:
    """The circuit table of one relay, its limits, and a target's incoming count."""

    def __init__(self, limits: RelayLimits) -> None:
        self.limits = limits
        self._circuits: dict[int, _Circuit] = {}
        self._next = 1
        self._per_peer: dict[bytes, int] = {}
        self._incoming: dict[bytes, int] = {}
        self._events: deque[Grant | Expired] = deque()
        self.stats: dict[str, int] = {
            "circuits": 0,
            "bad_header": 0,
            "bytes_forwarded": 0,
            "incoming_accepted": 0,
            "incoming_refused": 0,
        }

    def __len__(self) -> int:
        return len(self._circuits)

    def request(
        self, source: PeerKey, target: PeerKey, me: bytes, routable: bool, now: float
    ) -> int | Status:
        """A new circuit id for ``source`` -> ``target``, or why not."""
        limits = self.limits
        status: Status | None = None
        if not limits.enabled:
            status = Status.RELAY_OFF
        elif target[0] in (source[0], me):
            status = Status.LOOP
        elif not routable:
            status = Status.NO_ROUTE
        elif max(self._per_peer.get(source[0], 0), self._per_peer.get(target[0], 0)) >= (
            limits.per_peer
        ):
            status = Status.PEER_LIMIT
        elif len(self._circuits) >= limits.total:
            status = Status.BUSY
        if status is not None:
            key = f"refused_{status.name.lower()}"
            self.stats[key] = self.stats.get(key, 0) + 1
            return status
        cid = self._next
        self._next = self._next % (2**32 - 1) + 1
        while cid in self._circuits:  # after 2**32 circuits ids wrap; skip live ones
            cid = self._next
            self._next = self._next % (2**32 - 1) + 1
        buckets = (
            TokenBucket(limits.rate, limits.burst, now),
            TokenBucket(limits.rate, limits.burst, now),
        )
        self._circuits[cid] = _Circuit(source, target, now + limits.setup_timeout, buckets)
        for identity in (source[0], target[0]):
            self._per_peer[identity] = self._per_peer.get(identity, 0) + 1
        self.stats["circuits"] += 1
        return cid

    def established(self, cid: int, now: float) -> None:
        """The target answered OK: the lifetime starts."""
        circuit = self._circuits.get(cid)
        if circuit is not None and not circuit.established:
            circuit.established = True
            circuit.deadline = now + self.limits.lifetime

    def close(self, cid: int) -> None:
        """Forget a circuit (idempotent)."""
        circuit = self._circuits.pop(cid, None)
        if circuit is None:
            return
        for identity in (circuit.source[0], circuit.target[0]):
            left = self._per_peer[identity] - 1
            if left:
                self._per_peer[identity] = left
            else:
                del self._per_peer[identity]

    def circuits(self) -> list[int]:
        return list(self._circuits)

    def forwarded(self, cid: int, direction: int, nbytes: int, now: float) -> int:
        """``nbytes`` went on towards the other hop: how many of them the asker's hop may
        get credit for now (the rest follows as :class:`Grant` events)."""
        circuit = self._circuits.get(cid)
        if circuit is None or nbytes <= 0:
            return 0
        self.stats["bytes_forwarded"] += nbytes
        circuit.owed[direction] += nbytes
        granted = circuit.buckets[direction].take(circuit.owed[direction], now)
        circuit.owed[direction] -= granted
        return granted

    def get_timer(self) -> float | None:
        due: float | None = None
        for circuit in self._circuits.values():
            times = [circuit.deadline]
            for direction in (0, 1):
                owed = circuit.owed[direction]
                if owed:
                    bucket = circuit.buckets[direction]
                    times.append(bucket.ready_at(min(owed, _MIN_GRANT)))
            first = min(times)
            due = first if due is None else min(due, first)
        return due

    def handle_timer(self, now: float) -> None:
        for cid, circuit in list(self._circuits.items()):
            if now >= circuit.deadline:
                self._events.append(
                    Expired(cid, Status.OK if circuit.established else Status.TIMEOUT)
                )
                self.close(cid)
                continue
            for direction in (0, 1):
                owed = circuit.owed[direction]
                if owed:
                    granted = circuit.buckets[direction].take(owed, now)
                    if granted:
                        circuit.owed[direction] -= granted
                        self._events.append(Grant(cid, direction, granted))

    def next_event(self) -> Grant | Expired | None:
        return self._events.popleft() if self._events else None

    # ------------------------------------------------------------- as target

    def accept_incoming(self, relay: bytes) -> bool:
        """A relayed session through ``relay`` may start (counted until released)."""
        if self._incoming.get(relay, 0) >= self.limits.incoming_per_relay:
            self.stats["incoming_refused"] += 1
            return False
        self._incoming[relay] = self._incoming.get(relay, 0) + 1
        self.stats["incoming_accepted"] += 1
        return True

    def incoming_done(self, relay: bytes) -> None:
        left = self._incoming.get(relay, 0) - 1
        if left > 0:
            self._incoming[relay] = left
        else:
            self._incoming.pop(relay, None)
