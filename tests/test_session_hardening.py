"""Hardening of the session shell and core: wait_established, backpressure, fail-closed.

These go with the proposed patch to ``session/core.py`` and ``session/connection.py``.
"""

from __future__ import annotations

import asyncio
import contextlib
import struct
from typing import Any

import pytest
from test_session_core import events, initiator_for, party, transfer

from btchat.session.connection import (
    MAX_WRITE_BACKLOG,
    READ_SIZE,
    SessionConnection,
    SessionEndedError,
    run_session,
)
from btchat.session.core import (
    MAX_CLOSE_REASON,
    MAX_PAYLOAD,
    DataReceived,
    HandshakeComplete,
    Session,
    SessionClosed,
    SessionConfig,
    SessionEvent,
    SessionFailed,
)

# ------------------------------------------------------------------------ core


def test_authorize_must_return_exactly_true() -> None:
    # Fail closed: a callback returning a truthy non-bool (a row, a string) admits no one.
    alice, bob = party(), party()
    for verdict in ("no", 1, [alice], object()):
        a = initiator_for(alice, bob)
        b = Session("responder", bob.device, bob.cert, lambda i, c, v=verdict: v, now=0.0)
        transfer(a, b)
        assert not b.established and b.data_to_send() == b""
        (failed,) = events(b)
        assert isinstance(failed, SessionFailed) and "not authorized" in failed.reason


def test_authorize_that_raises_refuses_and_propagates() -> None:
    alice, bob = party(), party()

    def broken(identity: bytes, cert: Any) -> bool:
        raise KeyError("contacts database unavailable")

    a = initiator_for(alice, bob)
    b = Session("responder", bob.device, bob.cert, broken, now=0.0)
    with pytest.raises(KeyError):
        b.receive_data(a.data_to_send(), 0.0)
    assert b.closed and b.data_to_send() == b"" and b.linger_until == 10.0
    (failed,) = events(b)
    assert isinstance(failed, SessionFailed) and "raised" in failed.reason
    b.receive_data(b"anything", 0.0)  # ended: ignored
    assert events(b) == []


def test_peer_close_reason_is_capped() -> None:
    alice, bob = party(), party()
    a = initiator_for(alice, bob)
    b = Session("responder", bob.device, bob.cert, lambda i, c: True, now=0.0)
    transfer(a, b)
    events(a), events(b)
    assert a._transport is not None
    ciphertext = a._transport.encrypt(b"\x04" + b"x" * 60_000)  # a peer running other code
    b.receive_data(struct.pack(">H", len(ciphertext)) + ciphertext, 0.0)
    assert events(b) == [SessionClosed("x" * MAX_CLOSE_REASON, by_peer=True)]


# ------------------------------------------------------------------------ shell


async def _serve(
    bob: Any, on_event: Any, config: SessionConfig
) -> tuple[asyncio.Server, list[SessionConnection], list[SessionEvent]]:
    conns: list[SessionConnection] = []
    seen: list[SessionEvent] = []

    async def accept(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        loop = asyncio.get_running_loop()
        session = Session(
            "responder", bob.device, bob.cert, lambda i, c: True, now=loop.time(), config=config
        )
        conn = SessionConnection(reader, writer, session)
        conns.append(conn)

        def handle(event: SessionEvent) -> None:
            seen.append(event)
            on_event(conn, event)

        await run_session(reader, writer, session, handle, connection=conn)

    return await asyncio.start_server(accept, "127.0.0.1", 0), conns, seen


async def test_wait_established_and_refusal() -> None:
    alice, bob, carol = party(), party(), party()
    config = SessionConfig(handshake_timeout=0.3)
    srv, _, _ = await _serve(bob, lambda conn, event: None, config)
    port = srv.sockets[0].getsockname()[1]
    try:
        for them, ok in ((bob, True), (carol, False)):  # carol's key: bob cannot decrypt
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            session = initiator_for(alice, them, now=asyncio.get_running_loop().time(),
                                    config=config)  # fmt: skip
            conn = SessionConnection(reader, writer, session)
            task = asyncio.create_task(
                run_session(reader, writer, session, lambda e: None, connection=conn)
            )
            if ok:
                hello = await asyncio.wait_for(conn.wait_established(), 5.0)
                assert hello.remote_identity == bob.identity.public_key
                assert await conn.wait_established() == hello  # idempotent
                conn.close("done")
            else:
                with pytest.raises(SessionEndedError) as info:
                    await asyncio.wait_for(conn.wait_established(), 5.0)
                assert isinstance(info.value.event, SessionFailed)
                assert "timed out" in str(info.value)
            await asyncio.wait_for(task, 5.0)
    finally:
        srv.close()
        await srv.wait_closed()


async def test_cancelled_pump_ends_the_session() -> None:
    alice, bob = party(), party()

    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read()
        writer.close()

    srv = await asyncio.start_server(silent, "127.0.0.1", 0)
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", srv.sockets[0].getsockname()[1])
        session = initiator_for(alice, bob, now=asyncio.get_running_loop().time())
        conn = SessionConnection(reader, writer, session)
        task = asyncio.create_task(
            run_session(reader, writer, session, lambda e: None, connection=conn)
        )
        await asyncio.sleep(0.05)
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        assert session.closed
        with pytest.raises(SessionEndedError):
            await asyncio.wait_for(conn.wait_established(), 1.0)
    finally:
        srv.close()
        await srv.wait_closed()


async def test_peer_that_never_reads_cannot_grow_our_buffers() -> None:
    # An authorized but hostile peer streams DATA at a naive echo application and never
    # reads the echoes. The pump stops reading at MAX_WRITE_BACKLOG, so our memory stays
    # bounded, and the idle timeout drops the peer (none of its frames get processed).
    alice, bob = party(), party()
    fast = SessionConfig(keepalive=0.2, idle_timeout=1.0)

    def echo(conn: SessionConnection, event: SessionEvent) -> None:
        if isinstance(event, DataReceived):
            conn.send(event.payload)  # never drains: the application's mistake

    srv, conns, seen = await _serve(bob, echo, fast)
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", srv.sockets[0].getsockname()[1])
        me = initiator_for(alice, bob, now=0.0)
        writer.write(me.data_to_send())
        while not me.established:
            me.receive_data(await asyncio.wait_for(reader.read(READ_SIZE), 5.0), 0.0)
        writer.write(me.data_to_send())  # the confirmation PING
        payload = b"e" * MAX_PAYLOAD
        peak = 0
        for _ in range(1000):  # up to 64 MiB, far more than loopback buffers hold
            me.send(payload, 0.0)
            writer.write(me.data_to_send())
            try:
                await asyncio.wait_for(writer.drain(), 0.2)
            except TimeoutError:
                break  # the server stopped reading: the kernel buffers are full
            if conns:
                peak = max(peak, conns[0].writer.transport.get_write_buffer_size())
        else:
            pytest.fail("the server kept reading although nobody read its echoes")
        (conn,) = conns
        peak = max(peak, conn.writer.transport.get_write_buffer_size())
        assert peak <= MAX_WRITE_BACKLOG + 2 * (READ_SIZE + 64)
        for _ in range(100):
            if seen and isinstance(seen[-1], SessionFailed):
                break
            await asyncio.sleep(0.05)
        assert isinstance(seen[0], HandshakeComplete)
        assert isinstance(seen[-1], SessionFailed) and "silent" in seen[-1].reason
        writer.transport.abort()
    finally:
        srv.close()
        await srv.wait_closed()
