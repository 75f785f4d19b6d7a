"""Envelopes: round trips, every verification failure, and hostile input (Hypothesis)."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from btchat.codec.bencode import decode, encode
from btchat.identity.keys import Identity
from btchat.messaging import envelope as E
from btchat.messaging.envelope import Envelope, EnvelopeError

ALICE = Identity.from_seed(b"\x01" * 32)
BOB = Identity.from_seed(b"\x02" * 32)
MALLORY = Identity.from_seed(b"\x03" * 32)
DEV = b"\xd0" * 16
NOW = 1_700_000_000.0


def make(kind: bytes = b"text", body: dict[bytes, Any] | None = None, **kw: Any) -> Envelope:
    return E.create(
        ALICE,
        DEV,
        BOB.public_key,
        kind,
        E.text_body("hi") if body is None else body,
        lamport=kw.pop("lamport", 7),
        now=kw.pop("now", NOW),
        **kw,
    )


def check(env: Envelope, now: float = NOW, sender: bytes | None = ALICE.public_key) -> None:
    E.verify_envelope(env, expected_sender=sender, expected_recipient=BOB.public_key, now=now)


def signed_dict(fields: dict[bytes, Any], signer: Identity = ALICE) -> bytes:
    """Encode arbitrary fields with a valid signature, bypassing create()'s checks."""
    unsigned = {k: v for k, v in fields.items() if k != b"sig"}
    sig = signer.sign(E.ENVELOPE_CONTEXT + encode(unsigned))
    return encode({**unsigned, b"sig": sig})


def fields_of(env: Envelope) -> dict[bytes, Any]:
    return decode(E.encode_envelope(env))


def code_of(data: bytes) -> str:
    with pytest.raises(EnvelopeError) as info:
        check(E.parse_envelope(data))
    return info.value.code


# --------------------------------------------------------------------------- round trips


@pytest.mark.parametrize(
    ("kind", "body", "decoder", "expected"),
    [
        (b"text", E.text_body("héllo 👋"), E.decode_text, "héllo 👋"),
        (
            b"receipt",
            E.receipt_body([b"a" * 16, b"b" * 16], b"read"),
            E.decode_receipt,
            ([b"a" * 16, b"b" * 16], b"read"),
        ),
        (b"typing", E.typing_body(True), E.decode_typing, True),
        (b"typing", E.typing_body(False), E.decode_typing, False),
        (
            b"presence",
            E.presence_body("away", 123, "lunch"),
            E.decode_presence,
            ("away", 123, "lunch"),
        ),
        (b"presence", E.presence_body("online", 0, None), E.decode_presence, ("online", 0, None)),
    ],
)
def test_round_trip(kind: bytes, body: dict[bytes, Any], decoder: Any, expected: Any) -> None:
    env = make(kind, body)
    data = E.encode_envelope(env)
    parsed = E.parse_envelope(data)
    assert parsed == env
    assert E.encode_envelope(parsed) == data
    check(parsed)
    assert decoder(parsed) == expected
    assert parsed.version == 1 and parsed.type == kind
    assert parsed.sender == ALICE.public_key and parsed.recipient == BOB.public_key
    assert parsed.device == DEV and parsed.lamport == 7 and parsed.ts_ms == int(NOW * 1000)
    assert len(parsed.id) == 16 and len(parsed.nonce) == 16 and len(parsed.signature) == 64


def test_wire_keys_and_signature_input() -> None:
    env = make(msg_id=b"\x11" * 16)
    d = fields_of(env)
    assert sorted(d) == sorted(
        [b"v", b"id", b"from", b"dev", b"to", b"ts", b"lc", b"type", b"body", b"n", b"sig"]
    )
    assert d[b"v"] == 1 and d[b"id"] == b"\x11" * 16 and d[b"body"] == {b"t": b"hi"}
    del d[b"sig"]
    assert env.signed_bytes() == b"btchat envelope v1\x00" + encode(d)


def test_ids_and_nonces_are_fresh() -> None:
    a, b = make(), make()
    assert a.id != b.id and a.nonce != b.nonce


def test_unknown_type_parses_and_verifies() -> None:
    env = make(b"reaction", {b"e": "👍".encode(), b"to": b"x" * 16})
    parsed = E.parse_envelope(E.encode_envelope(env))
    check(parsed)
    with pytest.raises(EnvelopeError) as info:
        E.decode_text(parsed)
    assert info.value.code == "wrong_type"


def test_unknown_body_keys_are_allowed_and_signed() -> None:
    env = make(body={b"t": b"hi", b"zz": [1, 2]})
    parsed = E.parse_envelope(E.encode_envelope(env))
    check(parsed)
    assert E.decode_text(parsed) == "hi"
    tampered = fields_of(env)
    tampered[b"body"][b"zz"] = [1, 3]
    assert code_of(encode(tampered)) == "bad_signature"


# --------------------------------------------------------------------------- verification


@pytest.mark.parametrize(
    ("key", "value"),
    [
        (b"id", b"\x00" * 16),
        (b"from", MALLORY.public_key),
        (b"dev", b"\x00" * 16),
        (b"ts", int(NOW * 1000) + 1),
        (b"lc", 8),
        (b"type", b"typing"),
        (b"body", {b"t": b"hI"}),
        (b"n", b"\x00" * 16),
    ],
)
def test_every_field_is_signed(key: bytes, value: Any) -> None:
    d = fields_of(make())
    if key == b"type":
        d[b"body"] = {b"on": 1}
    d[key] = value
    env = E.parse_envelope(encode(d))
    with pytest.raises(EnvelopeError) as info:
        check(env, sender=None)
    assert info.value.code == "bad_signature"


def test_recipient_is_signed() -> None:
    d = fields_of(make())
    d[b"to"] = MALLORY.public_key
    env = E.parse_envelope(encode(d))
    with pytest.raises(EnvelopeError) as info:
        E.verify_envelope(env, expected_sender=None, expected_recipient=MALLORY.public_key, now=NOW)
    assert info.value.code == "bad_signature"


def test_signature_without_domain_separation_fails() -> None:
    d = fields_of(make())
    del d[b"sig"]
    d[b"sig"] = ALICE.sign(encode(d))
    assert code_of(encode(d)) == "bad_signature"


def test_zero_signature_fails() -> None:
    assert code_of(E.encode_envelope(replace(make(), signature=b"\x00" * 64))) == "bad_signature"


def test_wrong_sender() -> None:
    env = E.create(MALLORY, DEV, BOB.public_key, b"text", E.text_body("x"), lamport=1, now=NOW)
    check(env, sender=None)  # a valid envelope by Mallory...
    with pytest.raises(EnvelopeError) as info:
        check(env)  # ...but the session authenticated Alice
    assert info.value.code == "wrong_sender"


def test_wrong_recipient() -> None:
    env = E.create(ALICE, DEV, MALLORY.public_key, b"text", E.text_body("x"), lamport=1, now=NOW)
    with pytest.raises(EnvelopeError) as info:
        check(env)
    assert info.value.code == "wrong_recipient"


def test_time_window() -> None:
    env = make(now=NOW)
    check(env, now=NOW + 15 * 86400)  # exactly at the edge
    check(env, now=NOW - 600)
    for now, code in [(NOW + 15 * 86400 + 1, "too_old"), (NOW - 601, "in_future")]:
        with pytest.raises(EnvelopeError) as info:
            check(env, now=now)
        assert info.value.code == code
    E.verify_envelope(
        env,
        expected_sender=None,
        expected_recipient=BOB.public_key,
        now=NOW + 100,
        max_age=200,
        max_skew=0,
    )
    with pytest.raises(EnvelopeError, match="too_old"):
        E.verify_envelope(
            env, expected_sender=None, expected_recipient=BOB.public_key, now=NOW + 300, max_age=200
        )


# --------------------------------------------------------------------------- structure


def test_bad_version() -> None:
    d = fields_of(make())
    d[b"v"] = 2
    d[b"new"] = b"future field"
    assert code_of(signed_dict(d)) == "bad_version"
    d[b"v"] = 0
    assert code_of(signed_dict(d)) == "bad_version"
    d[b"v"] = b"1"
    assert code_of(signed_dict(d)) == "malformed"
    del d[b"v"]
    assert code_of(signed_dict(d)) == "malformed"


def test_too_large() -> None:
    with pytest.raises(EnvelopeError) as info:
        E.parse_envelope(b"d" + b"0:" * 40000 + b"e")
    assert info.value.code == "too_large"
    with pytest.raises(EnvelopeError) as info:
        make(b"big", {b"x": b"\x00" * 70000})
    assert info.value.code == "too_large"


def test_largest_text_fits() -> None:
    env = make(body=E.text_body("€" * (E.MAX_TEXT // 3) + "a"))
    assert len(E.decode_text(env).encode()) == E.MAX_TEXT
    assert len(E.encode_envelope(env)) < E.MAX_ENVELOPE
    check(E.parse_envelope(E.encode_envelope(env)))


@pytest.mark.parametrize(
    "data",
    [b"", b"le", b"i1e", b"d1:vi1ee", b"not bencode", b"d1:v" + b"i1e" + b"e" * 2],
)
def test_malformed(data: bytes) -> None:
    with pytest.raises(EnvelopeError) as info:
        E.parse_envelope(data)
    assert info.value.code == "malformed"


def test_non_canonical_encoding_refused() -> None:
    good = E.encode_envelope(make())
    # Same content, keys out of order: a second encoding of a signed value.
    d = fields_of(make())
    items = sorted(d.items(), reverse=True)
    bad = b"d" + b"".join(encode(k) + encode(v) for k, v in items) + b"e"
    assert code_of(bad) == "malformed"
    assert code_of(good.replace(b"i7e", b"i07e", 1)) == "malformed"


@pytest.mark.parametrize(
    ("key", "value"),
    [
        (b"id", b"\x00" * 15),
        (b"id", 5),
        (b"from", b"\x00" * 33),
        (b"dev", b"\x00" * 32),
        (b"to", [b"\x00" * 32]),
        (b"ts", -1),
        (b"ts", 2**53),
        (b"lc", -1),
        (b"lc", 2**63),
        (b"lc", b"7"),
        (b"type", b""),
        (b"type", b"Text"),
        (b"type", b"a" * 33),
        (b"type", b"te xt"),
        (b"type", b"\xfftext"),
        (b"body", b"hi"),
        (b"body", [b"t", b"hi"]),
        (b"n", b""),
        (b"sig", b"\x00" * 63),
        (b"extra", b"x"),
    ],
)
def test_bad_fields(key: bytes, value: Any) -> None:
    d = fields_of(make())
    d[key] = value
    assert code_of(encode(d) if key == b"sig" else signed_dict(d)) == "malformed"


def test_missing_field() -> None:
    for key in [b"id", b"from", b"dev", b"to", b"ts", b"lc", b"type", b"body", b"n", b"sig"]:
        d = fields_of(make())
        del d[key]
        assert code_of(encode(d)) == "malformed"


@pytest.mark.parametrize(
    ("kind", "body"),
    [
        (b"text", {}),
        (b"text", {b"t": b""}),
        (b"text", {b"t": b"\xff\xfe"}),
        (b"text", {b"t": b"\xed\xa0\x80"}),  # an encoded surrogate
        (b"text", {b"t": b"\xc0\xaf"}),  # overlong
        (b"text", {b"t": b"x" * (E.MAX_TEXT + 1)}),
        (b"text", {b"t": 5}),
        (b"receipt", {b"ids": [], b"s": b"read"}),
        (b"receipt", {b"ids": [b"x" * 16] * 501, b"s": b"read"}),
        (b"receipt", {b"ids": [b"x" * 15], b"s": b"read"}),
        (b"receipt", {b"ids": b"x" * 16, b"s": b"read"}),
        (b"receipt", {b"ids": [b"x" * 16], b"s": b"seen"}),
        (b"receipt", {b"ids": [b"x" * 16], b"s": [b"read"]}),
        (b"receipt", {b"ids": [b"x" * 16]}),
        (b"typing", {b"on": 2}),
        (b"typing", {b"on": b"1"}),
        (b"typing", {}),
        (b"presence", {b"s": b"invisible", b"ls": 1}),
        (b"presence", {b"s": b"online", b"ls": -1}),
        (b"presence", {b"s": b"online"}),
        (b"presence", {b"s": b"online", b"ls": 1, b"n": b"x" * 141}),
        (b"presence", {b"s": b"online", b"ls": 1, b"n": b"\xff"}),
        (b"presence", {b"s": b"online", b"ls": 1, b"n": 3}),
    ],
)
def test_bad_bodies(kind: bytes, body: dict[bytes, Any]) -> None:
    with pytest.raises(EnvelopeError) as info:
        make(kind, body)
    assert info.value.code == "bad_body"
    d = fields_of(make())
    d[b"type"], d[b"body"] = kind, body
    assert code_of(signed_dict(d)) == "bad_body"


def test_decoders_on_hand_built_envelopes() -> None:
    env = replace(make(), body={b"t": b"\xff"})  # bypasses create(): decoders still refuse
    with pytest.raises(EnvelopeError, match="bad_body"):
        E.decode_text(env)
    with pytest.raises(EnvelopeError, match="wrong_type"):
        E.decode_receipt(env)


@pytest.mark.parametrize(
    "kw",
    [
        {"lamport": -1},
        {"lamport": 2**53},
        {"now": -1.0},
        {"msg_id": b"short"},
    ],
)
def test_create_refuses_what_receivers_refuse(kw: dict[str, Any]) -> None:
    with pytest.raises(EnvelopeError):
        make(**kw)


def test_create_refuses_bad_device_and_recipient_and_body() -> None:
    with pytest.raises(EnvelopeError):
        E.create(ALICE, b"x", BOB.public_key, b"text", E.text_body("x"), lamport=1, now=NOW)
    with pytest.raises(EnvelopeError):
        E.create(ALICE, DEV, b"x" * 31, b"text", E.text_body("x"), lamport=1, now=NOW)
    with pytest.raises(EnvelopeError):
        E.create(ALICE, DEV, BOB.public_key, b"x", {b"a": 1.5}, lamport=1, now=NOW)
    with pytest.raises(EnvelopeError):
        make(body=E.text_body("x" * (E.MAX_TEXT + 1)))
    with pytest.raises(EnvelopeError):
        make(b"presence", E.presence_body("online", 1, "n" * 141))


def test_error_has_code_and_message() -> None:
    err = EnvelopeError("too_old", "late")
    assert err.code == "too_old" and err.message == "late" and "too_old" in str(err)


# --------------------------------------------------------------------------- hostile input


VALID = [
    E.encode_envelope(make()),
    E.encode_envelope(make(b"receipt", E.receipt_body([b"r" * 16] * 3, b"delivered"))),
    E.encode_envelope(make(b"presence", E.presence_body("busy", 5, "zzz"))),
    E.encode_envelope(make(b"typing", E.typing_body(True))),
    E.encode_envelope(make(b"future", {b"x": [1, {b"y": b"z"}]})),
]


def _parse_and_verify(data: bytes) -> Envelope | None:
    """Everything a receiver does; returns the envelope only if it was accepted."""
    try:
        env = E.parse_envelope(data)
        check(env)
        {  # the decoders never fail on an accepted envelope
            b"text": E.decode_text,
            b"receipt": E.decode_receipt,
            b"typing": E.decode_typing,
            b"presence": E.decode_presence,
        }.get(env.type, lambda e: None)(env)
    except EnvelopeError as exc:
        assert exc.code in {
            "malformed",
            "too_large",
            "bad_version",
            "bad_body",
            "bad_signature",
            "wrong_sender",
            "wrong_recipient",
            "too_old",
            "in_future",
        }
        return None
    return env


@given(st.binary(max_size=2048))
@settings(max_examples=500)
def test_arbitrary_bytes_raise_only_envelope_error(data: bytes) -> None:
    assert _parse_and_verify(data) is None


@st.composite
def mutations(draw: st.DrawFn) -> tuple[bytes, bytes]:
    original = draw(st.sampled_from(VALID))
    data = bytearray(original)
    for _ in range(draw(st.integers(1, 4))):
        op = draw(st.sampled_from(["flip", "set", "insert", "delete", "truncate", "dup"]))
        pos = draw(st.integers(0, max(len(data) - 1, 0)))
        if not data:
            break
        if op == "flip":
            data[pos] ^= 1 << draw(st.integers(0, 7))
        elif op == "set":
            data[pos] = draw(st.sampled_from(b"0123456789:ielde-\x00\xff"))
        elif op == "insert":
            data[pos:pos] = draw(st.binary(min_size=1, max_size=8))
        elif op == "delete":
            del data[pos : pos + draw(st.integers(1, 8))]
        elif op == "truncate":
            del data[pos:]
        else:
            end = min(len(data), pos + draw(st.integers(1, 16)))
            data[pos:pos] = data[pos:end]
    return original, bytes(data)


@given(mutations())
@settings(max_examples=1000, suppress_health_check=[HealthCheck.too_slow])
def test_mutated_envelopes_raise_only_envelope_error(case: tuple[bytes, bytes]) -> None:
    original, data = case
    accepted = _parse_and_verify(data)
    if accepted is not None:  # only an unchanged envelope can still verify
        assert data == original


bencodable = st.recursive(
    st.binary(max_size=40) | st.integers(-(2**70), 2**70),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.binary(max_size=6), inner, max_size=4)
    ),
    max_leaves=12,
)


@given(
    st.dictionaries(
        st.sampled_from(
            [
                b"v",
                b"id",
                b"from",
                b"dev",
                b"to",
                b"ts",
                b"lc",
                b"type",
                b"body",
                b"n",
                b"sig",
                b"x",
            ]
        ),
        bencodable,
    )
)
@settings(max_examples=500)
def test_structured_garbage_raises_only_envelope_error(overrides: dict[bytes, Any]) -> None:
    d = fields_of(make())
    d.update(overrides)
    data = encode(d)
    if len(data) <= E.MAX_ENVELOPE:
        _parse_and_verify(data)


@given(
    st.sampled_from([b"text", b"receipt", b"typing", b"presence"]),
    st.dictionaries(st.sampled_from([b"t", b"ids", b"s", b"on", b"ls", b"n"]), bencodable),
)
@settings(max_examples=500)
def test_garbage_bodies_raise_only_envelope_error(kind: bytes, body: dict[bytes, Any]) -> None:
    d = fields_of(make())
    d[b"type"], d[b"body"] = kind, body
    accepted = _parse_and_verify(signed_dict(d))
    if accepted is not None:
        assert accepted.body == body


@given(st.text(min_size=1, max_size=300))
def test_any_text_round_trips(text: str) -> None:
    env = E.parse_envelope(E.encode_envelope(make(body=E.text_body(text))))
    assert E.decode_text(env) == text


# --------------------------------------------------------------------------- cached bytes


def fresh_wire(env: Envelope) -> bytes:
    """The wire bytes recomputed from the fields, bypassing every cache."""
    return encode({**env._fields(), b"sig": env.signature})


def fresh_signed(env: Envelope) -> bytes:
    return E.ENVELOPE_CONTEXT + encode(env._fields())


@settings(max_examples=60, suppress_health_check=[HealthCheck.too_slow])
@given(
    kind=st.from_regex(rb"[a-z0-9_.-]{1,32}", fullmatch=True),
    extra=st.dictionaries(st.binary(min_size=1, max_size=8), st.binary(max_size=40), max_size=4),
    lamport=st.integers(0, E.MAX_INT),
    ms=st.integers(0, E.MAX_INT),
)
def test_cached_bytes_are_the_canonical_encoding(
    kind: bytes, extra: dict[bytes, bytes], lamport: int, ms: int
) -> None:
    body = {**extra, b"t": b"hi"} if kind == b"text" else extra
    if kind in (b"receipt", b"typing", b"presence"):
        kind = b"x" + kind  # a known type's body has its own rules
    env = make(kind, body, lamport=lamport, now=ms / 1000)
    assert E.encode_envelope(env) == fresh_wire(env)
    assert env.signed_bytes() == fresh_signed(env)
    parsed = E.parse_envelope(E.encode_envelope(env))
    assert parsed == env
    assert E.encode_envelope(parsed) == fresh_wire(parsed)
    assert parsed.signed_bytes() == fresh_signed(parsed)
    E.verify_envelope(
        parsed, expected_sender=None, expected_recipient=BOB.public_key, now=ms / 1000
    )


def test_replace_drops_the_cached_bytes() -> None:
    """A field changed with dataclasses.replace is re-encoded, so the old signature fails."""
    env = E.parse_envelope(E.encode_envelope(make()))
    moved = replace(env, body={b"t": b"other"})
    assert E.encode_envelope(moved) == fresh_wire(moved) != E.encode_envelope(env)
    with pytest.raises(EnvelopeError) as info:
        check(moved)
    assert info.value.code == "bad_signature"


def test_hand_built_envelope_is_checked_by_verify() -> None:
    """Only parse and create mark an envelope checked; one built by hand is checked."""
    bad = replace(make(), device=b"short")
    with pytest.raises(EnvelopeError) as info:
        check(bad)
    assert info.value.code == "malformed"


def test_signed_bytes_found_only_where_canonical_order_puts_sig() -> None:
    env = make()
    wire = E.encode_envelope(env)
    assert E._signed_from_wire(env, wire) == fresh_signed(env)
    other = replace(env, signature=bytes(64))
    assert E._signed_from_wire(other, wire) is None  # the signature bytes differ
    assert E._signed_from_wire(replace(env, ts_ms=env.ts_ms + 1), wire) is None  # the tail
