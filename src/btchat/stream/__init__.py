"""The stream layer: what a session and a channel link speak after their handshakes.

``core`` is the sans-I/O :class:`~btchat.stream.core.SecureStream` (length framing,
typed frames, keepalive/idle timers, rekey, close, backpressure and multiplexed
substreams); ``frames`` the wire dialects and substream frame codecs; ``scheduler`` the
output scheduler that keeps chat ahead of bulk; ``events`` what the core reports.
The handshakes live in :mod:`btchat.session` and :mod:`btchat.channels.link`; the one
asyncio pump for any byte stream is :mod:`btchat.net.pump`.
"""

from btchat.stream.core import CipherError, SecureStream, StreamConfig
from btchat.stream.events import (
    ConnectionClosed,
    ConnectionFailed,
    DataReceived,
    StreamClosed,
    StreamData,
    StreamOpened,
    StreamReset,
    StreamsAvailable,
    StreamWritable,
)
from btchat.stream.frames import Wire

__all__ = [
    "CipherError",
    "ConnectionClosed",
    "ConnectionFailed",
    "DataReceived",
    "SecureStream",
    "StreamClosed",
    "StreamConfig",
    "StreamData",
    "StreamOpened",
    "StreamReset",
    "StreamWritable",
    "StreamsAvailable",
    "Wire",
]
