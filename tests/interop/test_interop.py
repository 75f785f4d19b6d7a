"""Our DHT node in a loopback swarm of real libtorrent nodes, both directions.

Our node runs on its own asyncio loop in a background thread, so that the blocking
libtorrent harness calls in the test never stop it from answering (a silent node in a
libtorrent routing table stalls its lookups for 15 s). Everything stays on loopback: each
test runs once in the IPv4 DHT on 127.0.0.1 and once in the IPv6 DHT on ::1 (BEP 32),
where our node is IPv6-only and every libtorrent node listens on [::1].
"""

from __future__ import annotations

import asyncio
import os
import threading
import time
from collections.abc import Coroutine, Iterator
from typing import Any, TypeVar

import pytest

lt = pytest.importorskip("libtorrent")

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey  # noqa: E402
from cryptography.hazmat.primitives.serialization import (  # noqa: E402
    Encoding,
    NoEncryption,
    PrivateFormat,
)

from btchat.codec.bencode import encode  # noqa: E402
from btchat.dht import bep44  # noqa: E402
from btchat.dht.ids import distance  # noqa: E402
from btchat.net.dht_service import DhtError, DhtService  # noqa: E402
from btchat.sandbox import SANDBOX_CONFIG  # noqa: E402

from .lt_swarm import LOOPBACK, LOOPBACK6, LtNode, LtSwarm  # noqa: E402

pytestmark = pytest.mark.interop
T = TypeVar("T")


class OurNode:
    """A btchat DhtService on ``host`` (127.0.0.1, or ::1 IPv6-only) with its event loop
    in a thread of its own."""

    def __init__(self, host: str = LOOPBACK) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        v6 = ":" in host
        self.service: DhtService = self.call(
            DhtService.start(
                host=host if not v6 else LOOPBACK,
                host6=host if v6 else None,
                ipv4=not v6,
                config=SANDBOX_CONFIG,
            )
        )

    def call(self, coro: Coroutine[Any, Any, T], timeout: float = 30.0) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    @property
    def addr(self) -> tuple[str, int]:
        return self.service.addr

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.service.close)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()


@pytest.fixture(scope="module", params=[LOOPBACK, LOOPBACK6], ids=["ipv4", "ipv6"])
def mixed(request: pytest.FixtureRequest) -> Iterator[tuple[LtSwarm, OurNode]]:
    swarm = LtSwarm(8, host=request.param).start()
    ours = OurNode(request.param)
    try:
        ours.call(ours.service.bootstrap(swarm.addrs))
        swarm.add_node_everywhere(*ours.addr)
        swarm.wait_connected(8)
        yield swarm, ours
    finally:
        # libtorrent first: our node keeps answering until no libtorrent node is left.
        swarm.close()
        ours.close()


def _closest_lt(swarm: LtSwarm, target: bytes) -> LtNode:
    return min(swarm.nodes, key=lambda n: distance(n.node_id(), target))


# ----------------------------------------------------------------- ping, find_node


def test_we_ping_libtorrent(mixed: tuple[LtSwarm, OurNode]) -> None:
    swarm, ours = mixed
    for node in swarm.nodes[:3]:
        assert ours.call(ours.service.ping(node.addr)) == node.node_id()


def test_libtorrent_queries_us_and_keeps_us(mixed: tuple[LtSwarm, OurNode]) -> None:
    swarm, ours = mixed
    exchange = swarm[2].probe(ours.addr)
    assert exchange.response[b"r"][b"id"] == ours.service.node_id
    assert ours.service.node_id in {nid for nid, _ in swarm[2].routing_table()}


def test_our_find_node_converges_on_libtorrent_nodes(mixed: tuple[LtSwarm, OurNode]) -> None:
    swarm, ours = mixed
    target = os.urandom(20)
    found = ours.call(ours.service.find_node(target))
    truth = sorted(swarm.nodes, key=lambda n: distance(n.node_id(), target))
    assert found[0].node_id == truth[0].node_id()
    assert {n.node_id for n in found} >= {n.node_id() for n in truth[:4]}


def test_libtorrent_answers_feed_the_table_of_our_family(mixed: tuple[LtSwarm, OurNode]) -> None:
    """BEP 32: over ::1 libtorrent answers with ``nodes6``, which we parse without a drop."""
    swarm, ours = mixed
    ours.call(ours.service.find_node(os.urandom(20)))
    table = ours.service.node.routing
    assert {n.addr for n in table} >= set(swarm.addrs[:8])  # the 8 libtorrent nodes
    assert all((":" in n.addr[0]) == (":" in ours.addr[0]) for n in table)
    assert ours.service.node.stats["rx_bad_nodes6"] == 0


def test_libtorrent_joins_the_dht_through_our_node(mixed: tuple[LtSwarm, OurNode]) -> None:
    """A fresh libtorrent node whose only contact is us learns the swarm from our answers
    to its find_node/get_peers queries."""
    swarm, ours = mixed
    others = {n.node_id() for n in swarm.nodes}
    newcomer = LtNode(host=ours.addr[0])
    # Other libtorrent nodes will learn of the newcomer; it must outlive the test, since a
    # silent node stalls their lookups, so the swarm closes it at the end.
    swarm.nodes.append(newcomer)
    newcomer.add_node(*ours.addr)
    known: set[bytes] = set()
    deadline = time.monotonic() + 10
    while len(known & others) < 4 and time.monotonic() < deadline:
        time.sleep(0.05)
        known = {nid for nid, _ in newcomer.routing_table()}
    assert ours.service.node_id in known
    assert len(known & others) >= 4
    queried_us = {p.query for p in newcomer.packets if p.direction == "out" and p.addr == ours.addr}
    assert queried_us & {b"find_node", b"get_peers", b"ping"}


# ------------------------------------------------------------ announce / get_peers


def test_we_announce_libtorrent_finds(mixed: tuple[LtSwarm, OurNode]) -> None:
    swarm, ours = mixed
    ih = os.urandom(20)
    result = ours.call(ours.service.announce(ih, 6111))
    assert result.stored_at >= 5  # most of the 8 closest are libtorrent nodes
    assert (ours.addr[0], 6111) in swarm[5].get_peers(ih)


def test_libtorrent_announces_we_find(mixed: tuple[LtSwarm, OurNode]) -> None:
    swarm, ours = mixed
    ih = os.urandom(20)
    assert swarm[1].announce(ih, 6222) >= 1
    result = ours.call(ours.service.get_peers(ih))
    assert (ours.addr[0], 6222) in result.peers


def test_libtorrent_stores_our_implied_port_announce(mixed: tuple[LtSwarm, OurNode]) -> None:
    swarm, ours = mixed
    ih = os.urandom(20)
    ours.call(ours.service.announce(ih, 1, implied_port=True))
    assert ours.addr in swarm[3].get_peers(ih)


# ------------------------------------------------------------------------- BEP 44


def test_we_put_immutable_libtorrent_gets(mixed: tuple[LtSwarm, OurNode]) -> None:
    swarm, ours = mixed
    value = [b"btchat", 44, {b"k": b"v"}]
    put = ours.call(ours.service.put_immutable(encode(value)))
    assert put.stored_at >= 5
    assert swarm[4].get_immutable(put.target) == value


def test_libtorrent_puts_immutable_we_get(mixed: tuple[LtSwarm, OurNode]) -> None:
    swarm, ours = mixed
    value = b"stored by libtorrent " + os.urandom(4).hex().encode()
    target = swarm[6].put_immutable(value)
    assert target == bep44.immutable_target(encode(value))
    got = ours.call(ours.service.get_immutable(target))
    assert got.value == value


def test_we_put_mutable_libtorrent_gets(mixed: tuple[LtSwarm, OurNode]) -> None:
    swarm, ours = mixed
    key = Ed25519PrivateKey.generate()
    for seq, text in ((3, b"first"), (4, b"second")):
        item = bep44.sign_mutable(key, encode(text), seq, b"profile")
        assert ours.call(ours.service.put_mutable(item)).stored_at >= 5
    got = swarm[0].get_mutable(item.public_key, b"profile")
    assert got is not None
    assert (got.value, got.seq, got.signature) == (b"second", 4, item.signature)


def test_libtorrent_puts_mutable_we_get(mixed: tuple[LtSwarm, OurNode]) -> None:
    swarm, ours = mixed
    key = Ed25519PrivateKey.generate()
    seed = key.private_bytes(Encoding.Raw, PrivateFormat.Raw, NoEncryption())
    first = swarm[7].put_mutable(seed, b"hello from libtorrent", b"salt")
    second = swarm[7].put_mutable(seed, b"updated", b"salt")
    assert second.seq == first.seq + 1
    got = ours.call(ours.service.get_mutable(first.public_key, b"salt"))
    assert (got.value, got.seq, got.signature) == (b"updated", second.seq, second.signature)
    # And what we fetched verifies under BEP 44 with our own code.
    item = bep44.MutableItem(first.public_key, b"salt", got.seq, got.v_bencoded, got.signature)
    bep44.check_mutable(item)


def test_libtorrent_rejects_our_stale_seq_and_we_report_it(mixed: tuple[LtSwarm, OurNode]) -> None:
    _, ours = mixed
    key = Ed25519PrivateKey.generate()
    ours.call(ours.service.put_mutable(bep44.sign_mutable(key, encode(b"new"), 9)))
    stale = bep44.sign_mutable(key, encode(b"old"), 8)
    with pytest.raises(DhtError, match="302"):
        ours.call(ours.service.put_mutable(stale))
