"""docs/schemas/envelope.schema.json describes exactly what parse_envelope accepts."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from btchat.codec.bencode import decode, encode
from btchat.identity.keys import Identity
from btchat.messaging import envelope as E

jsonschema = pytest.importorskip("jsonschema")
SCHEMA = json.loads(
    (Path(__file__).parent.parent / "docs" / "schemas" / "envelope.schema.json").read_text()
)
VALIDATOR = jsonschema.Draft202012Validator(SCHEMA)

ALICE = Identity.from_seed(b"\x01" * 32)
BOB = Identity.from_seed(b"\x02" * 32)
NOW = 1_700_000_000.0


def as_json(value: Any) -> Any:
    """The schema's mapping: byte strings become latin-1 text, one char per byte."""
    if isinstance(value, bytes):
        return value.decode("latin-1")
    if isinstance(value, list):
        return [as_json(v) for v in value]
    if isinstance(value, dict):
        return {k.decode("latin-1"): as_json(v) for k, v in value.items()}
    return value


def make(kind: bytes, body: dict[bytes, Any]) -> dict[bytes, Any]:
    env = E.create(ALICE, b"d" * 16, BOB.public_key, kind, body, lamport=3, now=NOW)
    fields: dict[bytes, Any] = decode(E.encode_envelope(env))
    return fields


VALID = {
    "text": make(b"text", E.text_body("hello, wörld")),
    "long_text": make(b"text", E.text_body("x" * E.MAX_TEXT)),
    "receipt": make(b"receipt", E.receipt_body([b"i" * 16] * E.MAX_RECEIPT_IDS, b"read")),
    "typing": make(b"typing", E.typing_body(True)),
    "presence": make(b"presence", E.presence_body("busy", 12, "n" * E.MAX_NOTE)),
    "presence_no_note": make(b"presence", E.presence_body("offline", 0, None)),
    "future_type": make(b"reaction", {b"emoji": b"+1", b"nested": [{b"a": 1}]}),
    "extra_body_key": make(b"text", {b"t": b"hi", b"reply_to": b"r" * 16}),
}


@pytest.mark.parametrize("name", sorted(VALID))
def test_created_envelopes_validate(name: str) -> None:
    VALIDATOR.validate(as_json(VALID[name]))


def _with(base: str, path: tuple[bytes, ...], value: Any) -> dict[bytes, Any]:
    d = decode(encode(VALID[base]))  # deep copy
    target = d
    for key in path[:-1]:
        target = target[key]
    if value is _DELETE:
        del target[path[-1]]
    else:
        target[path[-1]] = value
    return d


_DELETE = object()

INVALID = [
    ("text", (b"v",), 2),
    ("text", (b"v",), _DELETE),
    ("text", (b"sig",), _DELETE),
    ("text", (b"extra",), b"x"),
    ("text", (b"id",), b"i" * 15),
    ("text", (b"from",), b"k" * 31),
    ("text", (b"dev",), b"d" * 17),
    ("text", (b"to",), 5),
    ("text", (b"ts",), -1),
    ("text", (b"lc",), 2**53),
    ("text", (b"type",), b"Text"),
    ("text", (b"type",), b""),
    ("text", (b"body",), b"hi"),
    ("text", (b"n",), b""),
    ("text", (b"sig",), b"s" * 65),
    ("text", (b"body", b"t"), b""),
    ("text", (b"body", b"t"), b"x" * (E.MAX_TEXT + 1)),
    ("text", (b"body", b"t"), _DELETE),
    ("receipt", (b"body", b"ids"), []),
    ("receipt", (b"body", b"ids"), [b"i" * 16] * (E.MAX_RECEIPT_IDS + 1)),
    ("receipt", (b"body", b"ids"), [b"i" * 17]),
    ("receipt", (b"body", b"s"), b"seen"),
    ("typing", (b"body", b"on"), 2),
    ("typing", (b"body", b"on"), _DELETE),
    ("presence", (b"body", b"s"), b"invisible"),
    ("presence", (b"body", b"ls"), -5),
    ("presence", (b"body", b"n"), b"n" * (E.MAX_NOTE + 1)),
]


@pytest.mark.parametrize(("base", "path", "value"), INVALID)
def test_malformed_envelopes_do_not_validate(
    base: str, path: tuple[bytes, ...], value: Any
) -> None:
    d = _with(base, path, value)
    assert not VALIDATOR.is_valid(as_json(d))
    # ...and the parser agrees.
    with pytest.raises(E.EnvelopeError) as info:
        E.parse_envelope(encode(d))
    assert info.value.code in {"malformed", "bad_body", "bad_version"}


scalars = st.one_of(
    st.binary(max_size=70),
    st.sampled_from([b"read", b"delivered", b"online", b"text", b"x" * 16, b"x" * 32]),
    st.integers(-3, 2**60),
)


@given(
    st.sampled_from(sorted(VALID)),
    st.lists(
        st.tuples(
            st.sampled_from(
                [
                    (b"v",),
                    (b"id",),
                    (b"dev",),
                    (b"ts",),
                    (b"lc",),
                    (b"type",),
                    (b"n",),
                    (b"body", b"t"),
                    (b"body", b"s"),
                    (b"body", b"ls"),
                    (b"body", b"on"),
                    (b"body", b"n"),
                    (b"body", b"ids"),
                ]
            ),
            st.one_of(scalars, st.lists(scalars, max_size=3)),
        ),
        min_size=1,
        max_size=3,
    ),
)
@settings(max_examples=400)
def test_schema_and_parser_agree(base: str, edits: list[tuple[tuple[bytes, ...], Any]]) -> None:
    """Outside UTF-8 validity (which JSON Schema cannot state) both accept the same set."""
    d = decode(encode(VALID[base]))
    for path, value in edits:
        if path[0] == b"body" and not isinstance(d.get(b"body"), dict):
            continue
        d = _with_dict(d, path, value)
    data = encode(d)
    try:
        E.parse_envelope(data)
        parsed = True
    except E.EnvelopeError as exc:
        parsed = False
        if "UTF-8" in exc.message:
            return
    assert VALIDATOR.is_valid(as_json(d)) == parsed


def _with_dict(d: dict[bytes, Any], path: tuple[bytes, ...], value: Any) -> dict[bytes, Any]:
    target = d
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    return d
