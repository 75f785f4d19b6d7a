"""What a :class:`~btchat.stream.core.SecureStream` reports through ``next_event()``.

The connection-level events (``DataReceived``, ``ConnectionClosed``, ``ConnectionFailed``)
are the ones sessions and links always had; :mod:`btchat.session.core` and
:mod:`btchat.channels.link` export them under their old names. The ``Stream*`` events
concern substreams and occur only once both peers announced them.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = [
    "ConnectionClosed",
    "ConnectionFailed",
    "DataReceived",
    "StreamClosed",
    "StreamData",
    "StreamEvent",
    "StreamOpened",
    "StreamReset",
    "StreamWritable",
    "StreamsAvailable",
]


@dataclass(frozen=True)
class DataReceived:
    """One DATA frame's payload (the default stream), in order, exactly once, authenticated."""

    payload: bytes


@dataclass(frozen=True)
class ConnectionClosed:
    """An orderly end: we called ``close``, or the peer sent CLOSE."""

    reason: str
    #: Whether the peer's CLOSE ended the connection (a local close's reason is ours).
    by_peer: bool = False


@dataclass(frozen=True)
class ConnectionFailed:
    """The connection ended without an orderly CLOSE: bad input, timeout, lost stream."""

    reason: str


@dataclass(frozen=True)
class StreamsAvailable:
    """The peer announced substreams: :meth:`SecureStream.open_stream` may be called."""


@dataclass(frozen=True)
class StreamOpened:
    """The peer opened substream ``stream_id``; its data follows as :class:`StreamData`."""

    stream_id: int
    priority: int
    service: int = 0  # a frames.Service; any value 0..255 arrives (the handler decides)


@dataclass(frozen=True)
class StreamData:
    """Bytes on a substream the peer opened; hand back credit with ``stream_consumed``."""

    stream_id: int
    data: bytes


@dataclass(frozen=True)
class StreamClosed:
    """The peer finished substream ``stream_id``: every byte of it was delivered."""

    stream_id: int


@dataclass(frozen=True)
class StreamReset:
    """Substream ``stream_id`` was abandoned by the peer; data may be missing."""

    stream_id: int
    reason: str


@dataclass(frozen=True)
class StreamWritable:
    """Our substream ``stream_id`` refused bytes earlier and has room again."""

    stream_id: int


StreamEvent = (
    DataReceived
    | ConnectionClosed
    | ConnectionFailed
    | StreamsAvailable
    | StreamOpened
    | StreamData
    | StreamClosed
    | StreamReset
    | StreamWritable
)
