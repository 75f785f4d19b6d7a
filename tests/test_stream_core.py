"""The sans-I/O stream layer alone: a pair harness on a fake clock, substreams, hostile frames.

The cores here skip the handshake (``Bare`` installs a null cipher at once), so every
frame a hostile peer could send is one line to build; the real handshakes run in the
old-peer and end-to-end tests at the bottom.
"""

from __future__ import annotations

import struct

import pytest
from harness import events, transfer

from btchat.channels.link import WIRE as LINK
from btchat.channels.link import Link, LinkConfig, LinkEstablished
from btchat.identity.keys import DeviceKey, Identity
from btchat.session.core import WIRE as SESSION
from btchat.session.core import HandshakeComplete, Session, SessionConfig
from btchat.stream.core import CipherError, Phase, Role, SecureStream, StreamConfig
from btchat.stream.events import (
    ConnectionFailed,
    DataReceived,
    StreamClosed,
    StreamData,
    StreamOpened,
    StreamReset,
    StreamsAvailable,
    StreamWritable,
)
from btchat.stream.frames import CAPS_MAGIC, MAX_CLOSE_REASON, Sub, Wire, frame

TAG = b"\x00" * 16
WIRE = Wire(
    name="test",
    data=0,
    ping=1,
    pong=2,
    close=3,
    rekey=None,
    idle_reason="idle {timeout:g}",
    close_last=False,
)


class NullCipher:
    """Encrypts to ``plaintext || 16 zero bytes``; anything else fails to decrypt."""

    def encrypt(self, plaintext: bytes) -> bytes:
        return plaintext + TAG

    def decrypt(self, ciphertext: bytes | memoryview) -> bytes:
        ciphertext = bytes(ciphertext)  # the core hands a view of its input buffer
        if not ciphertext.endswith(TAG):
            raise CipherError("bad tag")
        return ciphertext[:-16]

    def rekey_send(self) -> None:
        pass

    def rekey_receive(self) -> None:
        pass


class Bare(SecureStream):
    """A stream with no handshake: established at construction."""

    def __init__(self, role: Role, config: StreamConfig, now: float = 0.0) -> None:
        super().__init__(role, WIRE, config, now)
        self._install_transport(NullCipher(), confirm=False)
        self._establish(now)


class OldPeer(Bare):
    """What a v1 peer does: knows no substream frame, delivers every DATA payload."""

    def _on_data(self, plaintext: bytes, now: float, more: bool) -> None:
        self._emit(DataReceived(plaintext[1:]))


ON = StreamConfig(substreams=True)


def pair(config: StreamConfig = ON, peer: type[Bare] = Bare) -> tuple[Bare, Bare]:
    a, b = Bare("initiator", config), peer("responder", config)
    transfer(a, b)
    return a, b


def frames_of(data: bytes) -> list[bytes]:
    """The plaintexts of the null-cipher frames in ``data``."""
    out, pos = [], 0
    while pos < len(data):
        (length,) = struct.unpack_from(">H", data, pos)
        out.append(data[pos + 2 : pos + 2 + length][:-16])
        pos += 2 + length
    return out


def inject(core: SecureStream, plaintext: bytes) -> None:
    core.receive_data(frame(plaintext + TAG), 0.0)


def failure(core: SecureStream) -> str:
    ends = [e for e in events(core) if isinstance(e, ConnectionFailed)]
    assert ends and core.closed, "expected the stream to fail"
    return ends[-1].reason


def sub(ftype: Sub, stream_id: int, body: bytes = b"") -> bytes:
    return bytes([ftype]) + struct.pack(">I", stream_id) + body


# ------------------------------------------------------------------------ basics


def test_capabilities_make_substreams_available_on_both_sides() -> None:
    a, b = pair()
    assert events(a) == [StreamsAvailable()] and events(b) == [StreamsAvailable()]
    assert a.substreams and b.substreams


def test_transfer_on_a_substream_with_credit_returned() -> None:
    a, b = pair()
    events(a), events(b)
    blob = bytes(range(256)) * 4096  # 1 MiB, four windows
    sid = a.open_stream(3, 0.0)
    assert sid % 2 == 1  # the initiator's ids are odd
    assert a.send_stream(sid, blob, 0.0) == len(blob)
    a.close_stream(sid, 0.0)
    got = bytearray()
    closed = False
    for _ in range(1000):
        transfer(a, b)
        for event in events(b):
            if isinstance(event, StreamData):
                got += event.data
                b.stream_consumed(sid, len(event.data), 0.0)
            elif isinstance(event, StreamClosed):
                closed = True
        if closed:
            break
    assert closed and bytes(got) == blob
    assert not a.closed and not b.closed


def test_responder_opens_even_ids_and_both_directions_interleave() -> None:
    a, b = pair()
    events(a), events(b)
    sa, sb = a.open_stream(0, 0.0), b.open_stream(0, 0.0)
    assert (sa, sb) == (1, 2)
    a.send_stream(sa, b"from a", 0.0)
    b.send_stream(sb, b"from b", 0.0)
    transfer(a, b)
    assert StreamData(sa, b"from a") in events(b)
    assert StreamData(sb, b"from b") in events(a)


def test_byte_by_byte_delivery_of_chat_and_substream() -> None:
    a, b = pair()
    events(a), events(b)
    sid = a.open_stream(1, 0.0)
    a.send_stream(sid, b"x" * 40_000, 0.0)
    a.send(b"d-chat", 0.0)
    a.close_stream(sid, 0.0)
    wire = a.data_to_send()
    for i in range(len(wire)):
        b.receive_data(wire[i : i + 1], 0.0)
    got = events(b)
    assert got[0] == StreamOpened(sid, 1)
    assert got[1] == DataReceived(b"d-chat")  # chat overtook the queued bulk
    assert b"".join(e.data for e in got if isinstance(e, StreamData)) == b"x" * 40_000
    assert got[-1] == StreamClosed(sid)


def test_priority_chat_goes_out_within_one_chunk_of_50_mb_queued() -> None:
    big = StreamConfig(substreams=True, initial_window=2**30, stream_buffer=64 << 20)
    a, _b = pair(big)
    sid = a.open_stream(7, 0.0)
    assert a.send_stream(sid, b"\x00" * (50 << 20), 0.0) == 50 << 20
    first = a.data_to_send()
    assert len(first) <= big.burst + 4 * 64  # one burst of bulk per call, no more
    a.send(b"d-hello", 0.0)
    out = frames_of(a.data_to_send())
    assert out[0] == b"\x00d-hello"  # ahead of every chunk still queued
    assert a.queued_stream_bytes > 49 << 20  # the rest waits in the core, not the wire


def test_strict_priority_between_classes_round_robin_within() -> None:
    a, _b = pair(StreamConfig(substreams=True, chunk_size=1000, burst=10**6))
    low = a.open_stream(5, 0.0)
    x, y = a.open_stream(0, 0.0), a.open_stream(0, 0.0)
    for sid in (low, x, y):
        a.send_stream(sid, b"." * 3000, 0.0)
    order = [
        struct.unpack_from(">I", f, 1)[0] for f in frames_of(a.data_to_send()) if f[0] == Sub.DATA
    ]
    assert order == [x, y, x, y, x, y, low, low, low]


def test_flow_control_bounds_what_the_receiver_holds() -> None:
    cfg = StreamConfig(substreams=True, initial_window=64 * 1024, stream_buffer=1 << 20)
    a, b = pair(cfg)
    events(b)
    sid = a.open_stream(2, 0.0)
    a.send_stream(sid, b"z" * (1 << 20), 0.0)
    transfer(a, b)
    held = sum(len(e.data) for e in events(b) if isinstance(e, StreamData))
    assert held == cfg.initial_window  # the sender stopped at the window
    transfer(a, b)
    assert events(b) == []  # and stays stopped until credit comes back
    b.stream_consumed(sid, held, 0.0)
    transfer(a, b)
    assert sum(len(e.data) for e in events(b) if isinstance(e, StreamData)) == held


def test_send_stream_accepts_up_to_its_buffer_then_says_writable() -> None:
    cfg = StreamConfig(substreams=True, stream_buffer=100_000, initial_window=1 << 20)
    a, b = pair(cfg)
    events(a)
    sid = a.open_stream(0, 0.0)
    assert a.send_stream(sid, b"q" * 150_000, 0.0) == 100_000
    transfer(a, b)
    assert StreamWritable(sid) in events(a)


def test_reset_by_receiver_drops_data_in_flight_and_is_answered() -> None:
    a, b = pair()
    events(a), events(b)
    sid = a.open_stream(0, 0.0)
    a.send_stream(sid, b"a" * 10, 0.0)
    transfer(a, b)
    events(b)
    a.send_stream(sid, b"in flight", 0.0)
    in_flight = a.data_to_send()
    b.reset_stream(sid, "not wanted", 0.0)
    b.receive_data(in_flight, 0.0)
    assert events(b) == []  # dropped, not a violation
    transfer(a, b)
    assert events(a) == [StreamReset(sid, "not wanted")]
    assert not a.closed and not b.closed
    with pytest.raises(ValueError):
        a.send_stream(sid, b"more", 0.0)


def test_reset_by_sender_reaches_the_receiver() -> None:
    a, b = pair()
    events(a), events(b)
    sid = a.open_stream(0, 0.0)
    a.send_stream(sid, b"partial", 0.0)
    a.reset_stream(sid, "cancelled", 0.0)
    transfer(a, b)
    assert events(b)[-1] == StreamReset(sid, "cancelled")


def test_open_stream_needs_both_sides_to_announce() -> None:
    a, b = Bare("initiator", ON), Bare("responder", StreamConfig())
    transfer(a, b)
    assert events(a) == [] and events(b) == []
    for core in (a, b):
        with pytest.raises(RuntimeError, match="not announced"):
            core.open_stream(0, 0.0)


def test_application_payload_cannot_pose_as_capabilities() -> None:
    a, _ = pair()
    with pytest.raises(ValueError, match="reserved"):
        a.send(CAPS_MAGIC + b"\x01", 0.0)


def test_caller_misuse_raises() -> None:
    a, _ = pair()
    with pytest.raises(ValueError):
        a.open_stream(8, 0.0)
    with pytest.raises(ValueError):
        a.send_stream(99, b"x", 0.0)
    sid = a.open_stream(0, 0.0)
    a.close_stream(sid, 0.0)
    with pytest.raises(ValueError):
        a.send_stream(sid, b"x", 0.0)


# ------------------------------------------------------------------------ hostile frames


def opened(b: Bare, stream_id: int = 1) -> None:
    events(b)
    inject(b, sub(Sub.OPEN, stream_id, b"\x00\x00"))
    assert events(b) == [StreamOpened(stream_id, 0)]


@pytest.mark.parametrize(
    ("plaintext", "reason"),
    [
        (b"\x15", "unknown frame type 21"),
        (b"\xff", "unknown frame type 255"),
        (sub(Sub.OPEN, 2, b"\x00\x00"), "not the peer's"),  # the initiator's ids are odd
        (sub(Sub.OPEN, 0, b"\x00\x00"), "not the peer's"),
        (sub(Sub.OPEN, 1, b"\x08\x00"), "priority 8"),
        (sub(Sub.OPEN, 1), "malformed OPEN"),
        (sub(Sub.OPEN, 1, b"\x00"), "malformed OPEN"),  # no service byte (before 1.2)
        (sub(Sub.DATA, 1, b"x"), "never opened"),
        (sub(Sub.DATA, 2, b"x"), "did not open"),
        (sub(Sub.FIN, 3), "never opened"),
        (sub(Sub.CREDIT, 2, struct.pack(">I", 5)), "not ours"),  # never opened by b
        (sub(Sub.CREDIT, 1, struct.pack(">I", 5)), "not ours"),  # the peer's parity
        (sub(Sub.RESET, 4), "never opened"),
        (b"\x12\x00", "malformed CREDIT"),
        (b"\x00" + CAPS_MAGIC, "capabilities"),  # no flags byte
    ],
)
def test_hostile_frame_fails_the_stream(plaintext: bytes, reason: str) -> None:
    _, b = pair()
    events(b)
    inject(b, plaintext)
    assert reason in failure(b)
    assert b.data_to_send() == b""  # a failed stream sends nothing more


def test_substream_frames_are_unknown_types_when_not_announced() -> None:
    _, b = pair(StreamConfig())
    inject(b, sub(Sub.OPEN, 1, b"\x00\x00"))
    assert failure(b) == "unknown frame type 16"


def test_reopening_an_id_fails() -> None:
    _, b = pair()
    opened(b, 3)
    inject(b, sub(Sub.OPEN, 1, b"\x00\x00"))  # ids only go up
    assert "out of order" in failure(b)


def test_data_on_a_closed_stream_fails() -> None:
    _, b = pair()
    opened(b)
    inject(b, sub(Sub.FIN, 1))
    assert events(b) == [StreamClosed(1)]
    inject(b, sub(Sub.DATA, 1, b"late"))
    assert "closed substream 1" in failure(b)


def test_overrunning_the_credit_fails() -> None:
    cfg = StreamConfig(substreams=True, initial_window=1000)
    _, b = pair(cfg)
    opened(b)
    inject(b, sub(Sub.DATA, 1, b"x" * 1000))
    assert events(b) == [StreamData(1, b"x" * 1000)]
    inject(b, sub(Sub.DATA, 1, b"y"))
    assert "overran the credit" in failure(b)


def test_credit_overflow_fails() -> None:
    a, _b = pair()
    events(a)
    sid = a.open_stream(0, 0.0)
    a.data_to_send()
    inject(a, sub(Sub.CREDIT, sid, struct.pack(">I", 2**32 - 1)))
    assert "credit overflow" in failure(a)


def test_empty_credit_fails() -> None:
    a, _ = pair()
    sid = a.open_stream(0, 0.0)
    inject(a, sub(Sub.CREDIT, sid, struct.pack(">I", 0)))
    assert "is empty" in failure(a)


def test_too_many_streams_fails() -> None:
    _, b = pair(StreamConfig(substreams=True, max_streams=2))
    events(b)
    inject(b, sub(Sub.OPEN, 1, b"\x00\x00"))
    inject(b, sub(Sub.OPEN, 3, b"\x00\x00"))
    inject(b, sub(Sub.OPEN, 5, b"\x00\x00"))
    assert "more than 2 substreams" in failure(b)


def test_overlong_reset_reason_fails() -> None:
    _, b = pair()
    opened(b)
    inject(b, sub(Sub.RESET, 1, b"r" * (MAX_CLOSE_REASON + 1)))
    assert "malformed RESET" in failure(b)


def test_repeated_capabilities_fail() -> None:
    _, b = pair()
    inject(b, b"\x00" + CAPS_MAGIC + b"\x01")
    assert "repeated capabilities" in failure(b)


def test_short_and_untagged_frames_fail() -> None:
    _, b = pair()
    b.receive_data(b"\x00\x05abcde", 0.0)
    assert "shorter than a transport message" in failure(b)
    _, c = pair()
    c.receive_data(frame(b"\x00hello" + b"\x01" * 16), 0.0)
    assert "failed authentication" in failure(c)


def test_credit_and_reset_for_a_finished_stream_are_ignored() -> None:
    a, b = pair()
    sid = a.open_stream(0, 0.0)
    a.close_stream(sid, 0.0)
    transfer(a, b)
    inject(a, sub(Sub.CREDIT, sid, struct.pack(">I", 10)))
    inject(a, sub(Sub.RESET, sid))
    assert not a.closed


# ------------------------------------------------------------------------ timers


def test_keepalive_and_idle_on_the_fake_clock() -> None:
    cfg = StreamConfig(keepalive=5.0, idle_timeout=12.0)
    a, b = pair(cfg)
    assert a.get_timer() == 5.0
    a.handle_timer(5.0)
    assert frames_of(a.data_to_send()) == [b"\x01"]  # PING
    b.handle_timer(12.0)
    assert failure(b) == "idle 12"


def test_close_is_bounded_and_ends_substreams() -> None:
    a, _b = pair()
    sid = a.open_stream(0, 0.0)
    a.send_stream(sid, b"x" * 100_000, 0.0)
    a.close("é" * 300, 0.0)
    out = frames_of(a.data_to_send())
    assert out[-1][0] == WIRE.close and len(out[-1]) - 1 <= MAX_CLOSE_REASON
    assert a.queued_stream_bytes == 0 and not a.bulk_ready
    assert a._state is Phase.ENDED


# ------------------------------------------------------------------------ old peers


def test_old_peer_sees_one_ignorable_payload_and_nothing_else() -> None:
    new, old = Bare("initiator", ON), OldPeer("responder", StreamConfig())
    transfer(new, old)
    new.send(b"d4:text2:hie", 0.0)
    old.send(b"d4:text3:yoe", 0.0)
    transfer(new, old)
    assert events(old) == [DataReceived(CAPS_MAGIC + b"\x01"), DataReceived(b"d4:text2:hie")]
    assert events(new) == [DataReceived(b"d4:text3:yoe")]
    with pytest.raises(RuntimeError):
        new.open_stream(0, 0.0)
    assert not old.closed and not new.closed


def test_caps_payload_is_what_an_old_application_drops() -> None:
    # v1 applications parse every DATA payload as bencode; the caps payload is not.
    from btchat.codec.bencode import DecodeError, decode

    with pytest.raises(DecodeError):
        decode(CAPS_MAGIC + b"\x01")


def _sessions(ca: StreamConfig, cb: StreamConfig) -> tuple[Session, Session]:
    ia, ib = Identity.generate(), Identity.generate()
    da, db = DeviceKey.generate(), DeviceKey.generate()
    a = Session(
        "initiator",
        da,
        ia.certify(da, 1),
        lambda i, c: True,
        remote_static=db.public_key,
        now=0.0,
        config=ca,
    )
    b = Session("responder", db, ib.certify(db, 1), lambda i, c: True, now=0.0, config=cb)
    transfer(a, b)
    return a, b


def _links(ca: StreamConfig, cb: StreamConfig) -> tuple[Link, Link]:
    ia, ib, cid, psk = Identity.generate(), Identity.generate(), b"c" * 32, b"p" * 32
    a = Link(
        "initiator",
        identity=ia,
        channel_id=cid,
        psk=psk,
        authorize=lambda i: True,
        now=0.0,
        config=ca,
    )
    b = Link(
        "responder",
        identity=ib,
        channel_id=cid,
        psk=psk,
        authorize=lambda i: True,
        now=0.0,
        config=cb,
    )
    transfer(a, b)
    return a, b


@pytest.mark.parametrize("kind", ["session", "link"])
def test_substreams_over_the_real_handshakes(kind: str) -> None:
    if kind == "session":
        a, b = _sessions(SessionConfig(substreams=True), SessionConfig(substreams=True))
        first = HandshakeComplete
    else:
        a, b = _links(LinkConfig(substreams=True), LinkConfig(substreams=True))
        first = LinkEstablished  # type: ignore[assignment]
    ea, eb = events(a), events(b)
    assert isinstance(ea[0], first) and isinstance(eb[0], first)
    assert StreamsAvailable() in ea and StreamsAvailable() in eb
    sid = b.open_stream(4, 0.0)
    b.send_stream(sid, b"file" * 10_000, 0.0)
    b.close_stream(sid, 0.0)
    wire = b.data_to_send()
    for i in range(0, len(wire), 7):
        a.receive_data(wire[i : i + 7], 0.0)
    transfer(a, b)
    got = events(a)
    assert got[0] == StreamOpened(sid, 4) and got[-1] == StreamClosed(sid)
    assert b"".join(e.data for e in got if isinstance(e, StreamData)) == b"file" * 10_000


@pytest.mark.parametrize("kind", ["session", "link"])
@pytest.mark.parametrize("new_side", ["initiator", "responder"])
def test_new_and_v1_configured_peers_interoperate(kind: str, new_side: str) -> None:
    on = SessionConfig(substreams=True) if kind == "session" else LinkConfig(substreams=True)
    off = SessionConfig() if kind == "session" else LinkConfig()
    ca, cb = (on, off) if new_side == "initiator" else (off, on)
    a, b = _sessions(ca, cb) if kind == "session" else _links(ca, cb)  # type: ignore[arg-type]
    assert a.established and b.established
    a.send(b"d1:ai1ee", 0.0)
    b.send(b"d1:bi2ee", 0.0)
    transfer(a, b)
    ea, eb = events(a), events(b)
    assert not any(isinstance(e, StreamsAvailable) for e in ea + eb)
    assert ea[-1] == DataReceived(b"d1:bi2ee") and eb[-1] == DataReceived(b"d1:ai1ee")
    for core in (a, b):
        with pytest.raises(RuntimeError):
            core.open_stream(0, 0.0)


def test_each_dialect_reads_its_numbers_from_its_enum() -> None:
    """The v1 numbers (docs/PROTOCOL.md): sessions DATA 0, PING 1, PONG 2, REKEY 3,
    CLOSE 4; links the same without REKEY and with CLOSE 3."""
    numbers = [(w.data, w.ping, w.pong, w.close, w.rekey) for w in (SESSION, LINK)]
    assert numbers == [(0, 1, 2, 4, 3), (0, 1, 2, 3, None)]
    assert (SESSION.name, SESSION.close_last, LINK.name, LINK.close_last) == (
        "session",
        True,
        "link",
        False,
    )
    assert all(type(n) is int for n in numbers[0])
