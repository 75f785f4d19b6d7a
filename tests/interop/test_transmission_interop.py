"""Our DHT nodes and Transmission's (Debian ``transmission-daemon`` 3.00, which runs
Juliusz Chroboczek's jech/dht), both directions.

jech/dht drops packets from 127.0.0.0/8 as martian, so this runs in network namespaces
(``natlab.lab.build_lan``: one switch, hosts on 10.77.0.0/24, no route anywhere else):
a swarm of 16 of our nodes on 10.77.0.10 (``dht_clients.TappedSwarm``, which records
every packet an outsider exchanges with them) and transmission-daemon on 10.77.0.11.

How Transmission is pointed at us: it bootstraps only from the ``nodes`` of
``dht.dat`` in its config directory (a bencoded dict ``{"id": 20 bytes, "nodes":
compact IPv4 node infos}``, read in ``tr_dhtInit``), then from a ``dht.bootstrap`` file
of "host port" lines, then dht.transmissionbt.com. We write a dht.dat naming 8 of our
16 nodes. It will not search for a torrent's peers until its DHT is at least "poor"
(4 good nodes, more than 8 in all, ``tr_dhtStatus``), and jech/dht counts a node as good
only once it has answered one of its own queries: a single entry point never gets
there (it keeps asking that node for its neighbourhood and never pings what it
learned), which is why the dht.dat names eight.

We announce an infohash for a TCP port of the test's (``PeerListener``) and add its
magnet link, no tracker, over Transmission's JSON-RPC (LPD, PEX, uTP and port mapping
off; encryption "tolerated", so it opens with the plain handshake). Transmission must
ping our nodes, query nodes it learned only from our answers, connect to the announced
port with a BitTorrent handshake for the infohash (the proof it parsed our ``values``)
and announce itself with our tokens, where our own get_peers finds it. The other way
round our node pings Transmission, keeps it, and gets answers from it to find_node,
get_peers and announce_peer, including the peer we stored there (with ``implied_port``
it stores our UDP source port).

Root, iproute2 and nftables, as the NAT lab, and transmission-daemon; skipped without
them, failing under CI.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from harness import skip_unless_ci
from natlab.lab import LAN_ADDRS, Lab, lab_or_skip

from btchat.codec.bencode import encode
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

OURS, THEIRS = LAN_ADDRS[0], LAN_ADDRS[1]
PEER_PORT = 51413  # Transmission's TCP port and DHT (UDP) port, one number
RPC_PORT = 9091  # on 127.0.0.1 inside Transmission's namespace


@dataclass
class World:
    lab: Lab
    swarm: TappedSwarm
    listener: PeerListener
    infohash: bytes
    proc: subprocess.Popen[bytes]
    config: Path
    started: float
    bootstrap: list[Addr]  # the nodes of its dht.dat
    session_id: list[str] = field(default_factory=lambda: [""])

    @property
    def dht(self) -> Addr:
        return (THEIRS, PEER_PORT)

    def rpc(self, method: str, arguments: dict[str, Any]) -> dict[str, Any]:
        """One Transmission JSON-RPC call, with the X-Transmission-Session-Id dance."""
        body = json.dumps({"method": method, "arguments": arguments}).encode()
        url = f"http://127.0.0.1:{RPC_PORT}/transmission/rpc"
        with self.lab.inside(self.lab.ns("lan1")):
            for _ in range(3):
                headers = {"X-Transmission-Session-Id": self.session_id[0]}
                request = urllib.request.Request(url, body, headers)
                try:
                    with urllib.request.urlopen(request, timeout=5) as response:
                        answer: dict[str, Any] = json.load(response)
                        return answer
                except urllib.error.HTTPError as exc:
                    if exc.code != 409:
                        raise
                    self.session_id[0] = exc.headers["X-Transmission-Session-Id"]
        raise AssertionError("Transmission kept refusing the session id")

    def log(self) -> str:
        path = self.config / "daemon.log"
        lines = path.read_text(errors="replace").splitlines() if path.exists() else []
        return "\n".join(lines[-60:])

    def node_id(self) -> bytes:
        """Transmission's node ID, as it says in its queries."""
        queries = wait_until(lambda: self.swarm.queries_from(self.dht), 20, "a query from it")
        node_id = queries[0].body[b"id"]
        assert isinstance(node_id, bytes) and len(node_id) == 20
        return node_id


def _settings(config: Path) -> dict[str, Any]:
    return {
        "bind-address-ipv4": THEIRS,
        "dht-enabled": True,
        "download-dir": str(config / "download"),
        "encryption": 0,  # tolerated: the plain handshake first
        "incomplete-dir-enabled": False,
        "lpd-enabled": False,
        "message-level": 3,
        "peer-port": PEER_PORT,
        "peer-port-random-on-start": False,
        "pex-enabled": False,
        "port-forwarding-enabled": False,
        "rpc-authentication-required": False,
        "rpc-bind-address": "127.0.0.1",
        "rpc-enabled": True,
        "rpc-host-whitelist-enabled": False,
        "rpc-port": RPC_PORT,
        "rpc-whitelist-enabled": False,
        "start-added-torrents": True,
        "utp-enabled": False,
    }


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    daemon = shutil.which("transmission-daemon")
    if daemon is None:
        skip_unless_ci("transmission-daemon is missing (scripts/setup installs it as root)")
    assert daemon is not None
    config = tmp_path_factory.mktemp("transmission")
    with lab_or_skip(lan=True) as lab:
        ns_ours = lab.ns("lan0")
        swarm = TappedSwarm(16, OURS, inside=lambda: lab.inside(ns_ours))
        listener = PeerListener(OURS, inside=lambda: lab.inside(ns_ours))
        proc = None
        try:
            infohash = os.urandom(20)
            stored = swarm.call(swarm.ours.announce(infohash, listener.addr[1]))
            assert stored.stored_at >= 5
            bootstrap = [s.addr for s in swarm.services[:8]]
            nodes = b"".join(
                socket.inet_aton(ip) + port.to_bytes(2, "big") for ip, port in bootstrap
            )
            (config / "dht.dat").write_bytes(encode({b"id": os.urandom(20), b"nodes": nodes}))
            (config / "settings.json").write_text(json.dumps(_settings(config)))
            with (config / "daemon.log").open("wb") as log:
                argv = ["ip", "netns", "exec", lab.ns("lan1"), "env", "TR_DHT_VERBOSE=1"]
                argv += [daemon, "-f", "-g", str(config), "--log-debug"]
                proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT)
            world = World(lab, swarm, listener, infohash, proc, config, time.monotonic(), bootstrap)
            wait_until(lambda: _answers(world), 15, "Transmission's RPC")
            added = world.rpc("torrent-add", {"filename": f"magnet:?xt=urn:btih:{infohash.hex()}"})
            assert added["result"] == "success", added
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


def _answers(world: World) -> bool:
    try:
        return world.rpc("session-get", {})["result"] == "success"
    except OSError:
        return False


def _explain(world: World) -> str:
    return f"transmission-daemon exit {world.proc.poll()}; its log ends:\n{world.log()}"


# ------------------------------------------------------- Transmission queries us


def test_transmission_joins_the_dht_through_our_nodes(world: World) -> None:
    swarm, them = world.swarm, world.dht
    pinged = wait_until(
        lambda: {q.node for q, _ in swarm.answered(them, b"ping")} >= set(world.bootstrap[:4]),
        30,
        "Transmission's pings of its dht.dat nodes answered",
    )
    assert pinged
    for _, reply in swarm.answered(them, b"ping"):
        assert reply.kind == b"r"
    # Nodes of ours it can only have learned from our find_node/get_peers answers.
    learned = wait_until(
        lambda: {q.node for q in swarm.queries_from(them)} - set(world.bootstrap),
        45,
        "queries to nodes our answers named",
    )
    assert learned, _explain(world)
    for method in (b"find_node", b"get_peers"):
        for _, reply in swarm.answered(them, method):
            assert reply.kind == b"r" and isinstance(reply.body[b"nodes"], bytes)


def test_transmission_connects_to_the_peer_we_announced(world: World) -> None:
    got = wait_until(
        lambda: world.listener.handshakes(world.infohash), 60, "Transmission's handshake"
    )
    at, peer = got[0]
    assert peer[0] == THEIRS
    print(f"Transmission connected to the announced peer {at - world.started:.1f} s after start")
    for query, reply in world.swarm.answered(world.dht, b"get_peers"):
        if query.body[b"info_hash"] == world.infohash:
            assert reply.kind == b"r" and isinstance(reply.body[b"token"], bytes)


def test_transmission_announces_to_us_and_we_find_it(world: World) -> None:
    swarm = world.swarm
    announces = wait_until(
        lambda: swarm.answered(world.dht, b"announce_peer"), 30, "Transmission's announce_peer"
    )
    for query, reply in announces:
        assert query.body[b"info_hash"] == world.infohash
        assert reply.kind == b"r", reply.msg  # our token, accepted
    found = swarm.call(swarm.ours.get_peers(world.infohash))
    assert (THEIRS, PEER_PORT) in found.peers


# -------------------------------------------------------- we query Transmission


def test_we_ping_transmission_and_keep_it(world: World) -> None:
    check_ping_and_kept(world.swarm, world.dht, world.node_id())


def test_transmission_answers_our_find_node_and_get_peers(world: World) -> None:
    check_find_node_and_get_peers(world.swarm, world.dht, world.node_id())


def test_transmission_stores_our_announce_and_hands_it_out(world: World) -> None:
    check_stores_our_announce(world.swarm, world.dht, world.node_id(), OURS)


def test_transmission_honours_implied_port(world: World) -> None:
    """jech/dht honours BEP 5's ``implied_port``: it stores our UDP source port, not the
    ``port`` argument."""
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
    assert [swarm.ours.addr] in stored


def test_no_errors_and_nothing_malformed_either_way(world: World) -> None:
    """Nothing either side sent was an error reply or failed to decode, and none of our
    nodes dropped a datagram as malformed."""
    packets = world.swarm.with_peer(world.dht)
    assert len(packets) >= 20
    assert [p.msg for p in packets if p.kind not in (b"q", b"r")] == []
    stats = world.swarm.on_loop(lambda: [dict(s.node.stats) for s in world.swarm.services])
    assert sum(s.get("rx_malformed", 0) for s in stats) == 0
