"""Our two transfer substreams on one connection and the peer's two, for both file shells.

Why one class: a 1:1 session (:mod:`btchat.node.files`) and a channel link
(:mod:`btchat.node.channel_files`) carry the same transfer messages on the same pair of
substreams (``docs/PROTOCOL.md``, "Files (1:1)"): a control stream at priority 6 and a
bulk stream at priority 7, service 2. What a stream event means for them is the same
too: the peer may open two streams (each read by a reader that holds at most one
message), a third is reset; a malformed message resets the stream it came on; a stream
of ours the peer reset is opened again, so the connection keeps working; bytes a
stream did not take wait here, in order, until it is writable.
"""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass, field
from typing import Self

from btchat.net.pump import StreamConnection
from btchat.stream.events import (
    StreamClosed,
    StreamData,
    StreamOpened,
    StreamReset,
    StreamWritable,
)
from btchat.stream.frames import Service
from btchat.transfer import wire

__all__ = ["TransferStreams"]

log = logging.getLogger(__name__)


@dataclass(eq=False)
class TransferStreams:
    conn: StreamConnection
    control: int
    bulk: int
    readers: dict[int, wire.Reader] = field(default_factory=dict)
    leftover: dict[int, bytes | bytearray] = field(
        default_factory=dict
    )  # stream -> bytes not taken yet

    @classmethod
    def open(cls, conn: StreamConnection, **more: object) -> Self:
        """Open our control and bulk streams on ``conn`` (the peer announced substreams)."""
        control = conn.open_stream(wire.CONTROL_PRIORITY, Service.FILES)
        return cls(conn, control, conn.open_stream(wire.BULK_PRIORITY, Service.FILES), **more)  # type: ignore[arg-type]

    def handle(self, event: object, stats: Counter[str]) -> tuple[list[wire.Message], bool]:
        """One substream event: the messages it completed, and whether our bulk stream
        can take more now (writable, or opened again)."""
        conn = self.conn
        if isinstance(event, StreamOpened):
            # The peer's control and bulk streams: each reader holds at most one message
            # (8 MiB), so a hostile peer costs at most two of them per connection.
            if len(self.readers) >= 2:
                conn.reset_stream(event.stream_id, "unexpected stream")
                stats["rx_bad_stream"] += 1
            else:
                self.readers[event.stream_id] = wire.Reader()
        elif isinstance(event, StreamData):
            return self._feed(event.stream_id, event.data, stats), False
        elif isinstance(event, StreamClosed | StreamReset):
            self.readers.pop(event.stream_id, None)
            sid = event.stream_id
            if isinstance(event, StreamReset) and sid in (self.control, self.bulk):
                # The peer refused one of ours: open a fresh one, so the link still works.
                self.leftover.pop(sid, None)
                if sid == self.control:
                    self.control = conn.open_stream(wire.CONTROL_PRIORITY, Service.FILES)
                else:
                    self.bulk = conn.open_stream(wire.BULK_PRIORITY, Service.FILES)
                    return [], True
        elif isinstance(event, StreamWritable):
            return [], True
        return [], False

    def _feed(self, sid: int, data: bytes, stats: Counter[str]) -> list[wire.Message]:
        reader = self.readers.get(sid)
        if reader is None:
            return []
        self.conn.stream_consumed(sid, len(data))  # the reader's own bound holds memory
        try:
            return reader.feed(data)
        except wire.WireError as exc:
            log.info("bad transfer message: %s", exc)
            stats["rx_malformed"] += 1
            self.readers.pop(sid, None)
            self.conn.reset_stream(sid, "malformed transfer message")
            return []

    def send(self, sid: int, data: bytes | bytearray) -> bool:
        """Queue ``data`` on our stream ``sid``; False if it did not all fit (kept)."""
        if self.leftover.get(sid):
            self.leftover[sid] += data
            return False
        try:
            taken = self.conn.send_stream(sid, data)
        except (RuntimeError, ValueError):  # the connection ended under us
            return False
        if taken < len(data):
            self.leftover[sid] = data[taken:]
            return False
        return True

    def send_control(self, msg: wire.Message) -> bool:
        return self.send(self.control, wire.encode(msg))

    def flush(self) -> bool:
        """Send what streams did not take before; True if nothing is left waiting."""
        for sid in list(self.leftover):
            rest = self.leftover.pop(sid)
            if not self.send(sid, rest):
                return False
        return True
