"""Offline packets, private mailbox slots, sealed items, chunks and heads."""

from __future__ import annotations

import contextlib
import hashlib
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from nacl.bindings import crypto_aead_xchacha20poly1305_ietf_encrypt

from btchat.codec.bencode import decode, encode
from btchat.dht import bep44
from btchat.identity.keys import Identity
from btchat.identity.rendezvous import pairwise_secret
from btchat.offline import packet as pk
from btchat.offline.packet import (
    CHUNK_DATA,
    MAX_CHUNKS,
    MAX_PACKET,
    Head,
    OfflinePacket,
    PacketError,
    chunk_slot,
    head_slot,
    join_chunks,
    open_item,
    seal_item,
    split_chunks,
)

ALICE = Identity.from_seed(bytes(range(32)))
BOB = Identity.from_seed(bytes(range(1, 33)))
CAROL = Identity.from_seed(bytes(range(2, 34)))
OLM_KEY = bytes(range(100, 132))
SEALED_SIZE = 24 + pk.ITEM_PLAINTEXT + 16


def make_packet(
    sender: Identity = ALICE,
    recipient: Identity = BOB,
    n: int = 7,
    body: bytes = b"olm body",
    olm_type: int = 0,
) -> OfflinePacket:
    return OfflinePacket.create(
        sender, recipient.public_key, n, 1_700_000_000_000, OLM_KEY, olm_type, body
    )


def fields(packet: OfflinePacket) -> dict[bytes, Any]:
    d = decode(packet.encode())
    assert type(d) is dict
    return d


# ----------------------------------------------------------------------- packets


def test_packet_round_trip() -> None:
    packet = make_packet()
    data = packet.encode()
    parsed = OfflinePacket.parse(data)
    assert parsed == packet
    assert parsed.encode() == data
    parsed.verify(ALICE.public_key, BOB.public_key)
    assert (parsed.sender, parsed.recipient, parsed.n) == (ALICE.public_key, BOB.public_key, 7)
    assert (parsed.expires_ms, parsed.olm_key, parsed.olm_type, parsed.olm_body) == (
        1_700_000_000_000,
        OLM_KEY,
        0,
        b"olm body",
    )
    assert len(parsed.signature) == 64


def test_packet_of_the_largest_body_parses() -> None:
    packet = make_packet(body=b"x" * pk.MAX_OLM_BODY, olm_type=1)
    data = packet.encode()
    assert len(data) <= MAX_PACKET
    OfflinePacket.parse(data).verify(ALICE.public_key, BOB.public_key)


def test_verify_refuses_wrong_sender_recipient_and_signature() -> None:
    packet = OfflinePacket.parse(make_packet().encode())
    with pytest.raises(PacketError, match="someone else than"):
        packet.verify(CAROL.public_key, BOB.public_key)
    with pytest.raises(PacketError, match="addressed to someone else"):
        packet.verify(ALICE.public_key, CAROL.public_key)
    # Signed by Carol but claiming to be from Alice.
    forged = OfflinePacket.create(CAROL, BOB.public_key, 7, 1, OLM_KEY, 0, b"x")
    forged = OfflinePacket(**{**forged.__dict__, "sender": ALICE.public_key})
    with pytest.raises(PacketError, match="signature"):
        OfflinePacket.parse(forged.encode()).verify(ALICE.public_key, BOB.public_key)
    # A flipped signature bit.
    sig = bytearray(packet.signature)
    sig[5] ^= 1
    bad = OfflinePacket(**{**packet.__dict__, "signature": bytes(sig)})
    with pytest.raises(PacketError, match="signature"):
        OfflinePacket.parse(bad.encode()).verify(ALICE.public_key, BOB.public_key)


@pytest.mark.parametrize(
    "field, value",
    [
        (b"n", 8),
        (b"x", 1),
        (b"m", 1),
        (b"b", b"other body"),
        (b"k", bytes(32)),
        (b"t", CAROL.public_key),
    ],
)
def test_any_signed_field_changed_fails_verification(field: bytes, value: object) -> None:
    d = fields(make_packet())
    d[field] = value
    parsed = OfflinePacket.parse(encode(d))
    with pytest.raises(PacketError):
        parsed.verify(ALICE.public_key, parsed.recipient)


def _mutated(change: dict[bytes, Any], drop: bytes | None = None) -> bytes:
    d = fields(make_packet())
    d.update(change)
    if drop is not None:
        del d[drop]
    return encode(d)


@pytest.mark.parametrize(
    "data, reason",
    [
        (b"x" * (MAX_PACKET + 1), "exceeds"),
        (b"", "canonical"),
        (b"d1:vi1ee trailing", "canonical"),
        (b"d1:vi01ee", "canonical"),
        (b"d1:bi1e1:ai1ee", "canonical"),  # unsorted keys
        (b"li1ee", "wrong fields"),
        (b"4:spam", "wrong fields"),
        (b"d1:vl" + b"l" * 5 + b"e" * 6 + b"e", "canonical"),  # deeper than a packet
        (_mutated({b"v": 2}), "wrong fields"),
        (_mutated({b"z": 1}), "wrong fields"),
        (_mutated({}, drop=b"s"), "wrong fields"),
        (_mutated({}, drop=b"b"), "wrong fields"),
        (_mutated({b"f": b"short"}), "field f"),
        (_mutated({b"f": 5}), "field f"),
        (_mutated({b"t": bytes(33)}), "field t"),
        (_mutated({b"k": bytes(31)}), "field k"),
        (_mutated({b"s": bytes(63)}), "field s"),
        (_mutated({b"n": -1}), "out of range"),
        (_mutated({b"n": 2**53}), "out of range"),
        (_mutated({b"n": b"1"}), "out of range"),
        (_mutated({b"x": -5}), "out of range"),
        (_mutated({b"x": [1]}), "out of range"),
        (_mutated({b"m": 2}), "out of range"),
        (_mutated({b"m": -1}), "out of range"),
        (_mutated({b"b": b""}), "body"),
        (_mutated({b"b": 5}), "body"),
        (_mutated({b"b": b"x" * (pk.MAX_OLM_BODY + 1)}), "body"),
    ],
)
def test_parse_errors(data: bytes, reason: str) -> None:
    with pytest.raises(PacketError, match=reason):
        OfflinePacket.parse(data)


@given(st.binary(max_size=600))
@settings(max_examples=300, deadline=None)
def test_parse_random_bytes_raises_only_packet_error(data: bytes) -> None:
    with contextlib.suppress(PacketError):
        OfflinePacket.parse(data)


bencode_values = st.recursive(
    st.integers(min_value=-(2**60), max_value=2**60) | st.binary(max_size=40),
    lambda children: (
        st.lists(children, max_size=4)
        | st.dictionaries(st.binary(max_size=3), children, max_size=4)
    ),
    max_leaves=10,
)
VALID_PACKET = make_packet()
VALID_FIELDS = fields(VALID_PACKET)
packet_keys = st.sampled_from([*sorted(pk._PACKET_KEYS), b"z", b""])


@given(st.dictionaries(packet_keys, bencode_values, max_size=12), st.booleans())
@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_parse_structured_mutations_raise_only_packet_error(
    change: dict[bytes, Any], start_valid: bool
) -> None:
    d = dict(VALID_FIELDS) if start_valid else {}
    d.update(change)
    try:
        parsed = OfflinePacket.parse(encode(d))
    except PacketError:
        return
    try:
        parsed.verify(ALICE.public_key, BOB.public_key)
    except PacketError:
        return
    # Only the untouched packet (or one with equal values) verifies.
    assert parsed == VALID_PACKET


# ------------------------------------------------------------------------- slots


def test_both_sides_derive_the_same_slots() -> None:
    s_ab = pairwise_secret(ALICE, BOB.public_key)
    s_ba = pairwise_secret(BOB, ALICE.public_key)
    assert s_ab == s_ba
    a, b = ALICE.public_key, BOB.public_key
    for x, y in (
        (chunk_slot(s_ab, a, b, 3, 1), chunk_slot(s_ba, a, b, 3, 1)),
        (head_slot(s_ab, a, b, 19000), head_slot(s_ba, a, b, 19000)),
    ):
        assert x.public_key == y.public_key
        assert x.aead_key == y.aead_key
        assert x.private_key.public_key().public_bytes_raw() == x.public_key
        assert len(x.public_key) == 32 and len(x.aead_key) == 32


def test_slots_differ_by_direction_counter_part_day_and_kind() -> None:
    secret = pairwise_secret(ALICE, BOB.public_key)
    a, b = ALICE.public_key, BOB.public_key
    slots = [
        chunk_slot(secret, a, b, 0, 0),
        chunk_slot(secret, b, a, 0, 0),  # the other direction
        chunk_slot(secret, a, b, 1, 0),  # next packet
        chunk_slot(secret, a, b, 0, 1),  # next part
        chunk_slot(secret, a, b, 1, 1),
        chunk_slot(secret, a, b, 10, 1),
        chunk_slot(secret, a, b, 1, 10),
        head_slot(secret, a, b, 0),
        head_slot(secret, a, b, 1),  # next day
        head_slot(secret, b, a, 0),  # the other direction's head
        head_slot(secret, a, b, 19000),
    ]
    assert len({s.public_key for s in slots}) == len(slots)
    assert len({s.aead_key for s in slots}) == len(slots)
    assert all(s.public_key != s.aead_key for s in slots)


def test_only_the_pair_can_compute_its_slots() -> None:
    a, b = ALICE.public_key, BOB.public_key
    secret = pairwise_secret(ALICE, BOB.public_key)
    # Carol knows both public keys but only her own pairwise secrets.
    for guess in (
        pairwise_secret(CAROL, a),
        pairwise_secret(CAROL, b),
        hashlib.blake2b(a + b, digest_size=32).digest(),
        bytes(32),
    ):
        assert guess != secret
        assert chunk_slot(guess, a, b, 0, 0).public_key != chunk_slot(secret, a, b, 0, 0).public_key
        assert head_slot(guess, a, b, 5).public_key != head_slot(secret, a, b, 5).public_key
    sealed = decode(seal_item(chunk_slot(secret, a, b, 0, 0), {b"c": 1, b"i": 0, b"d": b"x"}))
    with pytest.raises(PacketError):
        open_item(chunk_slot(pairwise_secret(CAROL, a), a, b, 0, 0), sealed)


# ------------------------------------------------------------------------- items


def _slot(n: int = 0, part: int = 0) -> pk.Slot:
    secret = pairwise_secret(ALICE, BOB.public_key)
    return chunk_slot(secret, ALICE.public_key, BOB.public_key, n, part)


def test_sealed_items_all_have_one_size_within_bep44() -> None:
    slot = _slot()
    payloads: list[dict[bytes, Any]] = [
        {},
        Head(0, 0, -1).payload(),
        Head(2**40, 2**41, 2**45).payload(),
        {b"c": 1, b"i": 0, b"d": b"x"},
        {b"c": MAX_CHUNKS, b"i": MAX_CHUNKS - 1, b"d": b"y" * CHUNK_DATA},
        *split_chunks(bytes(range(256)) * 100),
    ]
    values = [seal_item(slot, p) for p in payloads]
    assert {len(v) for v in values} == {len(encode(bytes(SEALED_SIZE)))}
    assert all(len(v) <= bep44.MAX_VALUE_SIZE for v in values)
    for v, p in zip(values, payloads, strict=True):
        # Storable as a BEP 44 item, and opens to exactly what was sealed.
        bep44.check_mutable(bep44.sign_mutable(slot.private_key, v, 1))
        assert open_item(slot, decode(v)) == p


def test_seal_is_deterministic_and_differs_by_payload_and_slot() -> None:
    payload = {b"c": 1, b"i": 0, b"d": b"hello"}
    assert seal_item(_slot(), payload) == seal_item(_slot(), payload)
    assert seal_item(_slot(), payload) != seal_item(_slot(), {**payload, b"d": b"hellp"})
    assert seal_item(_slot(), payload) != seal_item(_slot(1), payload)


def test_seal_refuses_oversized_payload() -> None:
    with pytest.raises(ValueError, match="exceeds"):
        seal_item(_slot(), {b"d": b"x" * pk.ITEM_PLAINTEXT})


def test_every_flipped_byte_is_refused() -> None:
    slot = _slot()
    sealed = decode(seal_item(slot, {b"c": 1, b"i": 0, b"d": b"payload"}))
    assert type(sealed) is bytes and len(sealed) == SEALED_SIZE
    for pos in [
        *range(0, 24),
        24,
        100,
        500,
        SEALED_SIZE - 17,
        *range(SEALED_SIZE - 16, SEALED_SIZE),
    ]:
        flipped = bytearray(sealed)
        flipped[pos] ^= 0x40
        with pytest.raises(PacketError, match="does not decrypt"):
            open_item(slot, bytes(flipped))


@pytest.mark.parametrize(
    "value",
    [
        None,
        5,
        "text",
        [b"x"],
        {b"a": b"b"},
        b"",
        b"x" * (SEALED_SIZE - 1),
        b"x" * (SEALED_SIZE + 1),
    ],
)
def test_open_item_refuses_wrong_types_and_sizes(value: object) -> None:
    with pytest.raises(PacketError, match="wrong size"):
        open_item(_slot(), value)


def _seal_raw(slot: pk.Slot, plain: bytes) -> bytes:
    """Seal arbitrary padded plaintext as seal_item does, bypassing its encoder."""
    padded = plain + bytes(pk.ITEM_PLAINTEXT - len(plain))
    nonce = bytes(24)
    return nonce + crypto_aead_xchacha20poly1305_ietf_encrypt(
        padded, slot.public_key, nonce, slot.aead_key
    )


@pytest.mark.parametrize(
    "plain, reason",
    [
        (b"", "malformed"),  # all padding
        (b"li1ee", "not a dictionary"),
        (b"i5e", "not a dictionary"),
        (b"d1:ai1e", "malformed"),  # truncated
        (b"d1:ai1ee\x00\x00junk", "malformed"),  # junk after the padding starts
        (b"d1:ad1:ad1:ad1:ai1eeeee", "malformed"),  # too deep
        (b"d1:ai01ee", "malformed"),
    ],
)
def test_open_item_refuses_malformed_plaintext(plain: bytes, reason: str) -> None:
    slot = _slot()
    with pytest.raises(PacketError, match=reason):
        open_item(slot, _seal_raw(slot, plain))


@given(st.binary(min_size=SEALED_SIZE, max_size=SEALED_SIZE) | st.binary(max_size=1100))
@settings(max_examples=200, deadline=None)
def test_open_item_random_values_raise_only_packet_error(value: bytes) -> None:
    with pytest.raises(PacketError):
        open_item(_slot(), value)


@given(st.binary(max_size=pk.ITEM_PLAINTEXT))
@settings(max_examples=200, deadline=None)
def test_open_item_any_authentic_plaintext_raises_only_packet_error(plain: bytes) -> None:
    slot = _slot()
    try:
        payload = open_item(slot, _seal_raw(slot, plain))
    except PacketError:
        return
    assert type(payload) is dict


# ------------------------------------------------------------------------ chunks


@pytest.mark.parametrize("size, count", [(1, 1), (900, 1), (901, 2), (MAX_PACKET, MAX_CHUNKS)])
def test_split_and_join_chunks(size: int, count: int) -> None:
    data = bytes((i * 7) % 251 for i in range(size))
    parts = split_chunks(data)
    assert len(parts) == count
    assert CHUNK_DATA == 900 and MAX_CHUNKS == 28
    for i, part in enumerate(parts):
        assert pk.chunk_count(part, i) == count
        assert 0 < len(part[b"d"]) <= CHUNK_DATA
        # Each chunk survives sealing into its own slot.
        slot = _slot(3, i)
        assert open_item(slot, decode(seal_item(slot, part))) == part
    assert join_chunks(parts) == data
    if count > 1:
        assert len(parts[-1][b"d"]) == size - (count - 1) * CHUNK_DATA


@pytest.mark.parametrize(
    "payload, part",
    [
        ({}, 0),
        ({b"c": 0, b"i": 0, b"d": b"x"}, 0),
        ({b"c": MAX_CHUNKS + 1, b"i": 0, b"d": b"x"}, 0),
        ({b"c": b"1", b"i": 0, b"d": b"x"}, 0),
        ({b"c": 2, b"i": 1, b"d": b"x"}, 0),  # found at the wrong index
        ({b"c": 2, b"i": b"\x00", b"d": b"x"}, 0),
        ({b"c": 1, b"i": 0, b"d": b""}, 0),
        ({b"c": 1, b"i": 0, b"d": b"x" * (CHUNK_DATA + 1)}, 0),
        ({b"c": 1, b"i": 0, b"d": 5}, 0),
        ({b"c": 1, b"i": 0}, 0),
    ],
)
def test_chunk_count_refuses_malformed(payload: dict[bytes, Any], part: int) -> None:
    with pytest.raises(PacketError, match="chunk"):
        pk.chunk_count(payload, part)


@given(
    st.dictionaries(st.sampled_from([b"c", b"i", b"d", b"x"]), bencode_values), st.integers(0, 30)
)
@settings(max_examples=100, deadline=None)
def test_chunk_count_fuzz_raises_only_packet_error(payload: dict[bytes, Any], part: int) -> None:
    try:
        count = pk.chunk_count(payload, part)
    except PacketError:
        return
    assert 1 <= count <= MAX_CHUNKS and payload[b"i"] == part


# -------------------------------------------------------------------------- head


@pytest.mark.parametrize("head", [Head(0, 0, -1), Head(3, 9, 4), Head(0, 2**53 - 1, 2**53 - 2)])
def test_head_round_trip(head: Head) -> None:
    slot = head_slot(pairwise_secret(ALICE, BOB.public_key), ALICE.public_key, BOB.public_key, 1)
    assert Head.from_payload(open_item(slot, decode(seal_item(slot, head.payload())))) == head


@pytest.mark.parametrize(
    "payload",
    [
        {},
        {b"lo": 0, b"hi": 0},
        {b"lo": 5, b"hi": 4, b"a": 0},
        {b"lo": -1, b"hi": 4, b"a": 0},
        {b"lo": 0, b"hi": 4, b"a": -1},  # ack -2
        {b"lo": 0, b"hi": 2**53, b"a": 0},
        {b"lo": b"0", b"hi": 4, b"a": 0},
        {b"lo": 0, b"hi": [4], b"a": 0},
    ],
)
def test_head_refuses_malformed(payload: dict[bytes, Any]) -> None:
    with pytest.raises(PacketError, match="head malformed"):
        Head.from_payload(payload)


@given(st.dictionaries(st.sampled_from([b"lo", b"hi", b"a", b"x"]), bencode_values))
@settings(max_examples=100, deadline=None)
def test_head_fuzz_raises_only_packet_error(payload: dict[bytes, Any]) -> None:
    try:
        head = Head.from_payload(payload)
    except PacketError:
        return
    assert 0 <= head.lo <= head.hi and head.ack >= -1
