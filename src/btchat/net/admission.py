"""Who may hold one of our inbound connection slots, and who is pushed out.

Why: anyone can open TCP connections to the session port, and a responder that refuses
a handshake keeps the connection open until the handshake deadline (so every refusal
looks alike). With one shared pool of pending handshakes, ~13 idle connections a second
kept a real contact out for a minute. So inbound connections are admitted here, with
no I/O (times are passed in):

- at most :attr:`AdmissionConfig.per_source` pending handshakes per source (an IPv4
  address, an IPv6 /64): a newcomer from a source at its cap pushes out that source's
  oldest, so one host can neither fill the pool nor keep out a contact behind the same
  NAT (whose handshake completes in a round trip);
- a connection must send its first bytes within :attr:`AdmissionConfig.first_bytes`
  seconds (a real initiator sends its first handshake message at once);
- when the pool is full, the oldest pending connection is pushed out for the newcomer:
  an honest handshake completes in a round trip, so only a flood of newer connections
  can push it out, never the slow trickle that used to fill the pool;
- refused handshakes linger in a separate pool (:attr:`AdmissionConfig.lingering`); when
  it is full the oldest lingering one is closed early, which tells a prober nothing it
  could not learn from a lost packet.

Each admitted connection is a :class:`Ticket`; eviction calls the ticket's ``close``.
"""

from __future__ import annotations

import ipaddress
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field

__all__ = ["Admission", "AdmissionConfig", "Ticket", "source_of"]


@dataclass(frozen=True)
class AdmissionConfig:
    total: int = 64
    per_source: int = 4
    first_bytes: float = 3.0
    lingering: int = 256


def source_of(host: str | None) -> str:
    """The unit a cap counts: an IPv4 address, or the /64 of an IPv6 one."""
    if host is None:
        return "?"
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return host
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ipaddress.ip_network(f"{ip}/64", strict=False))
    return str(ip)


@dataclass(eq=False)
class Ticket:
    """One admitted inbound connection."""

    source: str
    admitted: float
    close: Callable[[], None] = field(repr=False)
    talked: bool = False
    state: str = "pending"  # pending -> established | lingering -> released


class Admission:
    def __init__(self, config: AdmissionConfig | None = None) -> None:
        self.config = config or AdmissionConfig()
        self._pending: OrderedDict[Ticket, None] = OrderedDict()  # oldest first
        self._lingering: OrderedDict[Ticket, None] = OrderedDict()
        self._per_source: dict[str, int] = {}
        self.stats: dict[str, int] = {
            "admitted": 0,
            "evicted_same_source": 0,
            "evicted": 0,
            "silent": 0,
            "linger_evicted": 0,
        }

    @property
    def pending(self) -> int:
        return len(self._pending)

    @property
    def lingering(self) -> int:
        return len(self._lingering)

    def admit(self, host: str | None, now: float, close: Callable[[], None]) -> Ticket:
        """A ticket for a new connection from ``host``; whom it pushes out is closed."""
        source = source_of(host)
        if self._per_source.get(source, 0) >= self.config.per_source:
            # The source's own oldest goes: a contact behind the same NAT as a flooder
            # still gets in, and the flooder cannot take more than its share.
            self.stats["evicted_same_source"] += 1
            self._evict(next(t for t in self._pending if t.source == source))
        elif len(self._pending) >= self.config.total:
            self.stats["evicted"] += 1
            self._evict(next(iter(self._pending)))
        ticket = Ticket(source, now, close)
        self._pending[ticket] = None
        self._per_source[source] = self._per_source.get(source, 0) + 1
        self.stats["admitted"] += 1
        return ticket

    def _evict(self, ticket: Ticket) -> None:
        self._drop(ticket)
        ticket.close()

    def heard(self, ticket: Ticket) -> None:
        """The connection sent its first bytes."""
        ticket.talked = True

    def deadline(self, ticket: Ticket) -> float:
        """When a connection that has sent nothing is closed."""
        return ticket.admitted + self.config.first_bytes

    def check_silent(self, ticket: Ticket, now: float) -> bool:
        """True (and the ticket released) if it is past its deadline without a byte:
        the caller closes it."""
        if ticket.state != "pending" or ticket.talked or now < self.deadline(ticket):
            return False
        self.stats["silent"] += 1
        self._drop(ticket)
        return True

    def established(self, ticket: Ticket) -> None:
        """The handshake completed: the connection leaves the pools."""
        if ticket.state == "pending":
            self._drop(ticket)
            ticket.state = "established"

    def refused(self, ticket: Ticket) -> None:
        """The handshake was refused; the connection lingers in its own pool."""
        if ticket.state != "pending":
            return
        self._drop(ticket)
        if len(self._lingering) >= self.config.lingering:
            oldest = next(iter(self._lingering))
            self.stats["linger_evicted"] += 1
            self._evict(oldest)
        ticket.state = "lingering"
        self._lingering[ticket] = None

    def release(self, ticket: Ticket) -> None:
        """The connection is gone, whatever state it was in."""
        self._drop(ticket)

    def _drop(self, ticket: Ticket) -> None:
        if ticket.state == "pending" and ticket in self._pending:
            del self._pending[ticket]
            left = self._per_source[ticket.source] - 1
            if left:
                self._per_source[ticket.source] = left
            else:
                del self._per_source[ticket.source]
        elif ticket.state == "lingering":
            self._lingering.pop(ticket, None)
        ticket.state = "released"
