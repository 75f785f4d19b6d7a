"""The DHT through a contact, in parts: messages, the server's limits, the client's checks.

The end-to-end runs (a Tor-mode node through Dante and a sandbox swarm) are in
``tests/test_tor_dht_e2e.py``; here the client talks to scripted serving peers, so a
forged item, a refusal, a silent or vanished server and a stray answer can be chosen.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import given
from hypothesis import strategies as st

from btchat.codec.bencode import DecodeError
from btchat.dht import bep44
from btchat.net import dht_proxy
from btchat.net import dht_proxy_core as dp
from btchat.net.dht_proxy import DhtViaContacts
from btchat.net.dht_service import DhtError

KEY = Ed25519PrivateKey.from_private_bytes(bytes(range(32)))
ITEM = bep44.sign_mutable(KEY, b"5:hello", 3, b"btchat/devices")


# ------------------------------------------------------------------ messages


@given(st.binary(max_size=300))
def test_any_body_after_the_magic_parses_or_is_a_decode_error(junk: bytes) -> None:
    with contextlib.suppress(DecodeError):
        dp.decode(dp.MAGIC + junk)


def test_answers_are_bounded_when_built_and_when_read() -> None:
    many = [("198.51.100.1", 1000 + i) for i in range(200)]
    wire = dp.encode(dp.Response(1, dp.PeersFound(many)))
    found = dp.decode(wire)
    assert isinstance(found, dp.Response) and isinstance(found.result, dp.PeersFound)
    assert len(found.result.peers) == dp.MAX_PEERS
    long = dp.decode(dp.encode(dp.Response(2, dp.Failure(dp.Code.FAILED, "x" + "é" * 333))))
    assert isinstance(long, dp.Response) and isinstance(long.result, dp.Failure)
    assert len(long.result.message.encode()) <= dp.MAX_TEXT
    with pytest.raises(ValueError, match="exceeds"):
        dp.encode(dp.Request(1, dp.PutImmutable(b"5000:" + bytes(5000))))


# ------------------------------------------------------------------ limits


def test_limits_cap_in_flight_per_peer_and_in_total() -> None:
    limits = dp.ServeLimits(dp.DhtProxyLimits(in_flight=2, total_in_flight=3))
    a, b = b"a" * 32, b"b" * 32
    assert limits.admit(a, 100, 0.0) is None and limits.admit(a, 100, 0.0) is None
    assert limits.admit(a, 100, 0.0) is dp.Code.BUSY
    assert limits.admit(b, 100, 0.0) is None
    assert limits.admit(b, 100, 0.0) is dp.Code.BUSY  # 3 in total
    limits.done(a)
    assert limits.admit(b, 100, 0.0) is None
    assert limits.peak == 2


def test_limits_cap_operations_and_bytes_per_minute() -> None:
    limits = dp.ServeLimits(dp.DhtProxyLimits(per_minute=60, bytes_per_minute=6000))
    peer = b"p" * 32
    for _ in range(60):
        assert limits.admit(peer, 10, 0.0) is None
        limits.done(peer)
    assert limits.admit(peer, 10, 0.0) is dp.Code.RATE
    assert limits.admit(peer, 10, 1.0) is None  # one a second comes back
    limits.done(peer)
    assert limits.admit(b"q" * 32, 5000, 2.0) is None  # another peer has its own budget
    assert limits.admit(b"q" * 32, 2000, 2.0) is dp.Code.RATE  # over 6000 bytes a minute
    assert dp.ServeLimits(dp.DhtProxyLimits(enabled=False)).admit(peer, 1, 0.0) is dp.Code.OFF


def test_limits_refuse_to_be_built_unbounded() -> None:
    with pytest.raises(ValueError, match="in_flight"):
        dp.DhtProxyLimits(in_flight=0)
    with pytest.raises(ValueError, match="timeout"):
        dp.DhtProxyLimits(timeout=0)


# ------------------------------------------------------------------ the client

Behaviour = Callable[[dp.Request], dp.Result | None]


class ScriptedPeer:
    """A serving peer's session: answers each request the way ``behave`` says (None:
    never), a loop turn later, as a session would."""

    def __init__(self, name: bytes, behave: Behaviour) -> None:
        self.key = (name * 32, name * 16)
        self.behave = behave
        self.asked: list[dp.Request] = []
        self.client: DhtViaContacts | None = None

    def send(self, body: bytes) -> None:
        request = dp.decode(body)
        assert isinstance(request, dp.Request)
        self.asked.append(request)
        result = self.behave(request)
        if result is not None and self.client is not None:
            asyncio.get_running_loop().call_soon(
                self.client.on_response, self.key, dp.Response(request.id, result)
            )


def client_of(*peers: ScriptedPeer, timeout: float = 5.0) -> DhtViaContacts:
    live = list(peers)
    client = DhtViaContacts(lambda: [(p.key, p) for p in live], timeout=timeout)  # type: ignore[misc]
    for p in peers:
        p.client = client
    client.servers_changed()
    return client


def found_item(request: dp.Request) -> dp.Result:
    return dp.ItemFound(ITEM.v_bencoded, ITEM.seq, ITEM.signature, 5)


def forged_item(request: dp.Request) -> dp.Result:
    other = bep44.sign_mutable(Ed25519PrivateKey.generate(), b"6:forged", 9, ITEM.salt)
    return dp.ItemFound(other.v_bencoded, other.seq, other.signature, 5)


async def test_a_forged_item_is_refused_and_the_next_contact_asked() -> None:
    liar, honest = ScriptedPeer(b"l", forged_item), ScriptedPeer(b"h", found_item)
    client = client_of(liar, honest)
    got = await client.get_mutable(ITEM.public_key, ITEM.salt)
    assert got.value == b"hello" and got.seq == 3
    assert client.stats["forged"] == 1 and client.via == honest.key
    # The one that worked is asked first next time.
    await client.get_mutable(ITEM.public_key, ITEM.salt)
    assert len(liar.asked) == 1 and len(honest.asked) == 2


async def test_an_immutable_item_must_hash_to_its_target() -> None:
    target = bep44.immutable_target(b"5:hello")
    liar = ScriptedPeer(b"l", lambda r: dp.ItemFound(b"5:other"))
    client = client_of(liar)
    with pytest.raises(DhtError, match="does not check out"):
        await client.get_immutable(target)
    honest = ScriptedPeer(b"h", lambda r: dp.ItemFound(b"5:hello"))
    assert (await client_of(honest).get_immutable(target)).value == b"hello"


async def test_refusals_fail_over_but_a_dht_failure_is_the_answer() -> None:
    busy = ScriptedPeer(b"b", lambda r: dp.Failure(dp.Code.BUSY))
    fails = ScriptedPeer(b"f", lambda r: dp.Failure(dp.Code.FAILED, "no nodes answered"))
    late = ScriptedPeer(b"z", lambda r: dp.PeersFound([("192.0.2.1", 1)]))
    client = client_of(busy, fails, late)
    with pytest.raises(DhtError, match="no nodes answered"):
        await client.get_peers(bytes(20))
    assert len(late.asked) == 0  # a real DHT failure is not asked again elsewhere
    assert client.stats["refused"] == 1


async def test_a_silent_or_vanished_contact_is_left_for_another() -> None:
    silent = ScriptedPeer(b"s", lambda r: None)
    good = ScriptedPeer(b"g", lambda r: dp.PeersFound([("192.0.2.9", 7)], 3, 2))
    client = client_of(silent, good, timeout=0.2)
    result = await client.get_peers(bytes(20))
    assert result.peers == [("192.0.2.9", 7)] and client.stats["timeouts"] == 1
    # A session that ends while a request waits on it: the request goes on at once.
    gone = ScriptedPeer(b"x", lambda r: None)
    client = client_of(gone, good, timeout=60.0)
    task = asyncio.ensure_future(client.get_peers(bytes(20)))
    while not gone.asked:
        await asyncio.sleep(0)
    client.session_ended(gone.key)
    assert (await task).peers == [("192.0.2.9", 7)]


async def test_an_answer_from_another_peer_or_for_nobody_is_dropped() -> None:
    silent = ScriptedPeer(b"s", lambda r: None)
    client = client_of(silent, timeout=60.0)
    task = asyncio.ensure_future(client.get_peers(bytes(20)))
    while not silent.asked:
        await asyncio.sleep(0)
    rid = silent.asked[0].id
    stranger = (b"t" * 32, b"t" * 16)
    client.on_response(stranger, dp.Response(rid, dp.PeersFound([("192.0.2.66", 6)])))
    client.on_response(silent.key, dp.Response(rid + 100, dp.PeersFound([])))
    assert client.stats["unexpected"] == 2 and not task.done()
    client.on_response(silent.key, dp.Response(rid, dp.PeersFound([("192.0.2.1", 1)])))
    assert (await task).peers == [("192.0.2.1", 1)]


async def test_no_serving_contact_and_no_announce(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(dht_proxy, "WAIT_FOR_SERVER", 0.01)
    client = client_of()
    assert not client.joined.is_set()
    with pytest.raises(DhtError, match="no contact serving"):
        await client.put_mutable(ITEM)
    with pytest.raises(DhtError, match="announces no address"):
        await client.announce(bytes(20), 6881, implied_port=True)


async def test_a_put_reports_where_it_landed() -> None:
    peer = ScriptedPeer(b"p", lambda r: dp.Stored(6, ["timeout", "timeout"], 30, 120))
    client = client_of(peer)
    put = await client.put_mutable(ITEM, cas=2)
    assert (put.target, put.stored_at, put.errors) == (ITEM.target, 6, ["timeout", "timeout"])
    assert client.routing_size == 120
    request: Any = peer.asked[0].op
    assert isinstance(request, dp.PutMutable) and request.cas == 2 and request.item == ITEM
