"""Knowing our own reachability from what DHT nodes tell us and who reaches us (sans-I/O).

How this works. Every KRPC response may carry BEP 42's ``ip`` key: our address *and port*
as the responder saw them. One report per responder endpoint is kept (bounded; the oldest
is forgotten first), and three facts follow, in RFC 4787's terms:

- **External address**: the address a strict majority of the remembered responders
  report (the same vote BEP 42 uses to pick a compliant node ID, which reads it from here).
- **Mapping** (RFC 4787 section 4.1): an external address that is one of our own means no
  NAT; otherwise, if most responders saw one port, the NAT keeps one mapping for every
  destination (endpoint-independent); if they saw different ports, it makes a mapping per
  destination (endpoint-dependent, a "symmetric" NAT).
- **Filtering** (section 5) shows in the queries that reach us. The node tells us whom it
  sends queries to; we remember those endpoints (bounded). A query from an address we never
  contacted came through an endpoint-independent filter ("open"); one from an address we
  contacted but a port we never sent to came through an address-dependent filter; queries
  only ever from endpoints we contacted mean address-and-port-dependent filtering.

Nothing here changes the wire: the DHT node feeds it and the shell asks for a
:class:`ReachabilitySummary`. What a remote controls (who reports, who queries us) is
held in stores with a named bound each.
"""

from __future__ import annotations

from collections import Counter, OrderedDict
from collections.abc import Collection
from dataclasses import asdict, dataclass
from enum import StrEnum
from typing import Any

from btchat.dht.ids import Addr

__all__ = [
    "MAX_CONTACTED",
    "MAX_EVIDENCE_SOURCES",
    "MAX_REPORTS",
    "MIN_REPORTS",
    "MIN_SOLICITED",
    "Filtering",
    "Mapping",
    "Reachability",
    "ReachabilitySummary",
]

#: Responders whose ``ip`` report we remember (BEP 42 voters); the oldest is forgotten.
MAX_REPORTS = 50
#: Distinct reports needed before we name an external address or a mapping behaviour.
MIN_REPORTS = 3
#: Endpoints we sent queries to and still remember; a NAT forgets its own filter state
#: within minutes (RFC 4787 REQ-5: UDP mappings last at least 2 minutes), so a few
#: thousand recent ones cover what a router can still let through.
MAX_CONTACTED = 4096
#: Distinct sources remembered per kind of inbound query (stranger, known host, contacted).
MAX_EVIDENCE_SOURCES = 256
#: Queries from contacted endpoints (and none from anyone else) before we call the
#: filtering address-and-port-dependent rather than unknown.
MIN_SOLICITED = 2


class Mapping(StrEnum):
    """RFC 4787 section 4.1 mapping behaviour, or no NAT at all."""

    NONE = "none"
    INDEPENDENT = "endpoint-independent"
    DEPENDENT = "endpoint-dependent"
    UNKNOWN = "unknown"


class Filtering(StrEnum):
    """RFC 4787 section 5 filtering: who may send to us unasked."""

    OPEN = "open"  # endpoint-independent filtering
    ADDRESS = "address-restricted"  # address-dependent filtering
    FILTERED = "filtered"  # address-and-port-dependent filtering
    UNKNOWN = "unknown"


#: The common names (RFC 3489's cone vocabulary) for (mapping, filtering).
_LABELS: dict[tuple[Mapping, Filtering], str] = {
    (Mapping.NONE, Filtering.OPEN): "public",
    (Mapping.NONE, Filtering.ADDRESS): "firewalled",
    (Mapping.NONE, Filtering.FILTERED): "firewalled",
    (Mapping.INDEPENDENT, Filtering.OPEN): "full cone",
    (Mapping.INDEPENDENT, Filtering.ADDRESS): "restricted cone",
    (Mapping.INDEPENDENT, Filtering.FILTERED): "port-restricted",
    **{(Mapping.DEPENDENT, f): "symmetric" for f in Filtering},
}


@dataclass(frozen=True, slots=True)
class ReachabilitySummary:
    """What kind of network we are on, with the evidence counts behind it.

    ``external_port`` is None under an endpoint-dependent mapping: there is no one port.
    """

    external_ip: str | None
    external_port: int | None
    mapping: Mapping
    filtering: Filtering
    label: str
    reports: int  # responders whose ``ip`` report we remember
    agreeing: int  # of those, how many saw the majority address
    distinct_ports: int  # distinct ports among the reports of the majority address
    from_strangers: int  # sources of queries at addresses we never contacted
    from_known_hosts: int  # sources at a contacted address but a port never contacted
    from_contacted: int  # sources we had sent queries to

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form for the API and ``status``."""
        return {k: str(v) if isinstance(v, StrEnum) else v for k, v in asdict(self).items()}


class _BoundedSet:
    """Insertion-ordered set that forgets its oldest member beyond ``limit``."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._items: dict[Addr, None] = {}

    def add(self, item: Addr) -> None:
        self._items.pop(item, None)
        if len(self._items) >= self.limit:
            del self._items[next(iter(self._items))]
        self._items[item] = None

    def __len__(self) -> int:
        return len(self._items)


class Reachability:
    """Evidence about our own address, mapping and filtering; see the module docstring."""

    def __init__(
        self,
        *,
        max_reports: int = MAX_REPORTS,
        max_contacted: int = MAX_CONTACTED,
        max_sources: int = MAX_EVIDENCE_SOURCES,
    ) -> None:
        self.max_reports = max_reports
        self.max_contacted = max_contacted
        self._reports: dict[Addr, Addr] = {}  # responder -> our address as it saw it
        self._contacted: OrderedDict[Addr, None] = OrderedDict()
        self._contacted_ips: Counter[str] = Counter()
        self._strangers = _BoundedSet(max_sources)
        self._known_hosts = _BoundedSet(max_sources)
        self._solicited = _BoundedSet(max_sources)

    # ------------------------------------------------------------------ evidence

    def sent_to(self, addr: Addr) -> None:
        """We sent a query to ``addr``: its answers and queries are solicited from now on."""
        if addr in self._contacted:
            self._contacted.move_to_end(addr)
            return
        if len(self._contacted) >= self.max_contacted:
            old, _ = self._contacted.popitem(last=False)
            self._contacted_ips[old[0]] -= 1
            if self._contacted_ips[old[0]] <= 0:
                del self._contacted_ips[old[0]]
        self._contacted[addr] = None
        self._contacted_ips[addr[0]] += 1

    def report(self, responder: Addr, seen_as: Addr) -> None:
        """``responder`` answered us and said it saw us at ``seen_as`` (BEP 42 ``ip``)."""
        if responder in self._reports:
            del self._reports[responder]  # re-inserted last: the newest report counts
        elif len(self._reports) >= self.max_reports:
            del self._reports[next(iter(self._reports))]
        self._reports[responder] = seen_as

    def query_from(self, addr: Addr) -> None:
        """A query from ``addr`` reached us: note which kind of filter let it through."""
        if addr in self._contacted:
            self._solicited.add(addr)
        elif addr[0] in self._contacted_ips:
            self._known_hosts.add(addr)
        else:
            self._strangers.add(addr)

    # ------------------------------------------------------------------- verdicts

    def external_ip(self, min_reports: int = MIN_REPORTS) -> str | None:
        """The address a strict majority of at least ``min_reports`` responders saw."""
        if len(self._reports) < min_reports:
            return None
        best, votes = Counter(ip for ip, _ in self._reports.values()).most_common(1)[0]
        return best if votes * 2 > len(self._reports) else None

    def summary(self, local_ips: Collection[str] = ()) -> ReachabilitySummary:
        """The current verdict. ``local_ips`` are our own addresses (the shell knows them)."""
        ip = self.external_ip()
        ports = Counter(p for a, p in self._reports.values() if a == ip) if ip else Counter()
        agreeing = sum(ports.values())
        port: int | None = None
        if ip is None:
            mapping = Mapping.UNKNOWN
        else:
            port, top = ports.most_common(1)[0]
            if ip in local_ips:
                mapping = Mapping.NONE
            elif agreeing < MIN_REPORTS:
                mapping = Mapping.UNKNOWN
            elif top * 2 > agreeing:
                mapping = Mapping.INDEPENDENT
            else:
                mapping, port = Mapping.DEPENDENT, None
        if self._strangers:
            filtering = Filtering.OPEN
        elif self._known_hosts:
            filtering = Filtering.ADDRESS
        elif len(self._solicited) >= MIN_SOLICITED:
            filtering = Filtering.FILTERED
        else:
            filtering = Filtering.UNKNOWN
        return ReachabilitySummary(
            external_ip=ip,
            external_port=port,
            mapping=mapping,
            filtering=filtering,
            label=_LABELS.get((mapping, filtering), "unknown"),
            reports=len(self._reports),
            agreeing=agreeing,
            distinct_ports=len(ports),
            from_strangers=len(self._strangers),
            from_known_hosts=len(self._known_hosts),
            from_contacted=len(self._solicited),
        )
