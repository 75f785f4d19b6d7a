"""Peer exchange cannot make a member dial hosts of another member's choosing without
bound (issue 14 item 4): IP literals only, a cap on remembered addresses, bounded dials
with a back-off that grows, and a bounded table of failures."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from btchat.channels import service as svc
from btchat.channels.chatfile import ChatFile
from btchat.channels.engine import MAX_KNOWN_ADDRS, MAX_PEX, ChannelEngine, Dial, pex_address
from btchat.channels.store import ChannelStore
from btchat.codec.bencode import encode
from btchat.identity.keys import Identity
from btchat.messaging.store import Store
from btchat.sansio import drain_events


def engine(tmp_path: Path) -> tuple[ChannelEngine, bytes]:
    chat = ChatFile.create("open", now=time.time())
    store = ChannelStore(Store.open(tmp_path / "m.db", None))
    store.add_channel(chat.channel_id, chat.to_bytes(), 0)
    eng = ChannelEngine(chat, Identity.generate(), store, listen_port=4000, now=0.0)
    peer = Identity.generate().public_key
    eng.link_up(peer, "192.0.2.1", 0.0)
    drain_events(eng)
    return eng, peer


def pex(entries: list[list[object]]) -> bytes:
    return encode({b"t": b"links", b"links": [], b"pex": entries})


@pytest.mark.parametrize(
    ("ip", "port", "ok"),
    [
        (b"192.0.2.7", 4000, True),
        (b"2001:db8::1", 4000, True),
        (b"evil.example", 4000, False),  # a host name: would make us resolve it
        (b"localhost", 4000, False),
        (b"0.0.0.0", 4000, False),
        (b"224.0.0.1", 4000, False),
        (b"255.255.255.255", 4000, False),
        (b"192.0.2.7", 0, False),
        (b"\xff\xfe", 4000, False),
    ],
)
def test_only_unicast_ip_literals_are_dialled(ip: bytes, port: int, ok: bool) -> None:
    assert (pex_address(ip, port) is not None) == ok


def test_a_member_naming_a_host_gets_no_dial(tmp_path: Path) -> None:
    eng, peer = engine(tmp_path)
    member = Identity.generate().public_key
    eng.on_payload(peer, pex([[b"evil.example", 4000, member]]), 1.0)
    assert not [e for e in drain_events(eng) if isinstance(e, Dial)]
    assert eng.stats["pex_refused_address"] == 1 and member not in eng.known_addresses()


def test_remembered_addresses_are_capped(tmp_path: Path) -> None:
    eng, peer = engine(tmp_path)
    sent = 0
    while sent < MAX_KNOWN_ADDRS + 2 * MAX_PEX:
        batch = [
            [f"198.18.{(sent + i) // 250}.{(sent + i) % 250 + 1}".encode(), 4000, bytes(32)]
            for i in range(MAX_PEX)
        ]
        for entry in batch:
            entry[2] = Identity.generate().public_key
        eng.on_payload(peer, pex(batch), 1.0)  # type: ignore[arg-type]
        sent += MAX_PEX
    assert len(eng.known_addresses()) == MAX_KNOWN_ADDRS
    assert eng.stats["pex_known_full"] == sent - MAX_KNOWN_ADDRS


def test_failures_back_off_doubling_to_a_ceiling_in_a_bounded_table(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    class Bare(svc.ChannelService):
        def __init__(self) -> None:  # only the dial bookkeeping
            self._failed = {}

    s = Bare()
    addr = ("192.0.2.9", 4000)
    waits = []
    for _ in range(10):
        before = time.monotonic()
        s._dial_failed(addr)
        waits.append(s._failed[addr][0] - before)
    assert waits[0] == pytest.approx(svc.DIAL_BACKOFF, abs=1)
    assert waits[1] == pytest.approx(2 * svc.DIAL_BACKOFF, abs=1)
    assert max(waits) == pytest.approx(svc.MAX_BACKOFF, abs=1)
    monkeypatch.setattr(svc, "MAX_FAILED", 5)
    for i in range(20):
        s._dial_failed((f"192.0.2.{i + 10}", 4000))
    assert len(s._failed) == 5 and ("192.0.2.29", 4000) in s._failed


async def test_connection_attempts_in_flight_are_bounded_and_the_rest_wait() -> None:
    import asyncio

    from btchat.node.tasks import TaskOwner

    started: list[tuple[str, int]] = []
    release = asyncio.Event()

    class SlowDialer:
        async def dial(self, addr: tuple[str, int]) -> object:
            started.append(addr)
            await release.wait()
            raise ConnectionRefusedError("nobody")

    class Bare(svc.ChannelService):
        def __init__(self) -> None:  # only the dial bookkeeping
            self._failed, self._queued, self._dialling, self._seeds = {}, {}, set(), set()
            self._connecting, self.links, self.engine, self._greeting = 0, {}, None, set()
            self.dialer = SlowDialer()  # type: ignore[assignment]
            self._tasks = TaskOwner()

    s = Bare()
    for i in range(svc.MAX_DIALS + 10):
        s.dial((f"192.0.2.{i + 1}", 4000))
    await asyncio.sleep(0.05)
    assert len(started) == svc.MAX_DIALS and len(s._queued) == 10
    release.set()
    for _ in range(100):
        if len(started) == svc.MAX_DIALS + 10 and not s._connecting:
            break
        await asyncio.sleep(0.02)
    assert len(started) == svc.MAX_DIALS + 10 and not s._queued and s._connecting == 0
    await s._tasks.cancel_all()
