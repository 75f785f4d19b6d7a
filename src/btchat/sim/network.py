"""A deterministic discrete-event UDP network for sans-I/O endpoints.

Sans-I/O nodes never read a clock or touch a socket, so thousands of them can
share one process and one *virtual* clock: a three-second retransmission
timeout costs nothing but a heap pop. Every random choice (latency, loss,
duplication) comes from one seeded :class:`random.Random`, so a scenario that
fails once fails the same way every time.

Driving model
-------------
The simulator calls an endpoint in exactly two situations: a datagram arrives
(``receive_datagram``) or its timer is due (``handle_timer``). After either
call it *syncs* the endpoint: it drains ``datagrams_to_send()`` onto the wire
and re-reads ``get_timer()``.

Code outside the event loop (tests, benchmarks, scripted churn) that calls an
endpoint method directly must tell the simulator afterwards with
:meth:`SimNetwork.poke`, or use :meth:`SimNetwork.call_on`, which calls a
function on one endpoint at a virtual time and pokes it automatically. Pokes
are explicit rather than "re-sync every endpoint after every callback"
because that sweep is O(endpoints) per scripted action, far too slow for
benchmarks that start thousands of lookups on 5,000 nodes.

Where packets are lost
----------------------
Link faults (:meth:`SimNetwork.block`, drop filters, random loss) are decided
when a datagram is sent. Whether the destination is online is decided when
it arrives, so packets in flight to a node that goes offline are lost.

Accounting invariant::

    sent + duplicated == delivered + dropped + in_flight
"""

from __future__ import annotations

import heapq
import ipaddress
import math
import random
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, fields
from typing import Any, Generic, NamedTuple, Protocol, TypeVar, runtime_checkable

__all__ = [
    "Addr",
    "DropFilter",
    "Endpoint",
    "SimNetwork",
    "SimStats",
    "TraceEvent",
    "loopback_addresses",
    "private_addresses",
    "public_addresses",
]

#: A UDP endpoint address, as the socket API spells it.
Addr = tuple[str, int]

#: ``pred(src, dst, data) -> True`` drops the datagram (counted as blocked).
DropFilter = Callable[[Addr, Addr, bytes], bool]

#: An endpoint firing this many timers at one virtual instant is spinning.
_SPIN_LIMIT = 10_000

#: Rebuild the heap once at least this many stale timer entries pile up.
_COMPACT_MIN_STALE = 50_000

# Heap entry kinds. Entries are ``(time, seq, kind, a, b, c)`` tuples; ``seq``
# is unique, so comparison never reaches the heterogeneous payload fields.
_DELIVER = 0  # a=dst addr, b=src addr, c=data
_TIMER = 1  # a=_Slot, b=generation
_CALL = 2  # a=callable


@runtime_checkable
class Endpoint(Protocol):
    """What the simulator drives: the sans-I/O surface of a node."""

    def receive_datagram(self, data: bytes, addr: Addr, now: float) -> None:
        """Handle one datagram from ``addr`` at virtual time ``now``."""

    def datagrams_to_send(self) -> list[tuple[bytes, Addr]]:
        """Return and clear the outbox."""
        ...

    def get_timer(self) -> float | None:
        """Absolute virtual time of the next timer, or ``None`` for no timer."""
        ...

    def handle_timer(self, now: float) -> None:
        """Handle the timer, which is due at or before ``now``."""


E = TypeVar("E", bound=Endpoint)


@dataclass(slots=True)
class SimStats:
    """Traffic counters; ``sent + duplicated == delivered + dropped + in_flight``."""

    sent: int = 0
    """Datagrams handed over by endpoints or :meth:`SimNetwork.inject`."""
    delivered: int = 0
    duplicated: int = 0
    """Extra copies created by the duplication fault."""
    dropped_loss: int = 0
    dropped_offline: int = 0
    """Destination detached or never attached, or sender detached."""
    dropped_blocked: int = 0
    """Refused by :meth:`SimNetwork.block` or a drop filter."""
    bytes_sent: int = 0
    bytes_delivered: int = 0
    timers_fired: int = 0
    calls: int = 0
    events: int = 0
    """Live events processed: deliveries, offline drops, timers and calls."""

    @property
    def dropped(self) -> int:
        """All dropped datagrams, whatever the reason."""
        return self.dropped_loss + self.dropped_offline + self.dropped_blocked

    def as_dict(self) -> dict[str, int]:
        """A plain snapshot, handy for benchmark reports."""
        d = {f.name: getattr(self, f.name) for f in fields(self)}
        d["dropped"] = self.dropped
        return d


class TraceEvent(NamedTuple):
    """One observable step, for debugging and determinism checks.

    ``kind`` is one of ``send``, ``deliver``, ``drop-loss``, ``drop-offline``,
    ``drop-blocked``, ``duplicate``, ``timer`` (``src`` is the endpoint) or
    ``call``.
    """

    time: float
    kind: str
    src: Addr | None
    dst: Addr | None
    data: bytes


class _Slot:
    """Book-keeping for one attached address."""

    __slots__ = (
        "addr",
        "addr6",
        "endpoint",
        "online",
        "spin_count",
        "spin_time",
        "timer_at",
        "timer_gen",
        "timer_queued",
    )

    def __init__(self, addr: Addr, endpoint: Endpoint, addr6: Addr | None = None) -> None:
        self.addr = addr
        #: A dual-stack endpoint's IPv6 address: datagrams to IPv6 hosts leave from it.
        self.addr6 = addr6
        self.endpoint = endpoint
        self.online = True
        # What get_timer() last returned; compared to skip redundant pushes.
        self.timer_at: float | None = None
        # Bumped whenever the queued timer entry becomes obsolete.
        self.timer_gen = 0
        self.timer_queued = False
        self.spin_time = -math.inf
        self.spin_count = 0


class _Probability:
    """A per-datagram probability: checked to lie in [0, 1] whenever it is set, kept in
    ``_<name>`` for the delivery loop to read without a call."""

    def __init__(self, doc: str) -> None:
        self.__doc__ = doc

    def __set_name__(self, owner: type, name: str) -> None:
        self.name, self.slot = name, f"_{name}"

    def __get__(self, obj: object, owner: type | None = None) -> float:
        if obj is None:
            return self  # type: ignore[return-value]  # the class attribute: for help()
        return getattr(obj, self.slot)  # type: ignore[no-any-return]

    def __set__(self, obj: object, value: float) -> None:
        if not 0.0 <= value <= 1.0:
            raise ValueError(f"{self.name} must be in [0, 1], got {value!r}")
        setattr(obj, self.slot, float(value))


def private_addresses(port: int = 6881) -> Iterator[Addr]:
    """Unique hosts in 10.0.0.0/8, one per node, so per-IP logic is exercised."""
    for n in range(1 << 24):
        last = n & 0xFF
        if last in (0, 255):
            continue
        yield (f"10.{n >> 16}.{(n >> 8) & 0xFF}.{last}", port)


def loopback_addresses(start_port: int = 20000, host: str = "127.0.0.1") -> Iterator[Addr]:
    """One host, distinct ports: what a real single-machine sandbox looks like."""
    for port in range(start_port, 65536):
        yield (host, port)


def public_addresses(seed: int = 0, port: int = 6881) -> Iterator[Addr]:
    """Unique, seeded, globally routable IPv4 hosts, so BEP 42 ID checks apply."""
    rng = random.Random(seed)
    seen: set[int] = set()
    while True:
        n = rng.getrandbits(32)
        if n in seen:
            continue
        ip = ipaddress.IPv4Address(n)
        if not ip.is_global or ip.is_multicast:
            continue
        seen.add(n)
        yield (str(ip), port)


class SimNetwork(Generic[E]):
    """A seeded virtual-time network that moves datagrams between endpoints.

    ``latency`` is a uniform ``(min, max)`` one-way delay in seconds; drawing
    it per datagram is what reorders packets. ``loss`` and ``duplicate`` are
    per-datagram probabilities. ``addresses`` supplies automatic addresses
    (default: :func:`private_addresses`).
    """

    def __init__(
        self,
        seed: int,
        *,
        latency: tuple[float, float] = (0.005, 0.05),
        loss: float = 0.0,
        duplicate: float = 0.0,
        addresses: Iterable[Addr] | None = None,
        tracer: Callable[[TraceEvent], None] | None = None,
        start_time: float = 0.0,
    ) -> None:
        self.seed = seed
        self.random = random.Random(seed)
        """The network's seeded RNG; drop filters may use it and stay deterministic."""
        self.latency = latency
        self.loss = loss
        self.duplicate = duplicate
        self.tracer = tracer
        self.stats = SimStats()
        self._now = float(start_time)
        self._heap: list[tuple[float, int, int, Any, Any, Any]] = []
        self._seq = 0
        self._stale = 0  # stale timer entries still in the heap
        self._in_flight = 0
        self._slots: dict[Addr, _Slot] = {}
        self._addr_iter: Iterator[Addr] = iter(
            addresses if addresses is not None else private_addresses()
        )
        self._blocked: set[tuple[Addr, Addr]] = set()
        self._filters: list[DropFilter] = []
        self._running = False

    # -- configuration -----------------------------------------------------

    @property
    def latency(self) -> tuple[float, float]:
        """Uniform one-way delay range in seconds; may be changed mid-run."""
        return (self._lat_lo, self._lat_lo + self._lat_span)

    @latency.setter
    def latency(self, value: tuple[float, float]) -> None:
        lo, hi = value
        if not 0.0 <= lo <= hi or math.isinf(hi):
            raise ValueError(f"latency must satisfy 0 <= min <= max < inf, got {value!r}")
        self._lat_lo = float(lo)
        self._lat_span = float(hi) - float(lo)

    loss = _Probability("Probability that a datagram is silently lost; may be changed mid-run.")
    duplicate = _Probability(
        "Probability that a datagram is delivered twice; may be changed mid-run."
    )

    # -- inspection ----------------------------------------------------------

    @property
    def now(self) -> float:
        """Current virtual time in seconds."""
        return self._now

    @property
    def in_flight(self) -> int:
        """Datagrams scheduled for delivery but not yet arrived."""
        return self._in_flight

    @property
    def pending_events(self) -> int:
        """Live (non-stale) events in the queue; zero means idle."""
        return len(self._heap) - self._stale

    def addresses(self, *, online_only: bool = False) -> list[Addr]:
        """Attached addresses in attach order (optionally only online ones)."""
        if online_only:
            return [a for a, s in self._slots.items() if s.online]
        return list(self._slots)

    def endpoint(self, addr: Addr) -> E:
        """The endpoint attached at ``addr`` (online or not)."""
        return self._slots[addr].endpoint  # type: ignore[return-value]

    def is_online(self, addr: Addr) -> bool:
        """Whether ``addr`` is attached and not detached."""
        slot = self._slots.get(addr)
        return slot is not None and slot.online

    # -- membership ------------------------------------------------------------

    def next_address(self) -> Addr:
        """Reserve the next free automatic address (nodes may need it up front)."""
        for addr in self._addr_iter:
            if addr not in self._slots:
                return addr
        raise RuntimeError("address supply exhausted")

    def attach(self, endpoint: E, addr: Addr | None = None, *, addr6: Addr | None = None) -> Addr:
        """Bring ``endpoint`` online at ``addr`` (or a fresh address) and sync it.

        ``addr6`` makes it dual-stack (BEP 32): it is reached at both addresses, and what it
        sends to an IPv6 host (one with ':') leaves from ``addr6``.
        """
        if addr is None:
            addr = self.next_address()
        elif addr in self._slots:
            raise ValueError(f"address {addr!r} is already attached")
        if addr6 is not None and (addr6 in self._slots or ":" not in addr6[0]):
            raise ValueError(f"address {addr6!r} is taken or not IPv6")
        slot = _Slot(addr, endpoint, addr6)
        self._slots[addr] = slot
        if addr6 is not None:
            self._slots[addr6] = slot
        self._sync(slot)
        return addr

    def detach(self, addr: Addr) -> E:
        """Take ``addr`` offline: its timers stop, its outbox and inbound packets are lost."""
        slot = self._slots[addr]
        if not slot.online:
            raise ValueError(f"address {addr!r} is already detached")
        slot.online = False
        self._cancel_timer(slot)
        slot.timer_at = None
        # A power cut loses whatever was queued but not yet on the wire.
        self._drop_outbox(slot)
        return slot.endpoint  # type: ignore[return-value]

    def forget(self, addr: Addr) -> None:
        """Drop a detached endpoint for good (a node that left the network and never
        comes back), so long runs with churn do not keep every departed node in memory.
        Packets still addressed to it are dropped as to any offline address."""
        slot = self._slots[addr]
        if slot.online:
            raise ValueError(f"address {addr!r} is online")
        del self._slots[addr]
        if slot.addr6 is not None:
            self._slots.pop(slot.addr6, None)

    def reattach(self, addr: Addr, endpoint: E | None = None) -> None:
        """Bring ``addr`` back online, with the same endpoint or a restarted one."""
        slot = self._slots[addr]
        if slot.online:
            raise ValueError(f"address {addr!r} is online")
        if endpoint is not None:
            slot.endpoint = endpoint
        slot.online = True
        slot.spin_time = -math.inf
        slot.spin_count = 0
        self._sync(slot)

    def poke(self, addr: Addr) -> None:
        """Sync ``addr`` after outside code called one of its methods directly."""
        self._sync(self._slots[addr])

    def poke_all(self) -> None:
        """Sync every endpoint; O(n), for setup code rather than hot loops."""
        for slot in list(self._slots.values()):
            self._sync(slot)

    # -- faults ------------------------------------------------------------------

    def block(self, a: Addr, b: Addr, *, both_ways: bool = True) -> None:
        """Make ``a`` unable to reach ``b`` (and, by default, ``b`` unable to reach ``a``)."""
        self._blocked.add((a, b))
        if both_ways:
            self._blocked.add((b, a))

    def unblock(self, a: Addr, b: Addr, *, both_ways: bool = True) -> None:
        """Undo :meth:`block`; unknown pairs are ignored."""
        self._blocked.discard((a, b))
        if both_ways:
            self._blocked.discard((b, a))

    def is_blocked(self, src: Addr, dst: Addr) -> bool:
        """Whether :meth:`block` currently stops ``src`` -> ``dst``."""
        return (src, dst) in self._blocked

    def add_drop_filter(self, pred: DropFilter) -> DropFilter:
        """Install a drop predicate (per node, per link, per payload); returns it as a handle."""
        self._filters.append(pred)
        return pred

    def remove_drop_filter(self, pred: DropFilter) -> None:
        """Remove a predicate installed by :meth:`add_drop_filter`."""
        self._filters.remove(pred)

    def inject(self, data: bytes, src: Addr, dst: Addr) -> None:
        """Put a datagram from any (even spoofed) ``src`` on the wire, with all faults."""
        self._transmit(src, dst, data)

    # -- scripting -----------------------------------------------------------------

    def call_at(self, t: float, fn: Callable[[], object]) -> None:
        """Run ``fn`` at virtual time ``t``; it must :meth:`poke` endpoints it calls."""
        if t < self._now:
            raise ValueError(f"call_at({t}) is in the past (now={self._now})")
        self._push(float(t), _CALL, fn, None, None)

    def call_later(self, delay: float, fn: Callable[[], object]) -> None:
        """:meth:`call_at` relative to :attr:`now`."""
        self.call_at(self._now + delay, fn)

    def call_on(self, t: float, addr: Addr, fn: Callable[[E], object]) -> None:
        """At ``t``, call ``fn(endpoint)`` and sync it; skipped if ``addr`` is offline then."""

        def run() -> None:
            slot = self._slots[addr]
            if slot.online:
                fn(slot.endpoint)  # type: ignore[arg-type]
                self._sync(slot)

        self.call_at(t, run)

    # -- running -------------------------------------------------------------------

    def run_until(self, t: float) -> None:
        """Process every event due at or before ``t``, then set :attr:`now` to ``t``."""
        self._run(t, None)
        if t > self._now:
            self._now = float(t)

    def run_for(self, duration: float) -> None:
        """:meth:`run_until` relative to :attr:`now`."""
        self.run_until(self._now + duration)

    def run_until_idle(self, max_time: float) -> bool:
        """Run until no live events remain (True) or absolute ``max_time`` (False).

        When idle, :attr:`now` stays at the last event; otherwise it is ``max_time``.
        """
        self._run(max_time, None)
        if self.pending_events == 0:
            return True
        if max_time > self._now:
            self._now = float(max_time)
        return False

    def run_until_condition(
        self,
        pred: Callable[[], bool],
        timeout: float,
        *,
        poll_interval: float | None = None,
    ) -> bool:
        """Run until ``pred()`` holds (True) or ``timeout`` virtual seconds pass (False).

        ``pred`` is checked after every event, or, if ``poll_interval`` is set,
        only every ``poll_interval`` virtual seconds: use that for predicates
        that scan thousands of nodes.
        """
        if pred():
            return True
        deadline = self._now + timeout
        if poll_interval is None:
            if self._run(deadline, pred):
                return True
        else:
            if poll_interval <= 0:
                raise ValueError("poll_interval must be positive")
            while self._now < deadline:
                self.run_until(min(self._now + poll_interval, deadline))
                if pred():
                    return True
        if deadline > self._now:
            self._now = deadline
        return False

    # -- internals -----------------------------------------------------------------

    def _push(self, t: float, kind: int, a: Any, b: Any, c: Any) -> None:
        self._seq += 1
        heapq.heappush(self._heap, (t, self._seq, kind, a, b, c))

    def _run(self, deadline: float, pred: Callable[[], bool] | None) -> bool:
        """The event loop; returns True as soon as ``pred`` holds.

        The endpoint sync is inlined here because this loop is the simulator's
        whole cost at millions of events.
        """
        if self._running:
            raise RuntimeError("SimNetwork.run_* is not re-entrant")
        self._running = True
        heap = self._heap
        pop = heapq.heappop
        push = heapq.heappush
        slots_get = self._slots.get
        stats = self.stats
        transmit = self._transmit
        set_timer = self._set_timer
        try:
            while heap:
                entry = pop(heap)
                t = entry[0]
                if t > deadline:
                    push(heap, entry)  # same (time, seq) key: the order is unchanged
                    break
                kind = entry[2]
                if kind == _DELIVER:
                    self._now = t
                    stats.events += 1
                    self._in_flight -= 1
                    src = entry[4]
                    data = entry[5]
                    slot = slots_get(entry[3])
                    if slot is None or not slot.online:
                        stats.dropped_offline += 1
                        if self.tracer is not None:
                            self.tracer(TraceEvent(t, "drop-offline", src, entry[3], data))
                        continue
                    stats.delivered += 1
                    stats.bytes_delivered += len(data)
                    if self.tracer is not None:
                        self.tracer(TraceEvent(t, "deliver", src, entry[3], data))
                    endpoint = slot.endpoint
                    endpoint.receive_datagram(data, src, t)
                elif kind == _TIMER:
                    slot = entry[3]
                    if entry[4] != slot.timer_gen:
                        self._stale -= 1
                        continue
                    self._now = t
                    stats.events += 1
                    stats.timers_fired += 1
                    slot.timer_queued = False
                    slot.timer_at = None
                    if t == slot.spin_time:
                        slot.spin_count += 1
                        if slot.spin_count > _SPIN_LIMIT:
                            raise RuntimeError(
                                f"endpoint {slot.addr!r} re-armed its timer at t={t} "
                                f"{_SPIN_LIMIT} times without time advancing"
                            )
                    else:
                        slot.spin_time = t
                        slot.spin_count = 0
                    if self.tracer is not None:
                        self.tracer(TraceEvent(t, "timer", slot.addr, None, b""))
                    endpoint = slot.endpoint
                    endpoint.handle_timer(t)
                else:
                    self._now = t
                    stats.events += 1
                    stats.calls += 1
                    if self.tracer is not None:
                        self.tracer(TraceEvent(t, "call", None, None, b""))
                    entry[3]()
                    if pred is not None and pred():
                        return True
                    continue
                # Inlined _sync(slot) for the endpoint just called.
                if slot.online:
                    out = endpoint.datagrams_to_send()
                    if out:
                        addr, addr6 = slot.addr, slot.addr6
                        for data, dst in out:
                            transmit(
                                addr6 if addr6 is not None and ":" in dst[0] else addr, dst, data
                            )
                    timer = endpoint.get_timer()
                    if timer != slot.timer_at:
                        set_timer(slot, timer)
                else:  # the endpoint's own code detached it
                    self._drop_outbox(slot)
                if pred is not None and pred():
                    return True
            return False
        finally:
            self._running = False

    def _sync(self, slot: _Slot) -> None:
        """Drain the endpoint's outbox and (re)schedule its timer."""
        if not slot.online:
            self._drop_outbox(slot)
            return
        endpoint = slot.endpoint
        out = endpoint.datagrams_to_send()
        if out:
            src = slot.addr
            src6 = slot.addr6
            transmit = self._transmit
            for data, dst in out:
                transmit(src6 if src6 is not None and ":" in dst[0] else src, dst, data)
        t = endpoint.get_timer()
        if t != slot.timer_at:
            self._set_timer(slot, t)

    def _drop_outbox(self, slot: _Slot) -> None:
        """An offline endpoint's sends go nowhere, but are still counted."""
        out = slot.endpoint.datagrams_to_send()
        stats = self.stats
        for data, dst in out:
            stats.sent += 1
            stats.bytes_sent += len(data)
            stats.dropped_offline += 1
            if self.tracer is not None:
                self.tracer(TraceEvent(self._now, "drop-offline", slot.addr, dst, data))

    def _transmit(self, src: Addr, dst: Addr, data: bytes) -> None:
        """Apply link faults, then schedule delivery (and maybe a duplicate)."""
        stats = self.stats
        tracer = self.tracer
        now = self._now
        stats.sent += 1
        stats.bytes_sent += len(data)
        if tracer is not None:
            tracer(TraceEvent(now, "send", src, dst, data))
        if (self._blocked and (src, dst) in self._blocked) or (
            self._filters and any(f(src, dst, data) for f in self._filters)
        ):
            stats.dropped_blocked += 1
            if tracer is not None:
                tracer(TraceEvent(now, "drop-blocked", src, dst, data))
            return
        rnd = self.random.random
        if self._loss and rnd() < self._loss:
            stats.dropped_loss += 1
            if tracer is not None:
                tracer(TraceEvent(now, "drop-loss", src, dst, data))
            return
        heap = self._heap
        self._seq += 1
        heapq.heappush(
            heap, (now + self._lat_lo + self._lat_span * rnd(), self._seq, _DELIVER, dst, src, data)
        )
        self._in_flight += 1
        if self._duplicate and rnd() < self._duplicate:
            stats.duplicated += 1
            if tracer is not None:
                tracer(TraceEvent(now, "duplicate", src, dst, data))
            self._seq += 1
            heapq.heappush(
                heap,
                (now + self._lat_lo + self._lat_span * rnd(), self._seq, _DELIVER, dst, src, data),
            )
            self._in_flight += 1

    def _cancel_timer(self, slot: _Slot) -> None:
        """Make the queued timer entry (if any) stale."""
        slot.timer_gen += 1
        if slot.timer_queued:
            slot.timer_queued = False
            self._stale += 1
            if self._stale >= _COMPACT_MIN_STALE and self._stale * 2 > len(self._heap):
                self._compact()

    def _set_timer(self, slot: _Slot, t: float | None) -> None:
        """Replace the endpoint's single live timer with one at ``t``."""
        if t is not None and t != t:
            raise ValueError(f"endpoint {slot.addr!r} returned a NaN timer")
        self._cancel_timer(slot)
        slot.timer_at = t
        if t is None or t == math.inf:
            return
        # A timer already in the past fires now, after events queued for now.
        self._push(t if t > self._now else self._now, _TIMER, slot, slot.timer_gen, None)
        slot.timer_queued = True

    def _compact(self) -> None:
        """Drop stale timer entries in place so the heap stays proportional to live work."""
        self._heap[:] = [e for e in self._heap if not (e[2] == _TIMER and e[4] != e[3].timer_gen)]
        heapq.heapify(self._heap)
        self._stale = 0
