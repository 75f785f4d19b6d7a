"""The one asyncio pump and the transport seam: any ByteStream, TCP dialer and listener.

An in-memory ByteStream stands in for "a UDP path, a relay, a proxy": if sessions run
over it unchanged, the seam holds. Real loopback tests use port 0.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from btchat.channels.link import Link, LinkConfig, LinkEstablished
from btchat.channels.link_connection import LinkConnection, run_link_over
from btchat.identity.keys import DeviceKey, Identity
from btchat.net.transport import ByteStream, TcpDialer, TcpListener
from btchat.session.connection import SessionConnection, run_session_over
from btchat.session.core import DataReceived, HandshakeComplete, Session
from btchat.stream.events import StreamClosed, StreamData, StreamOpened, StreamsAvailable


class MemoryStream:
    """One end of an in-memory byte pipe (a carrier that is not TCP)."""

    def __init__(self) -> None:
        self.inbox: asyncio.Queue[bytes] = asyncio.Queue()
        self.peer: MemoryStream | None = None
        self._closing = False

    @property
    def remote_address(self) -> tuple[str, int] | None:
        return ("memory", 0)

    async def read(self, n: int) -> bytes:
        return await self.inbox.get()

    def write(self, data: bytes) -> None:
        assert self.peer is not None
        if not self._closing:
            self.peer.inbox.put_nowait(data)

    def write_buffer_size(self) -> int:
        return 0

    async def drain(self) -> None:
        return None

    def is_closing(self) -> bool:
        return self._closing

    async def aclose(self) -> None:
        self.abort()

    def abort(self) -> None:
        if not self._closing:
            self._closing = True
            assert self.peer is not None
            self.peer.inbox.put_nowait(b"")  # EOF


def memory_pair() -> tuple[MemoryStream, MemoryStream]:
    a, b = MemoryStream(), MemoryStream()
    a.peer, b.peer = b, a
    return a, b


def test_memory_stream_is_a_byte_stream() -> None:
    assert isinstance(MemoryStream(), ByteStream)


async def test_a_session_runs_over_any_byte_stream() -> None:
    loop = asyncio.get_running_loop()
    ia, ib = Identity.generate(), Identity.generate()
    da, db = DeviceKey.generate(), DeviceKey.generate()
    sa = Session(
        "initiator",
        da,
        ia.certify(da, 1),
        lambda i, c: True,
        remote_static=db.public_key,
        now=loop.time(),
    )
    sb = Session("responder", db, ib.certify(db, 1), lambda i, c: True, now=loop.time())
    ma, mb = memory_pair()
    ca, cb = SessionConnection.over(ma, sa), SessionConnection.over(mb, sb)
    got: asyncio.Queue[Any] = asyncio.Queue()

    def on_b(event: Any) -> None:
        if isinstance(event, DataReceived):
            got.put_nowait(event.payload)
            cb.send(b"echo " + event.payload)

    ta = asyncio.create_task(run_session_over(ca, lambda e: None))
    tb = asyncio.create_task(run_session_over(cb, on_b))
    assert isinstance(await ca.wait_established(), HandshakeComplete)
    ca.send(b"hello")
    assert await asyncio.wait_for(got.get(), 5) == b"hello"
    ca.close("bye")
    await asyncio.wait_for(asyncio.gather(ta, tb), 5)


async def test_bulk_substream_over_tcp_does_not_hold_up_chat() -> None:
    """8 MB on a substream while chat flows, through TcpListener and TcpDialer."""
    loop = asyncio.get_running_loop()
    cid, psk = b"c" * 32, b"k" * 32
    cfg = LinkConfig(substreams=True)
    blob = bytes(range(256)) * (32 * 1024)  # 8 MiB
    received = bytearray()
    chat_during_bulk: list[int] = []
    done: asyncio.Future[None] = loop.create_future()
    server_tasks: list[asyncio.Task[Any]] = []

    def make(role: str, identity: Identity) -> Link:
        return Link(
            role,  # type: ignore[arg-type]
            identity=identity,
            channel_id=cid,
            psk=psk,
            authorize=lambda i: True,
            now=loop.time(),
            config=cfg,
        )

    async def on_stream(stream: ByteStream) -> None:
        conn = LinkConnection.over(stream, make("responder", Identity.generate()))

        def on_event(event: Any) -> None:
            if isinstance(event, StreamData):
                received.extend(event.data)
                conn.stream_consumed(event.stream_id, len(event.data))
            elif isinstance(event, DataReceived):
                chat_during_bulk.append(len(received))
            elif isinstance(event, StreamClosed) and not done.done():
                done.set_result(None)
            elif isinstance(event, StreamOpened):
                assert event.priority == 6

        server_tasks.append(asyncio.current_task())  # type: ignore[arg-type]
        await run_link_over(conn, on_event)

    listener = await TcpListener.start("127.0.0.1", 0, on_stream)
    try:
        stream = await TcpDialer(timeout=5).dial(("127.0.0.1", listener.port))
        conn = LinkConnection.over(stream, make("initiator", Identity.generate()))
        ready: asyncio.Future[None] = loop.create_future()

        def on_event(event: Any) -> None:
            if isinstance(event, StreamsAvailable) and not ready.done():
                ready.set_result(None)

        pump = asyncio.create_task(run_link_over(conn, on_event))
        assert isinstance(await conn.wait_established(), LinkEstablished)
        await asyncio.wait_for(ready, 5)
        sid = conn.open_stream(6)
        offset, deadline = 0, loop.time() + 30
        while offset < len(blob) or not done.done():
            if offset < len(blob):
                offset += conn.send_stream(sid, blob[offset : offset + 256 * 1024])
                if offset >= len(blob):
                    conn.close_stream(sid)
            assert conn.send(b"d4:chat4:ping" + b"e")
            await asyncio.sleep(0.002)
            if loop.time() > deadline:
                pytest.fail("transfer did not finish")
        await asyncio.wait_for(done, 30)
        assert bytes(received) == blob
        # Chat kept arriving while the bulk was still in flight, not only after it.
        assert any(n < len(blob) for n in chat_during_bulk)
        conn.close("done")
        await asyncio.wait_for(pump, 5)
    finally:
        await listener.aclose()
        for task in server_tasks:
            task.cancel()
