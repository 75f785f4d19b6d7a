"""Proof that the libtorrent harness works, and what libtorrent does on loopback.

A swarm of real libtorrent DHT nodes runs on 127.0.0.1; a tiny raw-UDP KRPC client
(:class:`RawKrpc`, built on our bencode codec) stands in for our own node until it is
ready. Nothing here touches any address but 127.0.0.1.
"""

from __future__ import annotations

import hashlib
import os
import queue
import socket
import struct
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest

lt = pytest.importorskip("libtorrent")

from cryptography.hazmat.primitives.asymmetric.ed25519 import (  # noqa: E402
    Ed25519PrivateKey,
    Ed25519PublicKey,
)

from btchat.codec.bencode import decode as strict_decode  # noqa: E402
from btchat.codec.bencode import encode  # noqa: E402
from btchat.dht.ids import decode_nodes, distance  # noqa: E402

from .lt_swarm import LOOPBACK, LtNode, LtSwarm, ed25519_keypair  # noqa: E402

pytestmark = pytest.mark.interop

Addr = tuple[str, int]
SWARM_SIZE = 8


Handler = Callable[[dict[bytes, Any], Addr], "dict[bytes, Any] | None"]


class RawKrpc:
    """A minimal KRPC endpoint on a UDP socket bound to 127.0.0.1.

    A background thread reads the socket: replies go to the waiting :meth:`query`,
    incoming queries are recorded in :attr:`queries` and answered with
    ``{"id": node_id, **handler(msg, addr)}`` (no answer if the handler returns None).
    The default handler answers everything like a ping. It keeps answering until
    :meth:`close`, because a silent node in a libtorrent routing table stalls lookups.
    Everything received must be canonical bencode (our strict decoder), or ``close``
    raises.
    """

    def __init__(self, node_id: bytes | None = None, handler: Handler | None = None) -> None:
        self.node_id = node_id or os.urandom(20)
        self.handler: Handler = handler or (lambda msg, addr: {})
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind((LOOPBACK, 0))
        self.sock.settimeout(0.05)
        self.addr: Addr = self.sock.getsockname()
        self.queries: list[tuple[dict[bytes, Any], Addr]] = []
        self.errors: list[BaseException] = []
        self._pending: dict[bytes, queue.Queue] = {}
        self._tid = 0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                data, src = self.sock.recvfrom(65536)
            except TimeoutError:
                continue
            except OSError:  # socket closed
                return
            try:
                msg = strict_decode(data)
                kind = msg[b"y"]
                if kind == b"q":
                    self.queries.append((msg, src))
                    r = self.handler(msg, src)
                    if r is not None:
                        self.send(
                            src, {b"t": msg[b"t"], b"y": b"r", b"r": {b"id": self.node_id, **r}}
                        )
                elif (waiter := self._pending.get(msg[b"t"])) is not None:
                    waiter.put((msg, src))
            except Exception as exc:  # surfaced by close()
                self.errors.append(exc)

    def send(self, addr: Addr, msg: dict[bytes, Any]) -> None:
        self.sock.sendto(encode(msg), addr)

    def query(
        self,
        addr: Addr,
        method: bytes,
        args: dict[bytes, Any] | None = None,
        *,
        extra: dict[bytes, Any] | None = None,
        timeout: float = 5.0,
    ) -> dict[bytes, Any]:
        with self._lock:
            self._tid = (self._tid + 1) % 65536
            tid = struct.pack("!H", self._tid)
        waiter: queue.Queue = queue.Queue()
        self._pending[tid] = waiter
        msg = {b"t": tid, b"y": b"q", b"q": method, b"a": {b"id": self.node_id, **(args or {})}}
        try:
            self.send(addr, {**msg, **(extra or {})})
            deadline = time.monotonic() + timeout
            while True:
                try:
                    reply, src = waiter.get(timeout=max(0.0, deadline - time.monotonic()))
                except queue.Empty:
                    raise TimeoutError(f"no reply to {method!r} from {addr}") from None
                if src == addr:
                    return reply
        finally:
            del self._pending[tid]

    def query_from(self, addr: Addr, tid: bytes) -> dict[bytes, Any]:
        """The query with transaction ID ``tid`` we received from ``addr``."""
        found = [q for q, src in self.queries if src == addr and q.get(b"t") == tid]
        assert found, f"no query {tid!r} from {addr}; got {self.queries}"
        return found[0]

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self.sock.close()
        if self.errors:
            raise self.errors[0]

    def __enter__(self) -> RawKrpc:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def compact(addr: Addr) -> bytes:
    return socket.inet_aton(addr[0]) + struct.pack("!H", addr[1])


@pytest.fixture(scope="module")
def swarm():
    with LtSwarm(SWARM_SIZE) as s:
        yield s


@pytest.fixture(scope="module")
def client(swarm):
    # Module-scoped and torn down before the swarm: the swarm learns this socket's address,
    # and a socket that goes quiet under a live swarm stalls its lookups (see test below).
    with RawKrpc() as c:
        yield c


# -- harness -----------------------------------------------------------------------


def test_swarm_starts_fast_and_meshes():
    t0 = time.monotonic()
    with LtSwarm(SWARM_SIZE) as s:
        elapsed = time.monotonic() - t0
        assert s.startup_seconds is not None and s.startup_seconds < 5.0, s.startup_seconds
        assert elapsed < 5.0
        assert len(s) == SWARM_SIZE
        assert all(host == LOOPBACK and port > 0 for host, port in s.addrs)
        assert len(set(s.addrs)) == SWARM_SIZE
        assert s.bootstrap_addr == s.nodes[0].addr
        ids = s.node_ids()
        for node in s:
            table = dict((addr, nid) for nid, addr in node.routing_table())
            others = {a: i for a, i in ids.items() if a != node.addr}
            assert others.items() <= table.items()
    t1 = time.monotonic()
    # Closing is quick too (libtorrent's destructor waits for its own shutdown).
    assert t1 - t0 - elapsed < 5.0


def test_settings_are_loopback_only(swarm):
    settings = swarm[0].session.get_settings()
    assert settings["dht_bootstrap_nodes"] == ""
    assert settings["listen_interfaces"] == "127.0.0.1:0"
    assert not settings["enable_upnp"]
    assert not settings["enable_natpmp"]
    assert not settings["enable_lsd"]
    assert not settings["dht_restrict_routing_ips"]
    assert not settings["dht_restrict_search_ips"]
    assert not settings["dht_enforce_node_id"]
    # Every packet any swarm node ever exchanged was with 127.0.0.1.
    for node in swarm:
        node.drain()
        assert {p.addr[0] for p in node.packets} <= {LOOPBACK}


# -- (a), (b): we query libtorrent ------------------------------------------------


def test_a_ping_returns_node_id(swarm, client):
    node = swarm[0]
    resp = client.query(node.addr, b"ping")
    assert resp[b"y"] == b"r"
    assert resp[b"r"][b"id"] == node.node_id()


def test_b_find_node_returns_compact_nodes(swarm, client):
    node = swarm[1]
    resp = client.query(node.addr, b"find_node", {b"target": os.urandom(20)})
    r = resp[b"r"]
    assert r[b"id"] == node.node_id()
    assert len(r[b"nodes"]) % 26 == 0 and r[b"nodes"]
    returned = {n.addr: n.node_id for n in decode_nodes(r[b"nodes"])}
    ids = swarm.node_ids()
    others = {a: i for a, i in ids.items() if a != node.addr}
    # libtorrent returns its 8 closest: all 7 other lt nodes, plus possibly ourselves.
    assert others.items() <= returned.items()
    assert set(returned) <= set(ids) | {client.addr}


# -- (c), (d), (e): libtorrent to libtorrent ----------------------------------------


def test_c_announce_then_get_peers(swarm):
    a, b = swarm[2], swarm[5]
    ih = os.urandom(20)
    acked = a.announce(ih, 6881)
    assert acked >= 1
    assert (LOOPBACK, 6881) in b.get_peers(ih)
    # Port 0 announces the node's own listen port.
    ih2 = os.urandom(20)
    assert a.announce(ih2) >= 1
    assert b.get_peers(ih2) == [a.addr]
    # implied_port: receivers store the UDP source port, not the given one.
    ih3 = os.urandom(20)
    assert a.announce(ih3, 7777, implied_port=True) >= 1
    assert b.get_peers(ih3) == [a.addr]
    # Nothing announced: the lookup completes with no peers (and no reply alert at all).
    assert b.get_peers(os.urandom(20)) == []


def test_d_immutable_put_get(swarm):
    a, b = swarm[3], swarm[6]
    value = {b"msg": b"hello from A", b"n": 42, b"l": [1, b"x"]}
    target = a.put_immutable(value)
    assert target == hashlib.sha1(encode(value)).digest()
    assert b.get_immutable(target) == value
    assert b.get_immutable(os.urandom(20)) is None


def test_e_mutable_put_get(swarm):
    a, b = swarm[4], swarm[7]
    seed = os.urandom(32)
    public, _secret = ed25519_keypair(seed)
    salt = b"chat-room"

    put1 = a.put_mutable(seed, b"first", salt)
    assert put1.public_key == public and put1.seq == 1 and put1.num_success >= 1
    got = b.get_mutable(public, salt)
    assert got is not None
    assert (got.value, got.seq, got.signature) == (b"first", 1, put1.signature)

    put2 = a.put_mutable(seed, b"second", salt)  # libtorrent bumps seq itself
    assert put2.seq == 2
    got = b.get_mutable(public, salt)
    assert got is not None and (got.value, got.seq) == (b"second", 2)

    # The signature is BEP 44's over "4:salt..3:seqi..e1:v..", and identical to the one
    # `cryptography` makes from the seed: the expanded-key conversion is right.
    signed = b"4:salt%d:%s3:seqi%de1:v%s" % (len(salt), salt, got.seq, encode(got.value))
    Ed25519PublicKey.from_public_bytes(public).verify(got.signature, signed)
    assert Ed25519PrivateKey.from_private_bytes(seed).sign(signed) == got.signature

    # Other salt, unknown key: nothing.
    assert b.get_mutable(public, b"other") is None
    assert b.get_mutable(os.urandom(32), b"") is None
    # No salt works too.
    assert a.put_mutable(seed, b"unsalted").seq == 1
    got = b.get_mutable(public)
    assert got is not None and got.value == b"unsalted"


# -- (f): libtorrent queries us ----------------------------------------------------


def test_f_lt_queries_our_socket_and_accepts_hand_made_reply(swarm, client):
    node = swarm[0]
    # The client answers with a bare ping response: {"t": .., "y": "r", "r": {"id": ..}}.
    exchange = node.probe(client.addr)
    query = client.query_from(node.addr, exchange.query[b"t"])

    assert query == exchange.query
    assert query[b"y"] == b"q" and query[b"a"][b"id"] == node.node_id()
    # add_dht_node makes libtorrent send get_peers (ping only when the bucket is full).
    assert query[b"q"] in (b"get_peers", b"ping")
    assert exchange.response == {b"t": query[b"t"], b"y": b"r", b"r": {b"id": client.node_id}}
    # libtorrent took the reply: we are now in its routing table.
    assert (client.node_id, client.addr) in node.routing_table()


def test_f_direct_sample_infohashes_to_our_socket(swarm, client):
    node = swarm[1]
    samples = os.urandom(40)
    other = (os.urandom(20), (LOOPBACK, 9))
    reply = {
        b"interval": 60,
        b"num": 7,
        b"samples": samples,
        b"nodes": other[0] + compact(other[1]),
    }
    target = os.urandom(20)
    client.handler = lambda msg, addr: reply if msg[b"q"] == b"sample_infohashes" else {}
    try:
        result = node.sample_infohashes(client.addr, target)
    finally:
        client.handler = lambda msg, addr: {}
    assert result.response is not None
    query = client.query_from(node.addr, result.response[b"t"])
    assert query[b"q"] == b"sample_infohashes" and query[b"a"][b"target"] == target
    assert result.interval == 60 and result.num == 7
    assert result.samples == [samples[:20], samples[20:]]
    assert result.nodes == [other]
    assert result.response is not None and result.response[b"r"][b"samples"] == samples
    # direct_request can emulate exactly this one query.
    client.handler = lambda msg, addr: reply if msg[b"q"] == b"sample_infohashes" else {}
    try:
        raw = node.direct_request(
            client.addr, {b"q": b"sample_infohashes", b"a": {b"target": target}}
        )
    finally:
        client.handler = lambda msg, addr: {}
    assert raw[b"y"] == b"r" and raw[b"r"][b"id"] == client.node_id
    assert raw[b"r"][b"samples"] == samples


def test_direct_request_is_not_in_the_bindings(swarm, client):
    assert not hasattr(swarm[0].session, "dht_direct_request")
    with pytest.raises(NotImplementedError):
        swarm[0].direct_request(client.addr, {b"q": b"ping", b"a": {}})


# -- what libtorrent does on the wire (answers for our own node) -------------------


def test_wire_facts_of_responses(swarm, client):
    node = swarm[2]
    resp = client.query(node.addr, b"ping")
    # Version "LT" + major + (minor << 4 | tiny): b"LT\x02\x11" for 2.1.1.
    assert resp[b"v"][:2] == b"LT" and len(resp[b"v"]) == 4
    # BEP 42 "ip": our compact address; also a non-standard "p" (our port) inside "r".
    assert resp[b"ip"] == compact(client.addr)
    assert resp[b"r"][b"p"] == client.addr[1]
    assert set(resp) == {b"t", b"y", b"r", b"ip", b"v"}

    gp = client.query(node.addr, b"get_peers", {b"info_hash": os.urandom(20)})
    assert set(gp[b"r"]) >= {b"id", b"token", b"nodes"} and len(gp[b"r"][b"token"]) == 4

    err = client.query(node.addr, b"no_such_method")
    assert err[b"y"] == b"e" and err[b"e"] == [203, b"unknown message"]
    assert err[b"r"][b"id"] == node.node_id()  # error replies carry an "r" with the ID
    bad = client.query(node.addr, b"ping", extra={b"a": {}})  # no "id"
    assert bad[b"y"] == b"e" and bad[b"e"] == [203, b"missing 'id' key"]


def test_wire_lt_answers_any_node_id_on_loopback():
    # Even with BEP 42 enforcement on, 127.0.0.0/8 is exempt ("is_local").
    with LtNode(dht_enforce_node_id=True) as node:
        for nid in (b"\x00" * 20, b"\xff" * 20, os.urandom(20)):
            with RawKrpc(nid) as c:
                assert c.query(node.addr, b"ping")[b"r"][b"id"] == node.node_id()
                node.probe(c.addr)
                assert (nid, c.addr) in node.routing_table()


def test_wire_lt_queries_have_no_ro_unless_read_only(swarm, client):
    query = swarm[3].probe(client.addr).query
    assert query == client.query_from(swarm[3].addr, query[b"t"])
    assert b"ro" not in query
    assert set(query) == {b"t", b"y", b"q", b"a", b"v"}
    with LtNode(dht_read_only=True) as ro:
        assert ro.probe(client.addr).query[b"ro"] == 1


def test_wire_lt_stores_and_returns_loopback_peers(swarm, client):
    # announce_peer from 127.0.0.1 is stored, and get_peers returns 127.0.0.1 peers.
    ih = os.urandom(20)
    # Store on the node closest to the infohash: a lookup stops at the 8 closest nodes,
    # and the swarm (8 lt nodes + this client) has 9.
    node = min(swarm, key=lambda n: distance(n.node_id(), ih))
    gp = client.query(node.addr, b"get_peers", {b"info_hash": ih})
    token = gp[b"r"][b"token"]
    ok = client.query(
        node.addr, b"announce_peer", {b"info_hash": ih, b"port": 5555, b"token": token}
    )
    assert ok[b"y"] == b"r"
    implied = client.query(
        node.addr,
        b"announce_peer",
        {b"info_hash": ih, b"port": 1, b"implied_port": 1, b"token": token},
    )
    assert implied[b"y"] == b"r"
    values = client.query(node.addr, b"get_peers", {b"info_hash": ih})[b"r"][b"values"]
    assert sorted(values) == sorted([compact((LOOPBACK, 5555)), compact(client.addr)])
    # And a libtorrent lookup finds them too.
    other = next(n for n in swarm if n is not node)
    assert set(other.get_peers(ih)) == {(LOOPBACK, 5555), client.addr}


def test_wire_harness_settings_survive_query_bursts(swarm, client):
    # All swarm nodes and our node share 127.0.0.1: with the default DoS blocker
    # (dht_block_ratelimit=5) a burst of ~50 queries gets the IP ignored for 5 minutes.
    node = swarm[5]
    for _ in range(150):
        assert client.query(node.addr, b"ping", timeout=2.0)[b"y"] == b"r"


def test_wire_default_dos_blocker_would_block_loopback(client):
    with LtNode(dht_block_ratelimit=5, dht_block_timeout=300) as node:
        answered = 0
        for _ in range(80):
            try:
                client.query(node.addr, b"ping", timeout=0.3)
                answered += 1
            except TimeoutError:
                break
        assert 10 < answered < 80


@pytest.mark.slow
def test_wire_silent_node_stalls_lookups_until_evicted():
    # libtorrent ignores ICMP port-unreachable, so a closed socket looks like a silent
    # node: each lookup that reaches it waits for the fixed 15 s RPC timeout. The harness
    # sets dht_max_fail_count=2, so the node is evicted by that first stalled lookup.
    with LtSwarm(3) as swarm:
        node = swarm[0]
        with RawKrpc() as gone:
            node.probe(gone.addr)
            assert gone.addr in [addr for _, addr in node.routing_table()]
        t0 = time.monotonic()
        assert node.get_peers(os.urandom(20), timeout=30) == []
        stalled = time.monotonic() - t0
        t1 = time.monotonic()
        assert node.get_peers(os.urandom(20), timeout=30) == []
        fast = time.monotonic() - t1
        assert 10 < stalled < 25, stalled
        assert fast < 2, fast
        assert gone.addr not in [addr for _, addr in node.routing_table()]
