"""The pieces' worker thread: checked before written, saves after the writes before them."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from btchat.node import piece_writer as pw
from btchat.node.piece_writer import PieceWriter
from btchat.transfer.tree import piece_hash

PIECE = 256 * 1024
SHAPE = (4, PIECE)  # a file of 4 pieces of 256 KiB


def _fd(path: Path) -> int:
    return os.open(path, os.O_RDWR | os.O_CREAT, 0o600)


async def test_a_piece_is_written_only_if_it_hashes_to_the_expected_one(tmp_path: Path) -> None:
    writer = PieceWriter()
    fd = _fd(tmp_path / "part")
    good, bad = os.urandom(PIECE), os.urandom(PIECE)
    results: list[tuple[int, bytes, OSError | None]] = []
    try:
        for i, data in ((1, good), (2, bad)):
            writer.write(
                "t",
                fd,
                i * PIECE,
                data,
                piece_hash(good, *SHAPE),  # both claim to be the good piece
                SHAPE,
                lambda digest, error, i=i: results.append((i, digest, error)),
            )
        assert await writer.drained()
    finally:
        writer.close()
        os.close(fd)
    assert results == [(1, piece_hash(good, *SHAPE), None), (2, piece_hash(bad, *SHAPE), None)]
    on_disk = (tmp_path / "part").read_bytes()
    assert on_disk[PIECE : 2 * PIECE] == good
    assert len(on_disk) == 2 * PIECE  # the bad one was never written


async def test_a_save_runs_after_the_writes_queued_before_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    log: list[str] = []
    real_pwrite, real_fsync, real_write_atomic = os.pwrite, os.fsync, pw.write_atomic

    def pwrite(fd: int, data: Any, at: int) -> int:
        log.append(f"write {at // PIECE}")
        return real_pwrite(fd, data, at)

    def fsync(fd: int) -> None:
        log.append("fsync")
        real_fsync(fd)

    def write_atomic(path: Path, data: bytes) -> None:
        log.append(f"record {data.decode()}")
        real_write_atomic(path, data)

    monkeypatch.setattr(pw.os, "pwrite", pwrite)
    monkeypatch.setattr(pw.os, "fsync", fsync)
    monkeypatch.setattr(pw, "write_atomic", write_atomic)
    writer = PieceWriter()
    fd = _fd(tmp_path / "part")
    applied: list[int] = []
    try:
        for i in range(3):
            data = os.urandom(PIECE)
            writer.write(
                "t",
                fd,
                i * PIECE,
                data,
                piece_hash(data, *SHAPE),
                SHAPE,
                lambda digest, error, i=i: applied.append(i),
            )
        writer.save("t", fd, tmp_path / "record", b"3 pieces")
        # settle blocks until every job ran and applies their results before it returns.
        writer.settle("t")
        assert applied == [0, 1, 2]
    finally:
        writer.close()
        os.close(fd)
    # (write_atomic fsyncs its own temporary file and folder too: after "record".)
    assert log[: log.index("record 3 pieces") + 1] == [
        "write 0",
        "write 1",
        "write 2",
        "fsync",
        "record 3 pieces",
    ]
    assert (tmp_path / "record").read_bytes() == b"3 pieces"


async def test_a_write_that_fails_says_why(tmp_path: Path) -> None:
    (tmp_path / "part").write_bytes(b"")
    fd = os.open(tmp_path / "part", os.O_RDONLY)  # cannot be written
    writer = PieceWriter()
    data = os.urandom(PIECE)
    results: list[OSError | None] = []
    try:
        writer.write(
            "t", fd, 0, data, piece_hash(data, *SHAPE), SHAPE, lambda d, e: results.append(e)
        )
        await writer.drained()
    finally:
        writer.close()
        os.close(fd)
    assert len(results) == 1 and isinstance(results[0], OSError)
