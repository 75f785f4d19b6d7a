"""Atomic file writes: whole or nothing, the mode from the start, no replacing by accident."""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path

import pytest

from btchat import files
from btchat.files import write_atomic


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_replace_writes_the_whole_file_with_its_mode(tmp_path: Path) -> None:
    target = tmp_path / "api.json"
    write_atomic(target, b"old", mode=0o644)
    write_atomic(target, b"new", mode=0o600)
    assert target.read_bytes() == b"new"
    assert _mode(target) == 0o600
    assert os.listdir(tmp_path) == ["api.json"]  # no temporary file left


@pytest.mark.parametrize("hard_links", [True, False])
def test_no_replace_refuses_an_existing_file_and_leaves_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, hard_links: bool
) -> None:
    def no_links(src: object, dst: object) -> None:
        raise OSError(errno.EPERM, "no hard links here")

    if not hard_links:  # the check-then-rename fallback
        monkeypatch.setattr(files.os, "link", no_links)
    target = tmp_path / "identity.key"
    write_atomic(target, b"first", replace=False)
    assert target.read_bytes() == b"first"
    with pytest.raises(FileExistsError):
        write_atomic(target, b"second", replace=False)
    assert target.read_bytes() == b"first"
    assert os.listdir(tmp_path) == ["identity.key"]


def test_a_failed_write_leaves_nothing_behind(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def full(fd: int) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(files.os, "fsync", full)
    with pytest.raises(OSError, match="No space"):
        write_atomic(tmp_path / "token", b"secret")
    assert os.listdir(tmp_path) == []
