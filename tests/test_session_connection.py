"""The asyncio shell on real loopback TCP (port 0): handshake, echo, close, refusals."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import pytest

from btchat.identity.keys import DeviceCertificate, DeviceKey, Identity
from btchat.session.connection import SessionConnection, run_session
from btchat.session.core import (
    MAX_PAYLOAD,
    DataReceived,
    HandshakeComplete,
    Session,
    SessionClosed,
    SessionConfig,
    SessionEvent,
    SessionFailed,
)


@dataclass(frozen=True)
class Party:
    identity: Identity
    device: DeviceKey
    cert: DeviceCertificate


def party() -> Party:
    identity, device = Identity.generate(), DeviceKey.generate()
    return Party(identity, device, identity.certify(device, created=1_700_000_000))


@dataclass
class Peer:
    """One side's view: its events, and its connection once the pump started."""

    events: asyncio.Queue[SessionEvent] = field(default_factory=asyncio.Queue)
    conn: SessionConnection | None = None
    task: asyncio.Task[Any] | None = None

    async def next(self, kind: type, timeout: float = 5.0) -> SessionEvent:
        while True:
            event = await asyncio.wait_for(self.events.get(), timeout)
            if isinstance(event, kind):
                return event
            if isinstance(event, SessionClosed | SessionFailed):
                raise AssertionError(f"session ended while waiting for {kind}: {event}")


Handler = Callable[[Peer, SessionEvent], None]


@contextlib.asynccontextmanager
async def server(
    me: Party,
    allowed: set[bytes],
    on_event: Handler | None = None,
    config: SessionConfig | None = None,
) -> AsyncIterator[tuple[int, list[Peer]]]:
    """A responder listening on 127.0.0.1 port 0; yields the port and its peers."""
    peers: list[Peer] = []

    async def accept(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peer = Peer(task=asyncio.current_task())
        peers.append(peer)
        session = Session(
            "responder",
            me.device,
            me.cert,
            lambda identity, cert: identity in allowed,
            now=asyncio.get_running_loop().time(),
            config=config or SessionConfig(),
        )
        peer.conn = SessionConnection(reader, writer, session)

        def handle(event: SessionEvent) -> None:
            peer.events.put_nowait(event)
            if on_event is not None:
                on_event(peer, event)

        await run_session(reader, writer, session, handle, connection=peer.conn)

    srv = await asyncio.start_server(accept, "127.0.0.1", 0)
    port = srv.sockets[0].getsockname()[1]
    try:
        yield port, peers
    finally:
        srv.close()
        for peer in peers:  # every session's pump ends and closes its socket
            if peer.conn is not None:
                peer.conn.close("test over")
        await asyncio.wait_for(asyncio.gather(*(p.task for p in peers if p.task)), 5.0)
        await srv.wait_closed()


async def dial(me: Party, them: Party, port: int, config: SessionConfig | None = None) -> Peer:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    session = Session(
        "initiator",
        me.device,
        me.cert,
        lambda identity, cert: identity == them.identity.public_key,
        remote_static=them.device.public_key,
        now=asyncio.get_running_loop().time(),
        config=config or SessionConfig(),
    )
    peer = Peer()
    peer.conn = SessionConnection(reader, writer, session)
    peer.task = asyncio.create_task(
        run_session(reader, writer, session, peer.events.put_nowait, connection=peer.conn)
    )
    return peer


def echo(peer: Peer, event: SessionEvent) -> None:
    if isinstance(event, DataReceived):
        assert peer.conn is not None
        peer.conn.send(event.payload)


async def finished(task: Awaitable[None] | None) -> None:
    assert task is not None
    await asyncio.wait_for(task, 5.0)


async def test_loopback_handshake_echo_and_close() -> None:
    alice, bob = party(), party()
    async with server(bob, {alice.identity.public_key}, echo) as (port, peers):
        a = await dial(alice, bob, port)
        hello = await a.next(HandshakeComplete)
        assert isinstance(hello, HandshakeComplete)
        assert hello.remote_identity == bob.identity.public_key
        assert a.conn is not None
        for i in range(50):
            a.conn.send(b"message %d" % i)
        a.conn.send(b"z" * MAX_PAYLOAD)
        for i in range(50):
            assert await a.next(DataReceived) == DataReceived(b"message %d" % i)
        assert await a.next(DataReceived) == DataReceived(b"z" * MAX_PAYLOAD)

        (b,) = peers
        seen = await b.next(HandshakeComplete)
        assert isinstance(seen, HandshakeComplete)
        assert seen.remote_identity == alice.identity.public_key
        assert seen.handshake_hash == hello.handshake_hash

        a.conn.close("bye")
        await finished(a.task)
        assert await a.events.get() == SessionClosed("bye", by_peer=False)
        while not isinstance(event := await asyncio.wait_for(b.events.get(), 5), SessionClosed):
            assert isinstance(event, DataReceived)
        assert event == SessionClosed("bye", by_peer=True)
        with pytest.raises(RuntimeError):
            a.conn.send(b"after close")


async def test_close_from_inside_the_event_callback() -> None:
    # What the daemon does with a duplicate session: close it from on_event.
    alice, bob = party(), party()

    def close_at_once(peer: Peer, event: SessionEvent) -> None:
        if isinstance(event, HandshakeComplete):
            assert peer.conn is not None
            peer.conn.close("duplicate session")

    async with server(bob, {alice.identity.public_key}, close_at_once) as (port, _):
        a = await dial(alice, bob, port)
        await a.next(HandshakeComplete)
        await finished(a.task)
        events = []
        while not a.events.empty():
            events.append(a.events.get_nowait())
        assert events[-1] == SessionClosed("duplicate session", by_peer=True)


async def test_refused_dialers_read_nothing_and_wait_alike() -> None:
    # An unauthorized identity, and a dialer that got the device key wrong, both see
    # zero bytes and a close at the handshake timeout: nothing to tell them apart.
    alice, bob, mallory, carol = party(), party(), party(), party()
    config = SessionConfig(handshake_timeout=0.3)
    async with server(bob, {alice.identity.public_key}, config=config) as (port, peers):
        for me, key in ((mallory, bob.device.public_key), (alice, carol.device.public_key)):
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            session = Session(
                "initiator",
                me.device,
                me.cert,
                lambda identity, cert: True,
                remote_static=key,
                now=0.0,
            )
            start = time.monotonic()
            writer.write(session.data_to_send())
            assert await asyncio.wait_for(reader.read(), 5.0) == b""  # EOF, zero bytes
            assert time.monotonic() - start >= 0.25
            writer.close()
            await writer.wait_closed()
        reasons = []
        for peer in peers:
            failed = await asyncio.wait_for(peer.events.get(), 5.0)
            assert isinstance(failed, SessionFailed)
            reasons.append(failed.reason)
        assert "not authorized" in reasons[0] and "does not authenticate" in reasons[1]


async def test_abrupt_disconnect_fails_the_session() -> None:
    alice, bob = party(), party()
    async with server(bob, {alice.identity.public_key}) as (port, peers):
        a = await dial(alice, bob, port)
        await a.next(HandshakeComplete)
        (b,) = peers
        await b.next(HandshakeComplete)
        assert a.conn is not None and a.task is not None
        a.task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await a.task
        failed = await asyncio.wait_for(b.events.get(), 5.0)
        assert isinstance(failed, SessionFailed), failed
        assert "connection lost" in failed.reason


async def test_keepalive_and_idle_timeout_on_the_wire() -> None:
    alice, bob = party(), party()
    fast = SessionConfig(keepalive=0.05, idle_timeout=0.3)
    async with server(bob, {alice.identity.public_key}, config=fast) as (port, peers):
        a = await dial(alice, bob, port, config=fast)
        await a.next(HandshakeComplete)
        await asyncio.sleep(0.6)  # > idle_timeout: only the keepalives keep it up
        assert a.conn is not None and a.conn.session.established
        (b,) = peers
        assert b.conn is not None and b.conn.session.frames_received >= 5
        a.conn.close("done")
        await finished(a.task)


async def test_handshake_timeout_on_a_silent_listener() -> None:
    alice, bob = party(), party()

    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read()  # accepts and never answers
        writer.close()

    srv = await asyncio.start_server(silent, "127.0.0.1", 0)
    try:
        port = srv.sockets[0].getsockname()[1]
        a = await dial(alice, bob, port, config=SessionConfig(handshake_timeout=0.2))
        failed = await asyncio.wait_for(a.events.get(), 5.0)
        assert isinstance(failed, SessionFailed) and "timed out" in failed.reason
        await finished(a.task)
    finally:
        srv.close()
        await srv.wait_closed()


async def test_tcp_throughput_report(capsys: pytest.CaptureFixture[str]) -> None:
    alice, bob = party(), party()
    loop = asyncio.get_running_loop()
    target = {"count": 0, "done": loop.create_future()}

    def count(peer: Peer, event: SessionEvent) -> None:
        if isinstance(event, DataReceived):
            target["count"] -= 1
            if target["count"] == 0:
                target["done"].set_result(None)

    async with server(bob, {alice.identity.public_key}, count) as (port, _):
        a = await dial(alice, bob, port)
        await a.next(HandshakeComplete)
        assert a.conn is not None
        results = []
        for size, n in ((100, 50_000), (MAX_PAYLOAD, 2_000)):
            target["count"], target["done"] = n, loop.create_future()
            payload = b"t" * size
            start = time.perf_counter()
            for i in range(n):
                a.conn.send(payload)
                if i % 256 == 255:
                    await a.conn.drain()
            await asyncio.wait_for(target["done"], 30.0)
            elapsed = time.perf_counter() - start
            results.append((n / elapsed, n * size / elapsed / 1e6))
        with capsys.disabled():
            print(
                f"\nloopback TCP: {results[0][0]:,.0f} msgs/s of 100 B;"
                f" bulk {results[1][1]:,.0f} MB/s in 64 KiB frames"
            )
        a.conn.close("done")
        await finished(a.task)
