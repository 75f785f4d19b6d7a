"""1:1 sessions through a relay: three peerings on loopback, A <-> B direct dials blocked.

Alice (A) and Bob (B) both have a direct session to Carol (C), a contact of both; A's
dialler refuses B's address, so the session can only go through C. The session inside
is Noise IK end to end: C sees ciphertext and sizes, and a C that tampers makes it fail.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

import pytest
from harness import PeerNode, peer_node, until

from btchat.discovery.rendezvous import Candidate
from btchat.identity.keys import Identity
from btchat.net.relay import RelayRefusedError, _Splice
from btchat.net.relay_core import Connect, RelayLimits, Status, encode_header
from btchat.net.transport import Address, ByteStream, TcpDialer
from btchat.stream.frames import Service


class Blocking:
    """A TCP dialler that refuses the addresses in ``blocked`` (as a NAT pair would)."""

    def __init__(self) -> None:
        self.blocked: set[Address] = set()
        self.tcp = TcpDialer(timeout=2.0)

    async def dial(self, address: Address) -> ByteStream:
        if address in self.blocked:
            raise ConnectionRefusedError("blocked in this test")
        return await self.tcp.dial(address)


@dataclass
class Trio:
    a: PeerNode
    b: PeerNode
    c: PeerNode
    a_dialer: Blocking

    def key(self, n: PeerNode) -> bytes:
        return n.identity.public_key

    async def via_relay(self) -> bool:
        """A and B dial C; then A reaches B, whose address A cannot dial."""
        for n in (self.a, self.b):
            assert await n.peering.dial(self.key(self.c), self.c.cert, self.c.addr)
        await until(lambda: len(self.c.peering.sessions) == 2, 5, "carol has both")
        self.a_dialer.blocked.add(self.b.addr)
        return await self.a.peering.reach([Candidate(self.key(self.b), self.b.cert, self.b.addr)])


async def _trio(relay: RelayLimits | None = None) -> Trio:
    ids = [Identity.generate() for _ in range(3)]
    a_id, b_id, c_id = ids
    dialer = Blocking()
    a = peer_node(a_id, [b_id.public_key, c_id.public_key], dialer=dialer)
    b = peer_node(b_id, [a_id.public_key, c_id.public_key])
    c = peer_node(c_id, [a_id.public_key, b_id.public_key], relay=relay)
    for n in (a, b, c):
        await n.peering.start()
    return Trio(a, b, c, dialer)


@pytest.fixture
async def trio() -> AsyncIterator[Trio]:
    t = await _trio()
    try:
        yield t
    finally:
        for n in (t.a, t.b, t.c):
            await n.peering.stop()


async def test_messages_go_both_ways_through_the_relay(trio: Trio) -> None:
    t = trio
    a_key, b_key, c_key = t.key(t.a), t.key(t.b), t.key(t.c)
    assert await t.via_relay()
    await until(lambda: t.b.peering.is_online(a_key), 5, "bob sees alice")
    via = f"relay via {c_key.hex()[:16]}"
    assert t.a.peering.path(b_key) == [via] and t.b.peering.path(a_key) == [via]
    assert not t.a.peering.connected(b_key)  # the rendezvous keeps looking for a direct path
    assert t.a.peering.send(b_key, b"through carol") and t.b.peering.send(a_key, b"back")
    await until(lambda: bool(t.a.data and t.b.data), 5, "a message each way")
    assert t.b.data == [(a_key, t.a.device.device_id, b"through carol")]
    assert t.a.data == [(b_key, t.b.device.device_id, b"back")]
    # Carol relays, and delivers nothing of theirs to herself.
    assert len(t.c.peering.relay.core) == 1 and t.c.data == []
    assert t.a.peering.stats["sessions_relay"] == 1 and t.b.peering.stats["sessions_relay"] == 1
    # A large payload crosses the credit windows of both hops.
    big = bytes(range(256)) * 250
    for _ in range(20):
        assert t.a.peering.send(b_key, big)
    await until(lambda: len(t.b.data) == 21, 10, "twenty big payloads")
    assert all(p == big for _, _, p in t.b.data[1:])
    # Alice leaves: bob sees her go, carol's circuit is gone.
    await t.a.peering.stop()
    await until(lambda: t.b.down == [a_key], 10, "bob sees alice leave")
    await until(lambda: len(t.c.peering.relay.core) == 0, 5, "circuit closed at carol")


async def test_a_relay_that_turned_relaying_off_gives_no_session() -> None:
    t = await _trio(RelayLimits(enabled=False))
    try:
        a_key, b_key = t.key(t.a), t.key(t.b)
        assert not await t.via_relay()
        assert not t.a.peering.is_online(b_key) and not t.b.peering.is_online(a_key)
        # Carol did not announce relaying, so alice did not even ask.
        assert t.a.peering.relays_for(b_key) == [] and t.a.peering.stats["relay_dials"] == 0
    finally:
        for n in (t.a, t.b, t.c):
            await n.peering.stop()


async def test_a_relay_asked_while_off_refuses_with_a_clear_reason(trio: Trio) -> None:
    t = trio
    a_key, b_key = t.key(t.a), t.key(t.b)
    # Carol announced relaying, then turned it off: she answers with a refusal code.
    t.c.peering.relay.core.limits = RelayLimits(enabled=False)
    assert not await t.via_relay()
    assert not t.a.peering.is_online(b_key) and not t.b.peering.is_online(a_key)
    assert t.c.peering.relay.core.stats["refused_relay_off"] == 1
    carol = next(iter(t.a.peering.sessions))
    with pytest.raises(RelayRefusedError) as info:
        await t.a.peering.relay.dial_via(carol, (b_key, t.b.device.device_id))
    assert info.value.status == Status.RELAY_OFF
    assert "does not relay for others" in str(info.value)


async def test_refusal_codes_reach_the_asker(trio: Trio) -> None:
    t = trio
    for n in (t.a, t.b):
        assert await n.peering.dial(t.key(t.c), t.c.cert, t.c.addr)
    carol = (t.key(t.c), t.c.device.device_id)
    relay = t.a.peering.relay
    cases: list[tuple[tuple[bytes, bytes], Status]] = [
        ((b"\x07" * 32, b"\x01" * 16), Status.NO_ROUTE),  # nobody carol knows
        ((t.key(t.a), t.a.device.device_id), Status.LOOP),  # back to alice
        (carol, Status.LOOP),  # to carol herself
    ]
    for target, status in cases:
        with pytest.raises(RelayRefusedError) as info:
            await relay.dial_via(carol, target)
        assert info.value.status == status
    # The per-peer limit: carol's table is full for alice.
    t.c.peering.relay.core.limits = RelayLimits(per_peer=1)
    t.c.peering.relay.core.request(
        (t.key(t.a), t.a.device.device_id), (t.key(t.b), t.b.device.device_id), t.key(t.c), True, 0
    )
    with pytest.raises(RelayRefusedError) as info:
        await relay.dial_via(carol, (t.key(t.b), t.b.device.device_id))
    assert info.value.status == Status.PEER_LIMIT


def _flip(pending: bytearray, stash: list[bytes]) -> bool:
    pending[-1] ^= 0x01  # one bit of alice's next frame
    return True


def _drop(pending: bytearray, stash: list[bytes]) -> bool:
    del pending[-5:]  # a few bytes never arrive (the next frame's then complete it)
    return True


def _swap(pending: bytearray, stash: list[bytes]) -> bool:
    """Hold one batch back and deliver it after the next one (reordering)."""
    if not stash:
        stash.append(bytes(pending))
        pending.clear()
        return False
    pending += stash.pop()
    return True


@pytest.mark.parametrize("tamper", [_flip, _drop, _swap], ids=["flip", "drop", "reorder"])
async def test_a_tampering_relay_makes_the_inner_session_fail(
    trio: Trio, tamper: Callable[[bytearray, list[bytes]], bool]
) -> None:
    t = trio
    a_key, b_key = t.key(t.a), t.key(t.b)
    assert await t.via_relay()
    await until(lambda: t.b.peering.is_online(a_key), 5, "bob sees alice")
    service = t.c.peering.relay
    original: Callable[[_Splice, int], None] = service._push
    done: list[bool] = []
    stash: list[bytes] = []

    def tampering_push(splice: _Splice, leg: int) -> None:
        pending = splice.pending[leg]
        if leg == 0 and len(pending) > 20 and not done and tamper(pending, stash):
            done.append(True)
        original(splice, leg)

    service._push = tampering_push  # type: ignore[method-assign]
    for i in range(3):
        t.a.peering.send(b_key, b"x" * (100 + i))  # False once the session has failed
        await asyncio.sleep(0.05)  # separate batches at the relay
    await until(lambda: not t.b.peering.is_online(a_key), 5, "bob drops the session")
    assert done
    # Whatever bob took before the tampering was untouched; nothing after it arrived.
    assert all(p == b"x" * (100 + i) for i, (_, _, p) in enumerate(t.b.data))
    assert len(t.b.data) < 3
    await until(lambda: not t.a.peering.is_online(b_key), 5, "alice sees it end")


async def test_a_contact_cannot_exhaust_the_relay(trio: Trio) -> None:
    t = trio
    for n in (t.a, t.b):
        assert await n.peering.dial(t.key(t.c), t.c.cert, t.c.addr)
    await until(lambda: len(t.c.peering.sessions) == 2, 5, "carol has both")
    carol = (t.key(t.c), t.c.device.device_id)
    bob = (t.key(t.b), t.b.device.device_id)
    got = await asyncio.gather(
        *(t.a.peering.relay.dial_via(carol, bob) for _ in range(7)), return_exceptions=True
    )
    streams = [g for g in got if not isinstance(g, BaseException)]
    refused = [g for g in got if isinstance(g, RelayRefusedError)]
    limits = RelayLimits()
    assert len(streams) == limits.per_peer and len(refused) == 7 - limits.per_peer
    assert all(r.status == Status.PEER_LIMIT for r in refused)
    core = t.c.peering.relay.core
    assert len(core) == limits.per_peer
    # Circuits that carry no handshake are dropped by bob's admission (first-bytes
    # deadline) or by alice giving up; either way carol's table empties.
    for s in streams:
        s.abort()
    await until(lambda: len(core) == 0, 5, "carol's circuits are gone")
    await until(lambda: not t.b.peering.relay.core._incoming, 5, "bob's count is released")


async def test_a_direct_path_that_appears_later_replaces_the_relay(trio: Trio) -> None:
    t = trio
    a_key, b_key = t.key(t.a), t.key(t.b)
    assert await t.via_relay()
    await until(lambda: t.b.peering.is_online(a_key), 5, "bob sees alice")
    t.a_dialer.blocked.clear()  # the NAT lets us through now (a later punch worked)
    assert await t.a.peering.reach([Candidate(b_key, t.b.cert, t.b.addr)])
    await until(lambda: t.b.peering.path(a_key) == ["tcp"], 5, "bob's path is direct")
    assert t.a.peering.path(b_key) == ["tcp"] and t.a.peering.connected(b_key)
    assert t.a.switched == [b_key] and t.b.switched == [a_key]  # reconcile after the switch
    assert t.a.peering.send(b_key, b"direct now")
    await until(lambda: bool(t.b.data), 5, "delivered directly")
    assert t.b.data == [(a_key, t.a.device.device_id, b"direct now")]
    await until(lambda: len(t.c.peering.relay.core) == 0, 5, "the circuit is gone")
    # A relayed dial while a direct session is up is not even tried.
    assert not await t.a.peering.connect_relayed(b_key, t.b.cert) or t.a.peering.path(b_key) == [
        "tcp"
    ]
    assert t.a.peering.path(b_key) == ["tcp"]


async def test_garbage_on_a_substream_is_dropped_and_counted(trio: Trio) -> None:
    t = trio
    assert await t.a.peering.dial(t.key(t.c), t.c.cert, t.c.addr)
    await until(lambda: len(t.c.peering.sessions) == 1, 5, "carol sees alice")
    conn = next(iter(t.a.peering.sessions.values())).conn
    sid = conn.open_stream(6, Service.RELAY)
    conn.send_stream(sid, b"\x09garbage that is no relay header")
    service = t.c.peering.relay
    await until(lambda: service.core.stats["bad_header"] == 1, 5, "counted")
    # A substream for a service carol does not run never reaches the relay (or files).
    other = conn.open_stream(6, 77)
    conn.send_stream(other, b"\x01\x01 would parse as a relay header")
    await until(lambda: t.c.peering.stats["substreams_refused"] == 1, 5, "refused")
    assert service.core.stats["bad_header"] == 1
    await asyncio.sleep(0.1)
    assert t.c.peering.is_online(t.key(t.a))  # the session itself lives on
    assert t.a.peering.send(t.key(t.c), b"still here")
    await until(lambda: bool(t.c.data), 5, "carol still hears alice")


async def test_a_circuit_ends_at_its_lifetime_and_when_the_target_leaves() -> None:
    t = await _trio(RelayLimits(lifetime=0.5))
    try:
        a_key, b_key = t.key(t.a), t.key(t.b)
        assert await t.via_relay()
        await until(lambda: t.b.peering.is_online(a_key), 5, "bob sees alice")
        # Carol's limit ends the circuit; both ends see the relayed session go.
        await until(lambda: not t.a.peering.is_online(b_key), 5, "alice sees it end")
        await until(lambda: not t.b.peering.is_online(a_key), 5, "bob sees it end")
        assert len(t.c.peering.relay.core) == 0
        # Again, and this time the target leaves: the circuit goes with it.
        t.c.peering.relay.core.limits = RelayLimits()
        assert await t.a.peering.connect_relayed(b_key, t.b.cert)
        await until(lambda: len(t.c.peering.relay.core) == 1, 5, "a new circuit")
        await t.b.peering.stop()
        await until(lambda: not t.a.peering.is_online(b_key), 5, "alice sees bob leave")
        await until(lambda: len(t.c.peering.relay.core) == 0, 5, "circuit closed at carol")
    finally:
        for n in (t.a, t.b, t.c):
            await n.peering.stop()


async def test_a_relay_that_comes_online_later_is_tried_at_once(trio: Trio) -> None:
    t = trio
    a_key, b_key = t.key(t.a), t.key(t.b)
    assert await t.b.peering.dial(t.key(t.c), t.c.cert, t.c.addr)
    t.a_dialer.blocked.add(t.b.addr)
    # No direct path and no relay yet: alice's reach fails ...
    assert not await t.a.peering.reach([Candidate(b_key, t.b.cert, t.b.addr)])
    # ... and when carol (who relays) comes online, alice tries her for bob at once.
    assert await t.a.peering.dial(t.key(t.c), t.c.cert, t.c.addr)
    await until(lambda: t.a.peering.is_online(b_key), 5, "alice reaches bob through carol")
    await until(lambda: t.b.peering.is_online(a_key), 5, "bob sees alice")
    assert t.a.peering.path(b_key) == [f"relay via {t.key(t.c).hex()[:16]}"]


async def test_a_header_in_pieces_is_read(trio: Trio) -> None:
    """A Connect split over several SDATA frames opens the circuit to bob."""
    t = trio
    for n in (t.a, t.b):
        assert await n.peering.dial(t.key(t.c), t.c.cert, t.c.addr)
    await until(lambda: len(t.c.peering.sessions) == 2, 5, "carol has both")
    conn = next(iter(t.a.peering.sessions.values())).conn
    sid = conn.open_stream(6, Service.RELAY)
    header = encode_header(Connect(99, t.key(t.b), t.b.device.device_id))
    for i in range(0, len(header), 7):
        conn.send_stream(sid, header[i : i + 7])
        await asyncio.sleep(0.01)  # separate SDATA frames
    await until(lambda: t.b.peering.relay.stats["relayed_in"] == 1, 5, "bob got the circuit")
    assert t.c.peering.relay.core.stats["circuits"] == 1
    # Alice never asked through her service, so the Answer is dropped and counted, and
    # the circuit is torn down at carol.
    await until(lambda: t.a.peering.relay.core.stats["bad_header"] == 1, 5, "counted")
    await until(lambda: len(t.c.peering.relay.core) == 0, 5, "circuit gone")
