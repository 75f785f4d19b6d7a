"""The BEP 5 routing table: k-buckets over the 160-bit ID space, sans-I/O.

The table never reads a clock, never sends a packet and never draws from the
global random generator.  Every time-dependent call takes ``now`` (seconds on
any monotonic scale the caller likes), the nodes that should be pinged are
*returned* to the caller, and randomness comes from an injected
``random.Random``.  That keeps it deterministic under test and cheap to call
from the hot path of answering queries.

Layout.  BEP 5 describes buckets as ID ranges ``[min, max)`` where only the
bucket containing our own ID ever splits.  Splitting that way always produces
one bucket that contains our ID and one that does not, so after ``n`` splits
the buckets are exactly "IDs whose longest common prefix with our ID is
``i`` bits" for ``i < n`` plus one last bucket holding "common prefix ``>= n``
bits".  We store the buckets in that order, which turns the bucket lookup into
``min(common_prefix_len(id, own_id), len(buckets) - 1)`` -- one XOR and one
``int.bit_length()`` -- instead of a search over ranges.
"""

from __future__ import annotations

import ipaddress
import random
from collections.abc import Iterator
from typing import Any, Literal

from btchat.dht import bep42
from btchat.dht.ids import ID_BYTES, Addr, NodeInfo

__all__ = [
    "GOOD_WINDOW",
    "ID_BITS",
    "MAX_BUCKETS",
    "MAX_FAILS",
    "PING_BACKOFF",
    "REFRESH_INTERVAL",
    "K",
    "RoutingTable",
]

#: BEP 5: "Each bucket can only hold K nodes, currently eight".
K = 8
#: BEP 5: "A good node is a node has responded to one of our queries within the last 15 minutes".
GOOD_WINDOW = 15 * 60
#: BEP 5: "Buckets that have not been changed in 15 minutes should be refreshed".
REFRESH_INTERVAL = 15 * 60
#: BEP 5: "Nodes become bad when they fail to respond to multiple queries in a row"; the spec
#: also suggests to "try once more before discarding", i.e. two consecutive timeouts.
MAX_FAILS = 2
#: Seconds during which a node handed out for a ping-before-evict check is not handed out
#: again.  Without it every newcomer to a full bucket (a remote can send us queries at will)
#: would make us ping the same questionable nodes again while the first ping is in flight.
#: ``failed()`` and a response both clear it, so it only guards pings that are outstanding.
PING_BACKOFF = 30.0

#: BEP 5: the table covers the ID space 0 .. 2**160.
ID_BITS = ID_BYTES * 8
#: One bucket per possible common-prefix length with our own ID.
MAX_BUCKETS = ID_BITS

Status = Literal["good", "questionable", "bad"]


class _Entry:
    """A contact plus the liveness facts BEP 5 bases good/questionable/bad on.

    Mutable and slotted because entries are updated on every message we get and
    the table walks them on every ``closest()`` call.
    """

    __slots__ = ("cached_at", "fails", "id_int", "info", "last_response", "last_seen", "ping_asked")

    def __init__(self, info: NodeInfo, now: float) -> None:
        self.info = info
        self.id_int = int.from_bytes(info.node_id, "big")
        #: Last time we heard anything from it (a response or a query).
        self.last_seen = now
        #: Last time it answered one of *our* queries; None while it never has.
        self.last_response: float | None = None
        #: Consecutive queries of ours that timed out.
        self.fails = 0
        #: When we last asked the caller to ping it (see PING_BACKOFF).
        self.ping_asked: float | None = None
        #: When it last went into a replacement cache.
        self.cached_at: float | None = None

    def copy(self) -> _Entry:
        e = _Entry(self.info, self.last_seen)
        e.last_response = self.last_response
        e.fails = self.fails
        return e

    def is_bad(self) -> bool:
        # BEP 5: "Nodes become bad when they fail to respond to multiple queries in a row."
        return self.fails >= MAX_FAILS

    def is_good(self, now: float) -> bool:
        # BEP 5: good = responded to one of our queries within 15 minutes, or has ever
        # responded and sent us a query within 15 minutes.  ``last_seen`` covers both
        # cases once ``last_response`` is set.  A pending timeout makes it unconfirmed.
        return (
            self.last_response is not None
            and self.fails == 0
            and now - self.last_seen < GOOD_WINDOW
        )


class _Bucket:
    """One k-bucket: live entries, a replacement cache and BEP 5's "last changed"."""

    __slots__ = ("entries", "last_changed", "replacements")

    def __init__(self, now: float) -> None:
        self.entries: list[_Entry] = []
        self.replacements: list[_Entry] = []
        self.last_changed = now


def _valid_id(node_id: object) -> bool:
    return isinstance(node_id, bytes) and len(node_id) == ID_BYTES


class RoutingTable:
    """BEP 5 routing table keyed by node ID, with per-bucket replacement caches.

    Nodes that answered our queries become good; nodes that only queried us are
    inserted (as libtorrent does) but stay questionable until they answer one of
    ours, so maintenance pings confirm them.  Bad nodes stay in their bucket only
    until something can take their slot, and are never returned by ``closest()``.
    """

    __slots__ = (
        "_addrs",
        "_buckets",
        "_ips",
        "_k",
        "_nodes",
        "_own_id",
        "_own_int",
        "_repl",
        "_repl_addrs",
        "_repl_size",
        "_rng",
    )

    def __init__(
        self,
        own_id: bytes,
        rng: random.Random,
        *,
        k: int = K,
        replacement_size: int = K,
        now: float = 0.0,
    ) -> None:
        if not _valid_id(own_id):
            raise ValueError(f"own_id must be {ID_BYTES} bytes")
        if k < 1:
            raise ValueError("k must be >= 1")
        self._own_id = bytes(own_id)
        self._own_int = int.from_bytes(own_id, "big")
        self._rng = rng
        self._k = k
        self._repl_size = max(0, replacement_size)
        # BEP 5: "An empty table has one bucket with an ID space range of min=0, max=2^160."
        self._buckets: list[_Bucket] = [_Bucket(now)]
        self._nodes: dict[bytes, _Entry] = {}
        self._addrs: dict[Addr, bytes] = {}
        # One bucket entry per public IP (BEP 42 "only one node per IP" in a routing
        # table; libtorrent's restrict_routing_ips): a node behind a symmetric NAT, or
        # one that changed its ID, is not listed under every port or ID it used. Local
        # networks (bep42.is_exempt) may hold many nodes per IP. A public IPv6 "IP" is
        # its /64 (bep42.source_key), as in libtorrent.
        self._ips: dict[str, bytes] = {}
        self._repl: dict[bytes, _Entry] = {}
        self._repl_addrs: dict[Addr, bytes] = {}

    # ------------------------------------------------------------------ basics

    @property
    def own_id(self) -> bytes:
        """Our node ID; fixed for the table's life (see ``with_own_id``)."""
        return self._own_id

    @property
    def k(self) -> int:
        """Bucket capacity."""
        return self._k

    def __len__(self) -> int:
        return len(self._nodes)

    def __iter__(self) -> Iterator[NodeInfo]:
        for b in self._buckets:
            for e in b.entries:
                yield e.info

    def __contains__(self, node_id: object) -> bool:
        return node_id in self._nodes

    def get(self, node_id: bytes) -> NodeInfo | None:
        """The bucket entry for ``node_id`` (replacement caches are not looked at)."""
        e = self._nodes.get(node_id)
        return None if e is None else e.info

    def status(self, node_id: bytes, now: float) -> Status | None:
        """BEP 5 classification of a bucket entry, or None when it is not in a bucket."""
        e = self._nodes.get(node_id)
        if e is None:
            return None
        if e.is_bad():
            return "bad"
        return "good" if e.is_good(now) else "questionable"

    def good_count(self, now: float) -> int:
        """How many entries are good right now (a health figure for bootstrap decisions)."""
        return sum(1 for e in self._nodes.values() if e.is_good(now))

    def questionable(self, now: float) -> list[NodeInfo]:
        """Entries that are neither good nor bad, least recently seen first.

        The caller pings these during maintenance so they either become good
        again or accumulate failures and make room (BEP 5).  Nodes that recently
        queried us after having answered before are good per BEP 5, so they are
        not included even if their last *response* is older than GOOD_WINDOW.
        """
        out = [e for e in self._nodes.values() if not e.is_bad() and not e.is_good(now)]
        out.sort(key=lambda e: e.last_seen)
        return [e.info for e in out]

    def replacements(self) -> list[NodeInfo]:
        """All replacement-cache entries (mostly for diagnostics and tests)."""
        return [e.info for b in self._buckets for e in b.replacements]

    @property
    def bucket_count(self) -> int:
        """Number of buckets (1 .. MAX_BUCKETS)."""
        return len(self._buckets)

    def bucket_sizes(self) -> list[int]:
        """Entry count per bucket, bucket 0 (farthest from own_id) first."""
        return [len(b.entries) for b in self._buckets]

    def bucket_nodes(self, index: int) -> list[NodeInfo]:
        """The entries of bucket ``index`` (for diagnostics and tests)."""
        return [e.info for e in self._buckets[index].entries]

    def bucket_range(self, index: int) -> tuple[int, int]:
        """The ID range ``[low, high)`` of bucket ``index`` as integers.

        Bucket ``i`` below the last holds IDs sharing exactly ``i`` leading bits
        with own_id; the last bucket holds those sharing at least ``i`` bits, and
        so contains own_id itself (the one BEP 5 allows to split).
        """
        n = len(self._buckets)
        if not 0 <= index < n:
            raise IndexError(index)
        if index == n - 1:
            free = ID_BITS - index
            low = (self._own_int >> free) << free
        else:
            free = ID_BITS - index - 1
            low = ((self._own_int >> free) ^ 1) << free
        return low, low + (1 << free)

    def _index(self, id_int: int) -> int:
        # Bucket = common prefix length with own_id, capped at the last (own) bucket.
        cpl = ID_BITS - (id_int ^ self._own_int).bit_length()
        last = len(self._buckets) - 1
        return cpl if cpl < last else last

    # ---------------------------------------------------------------- updates

    def heard_from(self, node: NodeInfo, now: float, *, responded: bool) -> list[NodeInfo]:
        """Record a message from ``node`` and return the nodes the caller should ping.

        ``responded`` is True when the message answered one of our queries (only
        that proves the node can receive queries, BEP 5's test of "good") and
        False when the node sent us a query.  The returned list is non-empty only
        for BEP 5's ping-before-evict: the node's bucket is full, cannot split and
        holds no bad node, so the newcomer waits in the replacement cache while
        the bucket's questionable nodes are checked.
        """
        node_id = node.node_id
        # IDs are 160 bits (BEP 5); anything else cannot be placed in the ID space.
        if not _valid_id(node_id) or node_id == self._own_id:
            return []
        addr = node.addr
        e = self._nodes.get(node_id)
        if e is not None:
            if e.info.addr != addr:
                # Same ID, different endpoint.  A query's source can be forged and a
                # confirmed node's address is worth more than a claim, so only a
                # response (which proves the endpoint holds the ID) can move an entry
                # that is not currently good.
                if not responded or e.is_good(now):
                    return []
                vacated = self._drop_addr_conflict(addr, node_id)
                if vacated is not None:
                    self._promote(self._buckets[self._index(vacated)], now)
                vacated = self._drop_ip_conflict(bep42.source_key(addr[0]), node_id)
                if vacated is not None:
                    self._promote(self._buckets[self._index(vacated)], now)
                self._unindex(e)
                e.info = node
                self._index_entry(e)
            e.last_seen = now
            if responded:
                e.last_response = now
                e.fails = 0
                e.ping_asked = None
                # BEP 5: "When a node in a bucket is pinged and it responds ... the
                # bucket's last changed property should be updated."
                self._buckets[self._index(e.id_int)].last_changed = now
            return []

        e = self._repl.get(node_id)
        if (
            e is not None
            and not responded
            and e.info.addr == addr
            and e.cached_at is not None
            and now - e.cached_at < PING_BACKOFF
        ):
            # A waiting replacement that queries us again soon after it was placed: a new
            # attempt cannot succeed (a freed or bad slot takes from the cache by itself)
            # and its pings are still in back-off, so only note that it is alive. This
            # keeps the query hot path cheap when the table is full.
            e.last_seen = now
            return []
        e = self._repl.pop(node_id, None)
        if e is None:
            e = _Entry(node, now)
        else:
            # Known from the replacement cache: keep its history, re-try placing it.
            self._take_out_of_cache(e)
            if e.info.addr != addr:
                e.info = node
        # A different ID at a known endpoint means the remote restarted with a new ID:
        # the stale entry is dropped so the endpoint is not listed twice.
        vacated = self._drop_addr_conflict(addr, node_id)
        if vacated is None:
            holder = self._ips.get(bep42.source_key(addr[0]))
            if holder is not None and holder != node_id:
                # Another ID already stands for this public IP. Only an answer (which a
                # forged query source cannot give) replaces it, unless it went bad.
                if not responded and not self._nodes[holder].is_bad():
                    return []
                vacated = self._drop_ip_conflict(bep42.source_key(addr[0]), node_id)
        e.last_seen = now
        if responded:
            e.last_response = now
            e.fails = 0
        pings = self._insert(e, now)
        if vacated is not None:
            # Only now, so the newcomer gets first claim on the freed slot.
            b = self._buckets[self._index(vacated)]
            if len(b.entries) < self._k:
                self._promote(b, now)
        return pings

    def failed(self, node_id: bytes, now: float) -> None:
        """One of our queries to ``node_id`` timed out.

        BEP 5: after failing "multiple queries in a row" (MAX_FAILS) the node is
        bad; it is then replaced by the most recently seen node in its bucket's
        replacement cache, or kept (but never handed out) until a newcomer can take
        its slot.
        """
        e = self._nodes.get(node_id)
        if e is None:
            r = self._repl.get(node_id)
            if r is not None:
                r.fails += 1
                if r.is_bad():
                    del self._repl[node_id]
                    self._take_out_of_cache(r)
            return
        e.fails += 1
        e.ping_asked = None  # BEP 5 "try once more": it may be pinged again right away
        if not e.is_bad():
            return
        idx = self._index(e.id_int)
        b = self._buckets[idx]
        if b.replacements:
            self._unlink(e, b)
            self._promote(b, now)

    def remove(self, node_id: bytes) -> None:
        """Forget ``node_id`` (bucket or replacement cache); a replacement fills the gap."""
        e = self._nodes.get(node_id)
        if e is not None:
            b = self._buckets[self._index(e.id_int)]
            self._unlink(e, b)
            # No ``now`` here, so the promotion leaves the bucket's freshness as it was.
            self._promote(b, b.last_changed)
            return
        r = self._repl.pop(node_id, None)
        if r is not None:
            self._take_out_of_cache(r)

    def touch(self, target: bytes, now: float) -> None:
        """A lookup for ``target`` ran, which refreshes the bucket covering it (BEP 5)."""
        if len(target) != ID_BYTES:
            return
        self._buckets[self._index(int.from_bytes(target, "big"))].last_changed = now

    def refresh_targets(self, now: float, interval: float = REFRESH_INTERVAL) -> list[bytes]:
        """Random IDs to run find_node lookups on, one per stale bucket.

        BEP 5: "Buckets that have not been changed in 15 minutes should be
        refreshed ... by picking a random ID in the range of the bucket and
        performing a find_nodes search on it."  The buckets are marked changed at
        ``now`` so the next call does not hand out the same work again.
        """
        out: list[bytes] = []
        for i, b in enumerate(self._buckets):
            if now - b.last_changed >= interval:
                low, high = self.bucket_range(i)
                rnd = low + self._rng.getrandbits((high - low).bit_length() - 1)
                out.append(rnd.to_bytes(ID_BYTES, "big"))
                b.last_changed = now
        return out

    # ---------------------------------------------------------------- queries

    def closest(self, target: bytes, count: int = K) -> list[NodeInfo]:
        """The ``count`` non-bad entries closest to ``target`` by XOR distance (BEP 5).

        Called for every find_node/get_peers we answer, so it avoids sorting the
        whole table.  With ``p`` the bucket covering ``target``, the buckets fall
        into groups that are totally ordered by distance to the target: bucket
        ``p`` itself, then every bucket after ``p`` together (they agree with
        own_id on the bit where the target does not), then ``p-1``, ``p-2`` ... ``0``
        each strictly farther.  Whole groups are gathered until ``count`` is
        reached and only the gathered handful is sorted.
        """
        if len(target) != ID_BYTES:
            raise ValueError(f"target must be {ID_BYTES} bytes")
        if count <= 0:
            return []
        t = int.from_bytes(target, "big")
        buckets = self._buckets
        last = len(buckets) - 1
        cpl = ID_BITS - (t ^ self._own_int).bit_length()
        p = cpl if cpl < last else last
        # BEP 5 wants only good nodes handed out; bad ones are at least never returned.
        out = [e for e in buckets[p].entries if e.fails < MAX_FAILS]
        if p < last and len(out) < count:
            for j in range(p + 1, last + 1):
                out.extend([e for e in buckets[j].entries if e.fails < MAX_FAILS])
        i = p - 1
        while len(out) < count and i >= 0:
            out.extend([e for e in buckets[i].entries if e.fails < MAX_FAILS])
            i -= 1
        if len(out) > 1:
            out.sort(key=lambda e: e.id_int ^ t)
        return [e.info for e in out[:count]]

    # ------------------------------------------------------------ persistence

    def to_state(self) -> dict[str, Any]:
        """A JSON-serialisable snapshot so a restart needs no bootstrap (BEP 5:
        "The routing table should be saved between invocations").  Bad nodes are
        left out; liveness is not saved because it is stale after a restart."""
        nodes = [
            {"id": e.info.node_id.hex(), "addr": [e.info.addr[0], e.info.addr[1]]}
            for b in self._buckets
            for e in b.entries
            if not e.is_bad()
        ]
        return {"version": 1, "own_id": self._own_id.hex(), "nodes": nodes}

    @classmethod
    def from_state(
        cls,
        state: Any,
        rng: random.Random,
        now: float,
        *,
        k: int = K,
        replacement_size: int = K,
    ) -> RoutingTable:
        """Rebuild a table from ``to_state()`` output, never raising on bad input.

        Restored nodes are questionable: we have not heard from them in this run,
        so they must answer before they count as good.  Malformed node entries are
        skipped; if the own ID itself is unusable a fresh random one is drawn from
        ``rng`` (the caller may replace it later via ``with_own_id``).
        """
        own: bytes | None = None
        raw_nodes: object = None
        if isinstance(state, dict):
            own = _hex_id(state.get("own_id"))
            raw_nodes = state.get("nodes")
        if own is None:
            own = rng.getrandbits(ID_BITS).to_bytes(ID_BYTES, "big")
        table = cls(own, rng, k=k, replacement_size=replacement_size, now=now)
        if isinstance(raw_nodes, list):
            for item in raw_nodes:
                info = _parse_node(item)
                if info is not None:
                    table.heard_from(info, now, responded=False)
        return table

    def with_own_id(self, new_id: bytes, now: float) -> RoutingTable:
        """A table for ``new_id`` holding the nodes we know, with their liveness.

        BEP 42 may make us change our ID once we learn our external IP; the
        bucket layout depends on our ID, so every node is re-inserted.  Good nodes
        go in first so they win the slots; bad nodes are dropped.
        """
        table = RoutingTable(
            new_id, self._rng, k=self._k, replacement_size=self._repl_size, now=now
        )
        live = [e for e in self._nodes.values() if not e.is_bad()]
        live.sort(key=lambda e: (not e.is_good(now), -e.last_seen))
        cached = sorted(self._repl.values(), key=lambda e: e.last_seen)
        for e in [*live, *cached]:
            ip_taken = bep42.source_key(e.info.addr[0]) in table._ips
            if e.info.node_id != new_id and e.info.addr not in table._addrs and not ip_taken:
                table._insert(e.copy(), now)
        return table

    # -------------------------------------------------------------- internals

    def _insert(self, e: _Entry, now: float) -> list[NodeInfo]:
        """Place a new entry per BEP 5's rules; return nodes to ping, if any."""
        e.ping_asked = None
        split_from = -1
        while True:
            idx = self._index(e.id_int)
            b = self._buckets[idx]
            if len(b.entries) < self._k:
                self._link(e, b)
                # BEP 5: adding a node updates the bucket's "last changed".
                b.last_changed = now
                break
            # BEP 5: "If any nodes in the bucket are known to have become bad, then one
            # is replaced by the new node."
            bad = next((x for x in b.entries if x.fails >= MAX_FAILS), None)  # is_bad()
            if bad is not None:
                self._unlink(bad, b)
                self._link(e, b)
                b.last_changed = now
                break
            # BEP 5: a full bucket splits only if our own ID falls within its range,
            # i.e. the last bucket in this layout; at most one bucket per bit.
            if idx == len(self._buckets) - 1 and len(self._buckets) < MAX_BUCKETS:
                if split_from < 0:
                    split_from = idx
                self._split(now)
                continue
            # BEP 5 ping-before-evict: keep the newcomer as a replacement and ask for the
            # bucket's questionable nodes to be pinged, least recently seen first.  A
            # bucket full of good nodes yields no pings ("the new node is simply
            # discarded"; we still cache it in case one of them goes bad).
            e.cached_at = now
            self._cache(e, b)
            # Every stranger's query to a busy node ends here, so is_good() is inlined
            # (and is_bad() is not asked: no entry of this bucket is bad, see above).
            pings = [
                x
                for x in b.entries
                if (x.last_response is None or x.fails or now - x.last_seen >= GOOD_WINDOW)
                and (x.ping_asked is None or now - x.ping_asked >= PING_BACKOFF)
            ]
            if not pings:
                return []
            pings.sort(key=lambda x: x.last_seen)
            for x in pings:
                x.ping_asked = now
            return [x.info for x in pings]
        if split_from >= 0:
            # An uneven split can leave room that cached replacements may use.
            for b in self._buckets[split_from:]:
                while len(b.entries) < self._k and b.replacements:
                    self._promote(b, now)
        return []

    def _split(self, now: float) -> None:
        """Split the last bucket (the one containing own_id) in two (BEP 5)."""
        old = self._buckets[-1]
        depth = len(self._buckets)  # entries sharing >= depth bits with own_id move
        new = _Bucket(now)
        own = self._own_int
        limit = ID_BITS - depth  # cpl >= depth  <=>  bit_length(x ^ own) <= limit
        keep: list[_Entry] = []
        for e in old.entries:
            (new.entries if (e.id_int ^ own).bit_length() <= limit else keep).append(e)
        old.entries = keep
        keep = []
        for e in old.replacements:
            (new.replacements if (e.id_int ^ own).bit_length() <= limit else keep).append(e)
        old.replacements = keep
        old.last_changed = now
        self._buckets.append(new)

    def _link(self, e: _Entry, b: _Bucket) -> None:
        b.entries.append(e)
        self._nodes[e.info.node_id] = e
        self._index_entry(e)

    def _unlink(self, e: _Entry, b: _Bucket) -> None:
        b.entries.remove(e)
        del self._nodes[e.info.node_id]
        self._unindex(e)

    def _index_entry(self, e: _Entry) -> None:
        self._addrs[e.info.addr] = e.info.node_id
        if not bep42.is_exempt(e.info.addr[0]):
            self._ips[bep42.source_key(e.info.addr[0])] = e.info.node_id

    def _unindex(self, e: _Entry) -> None:
        if self._addrs.get(e.info.addr) == e.info.node_id:
            del self._addrs[e.info.addr]
        source = bep42.source_key(e.info.addr[0])
        if self._ips.get(source) == e.info.node_id:
            del self._ips[source]

    def _drop_ip_conflict(self, ip: str, node_id: bytes) -> int | None:
        """Drop the bucket entry standing for public ``ip`` under another ID (see
        ``_ips``); returns its integer ID so the caller can refill its bucket."""
        other = self._ips.get(ip)
        if other is None or other == node_id:
            return None
        e = self._nodes[other]
        self._unlink(e, self._buckets[self._index(e.id_int)])
        return e.id_int

    def _promote(self, b: _Bucket, now: float) -> None:
        """Move the most recently seen replacement into ``b`` (caller made room)."""
        free = [
            x
            for x in b.replacements
            if self._ips.get(bep42.source_key(x.info.addr[0]), x.info.node_id) == x.info.node_id
        ]
        if not free:
            return
        r = max(free, key=lambda x: x.last_seen)
        del self._repl[r.info.node_id]
        self._take_out_of_cache(r)
        r.ping_asked = None
        self._link(r, b)
        # BEP 5: replacing a node updates the bucket's "last changed".
        b.last_changed = now

    def _cache(self, e: _Entry, b: _Bucket) -> None:
        """Add ``e`` to ``b``'s replacement cache, evicting its least recently seen."""
        if self._repl_size == 0:
            return
        if len(b.replacements) >= self._repl_size:
            old = min(b.replacements, key=lambda x: x.last_seen)
            del self._repl[old.info.node_id]
            self._take_out_of_cache(old)
        b.replacements.append(e)
        self._repl[e.info.node_id] = e
        self._repl_addrs[e.info.addr] = e.info.node_id

    def _take_out_of_cache(self, r: _Entry) -> None:
        """Remove ``r`` from its bucket's replacement list and the address index
        (the caller has already removed it from ``_repl``)."""
        b = self._buckets[self._index(r.id_int)]
        b.replacements.remove(r)
        if self._repl_addrs.get(r.info.addr) == r.info.node_id:
            del self._repl_addrs[r.info.addr]

    def _drop_addr_conflict(self, addr: Addr, node_id: bytes) -> int | None:
        """Drop entries at ``addr`` under another ID: the remote restarted with a new ID.

        Returns the integer ID of a removed bucket entry (so the caller can refill
        its bucket once the newcomer is placed), or None.
        """
        other = self._repl_addrs.get(addr)
        if other is not None and other != node_id:
            self._take_out_of_cache(self._repl.pop(other))
        other = self._addrs.get(addr)
        if other is not None and other != node_id:
            e = self._nodes[other]
            self._unlink(e, self._buckets[self._index(e.id_int)])
            return e.id_int
        return None


def _hex_id(value: object) -> bytes | None:
    """A persisted hex node ID, or None unless it is exactly ID_BYTES of valid hex."""
    if not isinstance(value, str) or len(value) != 2 * ID_BYTES:
        return None
    try:
        return bytes.fromhex(value)
    except ValueError:
        return None


def _parse_node(item: object) -> NodeInfo | None:
    """One persisted node, or None if anything about it is malformed."""
    if not isinstance(item, dict):
        return None
    node_id = _hex_id(item.get("id"))
    addr = item.get("addr")
    if node_id is None or not isinstance(addr, list | tuple) or len(addr) != 2:
        return None
    host, port = addr
    if not isinstance(host, str) or type(port) is not int or not 0 < port < 65536:
        return None
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return None
    return NodeInfo(node_id, (host, port))
