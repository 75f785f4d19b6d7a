"""Upgrading a relayed session to a direct one, coordinated over the relayed session.

Like libp2p DCUtR and BEP 55 ut_holepunch, with no server: once two contacts talk
through a relay, the side that dialled the relayed session (the initiator) sends
CONNECT with its candidate addresses, the other answers CONNECT with its own, and the
initiator, having measured the round trip through the relay, sends SYNC and waits half
of it. Both then punch each other's addresses and dial them at about the same moment,
so each NAT has an outbound mapping toward the other when the other's packets arrive.
Up to :data:`ATTEMPTS` rounds, with backoff. A direct session that comes up replaces
the relayed one by the usual duplicate rule (:mod:`btchat.net.tiebreak`).

This module is sans-I/O: :class:`Upgrade` takes payloads and times and returns what to
send and when to punch. What a peer can make us do is bounded: at most
:data:`MAX_ADDRS` addresses per CONNECT, only acceptable ones (:func:`acceptable`),
at most :data:`MAX_ANSWERS` CONNECTs answered per session. Addresses are dialled with
the contact's device key as the Noise responder key, so a punch to an address that is
not the contact's yields no session.

Wire (docs/PROTOCOL.md "Upgrading a relayed session"), a DATA payload on the relayed
session's default stream::

    MAGIC || version:u8 (1) || kind:u8 (1 CONNECT, 2 SYNC) || attempt:u8
    CONNECT then: count:u8 (<= 8) || count * (family:u8 (4|6) || ip (4|16) || port:u16be)
"""

from __future__ import annotations

import contextlib
import ipaddress
import struct
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass

__all__ = [
    "ATTEMPTS",
    "MAGIC",
    "MAX_ADDRS",
    "Message",
    "Punch",
    "Send",
    "Upgrade",
    "acceptable",
    "decode",
    "encode",
]

Address = tuple[str, int]

#: Opens every upgrade payload. Application payloads are bencoded dictionaries
#: (first byte ``d``), the capabilities payload has its own NUL-led magic.
MAGIC = b"\x00btchat-dcutr\x00"
VERSION = 1
CONNECT = 1
SYNC = 2
#: Addresses in one CONNECT (host, mapped, reflexive, each IPv4/IPv6: a handful).
MAX_ADDRS = 8
#: Rounds of CONNECT/SYNC/punch the initiator runs before it stays relayed.
ATTEMPTS = 3
#: CONNECTs a responder answers on one session (each makes it punch and dial).
MAX_ANSWERS = 2 * ATTEMPTS
#: Seconds the initiator waits for the answering CONNECT.
REPLY_TIMEOUT = 10.0
#: Seconds after a punch before the next round (dials finish or time out by then).
WINDOW = 5.0
#: Backoff before the second round; doubled for each later one.
BACKOFF = 1.0
#: Networks only reachable from inside them: dialled only when one of our own host
#: addresses is in the same network (:func:`acceptable`).
LOCAL_NETS = tuple(
    ipaddress.ip_network(n)
    for n in ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "100.64.0.0/10", "fc00::/7")
)
_PORT = struct.Struct(">H")


@dataclass(frozen=True)
class Message:
    kind: int  # CONNECT or SYNC
    attempt: int
    addrs: tuple[Address, ...] = ()


@dataclass(frozen=True)
class Send:
    """Send ``payload`` on the relayed session."""

    payload: bytes


@dataclass(frozen=True)
class Punch:
    """Punch and dial these addresses of the peer now."""

    addrs: tuple[Address, ...]


def encode(message: Message) -> bytes:
    out = bytearray(MAGIC)
    out += bytes([VERSION, message.kind, message.attempt])
    if message.kind == CONNECT:
        if len(message.addrs) > MAX_ADDRS:
            raise ValueError("too many addresses")
        out.append(len(message.addrs))
        for host, port in message.addrs:
            ip = ipaddress.ip_address(host)
            out.append(ip.version)
            out += ip.packed + _PORT.pack(port)
    return bytes(out)


def decode(payload: bytes) -> Message:
    """Parse an upgrade payload; ValueError (the reason) for anything malformed."""
    if not payload.startswith(MAGIC):
        raise ValueError("not an upgrade payload")
    body = payload[len(MAGIC) :]
    if len(body) < 3:
        raise ValueError("truncated")
    version, kind, attempt = body[0], body[1], body[2]
    if version != VERSION:
        raise ValueError("version")
    if kind == SYNC:
        if len(body) != 3:
            raise ValueError("trailing bytes")
        return Message(SYNC, attempt)
    if kind != CONNECT:
        raise ValueError("kind")
    if len(body) < 4:
        raise ValueError("truncated")
    count, pos = body[3], 4
    if count > MAX_ADDRS:
        raise ValueError("too many addresses")
    addrs: list[Address] = []
    for _ in range(count):
        if pos >= len(body):
            raise ValueError("truncated")
        family = body[pos]
        size = {4: 4, 6: 16}.get(family)
        if size is None:
            raise ValueError("family")
        end = pos + 1 + size + 2
        if end > len(body):
            raise ValueError("truncated")
        ip = ipaddress.ip_address(body[pos + 1 : pos + 1 + size])
        (port,) = _PORT.unpack_from(body, pos + 1 + size)
        addrs.append((str(ip), port))
        pos = end
    if pos != len(body):
        raise ValueError("trailing bytes")
    return Message(CONNECT, attempt, tuple(addrs))


def acceptable(addr: Address, own_hosts: Iterable[str]) -> bool:
    """Whether we punch and dial ``addr`` that a peer gave us.

    Unicast with a port; never loopback, link-local, multicast, unspecified, reserved
    or broadcast (nobody's contact lives there from our point of view); a LAN address
    (:data:`LOCAL_NETS`) only if one of ``own_hosts`` is in the same /24 (IPv4) or /64
    (IPv6): every home uses 192.168.1.x, so elsewhere it would be our own neighbour;
    never one of ``own_hosts`` itself (two homes may both number their host .10).
    """
    host, port = addr
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return False
    if not 0 < port < 65536:
        return False
    if ip.is_loopback or ip.is_link_local or ip.is_multicast or ip.is_unspecified:
        return False
    if ip.is_reserved or (ip.version == 4 and ip == ipaddress.IPv4Address("255.255.255.255")):
        return False
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return False
    mine = set()
    for own in own_hosts:
        with contextlib.suppress(ValueError):
            mine.add(ipaddress.ip_address(own))
    if ip in mine:  # ourselves, or a stranger's LAN that numbers hosts as ours does
        return False
    if not any(ip in net for net in LOCAL_NETS if net.version == ip.version):
        return True
    lan = ipaddress.ip_network(f"{ip}/{24 if ip.version == 4 else 64}", strict=False)
    return any(own in lan for own in mine)


class Upgrade:
    """One relayed session's upgrade exchange (either side).

    ``own`` gives our candidate addresses when a CONNECT is sent; ``own_hosts`` our
    host (interface) addresses, for :func:`acceptable`. Feed payloads with
    :meth:`receive` and the clock with :meth:`handle_timer` at :meth:`next_timer`;
    both return :class:`Send` and :class:`Punch` actions.
    """

    def __init__(
        self,
        initiator: bool,
        own: Callable[[], list[Address]],
        own_hosts: Callable[[], list[str]],
        *,
        attempts: int = ATTEMPTS,
        window: float = WINDOW,
        backoff: float = BACKOFF,
        reply_timeout: float = REPLY_TIMEOUT,
        stats: Counter[str] | None = None,
    ) -> None:
        self.initiator = initiator
        self._own = own
        self._own_hosts = own_hosts
        self._attempts = attempts
        self._window = window
        self._backoff = backoff
        self._reply_timeout = reply_timeout
        self.attempt = -1  # the round in progress (the initiator's count)
        self.rtt: float | None = None  # through the relay, last measured
        self._sent_at = 0.0
        #: The initiator's phase, ended by ``_timer``: "backoff" (then CONNECT),
        #: "waiting" (for the answer), "sync" (then punch), "window" (then next round).
        self._phase = "idle"
        self._timer: float | None = None
        self._punch_at: tuple[Address, ...] = ()
        self._peer: dict[int, tuple[Address, ...]] = {}  # responder: addrs per attempt
        self._answered = 0
        self.done = False
        #: What it did and dropped (a counter shared by several, if given).
        self.stats: Counter[str] = Counter() if stats is None else stats

    # ------------------------------------------------------------------ driving

    def start(self, now: float) -> list[Send | Punch]:
        """The initiator's first CONNECT; nothing for the responder."""
        if not self.initiator or self.attempt >= 0 or self.done:
            return []
        return self._connect(now)

    def next_timer(self) -> float | None:
        return None if self.done else self._timer

    def handle_timer(self, now: float) -> list[Send | Punch]:
        if self.done or self._timer is None or now < self._timer:
            return []
        self._timer = None
        phase, self._phase = self._phase, "idle"
        if phase == "backoff":
            return self._connect(now)
        if phase == "sync":  # half the round trip after SYNC: punch now
            self._phase, self._timer = "window", now + self._window
            self.stats["punches"] += 1
            return [Punch(self._punch_at)]
        if phase == "waiting":
            self.stats["no_answer"] += 1
        # The round is over and we are still relayed: another after a backoff, or stop.
        if self.attempt + 1 >= self._attempts:
            self.done = True
            self.stats["gave_up"] += 1
            return []
        self._phase, self._timer = "backoff", now + self._backoff * 2**self.attempt
        return []

    def receive(self, payload: bytes, now: float) -> list[Send | Punch]:
        """An upgrade payload from the peer; malformed or unexpected ones are counted
        and dropped."""
        if self.done:
            self.stats["dropped_done"] += 1
            return []
        try:
            message = decode(payload)
        except (ValueError, struct.error) as exc:
            self.stats["dropped_malformed"] += 1
            self.stats[f"malformed_{str(exc).replace(' ', '_')}"] += 1
            return []
        if self.initiator:
            return self._initiator_receive(message, now)
        return self._responder_receive(message)

    def finish(self) -> None:
        """The session is direct now (or gone): nothing more to do."""
        self.done = True
        self._timer = None
        self._phase = "idle"

    # ------------------------------------------------------------------ sides

    def _connect(self, now: float) -> list[Send | Punch]:
        self.attempt += 1
        self._sent_at = now
        self._phase, self._timer = "waiting", now + self._reply_timeout
        self.stats["connects_sent"] += 1
        own = tuple(self._own()[:MAX_ADDRS])
        return [Send(encode(Message(CONNECT, self.attempt, own)))]

    def _initiator_receive(self, message: Message, now: float) -> list[Send | Punch]:
        if message.kind != CONNECT or self._phase != "waiting" or message.attempt != self.attempt:
            self.stats["dropped_unexpected"] += 1
            return []
        self.rtt = now - self._sent_at
        self._punch_at = self._filter(message.addrs)
        self._phase, self._timer = "sync", now + self.rtt / 2
        return [Send(encode(Message(SYNC, self.attempt)))]

    def _responder_receive(self, message: Message) -> list[Send | Punch]:
        if message.kind == CONNECT:
            if self._answered >= MAX_ANSWERS:
                self.stats["dropped_excess"] += 1
                return []
            self._answered += 1
            self._peer = {message.attempt: self._filter(message.addrs)}
            own = tuple(self._own()[:MAX_ADDRS])
            return [Send(encode(Message(CONNECT, message.attempt, own)))]
        addrs = self._peer.pop(message.attempt, None)
        if addrs is None:  # a SYNC for no CONNECT we answered (or a second one)
            self.stats["dropped_unexpected"] += 1
            return []
        self.stats["punches"] += 1
        return [Punch(addrs)]

    def _filter(self, addrs: tuple[Address, ...]) -> tuple[Address, ...]:
        hosts = self._own_hosts()
        kept = tuple(dict.fromkeys(a for a in addrs if acceptable(a, hosts)))
        self.stats["addrs_refused"] += len(addrs) - len(kept)
        return kept
