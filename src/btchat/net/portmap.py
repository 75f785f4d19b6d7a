"""Port mapping on the home gateway, decided without I/O: when to map, renew, re-discover.

How this works. A :class:`PortMapper` holds what we asked the gateway for (one mapping
per protocol: the DHT's UDP port and the session TCP port) and what it granted. It asks
its shell for one thing at a time through :meth:`next_event` (:class:`Discover`,
:class:`AddMapping`, :class:`DeleteMapping`) and is told the outcome by a call
(:meth:`gateway_found`, :meth:`gateway_missing`, :meth:`added`, :meth:`refused`,
:meth:`removed`). Time comes in through :meth:`handle_timer` as ``btchat.sansio`` says:
a mapping is renewed at half its lease (UPnP-IGD leases are in whole seconds and a
gateway that reboots forgets them, so a permanent one is re-asserted too), a network
without a gateway is searched again now and then (a laptop moves), and a gateway that
stops answering is searched again with a back-off. :meth:`close` asks to delete what
was mapped (a clean exit leaves no hole in the router); :meth:`gateway_restarted` asks
for every mapping again when a PCP gateway says it lost them.

The external port: the internal one first (so UDP and TCP on one port map to one
external port, which is what a peer can guess), then, after a conflict (UPnP error
718: someone else holds it), the port the other protocol got, then random ones, at most
:data:`MAX_ATTEMPTS` per protocol. The shell (``net/upnp.py``) does the library calls
(UPnP-IGD) or speaks PCP or NAT-PMP (``net/pcp.py``, ``net/natpmp.py``), whichever the
gateway answers.
"""

from __future__ import annotations

import random
from collections import deque
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

__all__ = [
    "DEFAULT_LEASE",
    "MAX_ATTEMPTS",
    "AddMapping",
    "Changed",
    "DeleteMapping",
    "Discover",
    "Granted",
    "Phase",
    "PortMapState",
    "PortMapper",
    "PortMapperEvent",
]

#: Lease we ask for, seconds. UPnP-IGD 2.0 (WANIPConnection:2, AddPortMapping) caps it
#: at 604800; an hour keeps a crashed node's mapping from outliving it for long.
DEFAULT_LEASE = 3600
#: A mapping is renewed when this fraction of its lease has passed.
RENEW_AT = 0.5
#: A permanent mapping (lease 0, IGD 1.0 gateways) is re-asserted this often: a gateway
#: that reboots forgets it.
PERMANENT_RECHECK = 1800.0
#: How long one discovery waits for gateways to answer (SSDP MX, UPnP Device
#: Architecture 1.1 section 1.3.2: 1 to 5 s).
DISCOVERY_TIMEOUT = 3.0
#: With no gateway found, look again this often (the network may change under us).
REDISCOVER = 600.0
#: After a gateway stopped answering: first retry, doubled up to the cap.
RETRY_FIRST, RETRY_MAX = 5.0, 600.0
#: External ports tried per protocol before giving that protocol up.
MAX_ATTEMPTS = 4
#: UPnP-IGD error codes (WANIPConnection:2 section 2.4.16) that change what we ask next.
CONFLICT = 718  # ConflictInMappingEntry: another client holds that external port
ONLY_PERMANENT = 725  # OnlyPermanentLeasesSupported: ask again with lease 0
SAME_PORTS = 724  # SamePortValuesRequired: external port must equal the internal one
#: Ephemeral range for random external ports (RFC 6335 section 6).
RANDOM_PORTS = (49152, 65535)


class Phase(StrEnum):
    """Where the mapper is, as ``status`` shows it."""

    IDLE = "idle"  # not started
    DISCOVERING = "discovering"
    NO_GATEWAY = "no-gateway"  # no gateway answered: nothing to map, nothing broken
    MAPPING = "mapping"
    MAPPED = "mapped"  # at least one protocol mapped
    FAILED = "failed"  # a gateway answered but refused every mapping
    CLOSED = "closed"


# ----------------------------------------------------------------- what the shell does


@dataclass(frozen=True)
class Discover:
    """Search the LAN for a gateway (UPnP-IGD, else PCP, else NAT-PMP); answer with
    ``gateway_found`` or ``gateway_missing`` (``timeout`` bounds the UPnP search)."""

    timeout: float


@dataclass(frozen=True)
class AddMapping:
    """Map ``external_port`` on the gateway to our ``internal_port`` (protocol UDP/TCP)."""

    protocol: str
    external_port: int
    internal_port: int
    lease: int  # seconds; 0 = permanent


@dataclass(frozen=True)
class DeleteMapping:
    protocol: str
    external_port: int
    internal_port: int = 0  # NAT-PMP deletes by internal port


@dataclass(frozen=True)
class Granted:
    """One mapping the gateway holds for us."""

    external_port: int
    internal_port: int
    lease: int  # seconds; 0 = permanent
    expires: float | None  # on the caller's clock; None for permanent


@dataclass(frozen=True)
class PortMapState:
    """A snapshot for status, the API and whoever announces our address."""

    phase: Phase
    gateway: str | None  # UPnP: its description URL; pcp:// or natpmp:// + its address
    external_ip: str | None
    mappings: dict[str, Granted] = field(default_factory=dict)  # "UDP"/"TCP" -> granted
    error: str | None = None

    def external(self, protocol: str) -> tuple[str, int] | None:
        """The external (ip, port) a peer on the internet can reach ``protocol`` on."""
        granted = self.mappings.get(protocol)
        if granted is None or not self.external_ip:
            return None
        return self.external_ip, granted.external_port

    def to_dict(self, now: float) -> dict[str, Any]:
        """JSON-able form; ``expires_in`` in seconds from ``now`` (None: permanent)."""
        return {
            "state": str(self.phase),
            "gateway": self.gateway,
            "external_ip": self.external_ip,
            "mappings": {
                proto.lower(): {
                    "external_port": g.external_port,
                    "internal_port": g.internal_port,
                    "lease": g.lease,
                    "expires_in": None if g.expires is None else max(0.0, g.expires - now),
                }
                for proto, g in sorted(self.mappings.items())
            },
            "error": self.error,
        }


@dataclass(frozen=True)
class Changed:
    """The state changed (a mapping appeared, was renewed on another port, went away)."""

    state: PortMapState


PortMapperEvent = Discover | AddMapping | DeleteMapping | Changed


@dataclass
class _Want:
    """One protocol's mapping: what we ask, what we were granted."""

    protocol: str
    internal_port: int
    lease: int
    tried: list[int] = field(default_factory=list)
    same_only: bool = False  # the gateway wants external == internal (error 724)
    granted: Granted | None = None
    renew_at: float | None = None
    gave_up: str | None = None


class PortMapper:
    """The port-mapping decisions; see the module docstring."""

    def __init__(
        self,
        ports: dict[str, int],
        *,
        lease: int = DEFAULT_LEASE,
        discovery_timeout: float = DISCOVERY_TIMEOUT,
        rng: random.Random | None = None,
    ) -> None:
        for proto, port in ports.items():
            if proto not in ("UDP", "TCP") or not 0 < port < 65536:
                raise ValueError(f"cannot map {proto} port {port}")
        if lease < 0:
            raise ValueError("lease must be >= 0")
        self.discovery_timeout = discovery_timeout
        self._rng = rng or random.Random()
        self._wants = {p: _Want(p, port, lease) for p, port in ports.items()}
        self._events: deque[PortMapperEvent] = deque()
        self._busy = False  # one request to the shell at a time
        self._timer: float | None = None
        self._retry = RETRY_FIRST
        self._lost = False  # a gateway answered before and is gone: retry with back-off
        self.phase = Phase.IDLE
        self.gateway: str | None = None
        self.external_ip: str | None = None
        self.error: str | None = None
        self._last: PortMapState | None = None
        self._closing: list[DeleteMapping] = []
        self._adding: AddMapping | None = None  # the AddMapping the shell is running

    # ---------------------------------------------------------- driving surface

    def next_event(self) -> PortMapperEvent | None:
        return self._events.popleft() if self._events else None

    def get_timer(self) -> float | None:
        if self._busy or self.phase is Phase.CLOSED:
            return None
        renewals = [w.renew_at for w in self._wants.values() if w.renew_at is not None]
        return min([t for t in (self._timer, *renewals) if t is not None], default=None)

    def handle_timer(self, now: float) -> None:
        if self._busy or self.phase is Phase.CLOSED:
            return
        if self._timer is not None and now >= self._timer:
            self._timer = None
            self._discover()
            return
        for want in self._wants.values():
            if want.renew_at is not None and now >= want.renew_at:
                want.renew_at = None
                self._ask(want, now)  # same external port: the gateway extends the lease
                return

    def state(self) -> PortMapState:
        return PortMapState(
            self.phase,
            self.gateway,
            self.external_ip,
            {p: w.granted for p, w in self._wants.items() if w.granted is not None},
            self.error,
        )

    # ----------------------------------------------------------------- calls

    def start(self, now: float) -> None:
        """Begin: search for a gateway."""
        if self.phase is Phase.IDLE:
            self._discover()

    def gateway_found(self, gateway: str, external_ip: str | None, now: float) -> None:
        """Discovery found a gateway (its description URL) and asked its external IP."""
        self._busy = False
        if self.phase is Phase.CLOSED:
            return
        self.gateway, self.external_ip, self.error = gateway, external_ip or None, None
        self._retry, self._lost = RETRY_FIRST, False
        self.phase = Phase.MAPPING
        for want in self._wants.values():
            want.tried.clear()
            want.gave_up = None
        self._next_mapping(now)

    def gateway_missing(self, why: str, now: float) -> None:
        """Discovery found no gateway, or the gateway stopped answering (``why`` says)."""
        self._busy = False
        self._adding = None
        if self.phase is Phase.CLOSED:
            return
        self._lost = self._lost or self.gateway is not None
        for want in self._wants.values():
            want.granted, want.renew_at = None, None
        self.gateway, self.error = None, why
        self.phase = Phase.NO_GATEWAY
        if self._lost:  # a gateway was there: look again soon, backing off
            self._timer = now + self._retry
            self._retry = min(self._retry * 2, RETRY_MAX)
        else:
            self._timer = now + REDISCOVER
        self._changed()

    def added(self, protocol: str, external_port: int, lease: int, now: float,
              external_ip: str | None = None) -> None:  # fmt: skip
        """The gateway accepted the mapping (``lease`` as granted; 0 = permanent).
        ``external_ip``: the address it names in the answer (PCP's only way to say it)."""
        self._busy = False
        self._adding = None
        want = self._wants.get(protocol)
        if want is None or self.phase is Phase.CLOSED:
            return
        if external_ip:
            self.external_ip = external_ip
        expires = None if lease == 0 else now + lease
        want.granted = Granted(external_port, want.internal_port, lease, expires)
        want.renew_at = now + (PERMANENT_RECHECK if lease == 0 else lease * RENEW_AT)
        self._next_mapping(now)

    def refused(self, protocol: str, external_port: int, code: int | None, text: str,
                now: float) -> None:  # fmt: skip
        """The gateway answered the AddMapping with an error (``code`` the UPnP error)."""
        self._busy = False
        self._adding = None
        want = self._wants.get(protocol)
        if want is None or self.phase is Phase.CLOSED:
            return
        renewal = want.granted is not None and want.granted.external_port == external_port
        if renewal:
            want.granted, want.renew_at = None, None  # refused to extend: map afresh
        if code == ONLY_PERMANENT and want.lease != 0:
            want.lease = 0  # the same port again, without a lease
            if external_port in want.tried:
                want.tried.remove(external_port)
        elif code == SAME_PORTS and not want.same_only:
            want.same_only = True
        elif not (code == CONFLICT and len(want.tried) < MAX_ATTEMPTS) and not renewal:
            want.gave_up = f"{protocol} port {external_port}: {text}"
        self._next_mapping(now)

    def gateway_restarted(self, now: float, delay: float = 0.0) -> None:
        """The gateway lost its mappings (a reboot: PCP's epoch or ANNOUNCE says so):
        ask for each again after ``delay`` seconds (RFC 6887 section 14.1.3 wants a
        random one, so a LAN's clients do not all ask at once)."""
        if self.phase is Phase.CLOSED or self.gateway is None:
            return
        for want in self._wants.values():
            if want.granted is not None:
                want.renew_at = now + delay

    def removed(self, protocol: str) -> None:
        """A DeleteMapping finished (or failed: nothing more to do either way)."""
        self._busy = False
        self._next_close()

    def close(self, now: float) -> None:
        """Clean exit: delete what the gateway holds for us (and what we were asking)."""
        if self.phase is Phase.CLOSED:
            return
        held = {p: w.granted.external_port for p, w in self._wants.items() if w.granted}
        if self._adding is not None:  # may have been granted as we stopped listening
            held.setdefault(self._adding.protocol, self._adding.external_port)
        if self.gateway is not None:
            self._closing = [
                DeleteMapping(p, port, self._wants[p].internal_port) for p, port in held.items()
            ]
        self._adding = None
        for want in self._wants.values():
            want.granted, want.renew_at = None, None
        self.phase = Phase.CLOSED
        self._timer = None
        self._busy = False
        self._changed()
        self._next_close()

    # -------------------------------------------------------------- internals

    def _discover(self) -> None:
        self.phase = Phase.DISCOVERING
        self._busy = True
        self._events.append(Discover(self.discovery_timeout))

    def _next_mapping(self, now: float) -> None:
        """Ask for the next protocol not yet mapped; settle the phase when all are done."""
        for want in self._wants.values():
            if want.granted is None and want.gave_up is None:
                self._ask(want, now)
                return
        mapped = any(w.granted is not None for w in self._wants.values())
        self.phase = Phase.MAPPED if mapped else Phase.FAILED
        failures = [w.gave_up for w in self._wants.values() if w.gave_up]
        self.error = "; ".join(failures) or None
        if not mapped:
            self._timer = now + REDISCOVER  # perhaps the user frees a port meanwhile
        self._changed()

    def _ask(self, want: _Want, now: float) -> None:
        if want.granted is not None:
            port: int | None = want.granted.external_port  # renewal: keep the known port
        else:
            port = self._candidate(want)
            if port is None:
                want.gave_up = f"{want.protocol}: the gateway maps only to the same port, taken"
                self._next_mapping(now)
                return
            want.tried.append(port)
        self._busy = True
        self._adding = AddMapping(want.protocol, port, want.internal_port, want.lease)
        self._events.append(self._adding)

    def _candidate(self, want: _Want) -> int | None:
        if want.same_only:
            return None if want.internal_port in want.tried else want.internal_port
        others = [
            w.granted.external_port
            for w in self._wants.values()
            if w is not want and w.granted is not None
        ]
        for port in (want.internal_port, *others):
            if port not in want.tried:
                return port
        while True:
            port = self._rng.randint(*RANDOM_PORTS)
            if port not in want.tried:
                return port

    def _changed(self) -> None:
        state = self.state()
        if state != self._last:
            self._last = state
            self._events.append(Changed(state))

    def _next_close(self) -> None:
        if self._closing and not self._busy:
            self._busy = True
            self._events.append(self._closing.pop(0))
