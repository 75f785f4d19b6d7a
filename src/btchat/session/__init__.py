"""btchat sessions: Noise IK between two devices over a byte stream (sans-I/O core).

``core`` is the protocol state machine, ``noise_ik`` the Noise wrapper it uses, and
``connection`` the asyncio shell that runs a session over a TCP stream.
"""

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

__all__ = [
    "MAX_PAYLOAD",
    "DataReceived",
    "HandshakeComplete",
    "Session",
    "SessionClosed",
    "SessionConfig",
    "SessionEvent",
    "SessionFailed",
]
