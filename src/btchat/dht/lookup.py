"""Iterative Kademlia lookup (BEP 5 "get_peers", Maymounkov & Mazieres section 2.3).

How this works: the lookup keeps candidates sorted by XOR distance to the target. At most
``alpha`` queries are in flight; each answer adds the nodes it names. The lookup has
converged when each of the ``k`` closest candidates that did not fail has answered. A
query that passes its *short* timeout stops counting against ``alpha`` (so one slow node
does not stall the walk, as libtorrent does) and stops blocking convergence, but its
answer is still used if it arrives before the hard timeout.

The object is sans-I/O: the node asks it which nodes to query, then reports answers and
timeouts; it never sends or reads a clock itself.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any

from btchat.dht.ids import Addr, NodeInfo

__all__ = ["MAX_CANDIDATES", "MAX_QUERIES", "Candidate", "Lookup", "State"]

#: Candidates kept per lookup; farther ones are forgotten. Bounds memory against nodes
#: that answer with floods of made-up contacts.
MAX_CANDIDATES = 128
#: Queries one lookup may send before it gives up converging (a liar-proof ceiling).
MAX_QUERIES = 256


class State(enum.Enum):
    NEW = 0
    IN_FLIGHT = 1
    SLOW = 2  # past the short timeout, still waiting
    RESPONDED = 3
    FAILED = 4


@dataclass(slots=True)
class Candidate:
    node_id: bytes | None  # None for a bootstrap address whose ID we do not know yet
    addr: Addr
    distance: int
    state: State = State.NEW
    token: bytes | None = None
    extra: dict[bytes, Any] = field(default_factory=dict)


class Lookup:
    def __init__(
        self,
        target: bytes,
        seeds: list[NodeInfo],
        *,
        k: int = 8,
        alpha: int = 3,
        bootstrap: list[Addr] | None = None,
        own_id: bytes | None = None,
    ) -> None:
        self.target = target
        self.k = k
        self.alpha = alpha
        self._target_int = int.from_bytes(target, "big")
        self._own_id = own_id
        self._by_addr: dict[Addr, Candidate] = {}
        self._sorted: list[Candidate] = []
        self.queries_sent = 0
        self.responses = 0
        self.timeouts = 0
        # Bootstrap addresses have no known ID: they are queried first and are never part
        # of the convergence set until they answer and reveal their ID.
        for addr in bootstrap or ():
            if addr not in self._by_addr:
                cand = Candidate(None, addr, 1 << 161)
                self._by_addr[addr] = cand
        self.add_nodes(seeds)

    def _distance(self, node_id: bytes) -> int:
        return int.from_bytes(node_id, "big") ^ self._target_int

    def add_nodes(self, nodes: list[NodeInfo]) -> None:
        """Learn nodes from an answer; farther ones beyond MAX_CANDIDATES are dropped."""
        changed = False
        for node in nodes:
            if node.node_id == self._own_id or node.addr in self._by_addr:
                continue
            cand = Candidate(node.node_id, node.addr, self._distance(node.node_id))
            self._by_addr[node.addr] = cand
            self._sorted.append(cand)
            changed = True
        if changed:
            self._sorted.sort(key=lambda c: c.distance)
            if len(self._sorted) > MAX_CANDIDATES:
                for cand in self._sorted[MAX_CANDIDATES:]:
                    if cand.state in (State.NEW, State.FAILED):
                        del self._by_addr[cand.addr]
                keep = self._sorted[:MAX_CANDIDATES]
                keep += [c for c in self._sorted[MAX_CANDIDATES:] if c.addr in self._by_addr]
                self._sorted = keep

    def _in_flight(self) -> int:
        return sum(1 for c in self._by_addr.values() if c.state is State.IN_FLIGHT)

    def next_queries(self) -> list[Candidate]:
        """Candidates to query now; each returned one is marked in flight."""
        out: list[Candidate] = []
        # Unknown-ID bootstrap addresses go out all at once.
        for cand in self._by_addr.values():
            if cand.node_id is None and cand.state is State.NEW:
                cand.state = State.IN_FLIGHT
                out.append(cand)
        budget = self.alpha - self._in_flight()
        if budget <= 0 or self.queries_sent + len(out) >= MAX_QUERIES:
            self.queries_sent += len(out)
            return out
        seen_live = 0
        for cand in self._sorted:
            if seen_live >= self.k or budget <= 0:
                break
            if cand.state in (State.FAILED, State.SLOW):
                continue
            seen_live += 1
            if cand.state is State.NEW:
                cand.state = State.IN_FLIGHT
                out.append(cand)
                budget -= 1
        self.queries_sent += len(out)
        return out

    def _get(self, addr: Addr) -> Candidate | None:
        return self._by_addr.get(addr)

    def on_response(
        self,
        addr: Addr,
        node_id: bytes,
        nodes: list[NodeInfo],
        *,
        token: bytes | None = None,
        extra: dict[bytes, Any] | None = None,
    ) -> None:
        cand = self._get(addr)
        if cand is None or cand.state in (State.RESPONDED, State.FAILED):
            return
        if cand.node_id is None:
            if node_id == self._own_id:
                cand.state = State.FAILED
                return
            cand.node_id = node_id
            cand.distance = self._distance(node_id)
            self._sorted.append(cand)
            self._sorted.sort(key=lambda c: c.distance)
        elif cand.node_id != node_id:
            # It answered with a different ID than it was introduced with: not the node we
            # asked for. Use its contacts, but keep it out of the convergence set.
            cand.state = State.FAILED
            self.add_nodes(nodes)
            return
        cand.state = State.RESPONDED
        cand.token = token
        if extra:
            cand.extra = extra
        self.responses += 1
        self.add_nodes(nodes)

    def on_slow(self, addr: Addr) -> None:
        cand = self._get(addr)
        if cand is not None and cand.state is State.IN_FLIGHT:
            cand.state = State.SLOW

    def on_timeout(self, addr: Addr) -> None:
        cand = self._get(addr)
        if cand is not None and cand.state in (State.IN_FLIGHT, State.SLOW):
            cand.state = State.FAILED
            self.timeouts += 1

    @property
    def done(self) -> bool:
        """Converged: the k closest live candidates all answered, or nothing is left."""
        if any(c.node_id is None and c.state is State.IN_FLIGHT for c in self._by_addr.values()):
            return False
        live = 0
        for cand in self._sorted:
            if cand.state in (State.FAILED, State.SLOW):
                continue
            if cand.state is not State.RESPONDED:
                if self.queries_sent >= MAX_QUERIES and cand.state is State.NEW:
                    continue
                return False
            live += 1
            if live >= self.k:
                return True
        return True

    def closest_responded(self, count: int | None = None) -> list[Candidate]:
        """The closest nodes that answered, with the tokens they gave (for announce/put)."""
        out = [c for c in self._sorted if c.state is State.RESPONDED]
        return out[: count or self.k]

    def responded(self) -> list[Candidate]:
        return [c for c in self._sorted if c.state is State.RESPONDED]
