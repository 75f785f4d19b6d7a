"""Bounded, expiring stores for BEP 5 peers and BEP 44 items.

Everything here is written by remote nodes, so every container has a hard size limit and
an expiry; nothing a remote sends can grow memory without bound. Entries are kept in
``OrderedDict``s in order of last write: with a non-decreasing ``now`` (a monotonic clock)
and a fixed TTL that order is also expiry order, so eviction and expiry are O(1) per entry.
"""

from __future__ import annotations

import random
from collections import OrderedDict
from dataclasses import dataclass

from btchat.dht import bep42
from btchat.dht.bep44 import (
    ERR_CAS_MISMATCH,
    ERR_SEQ_TOO_LOW,
    ItemError,
    MutableItem,
    check_immutable,
    check_mutable,
    immutable_target,
)
from btchat.dht.ids import Addr

__all__ = [
    "ITEM_TTL",
    "MAX_INFOHASHES",
    "MAX_ITEMS",
    "MAX_PEERS_PER_INFOHASH",
    "MAX_PEERS_PER_IP",
    "MAX_PEERS_RETURNED",
    "MAX_PEERS_TOTAL",
    "PEER_TTL",
    "ItemStore",
    "PeerStore",
    "StoredImmutable",
]

#: Distinct infohashes we track peers for (libtorrent's dht_max_torrents defaults to 2000).
MAX_INFOHASHES = 5000
#: Peers kept per infohash; bounds the store at MAX_INFOHASHES * this many entries.
MAX_PEERS_PER_INFOHASH = 200
#: Peers stored in all, whatever the spread over infohashes: about 200 bytes each, so
#: the peer store stays under ~20 MB however many hosts announce.
MAX_PEERS_TOTAL = 100_000
#: Entries one IP may hold over all infohashes. An honest client announces each torrent
#: to the 8 nodes closest to its infohash, so one node holds a few of its torrents at most;
#: 256 leaves room for a large seedbox and keeps a flooding host to 256 entries.
MAX_PEERS_PER_IP = 256
#: BEP 5 leaves peer lifetime open; 30 minutes matches libtorrent's announce interval.
PEER_TTL = 30 * 60.0
#: Peers in one get_peers reply, so it fits one UDP packet without fragmentation: 50
#: IPv4 peers are 400 bytes of ``values`` ("6:" + 6 bytes each), 50 IPv6 peers (BEP 32)
#: 1050 bytes ("18:" + 18), both inside a 1500-byte Ethernet MTU with the rest of the reply.
MAX_PEERS_RETURNED = 50
#: BEP 44 items we store (libtorrent's dht_max_dht_items defaults to 700). Each is at most
#: ~1.2 KB (1000-byte v, 64-byte salt, key, signature), so this caps items at ~6 MB.
MAX_ITEMS = 5000
#: BEP 44: "Without re-announcement, these items MAY expire in 2 hours."
ITEM_TTL = 2 * 3600.0


class PeerStore:
    """``announce_peer`` results: infohash -> peers, each expiring ``ttl`` after its
    last announce.

    Everything here is chosen by whoever announces, so four limits bound it:

    - one entry per IP per infohash (a re-announce from another port, or another address
      of the same IPv6 /64, replaces it), so one host cannot fill a swarm by varying the
      port or its address; on local-network addresses,
      where one address may stand for many devices (a test swarm, a household), each
      port is its own entry;
    - ``max_per_ip`` entries per IP (an IPv6 /64 is one IP here: ``bep42.source_key``)
      over all infohashes (not on loopback, which only
      this machine can send from): past it, announces from that IP for new infohashes
      are refused, so a flood from one host keeps its own oldest entries and no more;
    - ``max_peers_per_infohash``: when a swarm is full the peer announced longest ago is
      replaced;
    - ``max_infohashes`` and ``max_total``: a new infohash or peer beyond them evicts the
      swarm with the oldest activity, so a full store keeps serving swarms that are
      still announcing and a stale one goes first.
    """

    def __init__(
        self,
        max_infohashes: int = MAX_INFOHASHES,
        max_peers_per_infohash: int = MAX_PEERS_PER_INFOHASH,
        ttl: float = PEER_TTL,
        *,
        max_total: int = MAX_PEERS_TOTAL,
        max_per_ip: int = MAX_PEERS_PER_IP,
    ) -> None:
        if min(max_infohashes, max_peers_per_infohash, max_total, max_per_ip) < 1:
            raise ValueError("limits must be positive")
        self._max_infohashes = max_infohashes
        self._max_peers = max_peers_per_infohash
        self._max_total = max_total
        self._max_per_ip = max_per_ip
        self._ttl = ttl
        # infohash -> (slot -> (addr, expiry)); both levels ordered oldest activity first.
        # The slot is the IP, or the whole address on local networks (see the class doc).
        self._swarms: OrderedDict[bytes, OrderedDict[object, tuple[Addr, float]]] = OrderedDict()
        self._peer_count = 0
        self._per_ip: dict[str, int] = {}

    def add(self, infohash: bytes, addr: Addr, now: float) -> bool:
        """Record an announce; a re-announce refreshes the peer's expiry.

        False when the announcing IP is over its quota and nothing was stored.
        """
        ip = addr[0]
        source = bep42.source_key(ip)  # an IPv6 /64 counts as one IP (BEP 32 hosts)
        slot: object = addr if bep42.is_exempt(ip) else source
        peers = self._swarms.get(infohash)
        if peers is not None and slot in peers:
            del peers[slot]
            peers[slot] = (addr, now + self._ttl)
            self._swarms.move_to_end(infohash)
            return True
        if not bep42.is_loopback(ip) and self._per_ip.get(source, 0) >= self._max_per_ip:
            return False
        if peers is None:
            if len(self._swarms) >= self._max_infohashes:
                self._evict_swarm()
            peers = self._swarms[infohash] = OrderedDict()
        else:
            self._swarms.move_to_end(infohash)
            if len(peers) >= self._max_peers:
                _, (old, _) = peers.popitem(last=False)
                self._forget(old)
        while self._peer_count >= self._max_total:
            self._evict_oldest_peer(keep=infohash)
        peers[slot] = (addr, now + self._ttl)
        self._peer_count += 1
        self._per_ip[source] = self._per_ip.get(source, 0) + 1
        return True

    def get(
        self,
        infohash: bytes,
        now: float,
        rng: random.Random,
        max_count: int = MAX_PEERS_RETURNED,
    ) -> list[Addr]:
        """Unexpired peers for ``infohash``; a random sample of ``max_count`` if there are
        more, so the reply fits in one UDP packet and every peer gets handed out."""
        peers = self._swarms.get(infohash)
        if peers is None:
            return []
        self._prune(infohash, peers, now)
        live = [addr for addr, expiry in peers.values() if expiry > now]
        if len(live) > max_count:
            return rng.sample(live, max_count)
        return live

    def expire(self, now: float) -> None:
        """Drop every peer whose announce is older than the TTL."""
        for infohash in list(self._swarms):
            self._prune(infohash, self._swarms[infohash], now)

    def _forget(self, addr: Addr) -> None:
        self._peer_count -= 1
        source = bep42.source_key(addr[0])
        left = self._per_ip[source] - 1
        if left:
            self._per_ip[source] = left
        else:
            del self._per_ip[source]

    def _evict_swarm(self) -> None:
        _, evicted = self._swarms.popitem(last=False)
        for addr, _ in evicted.values():
            self._forget(addr)

    def _evict_oldest_peer(self, keep: bytes) -> None:
        """Drop the oldest peer of the least recently active swarm (not ``keep``'s)."""
        for infohash, peers in self._swarms.items():
            if infohash != keep or len(self._swarms) == 1:
                _, (addr, _) = peers.popitem(last=False)
                self._forget(addr)
                if not peers:
                    del self._swarms[infohash]
                return

    def _prune(
        self, infohash: bytes, peers: OrderedDict[object, tuple[Addr, float]], now: float
    ) -> None:
        while peers:
            slot, (addr, expiry) = next(iter(peers.items()))
            if expiry > now:
                break
            del peers[slot]
            self._forget(addr)
        if not peers:
            del self._swarms[infohash]

    def __len__(self) -> int:
        """Number of infohashes with stored peers."""
        return len(self._swarms)

    def peer_count(self) -> int:
        """Number of stored (infohash, peer) entries."""
        return self._peer_count

    def entries_of(self, ip: str) -> int:
        """Entries stored for announces from ``ip`` (its /64 for IPv6), over all infohashes."""
        return self._per_ip.get(bep42.source_key(ip), 0)


@dataclass(frozen=True, slots=True)
class StoredImmutable:
    """A BEP 44 immutable item: just its bencoded value (its target is its SHA-1)."""

    v_bencoded: bytes


class ItemStore:
    """BEP 44 items by target, each expiring ``ttl`` after its last put.

    When full, a new target evicts the item that expires soonest (the one put or
    refreshed longest ago); items that are still being republished therefore survive.
    Immutable and mutable items share one table, as BEP 44 allows.
    """

    def __init__(self, max_items: int = MAX_ITEMS, ttl: float = ITEM_TTL) -> None:
        if max_items < 1:
            raise ValueError("max_items must be positive")
        self._max_items = max_items
        self._ttl = ttl
        # target -> (item, expiry), ordered by expiry (soonest first).
        self._items: OrderedDict[bytes, tuple[StoredImmutable | MutableItem, float]] = OrderedDict()

    def get(self, target: bytes, now: float) -> StoredImmutable | MutableItem | None:
        """The unexpired item stored under ``target``, if any."""
        entry = self._items.get(target)
        if entry is None:
            return None
        if entry[1] <= now:
            del self._items[target]
            return None
        return entry[0]

    def put_immutable(self, v_bencoded: bytes, now: float) -> bytes:
        """Store (or refresh) an immutable item; returns its target.

        Raises :class:`ItemError` (205 too big, 203 bad bencoding) if it may not be stored.
        """
        check_immutable(v_bencoded)
        # BEP 44: immutable items are stored under the SHA-1 hash of the bencoded value.
        target = immutable_target(v_bencoded)
        self._store(target, StoredImmutable(v_bencoded), now)
        return target

    def put_mutable(self, item: MutableItem, now: float, cas: int | None = None) -> None:
        """Store a signed mutable item, enforcing BEP 44's sequence-number rules.

        Raises :class:`ItemError`: 205/206/207/203 from validation, 301 when ``cas`` is
        given and differs from the stored seq, 302 when ``seq`` is below the stored one.
        An equal ``seq`` keeps the stored item and refreshes its expiry, as libtorrent does.
        """
        # BEP 44: the signature MUST be verified before accepting the store command.
        check_mutable(item)
        target = item.target
        current = self.get(target, now)
        if isinstance(current, MutableItem):
            # BEP 44: CAS MUST be compared with the stored seq, and a mismatch MUST fail
            # with 301. Checked before seq, as libtorrent does. With no stored item, cas is
            # ignored ("SHOULD be ignored").
            if cas is not None and cas != current.seq:
                raise ItemError(ERR_CAS_MISMATCH)
            # BEP 44: a node MUST NOT downgrade to a lower sequence number (error 302).
            if item.seq < current.seq:
                raise ItemError(ERR_SEQ_TOO_LOW)
            if item.seq == current.seq:
                # BEP 44: on an equal seq the node SHOULD reset its timeout counter.
                self._store(target, current, now)
                return
        # A StoredImmutable under a mutable target needs a crafted SHA-1 match of k + salt
        # with a bencoded value, which only the key's owner can build: just replace it.
        self._store(target, item, now)

    def _store(self, target: bytes, item: StoredImmutable | MutableItem, now: float) -> None:
        if target in self._items:
            self._items.move_to_end(target)
        elif len(self._items) >= self._max_items:
            self._items.popitem(last=False)  # expires soonest: written longest ago
        self._items[target] = (item, now + self._ttl)

    def expire(self, now: float) -> None:
        """Drop every item whose TTL has passed."""
        while self._items:
            target, (_, expiry) = next(iter(self._items.items()))
            if expiry > now:
                break
            del self._items[target]

    def __len__(self) -> int:
        """Number of stored items (expired ones may linger until :meth:`expire`)."""
        return len(self._items)
