"""The stream layer's wire: length framing, the frame types of each dialect, substream bodies.

Wire format (both dialects)::

    frame     = length:uint16be  noise_message           (Noise §3: <= 65535 bytes)
    transport = AEAD( type:uint8 || body )                (Noise §5, ad = "")

Sessions and channel links number their v1 frame types differently (a link has no
REKEY and its CLOSE is 3); a :class:`Wire` names one dialect, so both keep their exact
v1 bytes. The substream frames (``docs/PROTOCOL.md``, "Substreams") are the same in
both dialects and are sent only to a peer that announced them with a capabilities
payload on the default stream::

    caps      = DATA frame whose body is CAPS_MAGIC || flags:uint8   (bit 0: substreams)
    OPEN      = 0x10  stream_id:uint32be priority:uint8 service:uint8
    SDATA     = 0x11  stream_id:uint32be bytes (1 or more)
    CREDIT    = 0x12  stream_id:uint32be increment:uint32be (> 0)
    FIN       = 0x13  stream_id:uint32be
    RESET     = 0x14  stream_id:uint32be reason:utf-8 (<= MAX_CLOSE_REASON bytes)
"""

from __future__ import annotations

import enum
import struct
from dataclasses import dataclass

__all__ = [
    "CAPS_DHT",
    "CAPS_MAGIC",
    "CAPS_RELAY",
    "CAPS_SUBSTREAMS",
    "CAPS_UPGRADE",
    "FRAME_HEADER",
    "MAX_CLOSE_REASON",
    "MAX_FRAME_BODY",
    "MAX_MESSAGE_LEN",
    "MAX_STREAM_ID",
    "MIN_TRANSPORT_MESSAGE",
    "TAGLEN",
    "Service",
    "Sub",
    "Wire",
    "encode_close_reason",
    "frame",
]

#: Noise §3: no Noise message (handshake or transport) exceeds 65535 bytes.
MAX_MESSAGE_LEN = 65535
#: Noise §3: AEAD ciphertexts carry a 16-byte authentication tag.
TAGLEN = 16
#: Bytes of the big-endian length prefix in front of every Noise message.
FRAME_HEADER = 2
#: Largest frame body: a transport message minus its tag and the 1-byte frame type.
MAX_FRAME_BODY = MAX_MESSAGE_LEN - TAGLEN - 1
#: Smallest transport message: a tag plus the 1-byte frame type.
MIN_TRANSPORT_MESSAGE = TAGLEN + 1
#: CLOSE and RESET reasons are for humans and logs; longer ones are cut when sent.
MAX_CLOSE_REASON = 256
#: Substream ids are uint32; 0 is the default stream (plain DATA frames).
MAX_STREAM_ID = 2**32 - 1
#: Opens a capabilities payload on the default stream. Application payloads are
#: bencoded dictionaries (they start with ``d``), so none can begin with a NUL; ``send``
#: refuses one that does begin with this, so the two can never be confused.
CAPS_MAGIC = b"\x00btchat-caps\x00"
#: Capabilities flag: "I understand the substream frames".
CAPS_SUBSTREAMS = 0x01
#: Capabilities bit 1: this peer relays circuits for its contacts (PROTOCOL.md "Relayed sessions").
CAPS_RELAY = 0x02
#: Capabilities bit 2: this peer runs DHT operations for us (PROTOCOL.md "The DHT
#: through a contact").
CAPS_DHT = 0x04
#: Capabilities bit 3: this peer upgrades relayed sessions (PROTOCOL.md "Upgrading a
#: relayed session", 1.5): CONNECT/SYNC payloads may be sent to it.
CAPS_UPGRADE = 0x08

_LENGTH = struct.Struct(">H")
ID = struct.Struct(">I")
OPEN_BODY = struct.Struct(">IBB")
CREDIT_BODY = struct.Struct(">II")


class Service(enum.IntEnum):
    """What a substream carries, named in its OPEN (assigned numbers: PROTOCOL.md).

    The receiver hands the stream to that service's handler and resets one whose
    service it does not run, so services never read each other's bytes."""

    UNNAMED = 0  # an application's own, on a connection that runs only one
    RELAY = 1  # one direction of a relay hop (PROTOCOL.md "Relayed sessions")
    FILES = 2  # a file-transfer control or bulk stream (PROTOCOL.md "Files")


class Sub(enum.IntEnum):
    """Substream frame types, the same in every dialect (none is a v1 type)."""

    OPEN = 0x10
    DATA = 0x11
    CREDIT = 0x12
    FIN = 0x13
    RESET = 0x14


@dataclass(frozen=True)
class Wire:
    """One dialect's v1 frame-type numbers and wording.

    ``rekey`` is None where the dialect has no REKEY frame (links). ``close_last``: the
    peer must send nothing after CLOSE in the same read (sessions check this).
    """

    name: str  # "session" / "link": how errors name the connection
    data: int
    ping: int
    pong: int
    close: int
    rekey: int | None
    idle_reason: str  # formatted with ``timeout``
    close_last: bool

    @classmethod
    def of(
        cls, name: str, types: type[enum.IntEnum], *, idle_reason: str, close_last: bool
    ) -> Wire:
        """The dialect whose numbers are ``types``' DATA, PING, PONG and CLOSE (and
        REKEY, if it has one): each number is written once, in the dialect's enum."""
        rekey = types.__members__.get("REKEY")
        return cls(
            name,
            int(types["DATA"]),
            int(types["PING"]),
            int(types["PONG"]),
            int(types["CLOSE"]),
            None if rekey is None else int(rekey),
            idle_reason,
            close_last,
        )


def frame(message: bytes) -> bytes:
    """One length-prefixed Noise message."""
    return _LENGTH.pack(len(message)) + message


def encode_close_reason(reason: str) -> bytes:
    """``reason`` as UTF-8, cut to :data:`MAX_CLOSE_REASON` at a character boundary."""
    body = reason.encode("utf-8")[:MAX_CLOSE_REASON]
    return body.decode("utf-8", "ignore").encode("utf-8")
