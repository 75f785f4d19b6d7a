"""BEP 14 Local Service Discovery: channel members find each other on a LAN with no internet.

Three layers, as elsewhere in btchat:

- :func:`build_announce` / :func:`parse_announce`: the wire format (an HTTP-like
  ``BT-SEARCH`` request in one UDP datagram), strict, sans-I/O. ``LsdError`` is the only
  error remote input can cause; a caller passing bad values gets a ``ValueError``.
- :class:`LsdAnnouncer`: which infohashes go out when (BEP 14 rate limits) and what a
  received datagram means. A datagram core (:mod:`btchat.sansio`): ``handle_timer`` /
  ``get_timer``, ``receive_datagram`` in, ``datagrams_to_send`` and ``next_event``
  (a :class:`~btchat.discovery.found.Found` per peer) out; it never reads a clock.
- :class:`~btchat.discovery.lsd_service.LsdService` (its own module, the only one with
  I/O): one multicast UDP socket and one timer around an ``LsdAnnouncer``.

IPv4 only (``239.192.152.143:6771``); the IPv6 group of BEP 14 is not joined.
"""

from __future__ import annotations

import ipaddress
import re
import secrets
from collections import Counter, deque
from collections.abc import Iterable
from dataclasses import dataclass

from btchat.dht.ratelimit import RateLimiter
from btchat.discovery.found import Found
from btchat.errors import PeerError

__all__ = [
    "ANNOUNCE_INTERVAL",
    "DEFAULT_HOST",
    "DEFAULT_TTL",
    "LSD_GROUP_V4",
    "LSD_PORT",
    "MAX_ANNOUNCE_SIZE",
    "MAX_REMEMBERED",
    "MAX_SEND_SIZE",
    "MIN_ANNOUNCE_INTERVAL",
    "LsdAnnounce",
    "LsdAnnouncer",
    "LsdError",
    "build_announce",
    "build_announces",
    "parse_announce",
]

#: BEP 14 group A (organisation-local scope) and the port every implementation uses.
LSD_GROUP_V4 = "239.192.152.143"
LSD_PORT = 6771
DEFAULT_HOST = f"{LSD_GROUP_V4}:{LSD_PORT}"

#: Largest datagram we parse (libtorrent reads into 1500 bytes too); anything longer is
#: malformed. We send at most MAX_SEND_SIZE, as BEP 14 asks, to avoid fragmentation.
MAX_ANNOUNCE_SIZE = 1500
MAX_SEND_SIZE = 1400
#: Header lines in one announce, and the longest cookie we accept or send.
MAX_HEADERS = 64
MAX_COOKIE = 64

#: BEP 14: re-announce every 5 minutes, never more than once a minute per infohash.
ANNOUNCE_INTERVAL = 300.0
MIN_ANNOUNCE_INTERVAL = 60.0
#: BEP 14 suggests a TTL above 1 since the group's scope is wider than one link; 32 is
#: what libtorrent uses, so we reach exactly the BitTorrent clients' neighbourhood.
DEFAULT_TTL = 32

#: Announces accepted per source IP (token bucket): a legitimate peer sends one every
#: few minutes, so this only bounds what a hostile LAN host can make us process.
RX_RATE = 2.0
RX_BURST = 20.0
RX_MAX_SOURCES = 1024
#: Announces heard are remembered (oldest dropped first) for one announce interval, so a
#: channel joined later finds the LAN members at once instead of at their next announce.
MAX_REMEMBERED = 1024

#: Timers may fire a hair early; a deadline this close counts as reached.
_EPSILON = 1e-3

_REQUEST_LINE = b"BT-SEARCH * HTTP/1.1"
# RFC 7230 header field: token ":" OWS field-value OWS. Field values are visible ASCII
# (plus obs-text, which only unknown headers may carry), with inner spaces or tabs.
_HEADER_RE = re.compile(
    rb"([!#$%&'*+.^_`|~0-9A-Za-z-]+):[ \t]*"
    rb"((?:[\x21-\x7e\x80-\xff](?:[ \t]*[\x21-\x7e\x80-\xff])*)?)[ \t]*"
)
# RFC 2616 14.23 / RFC 2732: host[:port], the host a name, an IPv4 or a bracketed IPv6.
_HOST_RE = re.compile(rb"(?:\[[0-9A-Fa-f:.]{2,45}\]|[A-Za-z0-9.-]{1,253})(?::[0-9]{1,5})?")
_PORT_RE = re.compile(rb"[1-9][0-9]{0,4}")
_INFOHASH_RE = re.compile(rb"[0-9A-Fa-f]{40}")
_COOKIE_RE = re.compile(rb"[\x21-\x7e]{1,%d}" % MAX_COOKIE)
_INFOHASH_LINE = len(b"Infohash: ") + 40 + 2


class LsdError(PeerError):
    """A received datagram is not a valid BEP 14 announce (the sender misbehaved)."""


@dataclass(frozen=True, slots=True)
class LsdAnnounce:
    """What a valid announce says: a peer listens on ``port`` for these infohashes."""

    port: int
    infohashes: list[bytes]
    cookie: str | None


# ----------------------------------------------------------------------------- wire


def parse_announce(data: bytes) -> LsdAnnounce:
    """Parse one datagram strictly: CRLF lines, case-insensitive header names.

    Unknown headers are ignored (BEP 14, for forward compatibility) but must still be
    well-formed; a repeated Host, Port or cookie is malformed; repeated infohashes are
    merged.
    """
    if len(data) > MAX_ANNOUNCE_SIZE:
        raise LsdError("announce too large")
    lines = bytes(data).split(b"\r\n")
    if lines[0] != _REQUEST_LINE:
        raise LsdError("not a BT-SEARCH * HTTP/1.1 request")
    try:
        end = lines.index(b"", 1)
    except ValueError:
        raise LsdError("headers are not terminated by an empty line") from None
    # Nothing may follow the headers but the extra CRLF every sender appends.
    if lines[end + 1 :] not in ([b""], [b"", b""]):
        raise LsdError("unexpected data after the headers")
    headers = lines[1:end]
    if len(headers) > MAX_HEADERS:
        raise LsdError("too many header lines")
    host: bytes | None = None
    port: int | None = None
    cookie: str | None = None
    infohashes: dict[bytes, None] = {}
    for line in headers:
        m = _HEADER_RE.fullmatch(line)
        if m is None:
            raise LsdError("malformed header line")
        name, value = m[1].lower(), m[2]
        if name == b"host":
            if host is not None or _HOST_RE.fullmatch(value) is None:
                raise LsdError("bad or repeated Host header")
            host = value
        elif name == b"port":
            if port is not None or _PORT_RE.fullmatch(value) is None or int(value) > 65535:
                raise LsdError("bad or repeated Port header")
            port = int(value)
        elif name == b"infohash":
            if _INFOHASH_RE.fullmatch(value) is None:
                raise LsdError("bad Infohash header")
            infohashes[bytes.fromhex(value.decode("ascii"))] = None
        elif name == b"cookie":
            if cookie is not None or _COOKIE_RE.fullmatch(value) is None:
                raise LsdError("bad or repeated cookie header")
            cookie = value.decode("ascii")
    if host is None:
        raise LsdError("missing Host header")
    if port is None:
        raise LsdError("missing Port header")
    if not infohashes:
        raise LsdError("no Infohash header")
    return LsdAnnounce(port, list(infohashes), cookie)


def _check_fields(port: int, cookie: str, host: str) -> None:
    if not isinstance(port, int) or not 1 <= port <= 65535:
        raise ValueError(f"port must be 1..65535, not {port!r}")
    if not cookie.isascii() or _COOKIE_RE.fullmatch(cookie.encode("ascii")) is None:
        raise ValueError(f"cookie must be 1..{MAX_COOKIE} visible ASCII characters")
    if not host.isascii() or _HOST_RE.fullmatch(host.encode("ascii")) is None:
        raise ValueError(f"not a valid Host value: {host!r}")


def _check_infohashes(infohashes: Iterable[bytes]) -> list[bytes]:
    unique = list(dict.fromkeys(infohashes))
    if not unique:
        raise ValueError("at least one infohash is needed")
    for ih in unique:
        if not isinstance(ih, bytes) or len(ih) != 20:
            raise ValueError("an infohash is 20 bytes")
    return unique


def _render(infohashes: list[bytes], port: int, cookie: str, host: str) -> bytes:
    lines = [f"BT-SEARCH * HTTP/1.1\r\nHost: {host}\r\nPort: {port}\r\n"]
    lines += [f"Infohash: {ih.hex()}\r\n" for ih in infohashes]
    lines.append(f"cookie: {cookie}\r\n\r\n\r\n")
    return "".join(lines).encode("ascii")


def build_announce(
    infohashes: list[bytes], port: int, cookie: str, host: str = DEFAULT_HOST
) -> bytes:
    """One announce in BEP 14's layout; ``ValueError`` if it would exceed MAX_SEND_SIZE."""
    unique = _check_infohashes(infohashes)
    _check_fields(port, cookie, host)
    data = _render(unique, port, cookie, host)
    if len(data) > MAX_SEND_SIZE:
        raise ValueError(f"{len(unique)} infohashes do not fit in {MAX_SEND_SIZE} bytes")
    return data


def build_announces(
    infohashes: list[bytes], port: int, cookie: str, host: str = DEFAULT_HOST
) -> list[bytes]:
    """As many announces as needed to carry every infohash, each at most MAX_SEND_SIZE."""
    unique = _check_infohashes(infohashes)
    _check_fields(port, cookie, host)
    fixed = len(_render([], port, cookie, host))
    per = (MAX_SEND_SIZE - fixed) // _INFOHASH_LINE
    if per < 1:
        raise ValueError("cookie and host leave no room for an infohash")
    return [_render(unique[i : i + per], port, cookie, host) for i in range(0, len(unique), per)]


# ----------------------------------------------------------------------------- core


class LsdAnnouncer:
    """Sans-I/O BEP 14 logic: the announce schedule and the meaning of received datagrams.

    Every infohash is announced at once when added, then every ``interval`` seconds,
    and never twice within ``min_interval`` (also across remove/add and
    :meth:`announce_now`). When a datagram goes out, every other infohash that the rate
    limit allows rides along, so the schedules merge and the steady state is one
    datagram (per ~25 infohashes) per interval.

    Every announce heard is remembered for one ``interval`` (at most MAX_REMEMBERED
    entries), so :meth:`add` can report the peers already known for a new infohash:
    whoever joins a channel second still learns the first member at once.

    Announces go to ``dest`` (the group and port); every peer heard for an infohash we
    hold comes out of :meth:`next_event` as a ``Found(infohash, (source ip, port), "lsd")``.
    """

    def __init__(
        self,
        port: int,
        *,
        cookie: str | None = None,
        host: str = DEFAULT_HOST,
        interval: float = ANNOUNCE_INTERVAL,
        min_interval: float = MIN_ANNOUNCE_INTERVAL,
        dest: tuple[str, int] = (LSD_GROUP_V4, LSD_PORT),
    ) -> None:
        self.cookie = cookie if cookie is not None else secrets.token_hex(8)
        _check_fields(port, self.cookie, host)
        if not interval > 0 or not min_interval >= 0:
            raise ValueError("interval must be positive and min_interval not negative")
        self.port = port
        self.host = host
        self.dest = dest
        self._datagrams: list[tuple[bytes, tuple[str, int]]] = []
        self._found: deque[Found] = deque()
        self.interval = max(interval, min_interval)
        self.min_interval = min_interval
        self.stats: Counter[str] = Counter()
        self._due: dict[bytes, float] = {}  # held infohash -> next announce
        self._last: dict[bytes, float] = {}  # infohash -> last announce (outlives remove)
        self._rx_limit = RateLimiter(RX_RATE, RX_BURST, max_sources=RX_MAX_SOURCES)
        # (infohash, (ip, port)) -> when last heard; insertion order is age order.
        self._heard: dict[tuple[bytes, tuple[str, int]], float] = {}

    @property
    def infohashes(self) -> frozenset[bytes]:
        return frozenset(self._due)

    def add(self, infohash: bytes, now: float) -> None:
        """Start announcing (at once unless it went out lately) and reporting peers.

        The peers heard announcing ``infohash`` within the last interval are reported
        at once (as events).
        """
        _check_infohashes([infohash])
        if infohash in self._due:
            return
        self._due[infohash] = self._earliest(infohash, now)
        fresh = now - self.interval
        for (ih, addr), t in self._heard.items():
            if ih == infohash and t > fresh:
                self._found.append(Found(ih, addr, "lsd"))

    def remove(self, infohash: bytes) -> None:
        """Stop announcing and stop reporting peers for this infohash."""
        self._due.pop(infohash, None)

    def announce_now(self, now: float) -> None:
        """Announce everything as soon as the per-infohash rate limit allows."""
        for ih, due in self._due.items():
            self._due[ih] = min(due, self._earliest(ih, now))

    def get_timer(self) -> float | None:
        """When :meth:`handle_timer` next has something to send, or None."""
        return min(self._due.values(), default=None)

    def handle_timer(self, now: float) -> None:
        """Queue the announces due now (nothing if none is due yet)."""
        if not any(due <= now + _EPSILON for due in self._due.values()):
            return
        batch = [
            ih for ih, due in self._due.items() if due <= now + _EPSILON or self._may_send(ih, now)
        ]
        for ih in batch:
            self._last[ih] = now
            self._due[ih] = now + self.interval
        # Forget rate-limit memory of removed infohashes once it no longer matters.
        stale = now - self.min_interval
        self._last = {ih: t for ih, t in self._last.items() if ih in self._due or t > stale}
        self.stats["tx_infohashes"] += len(batch)
        for data in build_announces(batch, self.port, self.cookie, self.host):
            self._datagrams.append((data, self.dest))

    def datagrams_to_send(self) -> list[tuple[bytes, tuple[str, int]]]:
        """The announces queued by :meth:`handle_timer`, with where they go."""
        out, self._datagrams = self._datagrams, []
        return out

    def next_event(self) -> Found | None:
        """The oldest peer found and not yet taken, or None."""
        return self._found.popleft() if self._found else None

    def receive_datagram(self, data: bytes, addr: tuple[str, int], now: float) -> None:
        """One datagram heard from ``addr``: its peers for infohashes we hold become
        events; never raises. Only the source IP counts (BEP 14), never a header."""
        src_ip = str(addr[0])
        if not self._rx_limit.allow(src_ip, now):
            self.stats["rx_rate_limited"] += 1
            return
        try:
            announce = parse_announce(data)
        except LsdError:
            self.stats["rx_malformed"] += 1
            return
        if announce.cookie == self.cookie:
            self.stats["rx_own"] += 1
            return
        if not _usable_source(src_ip):
            # 0.0.0.0 (a sender with no address on the link) or a group: nothing to dial.
            self.stats["rx_bad_source"] += 1
            return
        self.stats["rx_announces"] += 1
        for ih in announce.infohashes:
            key = (ih, (src_ip, announce.port))
            self._heard.pop(key, None)
            self._heard[key] = now
        while len(self._heard) > MAX_REMEMBERED:
            del self._heard[next(iter(self._heard))]
        peers = [
            Found(ih, (src_ip, announce.port), "lsd")
            for ih in announce.infohashes
            if ih in self._due
        ]
        self.stats["rx_peers"] += len(peers)
        self.stats["rx_uninterested"] += len(announce.infohashes) - len(peers)
        self._found.extend(peers)

    def _earliest(self, infohash: bytes, now: float) -> float:
        last = self._last.get(infohash)
        return now if last is None else max(now, last + self.min_interval)

    def _may_send(self, infohash: bytes, now: float) -> bool:
        last = self._last.get(infohash)
        return last is None or now - last >= self.min_interval - _EPSILON


def _usable_source(ip: str) -> bool:
    try:
        addr = ipaddress.ip_address(ip)
    except ValueError:
        return False
    if isinstance(addr, ipaddress.IPv4Address) and addr == ipaddress.IPv4Address(0xFFFFFFFF):
        return False
    return not (addr.is_unspecified or addr.is_multicast)
