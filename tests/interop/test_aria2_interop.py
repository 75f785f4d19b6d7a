"""Our DHT nodes and aria2's (Debian ``aria2``, its own C++ DHT), both directions.

A swarm of 12 of our nodes runs on 127.0.0.1 (``dht_clients.TappedSwarm``, which records
every packet an outsider exchanges with them). We announce an infohash for a TCP port of
the test's (``PeerListener``), then start ``aria2c`` on that infohash's magnet link with
DHT as its only source of peers: its one entry point is our first node, LPD and peer
exchange are off, the magnet names no tracker. aria2 must join through our node (ping,
then get_peers to nodes it learned only from our answers), connect to the announced
port with a BitTorrent handshake for the infohash (the proof it parsed our ``values``),
and announce itself to us with our tokens, where our own get_peers finds it. The other
way round our node pings aria2, keeps it in its routing table, and gets answers from it
to find_node, get_peers and announce_peer, including the peer we stored at aria2 (it
ignores ``implied_port`` and stores the ``port`` argument).

aria2 1.36.0 accepts a loopback entry point and loopback peers, so no namespace is
needed: its DHT socket is bound to 127.0.0.1 with the (hidden) ``--dht-listen-addr``
option and its TCP port with ``--interface``. Skipped where ``aria2c`` is missing
(``scripts/setup`` installs it as root); a failure under CI.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from harness import skip_unless_ci

from btchat.dht.ids import decode_peers

from .dht_clients import (
    Addr,
    PeerListener,
    TappedSwarm,
    check_find_node_and_get_peers,
    check_ping_and_kept,
    check_stores_our_announce,
    wait_until,
)

pytestmark = pytest.mark.interop

HOST = "127.0.0.1"


def _free_port(kind: int) -> int:
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


@dataclass
class World:
    swarm: TappedSwarm
    listener: PeerListener
    infohash: bytes
    proc: subprocess.Popen[bytes]
    dht: Addr  # aria2's DHT endpoint
    tcp_port: int  # its BitTorrent port
    started: float
    workdir: Path

    def log(self) -> str:
        path = self.workdir / "aria2.log"
        lines = path.read_text(errors="replace").splitlines() if path.exists() else []
        return "\n".join(line for line in lines[-60:] if "DHTTaskQueue" not in line)

    def node_id(self) -> bytes:
        """aria2's node ID, as it says in its queries."""
        queries = wait_until(lambda: self.swarm.queries_from(self.dht), 20, "a query from aria2")
        node_id = queries[0].body[b"id"]
        assert isinstance(node_id, bytes) and len(node_id) == 20
        return node_id


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    aria2c = shutil.which("aria2c")
    if aria2c is None:
        skip_unless_ci("aria2c is missing (apt-get install aria2; scripts/setup does as root)")
    assert aria2c is not None
    workdir = tmp_path_factory.mktemp("aria2")
    swarm = TappedSwarm(12, HOST)
    listener = PeerListener(HOST)
    proc = None
    try:
        infohash = os.urandom(20)
        stored = swarm.call(swarm.ours.announce(infohash, listener.addr[1]))
        assert stored.stored_at >= 5
        dht_port, tcp_port = _free_port(socket.SOCK_DGRAM), _free_port(socket.SOCK_STREAM)
        entry = swarm.ours.addr
        argv = [
            aria2c,
            "--no-conf=true",
            "--quiet=true",
            f"--dir={workdir / 'download'}",
            f"--log={workdir / 'aria2.log'}",
            "--log-level=info",
            "--enable-dht=true",
            "--enable-dht6=false",
            "--disable-ipv6=true",
            f"--dht-listen-addr={HOST}",
            f"--dht-listen-port={dht_port}",
            f"--dht-entry-point={entry[0]}:{entry[1]}",
            f"--dht-file-path={workdir / 'dht.dat'}",
            f"--interface={HOST}",
            f"--listen-port={tcp_port}",
            "--bt-enable-lpd=false",
            "--enable-peer-exchange=false",
            "--bt-save-metadata=false",
            "--bt-load-saved-metadata=false",
            f"magnet:?xt=urn:btih:{infohash.hex()}",
        ]
        proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        world = World(
            swarm, listener, infohash, proc, (HOST, dht_port), tcp_port, time.monotonic(), workdir
        )
        yield world
    finally:
        if proc is not None:
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)
        listener.close()
        swarm.close()


def _explain(world: World) -> str:
    return f"aria2 exit {world.proc.poll()}; its log ends:\n{world.log()}"


# ------------------------------------------------------------- aria2 queries us


def test_aria2_joins_the_dht_through_our_node(world: World) -> None:
    swarm, aria2 = world.swarm, world.dht
    entry = swarm.ours.addr
    pings = wait_until(lambda: swarm.answered(aria2, b"ping"), 20, "aria2's ping answered")
    assert pings[0][0].node == entry
    reply = pings[0][1]
    assert reply.kind == b"r" and reply.body[b"id"] == swarm.ours.node_id
    # Nodes it can only have learned from our find_node/get_peers answers.
    others = wait_until(
        lambda: {q.node for q, _ in swarm.answered(aria2, b"get_peers")} - {entry},
        30,
        "aria2's get_peers to nodes our answers named",
    )
    assert len(others) >= 3, _explain(world)
    for query, reply in swarm.answered(aria2, b"get_peers"):
        assert query.body[b"info_hash"] == world.infohash
        assert reply.kind == b"r" and isinstance(reply.body[b"token"], bytes)


def test_aria2_connects_to_the_peer_we_announced(world: World) -> None:
    got = wait_until(
        lambda: world.listener.handshakes(world.infohash), 45, "aria2's BitTorrent handshake"
    )
    at, peer = got[0]
    assert peer[0] == HOST
    print(f"aria2 connected to the announced peer {at - world.started:.1f} s after start")


def test_aria2_announces_to_us_and_we_find_it(world: World) -> None:
    swarm = world.swarm
    announces = wait_until(
        lambda: swarm.answered(world.dht, b"announce_peer"), 30, "aria2's announce_peer"
    )
    for query, reply in announces:
        assert query.body[b"info_hash"] == world.infohash
        assert query.body[b"port"] == world.tcp_port
        assert reply.kind == b"r", reply.msg  # our token, accepted
    found = swarm.call(swarm.ours.get_peers(world.infohash))
    assert (HOST, world.tcp_port) in found.peers


# --------------------------------------------------------------- we query aria2


def test_we_ping_aria2_and_keep_it(world: World) -> None:
    check_ping_and_kept(world.swarm, world.dht, world.node_id())


def test_aria2_answers_our_find_node_and_get_peers(world: World) -> None:
    check_find_node_and_get_peers(world.swarm, world.dht, world.node_id())


def test_aria2_stores_our_announce_and_hands_it_out(world: World) -> None:
    check_stores_our_announce(world.swarm, world.dht, world.node_id(), HOST)


def test_aria2_ignores_implied_port(world: World) -> None:
    """aria2 1.36 ignores BEP 5's ``implied_port``: it stores the ``port`` argument. So an
    implied-port announce must carry a real port too (the rendezvous sends its own)."""
    swarm = world.swarm
    their_id = world.node_id()
    infohash = their_id[:-1] + bytes([their_id[-1] ^ 4])  # they are among the closest
    swarm.call(swarm.ours.announce(infohash, 4343, implied_port=True))
    swarm.call(swarm.ours.get_peers(infohash))
    stored = [
        decode_peers(r.body.get(b"values", []))
        for q, r in swarm.replies_from(world.dht, b"get_peers")
        if q.body[b"info_hash"] == infohash
    ]
    assert [(HOST, 4343)] in stored


def test_no_errors_and_nothing_malformed_either_way(world: World) -> None:
    """Nothing either side sent was an error reply or failed to decode, and none of our
    nodes dropped a datagram as malformed."""
    packets = world.swarm.with_peer(world.dht)
    assert len(packets) >= 20
    assert [p.msg for p in packets if p.kind not in (b"q", b"r")] == []
    stats = world.swarm.on_loop(lambda: [dict(s.node.stats) for s in world.swarm.services])
    assert sum(s.get("rx_malformed", 0) for s in stats) == 0
