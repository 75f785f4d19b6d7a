"""The transfer cores: the BEP 52 tree (against the vectors and a naive tree), manifests,
safe names, the wire reader, and the download state machine (bad pieces, resume)."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import pytest

from btchat.messaging import envelope as env_mod
from btchat.transfer import wire
from btchat.transfer.download import MAX_BAD_PIECES, Bitmap, Download
from btchat.transfer.manifest import (
    MAX_PIECES,
    Manifest,
    ManifestError,
    choose_piece_size,
    parse_manifest,
)
from btchat.transfer.names import MAX_NAME_BYTES, safe_name
from btchat.transfer.tree import EMPTY_ROOT, LEAF_SIZE, PieceHasher, layer_root, piece_hash

VECTORS = json.loads(
    (Path(__file__).resolve().parents[1] / "docs" / "vectors" / "files.json").read_text()
)


def content(size: int) -> bytes:
    return bytes((i * 31 + 7) % 256 for i in range(size))


def naive_root(data: bytes) -> bytes:
    """BEP 52 read literally: every leaf, zero-hash leaves up to a power of two."""
    if not data:
        return EMPTY_ROOT
    layer = [
        hashlib.sha256(data[i : i + LEAF_SIZE]).digest() for i in range(0, len(data), LEAF_SIZE)
    ]
    width = 1
    while width < len(layer):
        width *= 2
    layer += [bytes(32)] * (width - len(layer))
    while len(layer) > 1:
        layer = [hashlib.sha256(layer[i] + layer[i + 1]).digest() for i in range(0, len(layer), 2)]
    return layer[0]


@pytest.mark.parametrize(
    "case", VECTORS["vectors"]["trees"], ids=lambda c: f"{c['size']}/{c['piece_size']}"
)
def test_tree_vectors(case: dict) -> None:
    data = content(case["size"])
    h = PieceHasher(case["size"], case["piece_size"])
    for i in range(0, len(data), 7000):  # chunking does not matter
        h.update(data[i : i + 7000])
    assert h.root().hex() == case["root"]
    assert [x.hex() for x in h.layer] == case["layer"]
    assert naive_root(data).hex() == case["root"]  # independent of our code
    layer = [bytes.fromhex(x) for x in case["layer"]]
    assert layer_root(layer, case["piece_size"]).hex() == case["root"]


@pytest.mark.parametrize("case", VECTORS["vectors"]["names"], ids=lambda c: repr(c["offered"][:20]))
def test_name_vectors(case: dict) -> None:
    assert safe_name(case["offered"]) == case["saved"]


@pytest.mark.parametrize(
    "hostile",
    ["../../x", "..\\..\\x", "/abs", "C:x", "\x00", "a/../../b", "\u202e", "AUX", "COM1.txt", "."],
)
def test_hostile_names_stay_in_the_folder(hostile: str, tmp_path: Path) -> None:
    name = safe_name(hostile)
    assert name and "/" not in name and "\\" not in name and not name.startswith(".")
    assert (tmp_path / name).resolve().parent == tmp_path.resolve()
    assert name.split(".")[0].upper() not in {"AUX", "COM1", "CON"}


def test_long_names_are_cut_in_bytes_keeping_the_extension() -> None:
    name = safe_name("é" * 300 + ".jpeg")
    assert len(name.encode()) <= MAX_NAME_BYTES and name.endswith(".jpeg")


def manifest_for(data: bytes, piece: int = 16384) -> tuple[Manifest, list[bytes]]:
    h = PieceHasher(len(data), piece)
    h.update(data)
    root = h.root()
    return Manifest("f.bin", len(data), "application/octet-stream", piece, root), h.layer


def test_manifest_round_trip_and_bounds() -> None:
    m, _ = manifest_for(content(40000))
    assert parse_manifest(m.body()) == m
    bad = [
        {**m.body(), b"p": 3 * 16384},  # not a power of two
        {**m.body(), b"p": 8192},
        {**m.body(), b"s": -1},
        {**m.body(), b"s": 16384 * (MAX_PIECES + 1)},  # too many pieces
        {**m.body(), b"r": b"x"},
        {**m.body(), b"n": b""},
        {**m.body(), b"n": b"\xff"},
        {**m.body(), b"m": b"Text/HTML"},
        {**m.body(), b"s": 0},  # the empty file's root is fixed
    ]
    for body in bad:
        with pytest.raises(ManifestError):
            parse_manifest(body)
    assert choose_piece_size(10) == 256 * 1024
    assert choose_piece_size(4 * 1024**3) == 512 * 1024  # 8192 pieces of 512 KiB


def test_file_envelope_is_checked() -> None:
    from btchat.identity.keys import Identity

    alice, bob = Identity.generate(), Identity.generate()
    m, _ = manifest_for(content(100))
    env = env_mod.create(
        alice, bytes(16), bob.public_key, env_mod.FILE, m.body(), lamport=1, now=1e9
    )
    parsed = env_mod.parse_envelope(env_mod.encode_envelope(env))
    assert env_mod.decode_file(parsed) == m
    with pytest.raises(env_mod.EnvelopeError) as err:
        env_mod.create(
            alice,
            bytes(16),
            bob.public_key,
            env_mod.FILE,
            {**m.body(), b"p": 5},
            lamport=1,
            now=1e9,
        )
    assert err.value.code == "bad_body"


def test_wire_round_trip_byte_by_byte_and_bounds() -> None:
    oid = os.urandom(16)
    msgs = [
        wire.GetLayer(oid),
        wire.Get(oid, (0, 5, 2**32 - 1)),
        wire.Cancel(oid, "rejected"),
        wire.Layer(oid, (b"a" * 32, b"b" * 32)),
        wire.Piece(oid, 7, b"data" * 1000),
    ]
    stream = b"".join(wire.encode(m) for m in msgs)
    reader = wire.Reader()
    got = [m for i in range(len(stream)) for m in reader.feed(stream[i : i + 1])]
    assert got == msgs and reader.buffered == 0
    for bad in (
        b"\xff\xff\xff\xff",  # longer than any message
        b"\x00\x00\x00\x11\x09" + oid,  # unknown kind
        b"\x00\x00\x00\x12\x02" + oid + b"\x00",  # GET index not 4 bytes
        b"\x00\x00\x00\x11\x82" + oid,  # PIECE without data
        b"\x00\x00\x00\x12\x03" + oid + b"\xff",  # CANCEL reason not UTF-8
    ):
        with pytest.raises(wire.WireError):
            wire.Reader().feed(bad)


def serve(
    d: Download, data: bytes, layer: list[bytes], corrupt: set[int] = frozenset()
) -> list[int]:
    """Answer the download's requests like an honest (or corrupting) sender; returns the
    indices sent, in order."""
    sent = []
    m = d.manifest
    while not d.complete and not d.failed:
        reqs = d.requests()
        if not reqs:
            break
        for r in reqs:
            if isinstance(r, wire.GetLayer):
                assert d.on_layer(layer)
                continue
            assert isinstance(r, wire.Get)
            for i in r.indices:
                piece = data[i * m.piece_size : i * m.piece_size + m.piece_length(i)]
                if i in corrupt:
                    corrupt.discard(i)  # corrupt once, then honest
                    piece = bytes([piece[0] ^ 1]) + piece[1:]
                sent.append(i)
                if d.on_piece(i, piece).outcome == "ok":
                    d.written(i)
    return sent


def test_download_verifies_refetches_bad_pieces_once() -> None:
    data = content(16384 * 10 + 99)
    m, layer = manifest_for(data)
    d = Download(b"o" * 16, m, Bitmap(m.pieces), window=4)
    sent = serve(d, data, layer, corrupt={3, 7})
    assert d.complete
    assert d.stats["bad"] == 2 and d.stats["verified"] == m.pieces
    assert sorted(sent) == sorted([*range(m.pieces), 3, 7])  # only bad ones fetched twice


def test_bad_layer_is_refused_and_asked_again() -> None:
    data = content(16384 * 3)
    m, layer = manifest_for(data)
    d = Download(b"o" * 16, m, Bitmap(m.pieces))
    assert d.requests() == [wire.GetLayer(b"o" * 16)]
    assert not d.on_layer([bytes(32)] * 3)
    assert d.requests() == [wire.GetLayer(b"o" * 16)]
    assert d.on_layer(layer)


def test_a_source_that_keeps_lying_fails_the_transfer() -> None:
    data = content(16384 * 2)
    m, layer = manifest_for(data)
    d = Download(b"o" * 16, m, Bitmap(m.pieces), layer)
    rounds = 0
    while not d.failed:
        [get] = d.requests()  # every bad piece is asked for again
        assert isinstance(get, wire.Get) and get.indices == (0, 1)
        for i in get.indices:
            d.on_piece(i, b"\x00" * m.piece_length(i))
        rounds += 1
    assert rounds == MAX_BAD_PIECES // 2 and d.requests() == []


def test_resume_from_a_saved_bitmap_fetches_only_what_is_missing() -> None:
    data = content(16384 * 20 + 5)
    m, layer = manifest_for(data)
    d = Download(b"o" * 16, m, Bitmap(m.pieces), window=3)
    first: list[int] = []
    # Half the pieces, then the "session" drops with pieces in flight.
    while d.have.count < 10:
        [get] = [r for r in d.requests() if isinstance(r, wire.Get)] or [None]
        if get is None:
            d.on_layer(layer)
            continue
        for i in get.indices:
            if d.on_piece(i, data[i * 16384 : i * 16384 + m.piece_length(i)]).outcome == "ok":
                d.written(i)
                first.append(i)
    d.requests()  # more in flight, never answered
    saved = d.have.to_bytes()
    # A restart: a new Download from the saved bitmap and layer.
    d2 = Download(b"o" * 16, m, Bitmap(m.pieces, saved), layer, window=3)
    second = serve(d2, data, layer)
    assert d2.complete and not set(first) & set(second)
    assert sorted(first + second) == list(range(m.pieces))


def test_a_piece_not_asked_for_or_held_already_is_not_written() -> None:
    data = content(16384 * 2)
    m, layer = manifest_for(data)
    d = Download(b"o" * 16, m, Bitmap(m.pieces), layer, window=1)
    assert d.on_piece(1, data[16384:]).outcome == "unexpected"
    assert d.requests() == [wire.Get(b"o" * 16, (0,))]
    assert d.on_piece(0, data[:16384]).outcome == "ok"
    d.written(0)
    assert d.on_piece(0, data[:16384]).outcome == "duplicate"
    assert d.on_piece(99, b"x").outcome == "unexpected"


def test_single_piece_and_piece_hash_agree_with_the_root() -> None:
    data = content(20000)
    m, layer = manifest_for(data, piece=256 * 1024)
    assert layer == [m.root] and piece_hash(data, 1, m.piece_size) == m.root == naive_root(data)


def test_a_download_judges_a_piece_hashed_elsewhere_by_its_digest() -> None:
    data = content(16384 * 4)
    m, layer = manifest_for(data)
    d = Download(b"o" * 16, m, Bitmap(m.pieces), layer, window=4)
    d.requests()
    piece = data[: m.piece_length(0)]
    assert d.wants(0, len(piece)) and not d.wants(0, len(piece) + 1)
    assert not d.wants(m.pieces, 1)
    assert d.expected(0) == layer[0]
    assert d.on_piece(0, piece, bytes(32)).outcome == "bad"  # the digest decides
    assert d.on_piece(1, data[m.piece_size : 2 * m.piece_size], layer[1]).outcome == "ok"
    d.written(1)
    assert not d.wants(1, m.piece_length(1))
