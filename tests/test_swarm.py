"""The many-source fetch core (transfer/swarm.py): rarest first, bad pieces refetched
elsewhere, per-source windows, resume from a saved bitmap."""

from __future__ import annotations

import os
import random

import pytest

from btchat.transfer import wire
from btchat.transfer.download import Bitmap
from btchat.transfer.swarm import Swarm
from tests.test_transfer_core import content, manifest_for

OFFER = b"o" * 16


def bits(pieces: int, held: set[int]) -> bytes:
    b = Bitmap(pieces)
    for i in held:
        b.set(i)
    return b.to_bytes()


def run(
    s: Swarm,
    data: bytes,
    layer: list[bytes],
    corrupt: dict[str, set[int]] | None = None,
    *,
    rounds: int = 1000,
) -> list[tuple[str, int]]:
    """Answer every request like the named sources would (``corrupt[name]``: pieces that
    source flips a byte of, every time); returns (source, index) of each piece sent."""
    corrupt = corrupt or {}
    sent = []
    m = s.manifest
    for _ in range(rounds):
        reqs = s.requests(0.0)
        if not reqs:
            break
        for key, msg in reqs:
            if isinstance(msg, wire.GetLayer):
                s.on_layer(key, layer)
                continue
            assert isinstance(msg, wire.Get)
            for i in msg.indices:
                piece = data[i * m.piece_size : i * m.piece_size + m.piece_length(i)]
                if i in corrupt.get(key, ()):
                    piece = bytes([piece[0] ^ 1]) + piece[1:]
                sent.append((key, i))
                if s.on_piece(key, i, piece).outcome == "ok":
                    s.written(i)
    return sent


def test_rarest_pieces_are_asked_first_and_windows_hold() -> None:
    data = content(16384 * 12)
    m, layer = manifest_for(data)
    s = Swarm(OFFER, m, Bitmap(m.pieces), layer, per_source=2)
    s.add_source("a", bits(m.pieces, set(range(12))))
    s.add_source("b", bits(m.pieces, set(range(6))))
    s.add_source("c", bits(m.pieces, {0, 1, 2}))
    first = s.requests(0.0)
    asked = {(k, i) for k, msg in first for i in msg.indices}
    # Pieces 6..11 have one source (a); 3..5 two; 0..2 three. a's window (2) goes to
    # the rarest, b's to the next rarest it holds, c's to what only it has left.
    assert {i for k, i in asked if k == "a"} == {6, 7}
    assert {i for k, i in asked if k == "b"} == {3, 4}
    assert {i for k, i in asked if k == "c"} == {0, 1}
    assert s.in_flight == 6
    assert s.requests(0.0) == []  # every window is full
    assert s.availability(0) == 3 and s.availability(11) == 1


def test_rarest_first_ties_are_spread_by_a_random_order() -> None:
    data = content(16384 * 64)
    m, layer = manifest_for(data)
    orders = []
    for seed in (1, 2):
        s = Swarm(OFFER, m, Bitmap(m.pieces), layer, per_source=4, rng=random.Random(seed))
        s.add_source("a", bits(m.pieces, set(range(64))))
        orders.append([i for _, msg in s.requests(0.0) for i in msg.indices])
    assert orders[0] != orders[1]  # two fetchers of one file start on different pieces


def test_bad_piece_from_one_source_is_fetched_from_another() -> None:
    data = content(16384 * 10 + 5)
    m, layer = manifest_for(data)
    s = Swarm(OFFER, m, Bitmap(m.pieces), per_source=4)
    everything = bits(m.pieces, set(range(m.pieces)))
    s.add_source("liar", everything)
    s.add_source("honest", everything)
    sent = run(s, data, layer, {"liar": set(range(m.pieces))})
    assert s.complete
    assert s.stats["bad_piece"] >= 1
    bad = {i for k, i in sent if k == "liar"}
    # Each piece the liar spoiled came again, from the honest source.
    assert bad and all(("honest", i) in sent for i in bad)
    # Four bad pieces and the liar is dropped for this file, never asked again.
    assert "liar" in s.banned and "liar" not in s.sources
    assert s.stats["sources_dropped"] == 1
    assert s.add_source("liar", everything) is False


def test_bad_layer_counts_against_its_source_and_is_asked_elsewhere() -> None:
    data = content(16384 * 3)
    m, layer = manifest_for(data)
    s = Swarm(OFFER, m, Bitmap(m.pieces), max_bad=1)
    s.add_source("liar", bits(m.pieces, {0}))
    s.add_source("honest", bits(m.pieces, {0, 1, 2}))
    [(key, msg)] = s.requests(0.0)
    assert isinstance(msg, wire.GetLayer)
    assert s.requests(0.0) == []  # one layer request at a time
    assert s.on_layer(key, [os.urandom(32)] * 3) is False
    assert key in s.banned
    [(key2, msg2)] = s.requests(0.0)
    assert key2 != key and isinstance(msg2, wire.GetLayer)
    assert s.on_layer(key2, layer)


def test_only_a_source_holding_the_piece_is_asked() -> None:
    data = content(16384 * 4)
    m, layer = manifest_for(data)
    s = Swarm(OFFER, m, Bitmap(m.pieces), layer)
    s.add_source("a", bits(m.pieces, {0, 1}))
    assert {i for _, msg in s.requests(0.0) for i in msg.indices} == {0, 1}
    assert s.on_have("a", 3)
    assert {i for _, msg in s.requests(0.0) for i in msg.indices} == {3}
    assert s.on_piece("a", 2, data[2 * 16384 : 3 * 16384]).outcome == "unexpected"
    assert not s.on_have("a", 99) and s.stats["bad_have"] == 1


def test_a_lost_source_gives_its_requests_to_another() -> None:
    data = content(16384 * 4)
    m, layer = manifest_for(data)
    s = Swarm(OFFER, m, Bitmap(m.pieces), layer, per_source=4)
    everything = bits(m.pieces, set(range(4)))
    s.add_source("gone", everything)
    assert {k for k, _ in s.requests(0.0)} == {"gone"}
    s.add_source("second", everything)
    assert s.requests(0.0) == []  # all four are in flight from "gone"
    s.remove_source("gone")
    assert s.availability(0) == 1
    run(s, data, layer)
    assert s.complete


def test_unanswered_requests_are_asked_again_after_the_timeout() -> None:
    data = content(16384 * 2)
    m, layer = manifest_for(data)
    s = Swarm(OFFER, m, Bitmap(m.pieces), layer, timeout=10.0)
    s.add_source("slow", bits(m.pieces, {0, 1}))
    assert s.requests(0.0) and s.requests(5.0) == []
    s.expire(5.0)
    assert s.requests(5.0) == []
    s.expire(11.0)
    assert {i for _, msg in s.requests(11.0) for i in msg.indices} == {0, 1}
    assert s.stats["timeouts"] == 2


def test_resume_from_a_saved_bitmap_fetches_only_what_is_missing() -> None:
    data = content(16384 * 9)
    m, layer = manifest_for(data)
    s = Swarm(OFFER, m, Bitmap(m.pieces), per_source=3)
    s.add_source("a", bits(m.pieces, set(range(9))))
    first = []
    for key, _msg in s.requests(0.0):
        s.on_layer(key, layer)
    for _, msg in s.requests(0.0):
        for i in msg.indices:
            assert s.on_piece("a", i, data[i * 16384 : (i + 1) * 16384]).outcome == "ok"
            s.written(i)
            first.append(i)
    saved = s.have.to_bytes()
    # A restart: a new swarm from the saved bitmap and layer, with a new source.
    again = Swarm(OFFER, m, Bitmap(m.pieces, saved), list(layer), per_source=3)
    again.add_source("b", bits(m.pieces, set(range(9))))
    sent = run(again, data, layer)
    assert again.complete
    assert sorted(i for _, i in sent) == sorted(set(range(9)) - set(first))
    # A stored layer that does not match the root is not trusted.
    assert Swarm(OFFER, m, Bitmap(m.pieces), [os.urandom(32)] * 9).layer is None


@pytest.mark.parametrize("raw", [b"\x00" * 3, b"\x00\x01"])
def test_malformed_bitfields_are_refused(raw: bytes) -> None:
    m, _ = manifest_for(content(16384 * 9))  # 9 pieces: 2 bytes, 7 spare bits
    s = Swarm(OFFER, m, Bitmap(m.pieces))
    assert s.add_source("x", raw) is False
    assert "x" not in s.sources and s.stats["bad_bitfield"] == 1
    assert s.add_source("y", b"")  # empty: holds nothing yet
    assert s.requests(0.0) == []


def test_bitfield_and_have_round_trip_on_the_wire() -> None:
    msgs = [wire.Bitfield(OFFER, b"\xff\x80"), wire.Bitfield(OFFER, b""), wire.Have(OFFER, 9)]
    stream = b"".join(wire.encode(m) for m in msgs)
    assert wire.Reader().feed(stream) == msgs
    for bad in (
        b"\x00\x00\x00\x12\x05" + OFFER + b"\x00",  # HAVE index not 4 bytes
        b"\x00\x00\x04\x12\x04" + OFFER + b"\x00" * 1025,  # BITFIELD over 8192 pieces
    ):
        with pytest.raises(wire.WireError):
            wire.Reader().feed(bad)


def test_a_piece_hashed_elsewhere_is_judged_by_its_digest() -> None:
    from btchat.transfer.tree import piece_hash

    data = content(16384 * 4)
    m, layer = manifest_for(data)
    s = Swarm(OFFER, m, Bitmap(m.pieces), layer, per_source=4)
    s.add_source("a", bits(m.pieces, set(range(m.pieces))))
    asked = {i for _, msg in s.requests(0.0) for i in msg.indices}
    assert asked == set(range(m.pieces))
    piece = data[: m.piece_length(0)]
    # Worth hashing only if asked of that source, not held, and of the right length.
    assert s.wants("a", 0, len(piece)) and not s.wants("b", 0, len(piece))
    assert not s.wants("a", 0, len(piece) - 1) and not s.wants("a", m.pieces, 1)
    assert s.expected(0) == layer[0] == piece_hash(piece, m.pieces, m.piece_size)
    # The digest decides, not a second hash of the bytes (here: a wrong one given).
    assert s.on_piece("a", 0, piece, digest=bytes(32)).outcome == "bad"
    assert s.on_piece("a", 1, data[m.piece_size : 2 * m.piece_size], layer[1]).outcome == "ok"
    s.written(1)
    assert not s.wants("a", 1, m.piece_length(1))  # held now
