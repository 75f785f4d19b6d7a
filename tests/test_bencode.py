"""Strict bencode: round trips, canonical-form uniqueness, and hostile input.

As with h11's readers: whatever bytes arrive, ``decode`` either returns a value or raises
:class:`DecodeError`. If it raises anything else, that's a bug.
"""

from __future__ import annotations

import random
import tracemalloc
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from btchat.codec.bencode import (
    MAX_DEPTH,
    MAX_INPUT,
    MAX_INT_DIGITS,
    DecodeError,
    Raw,
    decode,
    decode_dict,
    encode,
)

FUZZ = settings(
    max_examples=2000,
    derandomize=True,
    database=None,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
PROPERTY = settings(max_examples=200, derandomize=True, database=None, deadline=None)
# For properties whose every example is itself a loop over many inputs.
PROPERTY_HEAVY = settings(PROPERTY, max_examples=100)
# The token soup is a second opinion next to st.binary(); half the examples suffice.
FUZZ_HALF = settings(FUZZ, max_examples=1000)

# The largest magnitude decode accepts: MAX_INT_DIGITS decimal digits.
INT_LIMIT = 10**MAX_INT_DIGITS - 1
# The sign does not count as a digit: negatives reach the same magnitude.
NEG_LIMIT = INT_LIMIT

# A KRPC-like message: BEP 5's announce_peer example, nested dict, ints and strings.
ANNOUNCE = (
    b"d1:ad2:id20:abcdefghij012345678912:implied_porti1e9:info_hash20:mnopqrstuvwxyz123456"
    b"4:porti6881e5:token8:aoeusnthe1:q13:announce_peer1:t2:aa1:y1:qe"
)

# ---------------------------------------------------------------------------------------
# Strategies

ints = st.one_of(
    st.integers(min_value=-1000, max_value=1000),
    st.integers(min_value=-NEG_LIMIT, max_value=INT_LIMIT),
    st.sampled_from([0, -1, 2**63 - 1, -(2**63), 2**64, -(2**64), INT_LIMIT, -NEG_LIMIT]),
)
keys = st.binary(max_size=8)
leaves = st.one_of(st.binary(max_size=40), ints)
bencodable = st.recursive(
    leaves,
    lambda children: st.one_of(
        st.lists(children, max_size=5),
        st.dictionaries(keys, children, max_size=5),
    ),
    max_leaves=25,
)
# Byte soup made of bencode tokens, so a fair share of it actually decodes.
_TOKENS = [
    b"i",
    b"l",
    b"d",
    b"e",
    b":",
    b"-",
    b"0",
    b"1",
    b"2",
    b"9",
    b"0:",
    b"1:a",
    b"1:b",
    b"2:ab",
    b"i0e",
    b"i1e",
    b"i-1e",
    b"le",
    b"de",
    b"\x00",
    b"\xff",
]
token_soup = st.binary(max_size=24).map(lambda b: b"".join(_TOKENS[x % len(_TOKENS)] for x in b))

# Seeds for the mutation fuzzer: fixed valid encodings (cheap to draw, unlike a recursive
# strategy) covering every token type, nesting, big and negative ints.
SEEDS = [
    ANNOUNCE,
    b"d1:ad2:id20:abcdefghij0123456789e1:q4:ping1:t2:aa1:y1:qe",
    b"d1:rd2:id20:abcdefghij01234567895:token8:aoeusnth6:valuesl6:axje.u6:idhtnmee1:t2:aa1:y1:re",
    b"d1:eli201e23:A Generic Error Ocurrede1:t2:aa1:y1:ee",
    b"i0e",
    b"i-1e",
    b"i18446744073709551616e",
    b"i-" + b"9" * 31 + b"e",
    b"0:",
    b"10:0123456789",
    b"le",
    b"de",
    b"lli1eeli-2ee3:abcd0:lee1:ad1:bi1eee",
    b"d0:i0e1:\x00le1:\xffdee",
    b"l" * 8 + b"e" * 8,
    b"d1:a" * 5 + b"i7e" + b"e" * 5,
]


def mutate(seed: bytes, rng: random.Random) -> bytes:
    """Flip, insert or delete one to three bytes of ``seed``."""
    data = bytearray(seed)
    for _ in range(rng.randint(1, 3)):
        op = rng.choice(("flip", "insert", "delete"))
        byte = rng.choice(_INTERESTING) if rng.random() < 0.5 else rng.randrange(256)
        if op == "insert" or not data:
            data.insert(rng.randint(0, len(data)), byte)
        elif op == "flip":
            data[rng.randrange(len(data))] = byte
        else:
            del data[rng.randrange(len(data))]
    return bytes(data)


_INTERESTING = b"ilde:-0123456789\x00\xff"
# Drawing a seed and one integer is far cheaper than drawing each edit from Hypothesis,
# which keeps 2000 examples fast; the integer still shrinks towards simple edits.
mutated = st.builds(mutate, st.sampled_from(SEEDS), st.integers(0, 2**32 - 1).map(random.Random))


def check_decode_total(data: bytes) -> None:
    """decode returns or raises DecodeError; what it returns re-encodes to the same bytes."""
    try:
        value = decode(data)
    except Exception as exc:
        assert isinstance(exc, DecodeError), f"{type(exc).__name__}: {exc} on {data!r}"
        return
    # Canonical form is unique: anything accepted is exactly the encoding of its value.
    assert encode(value) == data


def nested_lists(depth: int) -> bytes:
    return b"l" * depth + b"i0e" + b"e" * depth


def nested_dicts(depth: int) -> bytes:
    return b"d1:a" * depth + b"i0e" + b"e" * depth


# ---------------------------------------------------------------------------------------
# Round trips


@PROPERTY
@given(bencodable)
def test_roundtrip_value(value: Any) -> None:
    assert decode(encode(value)) == value


@PROPERTY_HEAVY
@given(bencodable)
def test_encoding_is_prefix_free(value: Any) -> None:
    """No proper prefix of an encoding decodes: truncation is always detected."""
    data = encode(value)
    for i in range(len(data)):
        with pytest.raises(DecodeError):
            decode(data[:i])


@PROPERTY_HEAVY
@given(bencodable, st.binary(min_size=1, max_size=8))
def test_trailing_bytes_after_any_value_rejected(value: Any, tail: bytes) -> None:
    with pytest.raises(DecodeError):
        decode(encode(value) + tail)


@PROPERTY
@given(st.dictionaries(keys, leaves, min_size=2, max_size=6))
def test_dict_encoding_sorts_keys_as_raw_bytes(value: dict[bytes, Any]) -> None:
    data = encode(value)
    assert list(decode(data)) == sorted(value)


def test_known_encodings() -> None:
    assert encode(b"") == b"0:"
    assert encode(b"spam") == b"4:spam"
    assert encode(0) == b"i0e"
    assert encode(-42) == b"i-42e"
    assert encode(2**64) == b"i18446744073709551616e"
    assert encode([]) == b"le"
    assert encode({}) == b"de"
    assert encode([b"spam", 42]) == b"l4:spami42ee"
    assert encode({b"spam": [b"a", b"b"], b"cow": b"moo"}) == b"d3:cow3:moo4:spaml1:a1:bee"


def test_encode_accepts_tuples_and_byte_like() -> None:
    assert encode((1, b"a")) == b"li1e1:ae"
    assert encode(bytearray(b"ab")) == b"2:ab"
    assert encode(memoryview(b"ab")) == b"2:ab"
    assert encode([bytearray(b"x"), memoryview(b"y")]) == b"l1:x1:ye"


def test_decode_accepts_bytearray_and_memoryview() -> None:
    assert decode(bytearray(b"li1ee")) == [1]
    assert decode(memoryview(b"3:abc")) == b"abc"


def test_decode_rejects_non_bytes_with_decode_error() -> None:
    for bad in ("i1e", None, 1, ["i1e"]):
        with pytest.raises(DecodeError):
            decode(bad)  # type: ignore[arg-type]


def test_big_and_negative_ints_at_the_digit_limit() -> None:
    assert decode(b"i" + b"9" * MAX_INT_DIGITS + b"e") == INT_LIMIT
    assert decode(encode(INT_LIMIT)) == INT_LIMIT
    assert decode(b"i-" + b"9" * (MAX_INT_DIGITS - 1) + b"e") == -(10 ** (MAX_INT_DIGITS - 1) - 1)
    assert decode(encode(-(2**100))) == -(2**100)
    assert decode(encode(-(2**64))) == -(2**64)


def test_negative_int_with_max_int_digits_roundtrips() -> None:
    assert decode(b"i-" + b"9" * MAX_INT_DIGITS + b"e") == -INT_LIMIT
    assert decode(encode(-(10 ** (MAX_INT_DIGITS - 1)))) == -(10 ** (MAX_INT_DIGITS - 1))


# ---------------------------------------------------------------------------------------
# Hostile input: DecodeError and nothing else


@FUZZ
@given(st.binary(max_size=200))
def test_arbitrary_bytes_decode_or_decode_error(data: bytes) -> None:
    check_decode_total(data)


@FUZZ_HALF
@given(token_soup)
def test_token_soup_decode_or_decode_error(data: bytes) -> None:
    check_decode_total(data)


@FUZZ
@given(mutated)
def test_mutated_encodings_decode_or_decode_error(data: bytes) -> None:
    check_decode_total(data)


# One test per rejection named in the module docstring.


@pytest.mark.parametrize(
    "data",
    [
        b"d1:bi1e1:ai2ee",
        b"d2:abi1e1:ai2ee",  # b"a" < b"ab": a prefix sorts first
        b"d1:ai1e1:Bi2ee",  # raw bytes: b"B" (0x42) < b"a" (0x61)
        b"d1:\x80i1e1:\x7fi2ee",  # unsigned byte order, not signed
        b"d1:xd1:bi1e1:ai2eee",  # nested dict unsorted
        b"l" + b"d1:bi1e1:ai2ee" + b"e",
    ],
)
def test_unsorted_keys_rejected(data: bytes) -> None:
    with pytest.raises(DecodeError):
        decode(data)


def test_sorted_keys_by_raw_bytes_accepted() -> None:
    assert decode(b"d1:Bi1e1:ai2ee") == {b"B": 1, b"a": 2}
    assert decode(b"d1:ai1e2:abi2ee") == {b"a": 1, b"ab": 2}
    assert decode(b"d1:\x7fi1e1:\x80i2ee") == {b"\x7f": 1, b"\x80": 2}


@pytest.mark.parametrize(
    "data",
    [
        b"d1:ai1e1:ai2ee",
        b"d1:ai1e1:ai1ee",  # even with an identical value
        b"d0:i1e0:i2ee",
        b"d1:ai1e1:bi2e1:bi3ee",
    ],
)
def test_duplicate_keys_rejected(data: bytes) -> None:
    with pytest.raises(DecodeError):
        decode(data)


@pytest.mark.parametrize("data", [b"i01e", b"i00e", b"i007e", b"i-01e", b"i-007e"])
def test_leading_zero_in_int_rejected(data: bytes) -> None:
    with pytest.raises(DecodeError):
        decode(data)


@pytest.mark.parametrize("data", [b"01:a", b"00:", b"001:a", b"l01:ae", b"d01:ai1ee"])
def test_leading_zero_in_string_length_rejected(data: bytes) -> None:
    with pytest.raises(DecodeError):
        decode(data)


@pytest.mark.parametrize("data", [b"i-0e", b"i-00e", b"li-0ee"])
def test_negative_zero_rejected(data: bytes) -> None:
    with pytest.raises(DecodeError):
        decode(data)


@pytest.mark.parametrize(
    "data",
    [b"ie", b"i-e", b"i+1e", b"i 1e", b"i1 e", b"i1.0e", b"i--1e", b"i1-e", b"i0x1e", b"i1_0e"],
)
def test_malformed_int_rejected(data: bytes) -> None:
    with pytest.raises(DecodeError):
        decode(data)


@pytest.mark.parametrize(
    "data", [b"i1ei2e", b"0:x", b"lee", b"de\x00", b"4:spam4:spam", ANNOUNCE + b"e"]
)
def test_trailing_bytes_rejected(data: bytes) -> None:
    with pytest.raises(DecodeError, match="trailing"):
        decode(data)


@pytest.mark.parametrize("data", [b"", bytearray(), memoryview(b"")])
def test_empty_input_rejected(data: bytes) -> None:
    with pytest.raises(DecodeError):
        decode(data)


@pytest.mark.parametrize(
    "data",
    [
        b"5:abc",
        b"5:",
        b"5",
        b"1",
        b"12",
        b"12:",
        b"1:",
    ],
)
def test_truncated_string_rejected(data: bytes) -> None:
    with pytest.raises(DecodeError):
        decode(data)


@pytest.mark.parametrize("data", [b"l", b"li1e", b"l4:spam", b"lle", b"ll", b"l1:"])
def test_truncated_list_rejected(data: bytes) -> None:
    with pytest.raises(DecodeError):
        decode(data)


@pytest.mark.parametrize("data", [b"d", b"d1:a", b"d1:ai1e", b"d1:ade", b"d1:", b"d1:ali1e"])
def test_truncated_dict_rejected(data: bytes) -> None:
    with pytest.raises(DecodeError):
        decode(data)


@pytest.mark.parametrize("data", [b"i", b"i1", b"i-", b"i-1", b"i12345", b"li1"])
def test_truncated_int_rejected(data: bytes) -> None:
    with pytest.raises(DecodeError):
        decode(data)


@pytest.mark.parametrize(
    "data",
    [b"di1ei2ee", b"dli1eei1ee", b"ddei1ee", b"d-1:ai1ee", b"dxe", b"d1:ai1ei2ei3ee"],
)
def test_non_string_dict_key_rejected(data: bytes) -> None:
    with pytest.raises(DecodeError):
        decode(data)


def test_depth_exactly_max_depth_accepted() -> None:
    value = decode(nested_lists(MAX_DEPTH))
    for _ in range(MAX_DEPTH):
        assert isinstance(value, list)
        (value,) = value
    assert value == 0
    assert decode(nested_dicts(MAX_DEPTH)) is not None
    assert decode(b"l" * MAX_DEPTH + b"e" * MAX_DEPTH) is not None


@pytest.mark.parametrize(
    "data",
    [
        nested_lists(MAX_DEPTH + 1),
        nested_dicts(MAX_DEPTH + 1),
        b"l" * (MAX_DEPTH + 1) + b"e" * (MAX_DEPTH + 1),
        b"d1:a" + nested_lists(MAX_DEPTH) + b"e",
        b"l" * 50_000,  # unterminated and deep: no RecursionError
        b"l" * 30_000 + b"e" * 30_000,
        b"d1:a" * 16_000,
    ],
)
def test_depth_beyond_max_depth_rejected(data: bytes) -> None:
    with pytest.raises(DecodeError):
        decode(data)


def test_max_depth_parameter() -> None:
    assert decode(b"i1e", max_depth=0) == 1
    assert decode(b"3:abc", max_depth=0) == b"abc"
    with pytest.raises(DecodeError):
        decode(b"le", max_depth=0)
    assert decode(nested_lists(3), max_depth=3) == [[[0]]]
    with pytest.raises(DecodeError):
        decode(nested_lists(4), max_depth=3)


def test_input_beyond_max_input_rejected() -> None:
    header = b"%d:" % (MAX_INPUT - 6)
    exact = header + b"x" * (MAX_INPUT - len(header))
    assert len(exact) == MAX_INPUT
    assert decode(exact) == b"x" * (MAX_INPUT - 6)
    header = b"%d:" % (MAX_INPUT - 5)
    over = header + b"x" * (MAX_INPUT + 1 - len(header))
    assert len(over) == MAX_INPUT + 1
    with pytest.raises(DecodeError, match="exceeds"):
        decode(over)


def test_max_size_parameter() -> None:
    assert decode(b"4:spam", max_size=6) == b"spam"
    with pytest.raises(DecodeError):
        decode(b"4:spam", max_size=5)


@pytest.mark.parametrize(
    "data",
    [
        b"i" + b"1" * (MAX_INT_DIGITS + 1) + b"e",
        b"i-" + b"1" * (MAX_INT_DIGITS + 1) + b"e",
        b"i" + b"1" * 1000 + b"e",
        b"i" + b"1" * 5000 + b"e",  # beyond CPython's int-to-str limit: still DecodeError
        b"1" + b"0" * MAX_INT_DIGITS + b":",  # string length with too many digits
        b"l" + b"i" + b"1" * (MAX_INT_DIGITS + 1) + b"ee",
    ],
)
def test_int_longer_than_max_int_digits_rejected(data: bytes) -> None:
    with pytest.raises(DecodeError):
        decode(data)


@pytest.mark.parametrize(
    "data",
    [
        b"99999999999:",
        b"99999999999:abc",
        b"9" * MAX_INT_DIGITS + b":",
        b"l99999999999:e",
        b"d1:a99999999999:e",
    ],
)
def test_huge_declared_string_length_does_not_allocate(data: bytes) -> None:
    tracemalloc.start()
    try:
        with pytest.raises(DecodeError):
            decode(data)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 256 * 1024


# ---------------------------------------------------------------------------------------
# Byte-by-byte on a KRPC-like message


def test_announce_example_decodes() -> None:
    msg = decode(ANNOUNCE)
    assert msg[b"a"][b"port"] == 6881
    assert msg[b"a"][b"implied_port"] == 1
    assert encode(msg) == ANNOUNCE


def test_every_proper_prefix_of_message_rejected() -> None:
    for i in range(len(ANNOUNCE)):
        with pytest.raises(DecodeError):
            decode(ANNOUNCE[:i])


@pytest.mark.parametrize("tail", [b"e", b"\x00", b"x", b"i1e", b"de", ANNOUNCE])
def test_message_with_trailing_data_rejected(tail: bytes) -> None:
    with pytest.raises(DecodeError):
        decode(ANNOUNCE + tail)


# ---------------------------------------------------------------------------------------
# Encoding


def test_raw_is_spliced_unchanged() -> None:
    assert encode({b"v": Raw(b"i1e")}) == b"d1:vi1ee"
    assert encode([Raw(b"4:spam"), Raw(b"le")]) == b"l4:spamlee"
    assert encode(Raw(b"d1:ai1ee")) == b"d1:ai1ee"
    assert encode({b"a": Raw(b"le"), b"b": [Raw(b"de")]}) == b"d1:ale1:bldeee"


def test_raw_splice_roundtrips_through_decode() -> None:
    stored = encode({b"msg": b"hi", b"seq": 3})
    wrapper = encode({b"v": Raw(stored), b"id": b"x" * 20})
    assert decode(wrapper)[b"v"] == decode(stored)
    assert stored in wrapper


@pytest.mark.parametrize(
    "value",
    [
        True,
        False,
        [True],
        {b"a": False},
        "spam",
        [b"ok", "spam"],
        {b"a": "spam"},
        1.5,
        0.0,
        {b"a": 1.0},
        None,
        {b"a": None},
        object(),
        {1, 2},
    ],
)
def test_encode_rejects_unsupported_types(value: Any) -> None:
    with pytest.raises(TypeError):
        encode(value)


@pytest.mark.parametrize(
    "value",
    [{"a": 1}, {1: 2}, {True: 1}, {b"a": {"b": 1}}, {(b"a",): 1}],
)
def test_encode_rejects_non_bytes_keys(value: Any) -> None:
    with pytest.raises(TypeError):
        encode(value)


# ------------------------------------------------------------------ lenient decoding


def test_lenient_accepts_unsorted_keys_and_trailing_bytes() -> None:
    assert decode(b"d1:bi2e1:ai1ee\n", strict=False) == {b"a": 1, b"b": 2}
    with pytest.raises(DecodeError):
        decode(b"d1:bi2e1:ai1ee")
    with pytest.raises(DecodeError):
        decode(b"i1e\n")


@pytest.mark.parametrize(
    "data",
    [b"d1:ai1e1:bi2e1:ai3ee", b"d1:bi1e1:ai2e1:bi3ee", b"i01e", b"i-0e", b"01:a", b"d1:a", b""],
)
def test_lenient_still_refuses_duplicates_bad_integers_and_truncation(data: bytes) -> None:
    with pytest.raises(DecodeError):
        decode(data, strict=False)


def test_lenient_keeps_the_depth_bound() -> None:
    with pytest.raises(DecodeError):
        decode(b"l" * (MAX_DEPTH + 1) + b"e" * (MAX_DEPTH + 1), strict=False)


class _Coded(ValueError):
    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


@pytest.mark.parametrize(
    ("data", "code", "message"),
    [
        (b"d1:ai1ee" + b" " * 30, "too_large", "a doc is at most 32 bytes"),
        (b"d1:ai1e", "malformed", "not a doc (bencode:"),
        (b"li1ee", "malformed", "not a doc (not a dictionary)"),
        (b"d1:ad1:bd1:cdeeee", "malformed", "not a doc (bencode:"),  # deeper than 3
    ],
)
def test_decode_dict_fails_with_the_formats_codes(data: bytes, code: str, message: str) -> None:
    with pytest.raises(_Coded) as exc:
        decode_dict(data, "doc", max_size=32, max_depth=3, error=_Coded)
    assert exc.value.code == code and str(exc.value).startswith(message)
    assert decode_dict(b"d1:ai1ee", "doc", max_size=32, max_depth=3, error=_Coded) == {b"a": 1}
