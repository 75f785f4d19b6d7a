"""The asyncio shell on real loopback sockets: restarts, hostile input, a 1000-node sandbox."""

from __future__ import annotations

import asyncio
import json
import os
import socket
from pathlib import Path

import pytest

from btchat.codec.bencode import encode
from btchat.net.dht_service import STATE_FILE, DhtError, DhtService
from btchat.sandbox import SANDBOX_CONFIG, start_swarm


async def test_restart_restores_id_and_contacts_without_bootstrap(tmp_path: Path) -> None:
    swarm = await start_swarm(20, seed=1)
    try:
        first = await DhtService.start(host="127.0.0.1", config=SANDBOX_CONFIG, state_dir=tmp_path)
        await first.bootstrap([swarm.bootstrap_addr])
        node_id, contacts = first.node_id, len(first.node.routing)
        assert contacts > 0
        first.close()
        saved = json.loads((tmp_path / STATE_FILE).read_text())
        assert saved["node_id"] == node_id.hex()

        again = await DhtService.start(host="127.0.0.1", config=SANDBOX_CONFIG, state_dir=tmp_path)
        try:
            assert again.node_id == node_id
            assert len(again.node.routing) == contacts
            ih = os.urandom(20)
            await swarm.services[5].announce(ih, 3333)
            result = await again.get_peers(ih)  # no bootstrap call: the table was restored
            assert ("127.0.0.1", 3333) in result.peers
        finally:
            again.close()
    finally:
        swarm.close()


@pytest.mark.parametrize("content", ["{not json", "[]", '{"node_id": "zz", "routing": 5}'])
async def test_corrupt_state_file_means_a_fresh_start(tmp_path: Path, content: str) -> None:
    (tmp_path / STATE_FILE).write_text(content)
    service = await DhtService.start(host="127.0.0.1", state_dir=tmp_path)
    try:
        assert len(service.node_id) == 20 and len(service.node.routing) == 0
    finally:
        service.close()


async def test_hostile_datagrams_are_counted_and_the_node_keeps_serving() -> None:
    service = await DhtService.start(host="127.0.0.1", config=SANDBOX_CONFIG)
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    sock.settimeout(2.0)
    try:
        junk = [
            b"",
            b"\xff" * 100,
            b"d1:y1:qe",
            b"l" * 1000,
            b"i" + b"9" * 100 + b"e",
            os.urandom(3000),
            encode({b"t": b"1", b"y": b"r", b"r": {b"id": b"x" * 20}}),
        ]
        for blob in junk:
            sock.sendto(blob, service.addr)
        ping = encode({b"t": b"ok", b"y": b"q", b"q": b"ping", b"a": {b"id": b"p" * 20}})
        sock.sendto(ping, service.addr)
        reply = await asyncio.get_running_loop().run_in_executor(None, sock.recv, 2048)
        assert b"2:ok" in reply and service.node_id in reply
        stats = service.node.stats
        # The empty datagram may not be delivered by every kernel; the rest must be counted.
        assert stats["rx_malformed"] >= len(junk) - 2
        assert stats["rx_unexpected_response"] == 1
    finally:
        sock.close()
        service.close()


async def test_operations_fail_with_a_readable_error_when_nothing_answers() -> None:
    service = await DhtService.start(host="127.0.0.1", config=SANDBOX_CONFIG)
    try:
        with pytest.raises(DhtError, match="bootstrap"):
            await service.get_peers(b"\x00" * 20)
        dead = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        dead.bind(("127.0.0.1", 0))
        addr = dead.getsockname()
        dead.close()
        with pytest.raises(DhtError, match="no DHT node answered"):
            await service.bootstrap([addr])
    finally:
        service.close()


@pytest.mark.slow
async def test_thousand_node_sandbox_on_loopback() -> None:
    swarm = await start_swarm(1000, seed=3)
    try:
        assert len(swarm.services) == 1000
        joined = sum(len(s.node.routing) > 0 for s in swarm.services)
        assert joined == 1000
        ih = os.urandom(20)
        stored = await swarm.services[17].announce(ih, 4444)
        assert stored.stored_at >= 6
        found = await swarm.services[901].get_peers(ih)
        assert ("127.0.0.1", 4444) in found.peers
    finally:
        swarm.close()
