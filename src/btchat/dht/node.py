"""The Mainline DHT node as a sans-I/O state machine (BEP 5, 32, 42, 43, 44).

How this works: the owner feeds the node datagrams (:meth:`DhtNode.receive_datagram`)
and timer expiries (:meth:`DhtNode.handle_timer`), each with the current time, and
starts operations (ping, lookups, announce, BEP 44 get/put), each of which returns an
operation id at once. The node never touches a socket or a clock: it queues datagrams
(:meth:`datagrams_to_send`), says when it next needs to be woken (:meth:`get_timer`),
and reports finished operations as events (:meth:`next_event`). The asyncio shell in
``btchat.net.dht_service`` and the simulator in ``btchat.sim`` both drive this one class.

Remote input is never trusted: malformed datagrams are dropped and counted in
:attr:`DhtNode.stats`, bad query arguments earn a KRPC error reply, and every store has
a bound. Only misuse of the API by the caller raises.

IPv6 (BEP 32): a node runs in IPv4, IPv6 or both (``NodeConfig.ipv4`` / ``ipv6``). Each
family has its own routing table, peer store and reachability; the node ID is shared.
A datagram's family is its address's (``ids.family_of``), and the shell sends each one
on the socket of that family. A dual-stack node asks for ``nodes`` and ``nodes6`` in its
lookups (``want``), runs each lookup in both tables at once and merges the results;
an IPv4-only node sends and answers exactly what it did before BEP 32.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import random
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from btchat.codec.bencode import DecodeError, Raw, decode, encode
from btchat.dht import bep42, bep44
from btchat.dht.ids import (
    ID_BYTES,
    V4,
    V6,
    Addr,
    NodeInfo,
    decode_nodes,
    decode_nodes6,
    decode_peers_counted,
    encode_nodes,
    encode_nodes6,
    encode_peer,
    family_of,
)
from btchat.dht.krpc import (
    ERROR_METHOD_UNKNOWN,
    ERROR_PROTOCOL,
    Error,
    Query,
    Response,
    encode_error,
    encode_query,
    encode_response,
    parse_message,
)
from btchat.dht.lookup import Candidate, Lookup
from btchat.dht.ratelimit import RateLimiter
from btchat.dht.reachability import MAX_REPORTS, Reachability
from btchat.dht.routing import RoutingTable
from btchat.dht.storage import ItemStore, PeerStore, StoredImmutable
from btchat.dht.tokens import TokenManager

__all__ = [
    "AnnounceResult",
    "DhtNode",
    "GetItemResult",
    "GetPeersResult",
    "NodeConfig",
    "NodeIdChanged",
    "OperationDone",
    "OperationFailed",
    "PutResult",
]

log = logging.getLogger(__name__)

#: Our BEP 5 client version: two letters for the client, two bytes of version.
CLIENT_VERSION = b"BC\x00\x01"
#: Peers returned in one get_peers answer: 50 x 6 bytes keeps the packet under ~1 KiB.
MAX_PEERS_PER_RESPONSE = 50
#: BEP 32: "must not send UDP datagrams with a payload larger than 1024 octets". An
#: IPv6 peer costs 21 bytes of ``values`` ("18:" + 18); 16 of them with ``nodes6`` and
#: ``nodes`` for a dual-stack asker stay inside it (tests/test_dht_ipv6.py measures it).
MAX_PEERS6_PER_RESPONSE = 16
#: IPv4 peers when the answer carries both ``nodes`` and ``nodes6`` (a dual-stack asker):
#: 50 would make it ~1030 bytes, past BEP 32's 1024; 40 leaves room for a long tid.
MAX_PEERS_PER_DUAL_RESPONSE = 40
#: ``want`` entries read (BEP 32 defines two; unknown ones "must be silently ignored").
MAX_WANT_ENTRIES = 8
#: BEP 42: distinct voters remembered when learning our external IP from ``ip`` keys
#: (the reports live in :class:`~btchat.dht.reachability.Reachability`).
MAX_IP_VOTERS = MAX_REPORTS
#: Votes needed before we trust an external address enough to change our ID for it.
MIN_IP_VOTES = 10


@dataclass(frozen=True)
class NodeConfig:
    k: int = 8  # BEP 5 bucket size and replication factor
    alpha: int = 3  # lookup parallelism (Kademlia paper)
    short_timeout: float = 1.0  # a query this old no longer holds a lookup slot
    query_timeout: float = 4.0  # a query this old has failed
    maintenance_interval: float = 5.0
    rebootstrap_interval: float = 60.0
    read_only: bool = False  # BEP 43
    version: bytes = CLIENT_VERSION
    rate_limit: float = 250.0  # queries per second per source IP
    rate_burst: float = 500.0
    # On a private network each port is its own source (many devices share one router
    # address), but one LAN IP together gets at most this many times the rate, so a
    # host cannot escape the limit by changing ports.
    lan_ip_share: float = 8.0
    ipv4: bool = True  # take part in the IPv4 DHT
    ipv6: bool = False  # BEP 32: take part in the IPv6 DHT (both: dual-stack)
    enforce_node_id: bool = False  # BEP 42: refuse non-compliant IDs in the routing table
    secure_id: bool = True  # BEP 42: move to a compliant ID once our external IP is known
    max_pending: int = 4096  # outstanding queries we keep state for
    max_maintenance_pings: int = 8  # questionable nodes pinged per maintenance tick
    peer_ttl: float = 30 * 60  # BEP 5: announced peers expire
    item_ttl: float = 2 * 3600  # BEP 44: items expire after about two hours
    # BEP 5's 15 minutes; long simulations of idle days may stretch it to stay fast.
    refresh_interval: float = 15 * 60


# ---------------------------------------------------------------- events and results


@dataclass(frozen=True, slots=True)
class OperationDone:
    op_id: int
    result: Any


@dataclass(frozen=True, slots=True)
class OperationFailed:
    op_id: int
    reason: str


@dataclass(frozen=True, slots=True)
class NodeIdChanged:
    """BEP 42: we learned our external IP and moved to a compliant node ID."""

    old_id: bytes
    new_id: bytes
    external_ip: str


Event = OperationDone | OperationFailed | NodeIdChanged


@dataclass(frozen=True, slots=True)
class GetPeersResult:
    peers: list[Addr]
    queries: int
    responded: int


@dataclass(frozen=True, slots=True)
class AnnounceResult:
    stored_at: int
    queries: int


@dataclass(frozen=True, slots=True)
class GetItemResult:
    """A BEP 44 get: ``value`` is the decoded ``v``, or None when nobody had the item."""

    value: Any
    v_bencoded: bytes | None
    seq: int | None
    signature: bytes | None
    queries: int


@dataclass(frozen=True, slots=True)
class PutResult:
    target: bytes
    stored_at: int
    errors: list[str]
    queries: int


# ------------------------------------------------------------------- internal state


class _QueryError(Exception):
    def __init__(self, code: int, text: str) -> None:
        super().__init__(text)
        self.code = code
        self.text = text


@dataclass(slots=True)
class _Pending:
    tid: bytes
    addr: Addr
    method: bytes
    node_id: bytes | None
    op: _Operation | None
    slow: bool = False


@dataclass(eq=False)
class _Operation:
    op_id: int
    kind: str  # ping | find_node | get_peers | announce | get | put
    target: bytes = b""
    #: One lookup per address family it runs in (BEP 32: two DHTs, walked side by side).
    lookups: dict[int, Lookup] = field(default_factory=dict)
    silent: bool = False  # maintenance work: no event to the owner
    # kind-specific inputs
    port: int = 0
    implied_port: bool = False
    want_key: bytes | None = None  # BEP 44 mutable get: the public key we expect
    salt: bytes = b""
    put_args: dict[bytes, Any] | None = None
    # progress
    peers: dict[Addr, None] = field(default_factory=dict)
    best_item: dict[bytes, Any] | None = None
    storing: int = -1  # -1: still looking up; else number of store queries outstanding
    stored_at: int = 0
    store_errors: list[str] = field(default_factory=list)
    # store query per target, to send once more when it times out (a lost datagram or a
    # busy node must not cost one of the k copies)
    store_queries: dict[Addr, tuple[bytes, dict[bytes, Any], bytes | None]] = field(
        default_factory=dict
    )
    store_retried: set[Addr] = field(default_factory=set)
    queries: int = 0
    finished: bool = False


# ------------------------------------------------------------------------ the node


class DhtNode:
    """One Mainline DHT node. See the module docstring for how it is driven."""

    def __init__(
        self,
        config: NodeConfig | None = None,
        *,
        node_id: bytes | None = None,
        rng: random.Random | None = None,
        now: float = 0.0,
        routing_state: dict[str, Any] | None = None,
        routing6_state: dict[str, Any] | None = None,
    ) -> None:
        self.config = config or NodeConfig()
        self.rng = rng or random.Random()
        if node_id is None:
            node_id = self.rng.randbytes(ID_BYTES)
        if len(node_id) != ID_BYTES:
            raise ValueError("node id must be 20 bytes")
        self.node_id = node_id
        #: The families we take part in, the first one primary (BEP 42 votes, ``routing``).
        self.families: tuple[int, ...] = tuple(
            fam for fam, on in ((V4, self.config.ipv4), (V6, self.config.ipv6)) if on
        )
        if not self.families:
            raise ValueError("a DHT node needs IPv4, IPv6 or both")
        states = {V4: routing_state, V6: routing6_state}
        #: BEP 32: "a node wishing to participate in both DHTs must maintain two distinct
        #: routing tables"; same ID in both, as the BEP recommends.
        self.tables: dict[int, RoutingTable] = {}
        for fam in self.families:
            state = states[fam]
            if state:
                table = RoutingTable.from_state(state, self.rng, now)
                if table.own_id != node_id:
                    table = table.with_own_id(node_id, now)
            else:
                table = RoutingTable(node_id, self.rng, k=self.config.k, now=now)
            self.tables[fam] = table
        self.tokens = TokenManager(secret_source=self.rng.randbytes)
        #: Announced peers per family (BEP 32: no IPv6 data in the IPv4 DHT), each store
        #: with the same limits.
        self.peer_stores = {fam: PeerStore(ttl=self.config.peer_ttl) for fam in self.families}
        self.items = ItemStore(ttl=self.config.item_ttl)
        self.limiter = RateLimiter(self.config.rate_limit, self.config.rate_burst)
        self.lan_limiter = RateLimiter(
            self.config.rate_limit * self.config.lan_ip_share,
            self.config.rate_burst * self.config.lan_ip_share,
        )
        self.stats: Counter[str] = Counter()
        self.external_ip: str | None = None
        self.bootstrap_addrs: list[Addr] = []
        #: Our external address, mapping and filtering as the DHT shows them (BEP 42
        #: votes), per family: only the primary family's votes choose our node ID.
        self.reachabilities = {
            fam: Reachability(max_reports=MAX_IP_VOTERS) for fam in self.families
        }
        self._outbox: list[tuple[bytes, Addr]] = []
        self._events: deque[Event] = deque()
        self._pending: dict[bytes, _Pending] = {}
        self._timers: list[tuple[float, int, str, bytes]] = []
        self._timer_seq = itertools.count()
        self._tid_counter = self.rng.randrange(1 << 16)
        self._op_ids = itertools.count(1)
        self._pinging: set[bytes] = set()
        self._last_bootstrap = -1e18
        self._push_timer(now + self.config.maintenance_interval, "maint", b"")
        self._handlers: dict[bytes, Callable[[Query, Addr, float], dict[bytes, Any]]] = {
            b"ping": self._on_ping,
            b"find_node": self._on_find_node,
            b"get_peers": self._on_get_peers,
            b"announce_peer": self._on_announce_peer,
            b"get": self._on_get,
            b"put": self._on_put,
        }

    # ------------------------------------------------------------ per-family views

    @property
    def routing(self) -> RoutingTable:
        """The primary family's routing table (IPv4 unless the node is IPv6-only)."""
        return self.tables[self.families[0]]

    @property
    def peers(self) -> PeerStore:
        return self.peer_stores[self.families[0]]

    @property
    def reachability(self) -> Reachability:
        return self.reachabilities[self.families[0]]

    @property
    def dual_stack(self) -> bool:
        return len(self.families) == 2

    def node_count(self) -> int:
        """Contacts in all our routing tables."""
        return sum(len(t) for t in self.tables.values())

    # ------------------------------------------------------------ sans-I/O surface

    def datagrams_to_send(self) -> list[tuple[bytes, Addr]]:
        out, self._outbox = self._outbox, []
        return out

    def next_event(self) -> Event | None:
        return self._events.popleft() if self._events else None

    def get_timer(self) -> float | None:
        return self._timers[0][0] if self._timers else None

    def handle_timer(self, now: float) -> None:
        while self._timers and self._timers[0][0] <= now:
            _, _, kind, tid = heapq.heappop(self._timers)
            if kind == "maint":
                self._maintenance(now)
                self._push_timer(now + self.config.maintenance_interval, "maint", b"")
                continue
            pending = self._pending.get(tid)
            if pending is None:
                continue
            if kind == "slow" and not pending.slow:
                pending.slow = True
                lookup = pending.op.lookups.get(family_of(pending.addr)) if pending.op else None
                if pending.op and lookup:
                    lookup.on_slow(pending.addr)
                    self._advance(pending.op, now)
            elif kind == "timeout":
                del self._pending[tid]
                self.stats["query_timeouts"] += 1
                self._on_query_failed(pending, now)

    def receive_datagram(self, data: bytes, addr: Addr, now: float) -> None:
        self.stats["rx_packets"] += 1
        try:
            msg = parse_message(data)
        except DecodeError as exc:
            self.stats["rx_malformed"] += 1
            log.debug("dropped malformed datagram from %s: %s", addr, exc)
            return
        if isinstance(msg, Query):
            self._on_query(msg, addr, now)
        elif isinstance(msg, Response):
            self._on_response(msg, addr, now)
        else:
            self._on_error(msg, addr, now)

    # ------------------------------------------------------------------ operations

    def ping(self, addr: Addr, now: float) -> int:
        op = self._new_op("ping")
        self._send_query(b"ping", {}, addr, None, op, now)
        return op.op_id

    def bootstrap(self, addrs: list[Addr], now: float) -> int:
        """Join the DHT: a find_node lookup for our own ID, seeded with ``addrs``."""
        self.bootstrap_addrs = list(dict.fromkeys([*self.bootstrap_addrs, *addrs]))
        self._last_bootstrap = now
        return self._start_lookup("find_node", self.node_id, now, bootstrap=addrs)

    def find_node(self, target: bytes, now: float) -> int:
        return self._start_lookup("find_node", _check_id(target), now)

    def get_peers(self, infohash: bytes, now: float) -> int:
        return self._start_lookup("get_peers", _check_id(infohash), now)

    def announce(
        self, infohash: bytes, port: int, now: float, *, implied_port: bool = False
    ) -> int:
        if not 0 < port < 65536 and not implied_port:
            raise ValueError("port must be 1-65535")
        return self._start_lookup(
            "announce", _check_id(infohash), now, port=port, implied_port=implied_port
        )

    def get_immutable(self, target: bytes, now: float) -> int:
        return self._start_lookup("get", _check_id(target), now)

    def get_mutable(self, public_key: bytes, now: float, *, salt: bytes = b"") -> int:
        if len(public_key) != 32:
            raise ValueError("public key must be 32 bytes")
        if len(salt) > bep44.MAX_SALT_SIZE:
            raise ValueError(f"salt longer than {bep44.MAX_SALT_SIZE} bytes")
        target = bep44.mutable_target(public_key, salt)
        return self._start_lookup("get", target, now, want_key=public_key, salt=salt)

    def put_immutable(self, v_bencoded: bytes, now: float) -> int:
        if len(v_bencoded) > bep44.MAX_VALUE_SIZE:
            raise ValueError(f"value is {len(v_bencoded)} bytes; BEP 44 allows 1000")
        args: dict[bytes, Any] = {b"v": decode(v_bencoded)}
        target = bep44.immutable_target(v_bencoded)
        return self._start_lookup("put", target, now, put_args=args)

    def put_mutable(self, item: bep44.MutableItem, now: float, *, cas: int | None = None) -> int:
        bep44.check_mutable(item)  # the caller's item must be valid before we spread it
        args: dict[bytes, Any] = {
            b"k": item.public_key,
            b"seq": item.seq,
            b"sig": item.signature,
            b"v": decode(item.v_bencoded),
        }
        if item.salt:
            args[b"salt"] = item.salt
        if cas is not None:
            args[b"cas"] = cas
        return self._start_lookup(
            "put", item.target, now, put_args=args, want_key=item.public_key, salt=item.salt
        )

    # ----------------------------------------------------------- persistent state

    def save_state(self) -> dict[str, Any]:
        state: dict[str, Any] = {"node_id": self.node_id.hex()}
        for fam, key in ((V4, "routing"), (V6, "routing6")):
            if fam in self.tables:
                state[key] = self.tables[fam].to_state()
        return state

    # --------------------------------------------------------------- query serving

    def _rate_allows(self, addr: Addr, now: float) -> bool:
        # Many nodes may share one loopback or LAN address (tests, a household behind
        # one router): there, each port is its own source. Public IPs are limited as one.
        # A LAN IP as a whole is capped too (loopback is not: only this machine sends
        # from it, and test swarms of a thousand nodes share it).
        ip = addr[0]
        if not bep42.is_exempt(ip):
            return self.limiter.allow(bep42.source_key(ip), now)  # IPv6: per /64
        if not bep42.is_loopback(ip) and not self.lan_limiter.allow(ip, now):
            return False
        return self.limiter.allow(addr, now)

    def _on_query(self, q: Query, addr: Addr, now: float) -> None:
        if self.config.read_only:
            self.stats["rx_query_ignored_read_only"] += 1  # BEP 43: read-only nodes are mute
            return
        if not self._rate_allows(addr, now):
            self.stats["rx_rate_limited"] += 1
            return
        self.stats["rx_queries"] += 1
        if (reach := self.reachabilities.get(family_of(addr))) is not None:
            reach.query_from(addr)
        handler = self._handlers.get(q.method)
        try:
            if handler is None:
                raise _QueryError(ERROR_METHOD_UNKNOWN, "Method Unknown")
            values = handler(q, addr, now)
        except _QueryError as exc:
            self.stats["tx_errors"] += 1
            self._outbox.append(
                (encode_error(q.tid, exc.code, exc.text, version=self.config.version), addr)
            )
            return
        values[b"id"] = self.node_id
        self._outbox.append(
            (encode_response(q.tid, values, version=self.config.version, requester=addr), addr)
        )
        # BEP 43: a read-only node must not enter routing tables.
        if not q.read_only:
            self._learn(NodeInfo(q.sender_id, addr), now, responded=False)

    def _wanted(self, q: Query) -> set[int] | None:
        """BEP 32 ``want``: the families whose nodes the asker wants, None if it sent none."""
        want = q.args.get(b"want")
        if want is None:
            return None
        if not isinstance(want, list):
            self.stats["rx_bad_want"] += 1
            return None
        # BEP 32: "other strings may be present in the list, and must be silently ignored".
        entries = want[:MAX_WANT_ENTRIES]
        return {fam for fam, flag in ((V4, b"n4"), (V6, b"n6")) if flag in entries}

    def _nodes_for(self, q: Query, addr: Addr, target: bytes) -> dict[bytes, Any]:
        """``nodes`` and/or ``nodes6`` for an answer (BEP 32 "find_nodes and get_peers").

        The ``want`` families we have, else (no ``want``) the asker's own family. If that
        leaves nothing (an IPv4-only node asked for n6 alone) we answer ``nodes`` from our
        primary table, as a BEP 5 node always did.
        """
        wanted = self._wanted(q)
        if wanted is None:
            wanted = {family_of(addr)}
        k = self.config.k
        out: dict[bytes, Any] = {}
        if V4 in wanted and V4 in self.tables:
            out[b"nodes"] = encode_nodes(self.tables[V4].closest(target, k))
        if V6 in wanted and V6 in self.tables:
            out[b"nodes6"] = encode_nodes6(self.tables[V6].closest(target, k))
        if not out:
            primary = self.families[0]
            key, encoder = (b"nodes", encode_nodes) if primary == V4 else (b"nodes6", encode_nodes6)
            out[key] = encoder(self.routing.closest(target, k))
        return out

    def _on_ping(self, q: Query, addr: Addr, now: float) -> dict[bytes, Any]:
        return {}

    def _on_find_node(self, q: Query, addr: Addr, now: float) -> dict[bytes, Any]:
        return self._nodes_for(q, addr, _arg_id(q, b"target"))

    def _on_get_peers(self, q: Query, addr: Addr, now: float) -> dict[bytes, Any]:
        infohash = _arg_id(q, b"info_hash")
        values: dict[bytes, Any] = {
            b"token": self.tokens.token_for(addr[0], now, infohash),
            **self._nodes_for(q, addr, infohash),
        }
        # BEP 32: values hold peers of the family the request came over, whatever want says.
        fam = family_of(addr)
        store = self.peer_stores.get(fam)
        if fam == V6:
            limit = MAX_PEERS6_PER_RESPONSE
        elif b"nodes6" in values:
            limit = MAX_PEERS_PER_DUAL_RESPONSE
        else:
            limit = MAX_PEERS_PER_RESPONSE  # what a BEP 5 asker always got
        peers = store.get(infohash, now, self.rng, limit) if store is not None else []
        if peers:
            values[b"values"] = [encode_peer(p) for p in peers]
        return values

    def _check_token(self, q: Query, addr: Addr, now: float, key: bytes) -> None:
        # A token is bound to the infohash or target it was handed out for, so one
        # get_peers reply does not license announces for every infohash.
        token = q.args.get(b"token")
        if not isinstance(token, bytes) or not self.tokens.is_valid(token, addr[0], now, key):
            self.stats["rx_bad_token"] += 1
            raise _QueryError(ERROR_PROTOCOL, "bad token")

    def _on_announce_peer(self, q: Query, addr: Addr, now: float) -> dict[bytes, Any]:
        infohash = _arg_id(q, b"info_hash")
        self._check_token(q, addr, now, infohash)
        # BEP 5: implied_port=1 means "use the UDP source port" (peers behind NAT).
        if q.args.get(b"implied_port") == 1:
            port = addr[1]
        else:
            port = q.args.get(b"port")
            if not isinstance(port, int) or not 0 < port < 65536:
                raise _QueryError(ERROR_PROTOCOL, "invalid port")
        # BEP 32: an announce over IPv6 advertises an IPv6 address, kept in that family.
        store = self.peer_stores.get(family_of(addr))
        if store is None:
            self.stats["rx_announce_wrong_family"] += 1
        elif not store.add(infohash, (addr[0], port), now):
            # Over its quota: answered like any announce, so a flooder cannot tell.
            self.stats["rx_announce_over_quota"] += 1
        return {}

    def _on_get(self, q: Query, addr: Addr, now: float) -> dict[bytes, Any]:
        target = _arg_id(q, b"target")
        values: dict[bytes, Any] = {
            b"token": self.tokens.token_for(addr[0], now, target),
            **self._nodes_for(q, addr, target),
        }
        item = self.items.get(target, now)
        if isinstance(item, StoredImmutable):
            values[b"v"] = Raw(item.v_bencoded)
        elif item is not None:
            values[b"seq"] = item.seq
            want_seq = q.args.get(b"seq")
            # BEP 44: if the requester already has this seq or newer, skip the value.
            if not (isinstance(want_seq, int) and want_seq >= item.seq):
                values[b"k"] = item.public_key
                values[b"sig"] = item.signature
                values[b"v"] = Raw(item.v_bencoded)
        return values

    def _on_put(self, q: Query, addr: Addr, now: float) -> dict[bytes, Any]:
        if b"v" not in q.args:
            raise _QueryError(ERROR_PROTOCOL, "missing v")
        v_bencoded = encode(q.args[b"v"])
        if len(v_bencoded) > bep44.MAX_VALUE_SIZE:
            raise _QueryError(205, "message (v field) too big")
        key = q.args.get(b"k")
        salt = q.args.get(b"salt", b"")
        if key is not None and (not isinstance(key, bytes) or len(key) != 32):
            raise _QueryError(ERROR_PROTOCOL, "invalid k")
        if not isinstance(salt, bytes):
            raise _QueryError(ERROR_PROTOCOL, "invalid salt")
        if key is None:
            target = bep44.immutable_target(v_bencoded)
        else:
            target = bep44.mutable_target(key, salt)
        self._check_token(q, addr, now, target)
        if key is None:
            self.items.put_immutable(v_bencoded, now)
            return {}
        seq, sig, cas = q.args.get(b"seq"), q.args.get(b"sig"), q.args.get(b"cas")
        if not isinstance(seq, int) or not isinstance(sig, bytes) or len(sig) != 64:
            raise _QueryError(ERROR_PROTOCOL, "invalid seq or sig")
        if cas is not None and not isinstance(cas, int):
            raise _QueryError(ERROR_PROTOCOL, "invalid cas")
        item = bep44.MutableItem(key, salt, seq, v_bencoded, sig)
        try:
            self.items.put_mutable(item, now, cas=cas)
        except bep44.ItemError as exc:
            self.stats[f"rx_put_rejected_{exc.code}"] += 1
            raise _QueryError(exc.code, str(exc)) from None
        return {}

    # ----------------------------------------------------- responses and timeouts

    def _on_response(self, r: Response, addr: Addr, now: float) -> None:
        pending = self._pending.get(r.tid)
        if pending is None or pending.addr != addr:
            # Unknown or spoofed transaction: someone answering what we never asked.
            self.stats["rx_unexpected_response"] += 1
            return
        del self._pending[r.tid]
        self.stats["rx_responses"] += 1
        if r.ip is not None:
            reach = self.reachabilities.get(family_of(addr))
            if reach is not None and family_of(r.ip) == family_of(addr):
                reach.report(addr, r.ip)
                if reach is self.reachability:
                    self._vote_ip(now)
        self._pinging.discard(r.sender_id)
        if pending.node_id is None or pending.node_id == r.sender_id:
            self._learn(NodeInfo(r.sender_id, addr), now, responded=True)
        op = pending.op
        if op is None or op.finished:
            return
        if op.kind == "ping":
            self._finish(op, r.sender_id)
        elif op.storing >= 0:
            op.storing -= 1
            op.stored_at += 1
            self._advance(op, now)
        elif op.lookups:
            self._lookup_response(op, r, addr)
            self._advance(op, now)

    def _on_error(self, e: Error, addr: Addr, now: float) -> None:
        pending = self._pending.get(e.tid)
        if pending is None or pending.addr != addr:
            self.stats["rx_unexpected_response"] += 1
            return
        del self._pending[e.tid]
        self.stats["rx_error_replies"] += 1
        op = pending.op
        if op is None or op.finished:
            return
        if op.kind == "ping":
            self._fail(op, f"remote error {e.code}: {e.text}")
        elif op.storing >= 0:
            op.storing -= 1
            op.store_errors.append(f"{e.code} {e.text}")
            self._advance(op, now)
        elif (lookup := op.lookups.get(family_of(addr))) is not None:
            lookup.on_timeout(addr)
            self._advance(op, now)

    def _on_query_failed(self, pending: _Pending, now: float) -> None:
        table = self.tables.get(family_of(pending.addr))
        if pending.node_id is not None and table is not None:
            table.failed(pending.node_id, now)
            self._pinging.discard(pending.node_id)
        op = pending.op
        if op is None or op.finished:
            return
        if op.kind == "ping":
            self._fail(op, "no response")
        elif op.storing >= 0:
            query = op.store_queries.get(pending.addr)
            if query is not None and pending.addr not in op.store_retried:
                op.store_retried.add(pending.addr)
                self.stats["tx_store_retries"] += 1
                if self._send_query(query[0], query[1], pending.addr, query[2], op, now):
                    return  # still one outstanding for this target
            op.storing -= 1
            op.store_errors.append("timeout")
            self._advance(op, now)
        elif (lookup := op.lookups.get(family_of(pending.addr))) is not None:
            lookup.on_timeout(pending.addr)
            self._advance(op, now)

    def _lookup_response(self, op: _Operation, r: Response, addr: Addr) -> None:
        fam = family_of(addr)
        lookup = op.lookups.get(fam)
        if lookup is None:
            return
        blob = r.values.get(b"nodes")
        found = {V4: decode_nodes(blob) if isinstance(blob, bytes) else []}
        if V6 in op.lookups:  # an IPv4-only node ignores nodes6 (BEP 32 single-protocol)
            found[V6] = self._decode_nodes6(r.values.get(b"nodes6"))
        token = r.values.get(b"token")
        token = token if isinstance(token, bytes) and len(token) <= 64 else None
        if op.kind in ("get_peers", "announce"):
            values = r.values.get(b"values")
            if isinstance(values, list):
                peers, dropped = decode_peers_counted(values[: MAX_PEERS_PER_RESPONSE * 2])
                self.stats["rx_bad_values"] += dropped
                for peer in peers:
                    op.peers[peer] = None
        elif op.kind in ("get", "put"):
            self._consider_item(op, r.values)
        # BEP 32 "leaking": nodes of the other family feed that family's walk.
        for other, nodes in found.items():
            if other != fam and other in op.lookups and nodes:
                op.lookups[other].add_nodes(nodes)
        lookup.on_response(addr, r.sender_id, found.get(fam, []), token=token)

    def _decode_nodes6(self, blob: Any) -> list[NodeInfo]:
        if blob is None:
            return []
        if not isinstance(blob, bytes):
            self.stats["rx_bad_nodes6"] += 1
            return []
        nodes, dropped = decode_nodes6(blob)
        self.stats["rx_bad_nodes6"] += dropped
        return nodes

    def _consider_item(self, op: _Operation, values: dict[bytes, Any]) -> None:
        """Keep a BEP 44 item from an answer if it verifies and beats what we have."""
        if b"v" not in values:
            return
        try:
            v_bencoded = encode(values[b"v"])
        except TypeError:
            return
        if op.want_key is None:  # immutable: the target is the hash of the value
            if bep44.immutable_target(v_bencoded) == op.target:
                op.best_item = {b"v": values[b"v"], b"raw": v_bencoded}
            else:
                self.stats["rx_bad_item"] += 1
            return
        seq, sig, key = values.get(b"seq"), values.get(b"sig"), values.get(b"k")
        if key != op.want_key or not isinstance(seq, int) or not isinstance(sig, bytes):
            self.stats["rx_bad_item"] += 1
            return
        if op.best_item is not None and op.best_item[b"seq"] >= seq:
            return
        item = bep44.MutableItem(key, op.salt, seq, v_bencoded, sig)
        try:
            bep44.check_mutable(item)
        except bep44.ItemError:
            self.stats["rx_bad_item"] += 1
            return
        op.best_item = {b"v": values[b"v"], b"raw": v_bencoded, b"seq": seq, b"sig": sig}

    # ------------------------------------------------------------- op machinery

    def _new_op(self, kind: str, **kw: Any) -> _Operation:
        return _Operation(next(self._op_ids), kind, **kw)

    def _start_lookup(
        self,
        kind: str,
        target: bytes,
        now: float,
        *,
        bootstrap: list[Addr] | None = None,
        silent: bool = False,
        families: tuple[int, ...] | None = None,
        **kw: Any,
    ) -> int:
        op = self._new_op(kind, target=target, silent=silent, **kw)
        anything = False
        for fam in families or self.families:
            seeds = self.tables[fam].closest(target, self.config.k * 2)
            # Bootstrap addresses of a family we do not speak have no socket to go out on.
            boots = [a for a in bootstrap or () if family_of(a) == fam]
            op.lookups[fam] = Lookup(
                target,
                seeds,
                k=self.config.k,
                alpha=self.config.alpha,
                bootstrap=boots or None,
                own_id=self.node_id,
            )
            self.tables[fam].touch(target, now)
            anything = anything or bool(seeds or boots)
        if not anything:
            self._fail(op, "no DHT nodes known: bootstrap first (is the network reachable?)")
            return op.op_id
        self._advance(op, now)
        return op.op_id

    def _lookup_method(self, op: _Operation) -> tuple[bytes, dict[bytes, Any]]:
        # BEP 32: a dual-stack node asks for both families (want is allowed in find_node
        # and get_peers); a single-family node needs none: the default is its own family.
        want: dict[bytes, Any] = {b"want": [b"n4", b"n6"]} if self.dual_stack else {}
        if op.kind == "find_node":
            return b"find_node", {b"target": op.target, **want}
        if op.kind in ("get_peers", "announce"):
            return b"get_peers", {b"info_hash": op.target, **want}
        args: dict[bytes, Any] = {b"target": op.target}
        seq = op.put_args.get(b"seq") if op.kind == "put" and op.put_args else None
        if seq is not None:
            # BEP 44: a node holding this seq or newer answers without the value, so a
            # republish costs a token round trip instead of fetching the item back.
            args[b"seq"] = seq
        return b"get", args

    def _advance(self, op: _Operation, now: float) -> None:
        if op.finished:
            return
        if op.storing >= 0:
            if op.storing == 0:
                self._finish_store(op)
            return
        if op.kind == "get" and op.want_key is None and op.best_item is not None:
            self._finish_get(op)  # an immutable value verified by its hash: done early
            return
        method, args = self._lookup_method(op)
        lookups = list(op.lookups.values())
        for lookup in lookups:
            for cand in lookup.next_queries():
                if not self._send_query(method, args, cand.addr, cand.node_id, op, now):
                    lookup.on_timeout(cand.addr)
        # Both families' walks must converge (each has its own k closest nodes).
        if not all(lookup.done for lookup in lookups):
            return
        closest = [c for lookup in lookups for c in lookup.closest_responded()]
        if op.kind in ("announce", "put"):
            self._start_store(op, closest, now)
        elif op.kind == "get":
            self._finish_get(op)
        elif op.kind == "get_peers":
            responses = sum(lookup.responses for lookup in lookups)
            self._finish(op, GetPeersResult(list(op.peers), op.queries, responses))
        elif not closest:
            self._fail(op, "no DHT node answered")
        else:
            self._finish(
                op, [NodeInfo(c.node_id, c.addr) for c in closest if c.node_id is not None]
            )

    def _start_store(self, op: _Operation, targets: list[Candidate], now: float) -> None:
        op.storing = 0
        for cand in targets:
            if cand.token is None:
                continue
            if op.kind == "announce":
                method = b"announce_peer"
                args: dict[bytes, Any] = {
                    b"info_hash": op.target,
                    b"port": op.port or 1,
                    b"token": cand.token,
                }
                if op.implied_port:
                    args[b"implied_port"] = 1
            else:
                method = b"put"
                args = {**(op.put_args or {}), b"token": cand.token}
            if self._send_query(method, args, cand.addr, cand.node_id, op, now):
                op.storing += 1
                op.store_queries[cand.addr] = (method, args, cand.node_id)
        if op.storing == 0:
            self._finish_store(op)

    def _finish_store(self, op: _Operation) -> None:
        if op.kind == "announce":
            if op.stored_at == 0:
                self._fail(op, "no DHT node accepted the announce")
            else:
                self._finish(op, AnnounceResult(op.stored_at, op.queries))
            return
        if op.stored_at == 0:
            why = "; ".join(sorted(set(op.store_errors))) or "no node close to the target answered"
            self._fail(op, f"no DHT node stored the item ({why})")
            return
        self._finish(op, PutResult(op.target, op.stored_at, op.store_errors, op.queries))

    def _finish_get(self, op: _Operation) -> None:
        best = op.best_item
        if best is None:
            self._finish(op, GetItemResult(None, None, None, None, op.queries))
        else:
            self._finish(
                op,
                GetItemResult(
                    best[b"v"], best[b"raw"], best.get(b"seq"), best.get(b"sig"), op.queries
                ),
            )

    def _finish(self, op: _Operation, result: Any) -> None:
        op.finished = True
        if not op.silent:
            self._events.append(OperationDone(op.op_id, result))

    def _fail(self, op: _Operation, reason: str) -> None:
        op.finished = True
        if not op.silent:
            self._events.append(OperationFailed(op.op_id, reason))

    # -------------------------------------------------------------------- sending

    def _next_tid(self) -> bytes:
        for _ in range(8):
            self._tid_counter = (self._tid_counter + 1) & 0xFFFF
            tid = self._tid_counter.to_bytes(2, "big")
            if tid not in self._pending:
                return tid
        return self.rng.randbytes(4)

    def _push_timer(self, when: float, kind: str, tid: bytes) -> None:
        heapq.heappush(self._timers, (when, next(self._timer_seq), kind, tid))

    def _send_query(
        self,
        method: bytes,
        args: dict[bytes, Any],
        addr: Addr,
        node_id: bytes | None,
        op: _Operation | None,
        now: float,
    ) -> bool:
        if len(self._pending) >= self.config.max_pending:
            self.stats["tx_dropped_pending_full"] += 1
            return False
        tid = self._next_tid()
        args = {**args, b"id": self.node_id}
        data = encode_query(
            tid, method, args, version=self.config.version, read_only=self.config.read_only
        )
        self._pending[tid] = _Pending(tid, addr, method, node_id, op)
        self._push_timer(now + self.config.short_timeout, "slow", tid)
        self._push_timer(now + self.config.query_timeout, "timeout", tid)
        self._outbox.append((data, addr))
        if (reach := self.reachabilities.get(family_of(addr))) is not None:
            reach.sent_to(addr)
        self.stats["tx_queries"] += 1
        if op is not None:
            op.queries += 1
        return True

    # ---------------------------------------------------- routing and maintenance

    def _learn(self, node: NodeInfo, now: float, *, responded: bool) -> None:
        if node.node_id == self.node_id:
            return
        if (
            self.config.enforce_node_id
            and not bep42.is_exempt(node.addr[0])
            and not bep42.is_compliant(node.node_id, node.addr[0])
        ):
            self.stats["rx_noncompliant_id"] += 1
            return
        table = self.tables.get(family_of(node.addr))
        if table is None:
            self.stats["rx_node_wrong_family"] += 1
            return
        for stale in table.heard_from(node, now, responded=responded):
            self._maintenance_ping(stale, now)

    def _maintenance_ping(self, node: NodeInfo, now: float) -> None:
        if node.node_id in self._pinging:
            return
        if self._send_query(b"ping", {}, node.addr, node.node_id, None, now):
            self._pinging.add(node.node_id)

    def _maintenance(self, now: float) -> None:
        for store in self.peer_stores.values():
            store.expire(now)
        self.items.expire(now)
        for table in self.tables.values():
            for node in table.questionable(now)[: self.config.max_maintenance_pings]:
                self._maintenance_ping(node, now)
        if self.node_count() == 0:
            if (
                self.bootstrap_addrs
                and now - self._last_bootstrap >= self.config.rebootstrap_interval
            ):
                self._last_bootstrap = now
                self._start_lookup(
                    "find_node", self.node_id, now, bootstrap=self.bootstrap_addrs, silent=True
                )
            return
        for fam, table in self.tables.items():
            # An empty table of a dual-stack node fills from the other family's answers.
            if len(table) == 0:
                continue
            for target in table.refresh_targets(now, self.config.refresh_interval):
                self._start_lookup("find_node", target, now, silent=True, families=(fam,))

    def _vote_ip(self, now: float) -> None:
        """BEP 42: learn our external IP from the ``ip`` key, by majority of distinct voters."""
        best = self.reachability.external_ip(MIN_IP_VOTES)
        if best is None or best == self.external_ip:
            return
        self.external_ip = best
        log.info("external address is %s (by majority of BEP 42 votes)", best)
        if (
            self.config.secure_id
            and not bep42.is_exempt(best)
            and not bep42.is_compliant(self.node_id, best)
        ):
            old = self.node_id
            self.node_id = bep42.node_id_for_ip(best, self.rng)
            for fam, table in self.tables.items():
                self.tables[fam] = table.with_own_id(self.node_id, now)
            self._events.append(NodeIdChanged(old, self.node_id, best))


# -------------------------------------------------------------------------- helpers


def _check_id(value: bytes) -> bytes:
    if not isinstance(value, bytes) or len(value) != ID_BYTES:
        raise ValueError("infohash / target must be 20 bytes")
    return value


def _arg_id(q: Query, key: bytes) -> bytes:
    value = q.args.get(key)
    if not isinstance(value, bytes) or len(value) != ID_BYTES:
        raise _QueryError(ERROR_PROTOCOL, f"missing or malformed {key.decode()}")
    return value
