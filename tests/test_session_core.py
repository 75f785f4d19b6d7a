"""The sans-I/O session: a pair harness on a fake clock, hostile peers, rekey, timers."""

from __future__ import annotations

import struct
import time
from dataclasses import dataclass

import pytest
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305
from harness import events, split_frames, transfer
from hypothesis import given, settings
from hypothesis import strategies as st

from btchat.identity.keys import DeviceCertificate, DeviceKey, Identity
from btchat.session.core import (
    MAX_HANDSHAKE_MESSAGE,
    MAX_PAYLOAD,
    PROLOGUE,
    DataReceived,
    FrameType,
    HandshakeComplete,
    Session,
    SessionClosed,
    SessionConfig,
    SessionFailed,
)
from btchat.session.noise_ik import IKHandshake

# ------------------------------------------------------------------------ harness


@dataclass(frozen=True)
class Party:
    identity: Identity
    device: DeviceKey
    cert: DeviceCertificate


def party() -> Party:
    identity, device = Identity.generate(), DeviceKey.generate()
    return Party(identity, device, identity.certify(device, created=1_700_000_000))


def initiator_for(
    me: Party, them: Party, *, now: float = 0.0, config: SessionConfig | None = None
) -> Session:
    """An initiator that dials ``them`` and accepts exactly their identity."""
    return Session(
        "initiator",
        me.device,
        me.cert,
        lambda identity, cert: identity == them.identity.public_key,
        remote_static=them.device.public_key,
        now=now,
        config=config or SessionConfig(),
    )


def responder_for(
    me: Party,
    allowed: set[bytes],
    *,
    now: float = 0.0,
    config: SessionConfig | None = None,
) -> Session:
    """A responder that accepts the identities in ``allowed`` (its contacts)."""
    return Session(
        "responder",
        me.device,
        me.cert,
        lambda identity, cert: identity in allowed,
        now=now,
        config=config or SessionConfig(),
    )


def established_pair(
    config: SessionConfig | None = None, now: float = 0.0
) -> tuple[Session, Session, Party, Party]:
    alice, bob = party(), party()
    a = initiator_for(alice, bob, now=now, config=config)
    b = responder_for(bob, {alice.identity.public_key}, now=now, config=config)
    transfer(a, b, now)
    assert a.established and b.established
    events(a), events(b)
    return a, b, alice, bob


def only_failure(s: Session) -> SessionFailed:
    evs = events(s)
    assert len(evs) == 1 and isinstance(evs[0], SessionFailed), evs
    assert s.closed and not s.established
    return evs[0]


# ------------------------------------------------------------------------ handshake


def test_handshake_and_data_both_ways() -> None:
    alice, bob = party(), party()
    a = initiator_for(alice, bob)
    b = responder_for(bob, {alice.identity.public_key})
    assert not a.established and not b.established
    transfer(a, b)
    ea, eb = events(a), events(b)
    assert isinstance(ea[0], HandshakeComplete) and isinstance(eb[0], HandshakeComplete)
    assert ea[0].remote_identity == bob.identity.public_key
    assert eb[0].remote_identity == alice.identity.public_key
    assert ea[0].remote_certificate == bob.cert and eb[0].remote_certificate == alice.cert
    assert ea[0].handshake_hash == eb[0].handshake_hash and len(ea[0].handshake_hash) == 64
    assert a.remote_identity == bob.identity.public_key
    assert b.remote_identity == alice.identity.public_key

    a.send(b"hello bob", 1.0)
    b.send(b"hello alice", 1.0)
    b.send(b"", 1.0)
    transfer(a, b, 1.0)
    assert events(b) == [DataReceived(b"hello bob")]
    assert events(a) == [DataReceived(b"hello alice"), DataReceived(b"")]
    a.send(b"x" * MAX_PAYLOAD, 2.0)
    transfer(a, b, 2.0)
    assert events(b) == [DataReceived(b"x" * MAX_PAYLOAD)]


def test_responder_waits_for_key_confirmation() -> None:
    # IK message 1 can be replayed (Noise §7.7); the responder only trusts the session
    # after the initiator's first transport frame proves it holds the ephemeral key.
    alice, bob = party(), party()
    a = initiator_for(alice, bob)
    b = responder_for(bob, {alice.identity.public_key})
    msg1 = a.data_to_send()
    b.receive_data(msg1, 0.0)
    assert b.data_to_send()  # message 2
    assert not b.established and b.remote_identity is None and events(b) == []
    with pytest.raises(RuntimeError):
        b.send(b"too early", 0.0)

    # A replay of message 1 to a fresh responder never completes: it times out.
    replayed = responder_for(bob, {alice.identity.public_key})
    replayed.receive_data(msg1, 0.0)
    assert replayed.data_to_send()
    replayed.handle_timer(replayed.get_timer() or 0.0)
    assert "timed out" in only_failure(replayed).reason


def test_both_sides_measure_the_round_trip() -> None:
    """The responder from message 2 to the key-confirmation PING, the dialler from that
    PING to its PONG, then both from keepalive PINGs (smoothed as RFC 6298's SRTT)."""
    alice, bob = party(), party()
    a = initiator_for(alice, bob)
    b = responder_for(bob, {alice.identity.public_key})
    b.receive_data(a.data_to_send(), 0.00)  # 50 ms one way, each way
    a.receive_data(b.data_to_send(), 0.05)  # message 2 in; the PING leaves at 0.05
    b.receive_data(a.data_to_send(), 0.10)  # PING in: 0.10 after message 2 left at 0.00
    assert b.rtt == pytest.approx(0.10) and a.rtt is None
    a.receive_data(b.data_to_send(), 0.15)  # PONG in
    assert a.rtt == pytest.approx(0.10)

    idle = SessionConfig().keepalive
    a.handle_timer(idle + 1.0)  # a keepalive PING, 300 ms round trip this time
    b.receive_data(a.data_to_send(), idle + 1.15)
    a.receive_data(b.data_to_send(), idle + 1.30)
    assert a.rtt == pytest.approx(0.875 * 0.10 + 0.125 * 0.30)
    a.receive_data(b"", idle + 2.0)
    assert a.rtt == pytest.approx(0.875 * 0.10 + 0.125 * 0.30)  # no PONG, no sample


def test_byte_by_byte_delivery() -> None:
    alice, bob = party(), party()
    a = initiator_for(alice, bob)
    b = responder_for(bob, {alice.identity.public_key})

    def trickle(src: Session, dst: Session) -> bool:
        data = src.data_to_send()
        for i in range(len(data)):
            dst.receive_data(data[i : i + 1], 0.0)
        return bool(data)

    while trickle(a, b) | trickle(b, a):
        pass
    assert a.established and b.established
    a.send(b"one", 0.0)
    a.send(b"two", 0.0)
    trickle(a, b)
    assert [e for e in events(b) if isinstance(e, DataReceived)] == [
        DataReceived(b"one"),
        DataReceived(b"two"),
    ]


def test_whole_stream_in_one_chunk() -> None:
    alice, bob = party(), party()
    a = initiator_for(alice, bob)
    b = responder_for(bob, {alice.identity.public_key})
    b.receive_data(a.data_to_send(), 0.0)
    a.receive_data(b.data_to_send(), 0.0)
    for i in range(5):
        a.send(bytes([i]) * 10, 0.0)
    b.receive_data(a.data_to_send(), 0.0)  # confirmation PING + 5 DATA at once
    evs = events(b)
    assert isinstance(evs[0], HandshakeComplete)
    assert [e.payload for e in evs[1:] if isinstance(e, DataReceived)] == [
        bytes([i]) * 10 for i in range(5)
    ]


# ------------------------------------------------------------------------ refusals


def test_unauthorized_initiator_gets_no_answer() -> None:
    alice, bob, mallory = party(), party(), party()
    a = initiator_for(mallory, bob)
    b = responder_for(bob, {alice.identity.public_key})  # mallory is not a contact
    b.receive_data(a.data_to_send(), 0.0)
    assert b.data_to_send() == b""  # not one byte: the prober learns nothing
    assert "not authorized" in only_failure(b).reason
    assert b.linger_until == 10.0  # and it hangs up only at the handshake deadline


def test_every_responder_refusal_lingers_until_the_deadline() -> None:
    alice, bob, carol = party(), party(), party()
    refusals = [
        b"\xff\xff",  # oversized length
        b"\x00\x40" + bytes(64),  # garbage
        initiator_for(alice, carol).data_to_send(),  # wrong responder key
        _handshake_with_payload(alice, bob, b"junk"),  # right key, bad certificate
    ]
    for stream in refusals:
        b = responder_for(bob, {alice.identity.public_key}, now=5.0)
        b.receive_data(stream, 6.0)
        only_failure(b)
        assert b.data_to_send() == b"" and b.linger_until == 15.0
    # Failures that are not refusals of a prober do not linger.
    a, b, _, _ = established_pair()
    b.receive_data(b"\x00\x00", 0.0)
    assert b.closed and b.linger_until is None
    a = initiator_for(alice, bob)
    a.receive_data(b"\x00\x40" + bytes(64), 0.0)
    assert a.closed and a.linger_until is None


def test_impostor_with_someone_elses_certificate() -> None:
    # Mallory completes Noise with her own device key but presents Alice's (public)
    # certificate, hoping to be taken for Alice: the key in it is not the one Noise
    # authenticated.
    alice, bob, mallory = party(), party(), party()
    b = responder_for(bob, {alice.identity.public_key})
    b.receive_data(_handshake_with_payload(mallory, bob, alice.cert.encode()), 0.0)
    assert b.data_to_send() == b""
    assert "another device key" in only_failure(b).reason


def _handshake_with_payload(sender: Party, to: Party, payload: bytes) -> bytes:
    """Message 1 from ``sender``'s device key to ``to``, carrying an arbitrary payload."""
    hs = IKHandshake(
        initiator=True,
        static_private=sender.device.private_bytes,
        prologue=PROLOGUE,
        remote_static=to.device.public_key,
    )
    message = hs.write_message(payload)
    return struct.pack(">H", len(message)) + message


def test_certificate_for_another_identity_key_is_refused() -> None:
    # Mallory certifies her device under her identity but claims Alice's identity:
    # the signature cannot verify, so the certificate is invalid.
    alice, bob, mallory = party(), party(), party()
    forged = DeviceCertificate(
        alice.identity.public_key,
        mallory.device.public_key,
        mallory.device.device_id,
        1,
        mallory.identity.sign(b"anything"),
    )
    b = responder_for(bob, {alice.identity.public_key})
    b.receive_data(_handshake_with_payload(mallory, bob, forged.encode()), 0.0)
    assert b.data_to_send() == b""
    assert "certificate is invalid" in only_failure(b).reason


def test_garbage_certificate_payload_is_refused() -> None:
    alice, bob = party(), party()
    b = responder_for(bob, {alice.identity.public_key})
    b.receive_data(_handshake_with_payload(alice, bob, b"not a certificate"), 0.0)
    assert b.data_to_send() == b""
    assert "certificate is invalid" in only_failure(b).reason


def test_responder_impostor_is_refused_by_initiator() -> None:
    # Bob's device key answers, but with a certificate for Carol's identity: the
    # initiator wanted Bob's identity and refuses, even though Noise succeeded.
    alice, bob, carol = party(), party(), party()
    carol_cert_for_bobs_key = carol.identity.certify(bob.device, created=5)
    a = initiator_for(alice, bob)
    b = Session(
        "responder",
        bob.device,
        carol_cert_for_bobs_key,
        lambda identity, cert: True,
        now=0.0,
    )
    transfer(a, b)
    assert "not authorized" in only_failure(a).reason
    assert not b.established


def test_initiator_dialing_wrong_static_key_fails() -> None:
    alice, bob, carol = party(), party(), party()
    a = initiator_for(alice, carol)  # thinks Carol's key is behind Bob's address
    b = responder_for(bob, {alice.identity.public_key})
    b.receive_data(a.data_to_send(), 0.0)
    assert b.data_to_send() == b""  # Bob cannot even decrypt message 1
    assert "does not authenticate" in only_failure(b).reason
    assert a.get_timer() == 10.0
    a.handle_timer(10.0)
    assert "timed out" in only_failure(a).reason


def test_misuse_raises() -> None:
    alice, bob = party(), party()
    with pytest.raises(ValueError):
        Session("observer", alice.device, alice.cert, lambda i, c: True, now=0.0)
    with pytest.raises(ValueError):
        Session("initiator", alice.device, alice.cert, lambda i, c: True, now=0.0)
    with pytest.raises(ValueError):
        Session("responder", alice.device, alice.cert, lambda i, c: True, now=0.0,
                remote_static=bob.device.public_key)  # fmt: skip
    with pytest.raises(ValueError):
        Session("responder", alice.device, bob.cert, lambda i, c: True, now=0.0)
    with pytest.raises(ValueError):
        SessionConfig(keepalive=100.0, idle_timeout=90.0)
    a = initiator_for(alice, bob)
    with pytest.raises(RuntimeError):
        a.send(b"early", 0.0)
    a, _, _, _ = established_pair()
    with pytest.raises(ValueError):
        a.send(b"x" * (MAX_PAYLOAD + 1), 0.0)
    a.close("bye", 0.0)
    with pytest.raises(RuntimeError):
        a.send(b"late", 0.0)


# ------------------------------------------------------------------------ hostile input


def test_tampered_byte_fails_without_raising() -> None:
    a, b, _, _ = established_pair()
    a.send(b"important", 0.0)
    data = bytearray(a.data_to_send())
    data[10] ^= 0x01
    b.receive_data(bytes(data), 0.0)
    assert "failed authentication" in only_failure(b).reason
    b.receive_data(b"more after failure", 0.0)  # ignored, no raise, no event
    assert events(b) == []


def test_replayed_frame_fails() -> None:
    a, b, _, _ = established_pair()
    a.send(b"pay 10", 0.0)
    frame = a.data_to_send()
    b.receive_data(frame, 0.0)
    assert events(b) == [DataReceived(b"pay 10")]
    b.receive_data(frame, 0.0)
    assert "replayed" in only_failure(b).reason


def test_reordered_frames_fail() -> None:
    a, b, _, _ = established_pair()
    a.send(b"first", 0.0)
    a.send(b"second", 0.0)
    first, second = split_frames(a.data_to_send())
    b.receive_data(second + first, 0.0)
    assert "reordered" in only_failure(b).reason


def test_oversized_handshake_length_is_refused_at_once() -> None:
    bob = party()
    b = responder_for(bob, set())
    b.receive_data(b"\xff\xff", 0.0)  # would announce a 65535-byte message 1
    assert "exceeds" in only_failure(b).reason
    assert b.data_to_send() == b""
    b2 = responder_for(bob, set())
    b2.receive_data(struct.pack(">H", MAX_HANDSHAKE_MESSAGE + 1), 0.0)
    assert "exceeds" in only_failure(b2).reason


def test_too_short_transport_frame_is_refused() -> None:
    _, b, _, _ = established_pair()
    b.receive_data(b"\x00\x05hello", 0.0)
    assert "malformed frame" in only_failure(b).reason
    _, b2, _, _ = established_pair()
    b2.receive_data(b"\x00\x00", 0.0)
    assert "malformed frame" in only_failure(b2).reason


def test_garbage_before_handshake() -> None:
    alice, bob = party(), party()
    b = responder_for(bob, {alice.identity.public_key})
    b.receive_data(b"\x00\x40" + b"GET / HTTP/1.1\r\nHost: example\r\n\r\n" * 2, 0.0)
    assert b.data_to_send() == b""
    assert "handshake failed" in only_failure(b).reason

    # Garbage in front of a genuine message 1 also fails: no resynchronisation.
    a = initiator_for(alice, bob)
    b = responder_for(bob, {alice.identity.public_key})
    b.receive_data(b"\x00\x03abc" + a.data_to_send(), 0.0)
    assert b.data_to_send() == b""
    only_failure(b)

    # A partial garbage message just sits until the handshake timeout.
    b = responder_for(bob, {alice.identity.public_key})
    b.receive_data(b"\x01\x00" + b"z" * 10, 0.0)
    assert events(b) == [] and b.get_timer() == 10.0
    b.handle_timer(10.0)
    assert "timed out" in only_failure(b).reason


def test_garbage_reply_to_initiator() -> None:
    alice, bob = party(), party()
    a = initiator_for(alice, bob)
    a.data_to_send()
    a.receive_data(b"\x00\x60" + bytes(range(96)), 0.0)
    assert "reply does not authenticate" in only_failure(a).reason


def test_unknown_frame_type_and_malformed_control_frames() -> None:
    for plaintext, reason in [
        (b"\x09", "unknown frame type 9"),
        (b"\x01extra", "malformed PING"),
        (b"\x02x", "malformed PONG"),
        (b"\x03x", "malformed REKEY"),
    ]:
        a, b, _, _ = established_pair()
        assert a._transport is not None
        ciphertext = a._transport.encrypt(plaintext)  # a peer running other code
        b.receive_data(struct.pack(">H", len(ciphertext)) + ciphertext, 0.0)
        assert reason in only_failure(b).reason


def test_data_after_close_fails() -> None:
    a, b, _, _ = established_pair()
    assert a._transport is not None
    close = a._transport.encrypt(b"\x04bye")
    data = a._transport.encrypt(b"\x00sneaky")
    stream = b"".join(struct.pack(">H", len(c)) + c for c in (close, data))
    b.receive_data(stream, 0.0)
    assert "data after CLOSE" in only_failure(b).reason
    assert events(b) == []


@settings(max_examples=200, deadline=None)
@given(st.lists(st.binary(max_size=300), max_size=8))
def test_fuzz_responder_never_raises(chunks: list[bytes]) -> None:
    b = responder_for(FUZZ_BOB, {FUZZ_ALICE.identity.public_key})
    for chunk in chunks:
        b.receive_data(chunk, 0.0)
    assert b.data_to_send() == b""  # garbage never gets an answer
    assert all(isinstance(e, SessionFailed) for e in events(b))


@settings(max_examples=200, deadline=None)
@given(st.integers(min_value=0), st.integers(min_value=0, max_value=255), st.binary(max_size=40))
def test_fuzz_established_never_raises(position: int, flip: int, extra: bytes) -> None:
    a, b = fuzz_pair()
    a.send(b"payload " * 4, 0.0)
    a.send(b"second", 0.0)
    data = bytearray(a.data_to_send() + extra)
    data[position % len(data)] ^= flip
    b.receive_data(bytes(data), 0.0)
    for event in events(b):
        assert isinstance(event, DataReceived | SessionFailed)


FUZZ_ALICE, FUZZ_BOB = party(), party()


def fuzz_pair(config: SessionConfig | None = None, now: float = 0.0) -> tuple[Session, Session]:
    a = initiator_for(FUZZ_ALICE, FUZZ_BOB, config=config, now=now)
    b = responder_for(FUZZ_BOB, {FUZZ_ALICE.identity.public_key}, config=config, now=now)
    transfer(a, b, now)
    events(a), events(b)
    return a, b


# ------------------------------------------------------------------------ rekey


def test_rekey_after_message_limit_keeps_working() -> None:
    config = SessionConfig(rekey_messages=3)
    a, b, _, _ = established_pair(config)
    received: list[bytes] = []
    for i in range(100):
        a.send(b"a%d" % i, 0.0)
        b.send(b"b%d" % i, 0.0)
        if i % 7 == 0:
            transfer(a, b)
            received += [e.payload for e in events(b) if isinstance(e, DataReceived)]
    transfer(a, b)
    received += [e.payload for e in events(b) if isinstance(e, DataReceived)]
    assert received == [b"a%d" % i for i in range(100)]
    assert [e for e in events(a) if not isinstance(e, DataReceived)] == []
    # Each side rekeys its own sending key about every 3 frames and follows the peer's.
    assert a.rekeys >= 2 * 30 and b.rekeys >= 2 * 30
    assert a.established and b.established


def test_old_key_cannot_decrypt_after_rekey() -> None:
    a, b, _, _ = established_pair(SessionConfig(rekey_messages=2))
    assert b._transport is not None
    for i in range(10):
        old_key, nonce = b._transport._recv.k, b._transport.receive_nonce
        rekeys = a.rekeys
        a.send(b"%d" % i, 0.0)
        stream = a.data_to_send()
        b.receive_data(stream, 0.0)
        if a.rekeys > rekeys:
            break
    else:
        pytest.fail("no rekey after 10 frames with rekey_messages=2")
    rekey_frame, data_frame = split_frames(stream)  # REKEY under the old key, then data
    assert [e for e in events(b) if isinstance(e, DataReceived)][-1] == DataReceived(b"%d" % i)
    assert b._transport._recv.k != old_key
    aead = ChaCha20Poly1305(old_key)
    noise_nonce = b"\x00" * 4 + (nonce + 1).to_bytes(8, "little")  # Noise §12.3
    with pytest.raises(InvalidTag):
        aead.decrypt(noise_nonce, data_frame[2:], b"")
    # ... while the same old key did decrypt the REKEY frame itself, at the nonce before.
    old_nonce = b"\x00" * 4 + nonce.to_bytes(8, "little")
    assert aead.decrypt(old_nonce, rekey_frame[2:], b"") == bytes([FrameType.REKEY])


def test_rekey_after_byte_limit_and_interval() -> None:
    a, b, _, _ = established_pair(SessionConfig(rekey_bytes=1000, rekey_interval=50.0))
    for _ in range(10):
        a.send(b"x" * 400, 1.0)
    transfer(a, b, 1.0)
    assert a.rekeys >= 3  # 10 frames of ~417 bytes: a rekey every 3
    before = b.rekeys
    # Quiet session: the interval alone triggers a rekey from the timer.
    now = 0.0
    while now < 200.0:
        now = min(a.get_timer() or 1e9, b.get_timer() or 1e9)
        a.handle_timer(now)
        b.handle_timer(now)
        transfer(a, b, now)
    assert b.rekeys - before >= 2 * 3
    assert a.established and b.established


# ------------------------------------------------------------------------ timers


def test_keepalive_keeps_a_quiet_session_alive() -> None:
    config = SessionConfig(keepalive=30.0, idle_timeout=90.0)
    a, b, _, _ = established_pair(config)
    now = 0.0
    sent_before = a.frames_sent
    while now < 1000.0:
        now = min(a.get_timer() or 1e9, b.get_timer() or 1e9)
        a.handle_timer(now)
        b.handle_timer(now)
        transfer(a, b, now)
    assert a.established and b.established
    assert a.frames_sent - sent_before >= 1000 // 30 - 1
    for s in (a, b):
        assert not any(isinstance(e, SessionFailed | SessionClosed) for e in events(s))


def test_idle_timeout_when_peer_goes_silent() -> None:
    config = SessionConfig(keepalive=30.0, idle_timeout=90.0)
    a, _, _, _ = established_pair(config)
    now = 0.0
    pings = 0
    while not a.closed:
        now = a.get_timer() or 1e9
        a.handle_timer(now)
        pings += len(a.data_to_send()) > 0  # sent into the void: b never answers
    assert now == 90.0 and pings == 2  # PINGs at 30 and 60, then give up at 90
    assert "silent" in only_failure(a).reason


@settings(max_examples=100, deadline=None)
@given(
    st.floats(min_value=0.0, max_value=1e6),
    st.floats(min_value=0.01, max_value=100.0),
    st.floats(min_value=1.01, max_value=3.0),
    st.floats(min_value=0.01, max_value=100.0),
)
def test_timer_always_advances(start: float, keepalive: float, idle: float, rekey: float) -> None:
    # handle_timer(get_timer()) must fire what was announced, or a shell would spin.
    config = SessionConfig(keepalive=keepalive, idle_timeout=keepalive * idle, rekey_interval=rekey)
    a, b = fuzz_pair(config, start)
    for _ in range(20):
        when = a.get_timer()
        assert when is not None
        a.handle_timer(when)
        b.receive_data(a.data_to_send(), when)
        a.receive_data(b.data_to_send(), when)
        later = a.get_timer()
        assert later is None or later > when
        if later is None:
            break


def test_handshake_timeout() -> None:
    alice, bob = party(), party()
    a = initiator_for(alice, bob, now=100.0, config=SessionConfig(handshake_timeout=5.0))
    assert a.get_timer() == 105.0
    a.handle_timer(104.9)
    assert events(a) == []
    a.handle_timer(105.0)
    assert "handshake timed out" in only_failure(a).reason
    assert a.get_timer() is None


def test_connection_lost() -> None:
    a, _, _, _ = established_pair()
    a.connection_lost(1.0)
    assert "without CLOSE" in only_failure(a).reason


# ------------------------------------------------------------------------ close


def test_close_tells_the_peer() -> None:
    a, b, _, _ = established_pair()
    a.send(b"last words", 0.0)
    a.close("going offline", 0.0)
    assert events(a) == [SessionClosed("going offline", by_peer=False)]
    assert a.closed
    a.close("again", 0.0)  # idempotent
    assert events(a) == []
    transfer(a, b)
    assert events(b) == [DataReceived(b"last words"), SessionClosed("going offline", True)]
    assert b.closed and b.get_timer() is None


def test_close_reason_is_cut_at_a_character_boundary() -> None:
    a, b, _, _ = established_pair()
    a.close("é" * 1000, 0.0)
    transfer(a, b)
    (event,) = events(b)
    assert isinstance(event, SessionClosed) and event.reason == "é" * 128


def test_close_during_handshake_sends_nothing() -> None:
    alice, bob = party(), party()
    a = initiator_for(alice, bob)
    a.data_to_send()
    a.close("changed my mind", 0.0)
    assert a.data_to_send() == b""
    assert events(a) == [SessionClosed("changed my mind", by_peer=False)]


def test_counters() -> None:
    a, b, _, _ = established_pair()
    assert a.frames_sent == 1 and b.frames_received == 1  # the confirmation PING
    assert b.frames_sent == 1 and a.frames_received == 1  # its PONG
    a.send(b"x", 0.0)
    transfer(a, b)
    assert a.frames_sent == b.frames_received == 2


# ------------------------------------------------------------------------ performance


def _throughput(size: int, count: int, batch: int) -> tuple[float, float]:
    a, b, _, _ = established_pair()
    payload = b"m" * size
    received = 0
    start = time.perf_counter()
    for _ in range(count // batch):
        for _ in range(batch):
            a.send(payload, 0.0)
        b.receive_data(a.data_to_send(), 0.0)
        while (event := b.next_event()) is not None:
            received += isinstance(event, DataReceived)
    elapsed = time.perf_counter() - start
    assert received == count // batch * batch
    return received / elapsed, received * size / elapsed / 1e6


def test_throughput_report(capsys: pytest.CaptureFixture[str]) -> None:
    msgs, _ = _throughput(100, 50_000, 100)
    _, mbps = _throughput(65_536 - 18, 2_000, 16)
    with capsys.disabled():
        print(
            f"\nsession pair: {msgs:,.0f} msgs/s of 100 B; bulk {mbps:,.0f} MB/s in 64 KiB frames"
        )


def test_frame_types_are_stable() -> None:
    # These numbers are on the wire (docs/PROTOCOL.md); changing them breaks peers.
    assert [int(t) for t in FrameType] == [0, 1, 2, 3, 4]
    assert MAX_PAYLOAD == 65535 - 16 - 1
