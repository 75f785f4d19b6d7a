"""One running node per data directory.

Why: two daemons on one directory overwrite each other's ``api.json`` (the second then
deletes it on exit, leaving the first unreachable) and interleave writes to the same
ratchet state. An advisory ``flock`` on ``<dir>/lock`` is held for the node's lifetime;
the kernel drops it when the process dies, even by SIGKILL, so a crash never leaves a
stale lock behind. The file holds the owner's pid, only to say who holds it.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from pathlib import Path

__all__ = ["LOCK_FILE", "DirLock", "DirLockError"]

LOCK_FILE = "lock"


class DirLockError(Exception):
    """The directory is in use by another process (or cannot be locked); text says which."""


class DirLock:
    """Held from :meth:`acquire` to :meth:`release` (or process exit)."""

    def __init__(self, directory: Path) -> None:
        self.path = Path(directory) / LOCK_FILE
        self._fd: int | None = None

    def acquire(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
            os.close(fd)
            who = f"pid {holder}" if holder.isdigit() else "another process"
            raise DirLockError(
                f"the data directory {self.path.parent} is in use by {who} "
                "(another `btchat up`?): stop it first, or use another --data-dir"
            ) from None
        except OSError as exc:
            os.close(fd)
            raise DirLockError(f"cannot lock {self.path}: {exc.strerror}") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._fd = fd

    def release(self) -> None:
        """Unlock; the file stays (removing it would race with a starting node)."""
        if self._fd is None:
            return
        fd, self._fd = self._fd, None
        with contextlib.suppress(OSError):
            os.ftruncate(fd, 0)
        os.close(fd)  # closing the descriptor drops the flock

    @property
    def held(self) -> bool:
        return self._fd is not None
