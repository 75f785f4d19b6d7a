"""Real libtorrent DHT nodes on 127.0.0.1 (or ::1), for interoperability tests of our node.

``LtNode`` wraps one ``libtorrent.session`` that runs only its DHT, bound to loopback, with
every feature that could reach another host switched off *in the constructor* (public
bootstrap routers, UPnP, NAT-PMP, LSD). ``LtSwarm`` starts several and meshes them.

Everything is synchronous: each call issues one libtorrent request, then polls
``session.pop_alerts()`` until the matching alert arrives or its timeout passes
(:class:`LtTimeout`). Alerts that arrive on the way are not lost for debugging: every DHT
packet the node sends or receives is kept in :attr:`LtNode.packets` (from
``dht_pkt_alert``) and the DHT log lines in :attr:`LtNode.log`.

Facts about the libtorrent 2.1.1 Python bindings that shaped this module (checked by
``test_lt_harness.py``):

* There is no ``session.dht_direct_request``, so libtorrent cannot be made to send an
  arbitrary KRPC query from Python. What it *can* send to an endpoint we choose:
  ``add_dht_node`` (a ``get_peers``, or a ``ping`` when the bucket is full; see
  :meth:`LtNode.probe`) and ``dht_sample_infohashes`` (see :meth:`LtNode.sample_infohashes`).
* ``dht_get_peers`` posts one ``dht_get_peers_reply_alert`` per answer that carried
  ``values``, and none at all when no peer is found; the end of the lookup is only
  visible in the DHT log ("[n] COMPLETED"), so the log category must be enabled.
* ``dht_announce`` posts no alert of its own; completion is read from the log and from
  the replies to the ``announce_peer`` packets.
* ``dht_get_mutable_item`` posts a non-authoritative alert per answer and one final
  authoritative alert; a missing item arrives as item ``b''``, seq 0, "<uninitialized>".
* ``dht_put_mutable_item(secret64, public32, data, salt)`` stores ``data`` as a bencoded
  *string*, picks ``seq`` itself (highest seen + 1) and wants the 64-byte *expanded*
  Ed25519 secret key (SHA-512 of the seed, clamped), not the RFC 8032 seed.
* The node ID cannot be chosen: without a known external address libtorrent ignores a
  stored ID and draws a random one. It is read back with ``save_state``
  (``session_state().dht_state.nids`` raises a Boost.Python conversion error).
"""

from __future__ import annotations

import contextlib
import hashlib
import re
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, NamedTuple

import libtorrent as lt
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from btchat.codec.bencode import DecodeError, decode

__all__ = [
    "LOOPBACK",
    "LOOPBACK6",
    "Exchange",
    "LtError",
    "LtNode",
    "LtSwarm",
    "LtTimeout",
    "MutableItem",
    "MutablePut",
    "Packet",
    "SampleInfohashes",
    "ed25519_keypair",
    "lt_settings",
]

LOOPBACK = "127.0.0.1"
LOOPBACK6 = "::1"
DEFAULT_TIMEOUT = 10.0
Addr = tuple[str, int]

_cat = lt.alert.category_t
#: dht_log is required: it carries dht_pkt_alert (raw packets) and the traversal log
#: lines that are the only end-of-lookup signal for get_peers and announce.
ALERT_MASK = int(
    _cat.dht_notification
    | _cat.dht_operation_notification
    | _cat.dht_log_notification
    | _cat.error_notification
    | _cat.status_notification
)

#: Settings applied to every node. Passed to the session constructor, so nothing with
#: default settings (bootstrap to dht.libtorrent.org:25401, UPnP, NAT-PMP, LSD) ever runs.
_BASE_SETTINGS: dict[str, Any] = {
    "enable_dht": True,
    "dht_bootstrap_nodes": "",  # default is dht.libtorrent.org:25401
    "enable_lsd": False,
    "enable_upnp": False,
    "enable_natpmp": False,
    "enable_ip_notifier": False,
    # Every node of the swarm, and our own node, shares the address 127.0.0.1.
    "dht_restrict_routing_ips": False,  # else only one routing-table entry per IP
    "dht_restrict_search_ips": False,  # else only one lookup candidate per IP
    "dht_enforce_node_id": False,
    "dht_prefer_verified_node_ids": False,
    "dht_ignore_dark_internet": False,
    # The DoS blocker counts queries per source IP; with everyone on 127.0.0.1 the default
    # (5/s, i.e. ~50 in a burst) silently blacklists the whole swarm for 300 s.
    "dht_block_ratelimit": 1_000_000,
    "dht_block_timeout": 1,
    "dht_upload_rate_limit": 100_000_000,  # default 8000 bytes/s
    # A node that stops answering (e.g. a closed test socket: libtorrent ignores ICMP
    # port-unreachable) stalls every lookup near it for libtorrent's fixed 15 s RPC
    # timeout. With the default of 20 failures it is never evicted in a test's lifetime;
    # with 2 it is gone after the first stalled lookup.
    "dht_max_fail_count": 2,
    "alert_mask": ALERT_MASK,
    "alert_queue_size": 100_000,  # default 2000; the DHT log fills it quickly
}
#: Setting names that only some libtorrent versions have; silently dropped if unknown.
_OPTIONAL = frozenset({"dht_prefer_verified_node_ids", "dht_ignore_dark_internet"})

_PKT_RE = re.compile(r"^(==>|<==) \[(.*):(\d+)\]")
_NEW_RE = re.compile(r"^DHT traversal: \[(\d+)\] NEW target: ([0-9a-f]{40})")
_DONE_RE = re.compile(r"^DHT traversal: \[(\d+)\] COMPLETED .*type: (\S+)")
_ANNOUNCE_RE = re.compile(r"^DHT node: sending announce_peer \[ ih: ([0-9a-f]{40}) .*nodes: (\d+)")

# dht_announce flags (libtorrent::dht::announce_flags_t); the bindings export no names.
ANNOUNCE_SEED = 1
ANNOUNCE_IMPLIED_PORT = 2


class LtError(RuntimeError):
    """A libtorrent operation failed."""


class LtTimeout(LtError, TimeoutError):
    """The alert we were waiting for did not arrive in time."""


@dataclass(frozen=True, slots=True)
class Packet:
    """One KRPC datagram seen by a libtorrent node (from ``dht_pkt_alert``)."""

    seq: int  # position in this node's packet log, strictly increasing
    direction: str  # "in" (received by libtorrent) or "out" (sent by it)
    addr: Addr  # the remote endpoint
    raw: bytes
    msg: dict[bytes, Any] | None  # ``raw`` decoded with our strict decoder, None if invalid

    @property
    def kind(self) -> bytes | None:
        """``y``: b"q", b"r" or b"e" (None if undecodable)."""
        return None if self.msg is None else self.msg.get(b"y")

    @property
    def tid(self) -> bytes | None:
        return None if self.msg is None else self.msg.get(b"t")

    @property
    def query(self) -> bytes | None:
        return None if self.msg is None else self.msg.get(b"q")


class Exchange(NamedTuple):
    """A query libtorrent sent to some endpoint and the reply it received."""

    query: dict[bytes, Any]
    response: dict[bytes, Any]


class MutableItem(NamedTuple):
    value: Any  # the bdecoded ``v``
    seq: int
    signature: bytes


class MutablePut(NamedTuple):
    public_key: bytes
    seq: int
    signature: bytes
    num_success: int  # how many nodes acknowledged the put


class SampleInfohashes(NamedTuple):
    interval: int
    num: int
    samples: list[bytes]
    nodes: list[tuple[bytes, Addr]]
    response: dict[bytes, Any] | None  # the raw reply, if it was captured


def lt_settings(port: int = 0, host: str = LOOPBACK, **overrides: Any) -> dict[str, Any]:
    """The settings pack for a loopback-only DHT node listening on ``port`` (0: OS picks);
    on ``host`` ::1 it takes part in the IPv6 DHT (BEP 32)."""
    known = lt.default_settings()
    settings = {k: v for k, v in _BASE_SETTINGS.items() if k in known or k not in _OPTIONAL}
    settings["listen_interfaces"] = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    unknown = set(overrides) - set(known)
    if unknown:
        raise KeyError(f"unknown libtorrent settings: {sorted(unknown)}")
    settings.update(overrides)
    return settings


def ed25519_keypair(seed: bytes) -> tuple[bytes, bytes]:
    """Return ``(public_key, lt_secret_key)`` for a 32-byte RFC 8032 seed.

    libtorrent (orlp/ed25519) keeps the *expanded* secret: SHA-512(seed) with the scalar
    clamped. Signatures made with it equal those of ``cryptography`` for the same seed.
    """
    if len(seed) != 32:
        raise ValueError("Ed25519 seed must be 32 bytes")
    h = bytearray(hashlib.sha512(seed).digest())
    h[0] &= 248
    h[31] &= 63
    h[31] |= 64
    public = Ed25519PrivateKey.from_private_bytes(seed).public_key().public_bytes_raw()
    return public, bytes(h)


def _sha1(b: bytes) -> lt.sha1_hash:
    if len(b) != 20:
        raise ValueError("expected a 20-byte hash")
    return lt.sha1_hash(b)


class LtNode:
    """One libtorrent session running a DHT node on 127.0.0.1 (or ``host``, e.g. ::1)."""

    def __init__(
        self, port: int = 0, *, history: int = 20_000, host: str = LOOPBACK, **settings: Any
    ) -> None:
        started = time.monotonic()
        self.session: lt.session | None = lt.session(lt_settings(port, host, **settings))
        self.packets: deque[Packet] = deque(maxlen=history)
        self.log: deque[str] = deque(maxlen=history)
        self._pkt_seq = 0
        self._log_count = 0
        self.port = self._wait_listen_port(port)
        self.addr: Addr = (host, self.port)
        self.startup_seconds = time.monotonic() - started

    # -- plumbing ----------------------------------------------------------------------

    @property
    def _ses(self) -> lt.session:
        if self.session is None:
            raise LtError("node is closed")
        return self.session

    def _wait_listen_port(self, requested: int, timeout: float = 5.0) -> int:
        port = self._ses.listen_port()
        deadline = time.monotonic() + timeout
        while not port:
            for a in self._pump(0.05):
                if isinstance(a, lt.listen_failed_alert):
                    raise LtError(f"libtorrent could not listen: {a.message()}")
            port = self._ses.listen_port()
            if time.monotonic() > deadline:
                raise LtTimeout("libtorrent did not report a listen port")
        if requested and port != requested:
            raise LtError(f"asked for port {requested}, libtorrent bound {port}")
        return port

    def _pump(self, wait: float = 0.0) -> list[Any]:
        """Pop pending alerts (waiting up to ``wait`` s for one), recording packets and log."""
        ses = self._ses
        if wait > 0:
            ses.wait_for_alert(max(1, int(wait * 1000)))
        alerts = ses.pop_alerts()
        for a in alerts:
            if isinstance(a, lt.dht_pkt_alert):
                self._record_packet(a)
            elif isinstance(a, lt.dht_log_alert):
                self.log.append(a.message())
                self._log_count += 1
        return alerts

    def _record_packet(self, a: Any) -> None:
        m = _PKT_RE.match(a.message())
        if m is None:  # pragma: no cover - format of libtorrent 2.x
            return
        raw = bytes(a.pkt_buf)
        try:
            msg = decode(raw)
        except DecodeError:
            msg = None
        if not isinstance(msg, dict):
            msg = None
        self._pkt_seq += 1
        direction = "out" if m.group(1) == "==>" else "in"
        self.packets.append(
            # libtorrent writes an IPv6 endpoint as [[::1]:port]
            Packet(self._pkt_seq, direction, (m.group(2).strip("[]"), int(m.group(3))), raw, msg)
        )

    def drain(self) -> None:
        """Consume queued alerts (still recording packets and log lines)."""
        self._pump(0)

    def _batches(self, timeout: float, what: str) -> Iterator[list[Any]]:
        """Yield batches of alerts until the caller stops; LtTimeout after ``timeout``."""
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise LtTimeout(f"{what}: nothing within {timeout:g} s")
            yield self._pump(min(remaining, 0.05))

    def _wait_for(self, pred: Callable[[Any], bool], timeout: float, what: str) -> Any:
        for batch in self._batches(timeout, what):
            for a in batch:
                if pred(a):
                    return a
        raise AssertionError("unreachable")  # pragma: no cover

    def _new_log_lines(self, mark: int) -> tuple[list[str], int]:
        """Log lines recorded since ``mark`` (a previous ``_log_count``), and the new mark."""
        n = min(self._log_count - mark, len(self.log))
        lines = list(self.log)[len(self.log) - n :] if n else []
        return lines, self._log_count

    def wait_for_packet(
        self,
        pred: Callable[[Packet], bool],
        timeout: float = DEFAULT_TIMEOUT,
        *,
        since: int = 0,
    ) -> Packet:
        """The first recorded packet after sequence ``since`` that satisfies ``pred``."""
        deadline = time.monotonic() + timeout
        while True:
            for p in self.packets:
                if p.seq > since and pred(p):
                    return p
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise LtTimeout(f"no matching packet within {timeout:g} s")
            self._pump(min(remaining, 0.05))

    @property
    def last_packet_seq(self) -> int:
        """Sequence number of the newest recorded packet (0 if none); for ``since=``."""
        self.drain()
        return self._pkt_seq

    def _reply_to(self, out: Packet, timeout: float) -> Packet:
        return self.wait_for_packet(
            lambda p: (
                p.direction == "in"
                and p.addr == out.addr
                and p.kind in (b"r", b"e")
                and p.tid == out.tid
            ),
            timeout,
            since=out.seq,
        )

    # -- identity and routing table --------------------------------------------------

    def node_id(self) -> bytes:
        """This node's 160-bit DHT ID (random; libtorrent does not let us pick it)."""
        state = self._ses.save_state(lt.save_state_flags_t.save_dht_state)
        entries = state[b"dht state"][b"node-id"]
        # Either one 20-byte ID or a list of ID + packed listen address, one per socket.
        first = entries if isinstance(entries, bytes) else entries[0]
        return bytes(first[:20])

    def add_node(self, host: str, port: int) -> None:
        """``add_dht_node``: libtorrent queries the endpoint and adds it if it answers."""
        self._ses.add_dht_node((host, port))

    def routing_table(self, timeout: float = DEFAULT_TIMEOUT) -> list[tuple[bytes, Addr]]:
        """Live routing-table entries as ``(node_id, (host, port))``."""
        self.drain()
        nid = self.node_id()
        self._ses.dht_live_nodes(_sha1(nid))
        a = self._wait_for(lambda a: isinstance(a, lt.dht_live_nodes_alert), timeout, "live nodes")
        return [(n["nid"].to_bytes(), tuple(n["endpoint"])) for n in a.nodes]

    def routing_table_size(self, timeout: float = DEFAULT_TIMEOUT) -> int:
        """Number of nodes in the routing table (``dht_stats_alert``)."""
        self.drain()
        self._ses.post_dht_stats()
        a = self._wait_for(lambda a: isinstance(a, lt.dht_stats_alert), timeout, "dht stats")
        return sum(b["num_nodes"] for b in a.routing_table)

    # -- libtorrent as a client of an arbitrary endpoint -----------------------------

    def probe(self, addr: Addr, timeout: float = DEFAULT_TIMEOUT) -> Exchange:
        """Make libtorrent query ``addr`` (via add_dht_node); return its query and the reply.

        libtorrent picks the query: ``get_peers`` for a random target in the bucket the
        node would fall in, or ``ping`` if that bucket is full.
        """
        since = self.last_packet_seq
        self.add_node(*addr)
        out = self.wait_for_packet(
            lambda p: p.direction == "out" and p.addr == addr and p.kind == b"q",
            timeout,
            since=since,
        )
        reply = self._reply_to(out, timeout)
        assert out.msg is not None
        if reply.msg is None:
            raise LtError(f"reply from {addr} is not valid bencode: {reply.raw!r}")
        return Exchange(out.msg, reply.msg)

    def sample_infohashes(
        self, addr: Addr, target: bytes, timeout: float = DEFAULT_TIMEOUT
    ) -> SampleInfohashes:
        """BEP 51 query straight to ``addr``; returns what libtorrent parsed from the reply."""
        since = self.last_packet_seq
        self._ses.dht_sample_infohashes(addr, _sha1(target))
        a = self._wait_for(
            lambda a: isinstance(a, lt.dht_sample_infohashes_alert) and tuple(a.endpoint) == addr,
            timeout,
            "sample_infohashes",
        )
        raw: dict[bytes, Any] | None = None
        outs = [
            p
            for p in self.packets
            if p.seq > since and p.direction == "out" and p.addr == addr
            if p.query == b"sample_infohashes"
        ]
        if outs:
            with contextlib.suppress(LtTimeout):
                raw = self._reply_to(outs[0], 0.5).msg
        return SampleInfohashes(
            interval=int(a.interval.total_seconds()),
            num=a.num_infohashes,
            samples=[h.to_bytes() for h in a.samples],
            nodes=[(n["nid"].to_bytes(), tuple(n["endpoint"])) for n in a.nodes],
            response=raw,
        )

    def direct_request(
        self, addr: Addr, query: dict[bytes, Any], timeout: float = DEFAULT_TIMEOUT
    ) -> dict[bytes, Any]:
        """Send a KRPC query to ``addr`` and return the raw reply.

        The libtorrent 2.1 Python bindings have no ``dht_direct_request``; only the
        ``sample_infohashes`` query can be aimed at an endpoint (``a.target`` is used; the
        other arguments are libtorrent's own). For anything else use :meth:`probe`.
        """
        q = query.get(b"q")
        if q != b"sample_infohashes":
            raise NotImplementedError(
                f"libtorrent {lt.__version__} Python bindings lack dht_direct_request; "
                f"cannot send {q!r}. Use probe() (get_peers/ping) or sample_infohashes()."
            )
        result = self.sample_infohashes(addr, query[b"a"][b"target"], timeout)
        if result.response is None:
            raise LtError("reply to sample_infohashes was not captured")
        return result.response

    # -- BEP 5 ---------------------------------------------------------------------

    def announce(
        self,
        infohash: bytes,
        port: int = 0,
        *,
        seed: bool = False,
        implied_port: bool = False,
        timeout: float = DEFAULT_TIMEOUT,
    ) -> int:
        """``dht_announce``; returns how many nodes accepted our ``announce_peer``.

        Returns once every ``announce_peer`` libtorrent sent was answered. ``port`` 0
        announces the node's own listen port; ``implied_port`` makes receivers store the
        UDP source port instead.
        """
        self.drain()
        since = self._pkt_seq
        hexhash = infohash.hex()
        flags = (ANNOUNCE_SEED if seed else 0) | (ANNOUNCE_IMPLIED_PORT if implied_port else 0)
        self._ses.dht_announce(_sha1(infohash), port, flags)
        mark = self._log_count
        expected: int | None = None
        traversals: set[str] = set()
        for _ in self._batches(timeout, f"announce {hexhash}"):
            lines, mark = self._new_log_lines(mark)
            for line in lines:
                if (m := _NEW_RE.match(line)) and m.group(2) == hexhash:
                    traversals.add(m.group(1))
                elif (m := _ANNOUNCE_RE.match(line)) and m.group(1) == hexhash:
                    expected = int(m.group(2))
                elif (m := _DONE_RE.match(line)) and m.group(1) in traversals and expected is None:
                    return 0  # lookup finished without anyone to announce to
            if expected is not None:
                answered, stored = self._announce_replies(infohash, since)
                if answered >= expected:
                    return stored
        raise AssertionError("unreachable")  # pragma: no cover

    def _announce_replies(self, infohash: bytes, since: int) -> tuple[int, int]:
        """(replies, non-error replies) to our announce_peer packets for ``infohash``."""
        sent = {
            (p.addr, p.tid)
            for p in self.packets
            if p.seq > since and p.direction == "out" and p.query == b"announce_peer"
            if p.msg is not None and p.msg.get(b"a", {}).get(b"info_hash") == infohash
        }
        kinds = [
            p.kind
            for p in self.packets
            if p.seq > since and p.direction == "in" and p.kind in (b"r", b"e")
            if (p.addr, p.tid) in sent
        ]
        return len(kinds), kinds.count(b"r")

    def get_peers(self, infohash: bytes, timeout: float = DEFAULT_TIMEOUT) -> list[Addr]:
        """Full ``get_peers`` lookup; every peer any node returned, in order of arrival."""
        self.drain()
        hexhash = infohash.hex()
        self._ses.dht_get_peers(_sha1(infohash))
        mark = self._log_count
        traversals: set[str] = set()
        peers: list[Addr] = []
        what = f"get_peers {hexhash} (a silent node in the routing table stalls lookups 15 s)"
        for batch in self._batches(timeout, what):
            for a in batch:
                if (
                    isinstance(a, lt.dht_get_peers_reply_alert)
                    and a.info_hash.to_bytes() == infohash
                ):
                    peers.extend(tuple(p) for p in a.peers() if tuple(p) not in peers)
            lines, mark = self._new_log_lines(mark)
            for line in lines:
                if (m := _NEW_RE.match(line)) and m.group(2) == hexhash:
                    traversals.add(m.group(1))
                elif (m := _DONE_RE.match(line)) and m.group(1) in traversals:
                    return peers
        raise AssertionError("unreachable")  # pragma: no cover

    # -- BEP 44 --------------------------------------------------------------------

    def put_immutable(
        self, value: Any, *, timeout: float = DEFAULT_TIMEOUT, require_success: bool = True
    ) -> bytes:
        """Store a bencodable value (bytes/int/list/dict with bytes keys); return its target."""
        self.drain()
        target = self._ses.dht_put_immutable_item(value).to_bytes()
        a = self._wait_for(
            lambda a: isinstance(a, lt.dht_put_alert) and a.target.to_bytes() == target,
            timeout,
            "put immutable",
        )
        if require_success and a.num_success == 0:
            raise LtError(f"immutable put stored on no node: {a.message()}")
        return target

    def get_immutable(self, target: bytes, timeout: float = DEFAULT_TIMEOUT) -> Any | None:
        """The value stored under ``target``, or None if the lookup found nothing."""
        self.drain()
        self._ses.dht_get_immutable_item(_sha1(target))
        a = self._wait_for(
            lambda a: isinstance(a, lt.dht_immutable_item_alert) and a.target.to_bytes() == target,
            timeout,
            "get immutable",
        )
        if "<uninitialized>" in a.message():
            return None
        return a.item

    def put_mutable(
        self,
        key: bytes,
        value: bytes,
        salt: bytes = b"",
        *,
        public_key: bytes | None = None,
        timeout: float = DEFAULT_TIMEOUT,
        require_success: bool = True,
    ) -> MutablePut:
        """Store a mutable item. ``key`` is a 32-byte seed, or libtorrent's 64-byte secret
        together with ``public_key``. ``value`` must be bytes (stored as a bencoded string);
        libtorrent chooses ``seq`` = highest seq currently in the DHT + 1.
        """
        if len(key) == 32:
            public, secret = ed25519_keypair(key)
            if public_key is not None and public_key != public:
                raise ValueError("public_key does not belong to the seed")
        elif len(key) == 64 and public_key is not None and len(public_key) == 32:
            public, secret = public_key, key
        else:
            raise ValueError("key must be a 32-byte seed, or a 64-byte secret with public_key")
        if not isinstance(value, bytes):
            raise TypeError("the Python bindings can only put a byte string as mutable value")
        self.drain()
        self._ses.dht_put_mutable_item(secret, public, value, salt)
        a = self._wait_for(
            lambda a: isinstance(a, lt.dht_put_alert) and a.public_key == public and a.salt == salt,
            timeout,
            "put mutable",
        )
        if require_success and a.num_success == 0:
            raise LtError(f"mutable put stored on no node: {a.message()}")
        return MutablePut(public, a.seq, a.signature, a.num_success)

    def get_mutable(
        self, public_key: bytes, salt: bytes = b"", timeout: float = DEFAULT_TIMEOUT
    ) -> MutableItem | None:
        """The freshest item found by a full lookup, or None. (value, seq, signature)."""
        self.drain()
        self._ses.dht_get_mutable_item(public_key, salt)
        a = self._wait_for(
            lambda a: (
                isinstance(a, lt.dht_mutable_item_alert)
                and a.authoritative
                and a.key == public_key
                and a.salt == salt
            ),
            timeout,
            "get mutable",
        )
        if "<uninitialized>" in a.message():
            return None
        return MutableItem(a.item, a.seq, a.signature)

    # -- lifecycle -----------------------------------------------------------------

    def close(self) -> None:
        """Destroy the session (the destructor blocks until libtorrent has shut down)."""
        ses, self.session = self.session, None
        if ses is not None:
            ses.pause()
            del ses

    def __enter__(self) -> LtNode:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"LtNode({self.addr[0]}:{self.addr[1]})"


class LtSwarm:
    """``n`` libtorrent DHT nodes on loopback, each told about every other one.

    On entry, waits until every node's routing table holds at least ``min(n - 1, 8)``
    nodes. ``node_settings`` are passed to every :class:`LtNode`.
    """

    def __init__(self, n: int = 8, *, timeout: float = DEFAULT_TIMEOUT, **node_settings: Any):
        if n < 1:
            raise ValueError("a swarm needs at least one node")
        self.n = n
        self.timeout = timeout
        self.node_settings = node_settings
        self.nodes: list[LtNode] = []
        self.startup_seconds: float | None = None

    @property
    def bootstrap_addr(self) -> Addr:
        return self.nodes[0].addr

    @property
    def addrs(self) -> list[Addr]:
        return [node.addr for node in self.nodes]

    def node_ids(self) -> dict[Addr, bytes]:
        return {node.addr: node.node_id() for node in self.nodes}

    def start(self) -> LtSwarm:
        started = time.monotonic()
        try:
            self.nodes = [LtNode(**self.node_settings) for _ in range(self.n)]
            for node in self.nodes:
                for other in self.nodes:
                    if other is not node:
                        node.add_node(*other.addr)
            self.wait_connected(min(self.n - 1, 8), self.timeout)
        except BaseException:
            self.close()
            raise
        self.startup_seconds = time.monotonic() - started
        return self

    def wait_connected(self, min_nodes: int, timeout: float = DEFAULT_TIMEOUT) -> None:
        """Block until every node has at least ``min_nodes`` routing-table entries."""
        deadline = time.monotonic() + timeout
        pending = list(self.nodes)
        while pending:
            pending = [n for n in pending if n.routing_table_size() < min_nodes]
            if not pending:
                return
            if time.monotonic() > deadline:
                raise LtTimeout(f"{len(pending)} of {self.n} nodes have < {min_nodes} contacts")
            time.sleep(0.02)

    def add_node_everywhere(self, host: str, port: int) -> None:
        """Tell every libtorrent node about ``(host, port)`` (e.g. our own node)."""
        for node in self.nodes:
            node.add_node(host, port)

    def close(self) -> None:
        for node in self.nodes:
            node.close()

    def __enter__(self) -> LtSwarm:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __iter__(self) -> Iterator[LtNode]:
        return iter(self.nodes)

    def __len__(self) -> int:
        return len(self.nodes)

    def __getitem__(self, i: int) -> LtNode:
        return self.nodes[i]
