"""Writing a file so that a crash or a concurrent reader never sees half of it.

The key file, ``.chat`` files and the API discovery files are written the same way: a
temporary file in the target's folder, given its final mode before any byte is written
(a secret is never readable by others, not even for an instant), written and fsynced,
then renamed over the target, or hard-linked to it where an existing file must not be
replaced; last, the folder is fsynced so the rename survives a power cut (POSIX, best
effort). This module imports nothing from btchat: any layer may use it.
"""

from __future__ import annotations

import contextlib
import errno
import os
import tempfile
from pathlib import Path

__all__ = ["write_atomic"]


def write_atomic(path: Path, data: bytes, *, mode: int = 0o600, replace: bool = True) -> None:
    """Put ``data`` at ``path`` whole or not at all.

    With ``replace=False`` an existing file is left as it is and :class:`FileExistsError`
    raised. Any other failure is the :class:`OSError` the system gave; the temporary file
    is gone either way.
    """
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as f:
            if hasattr(os, "fchmod"):
                os.fchmod(f.fileno(), mode)
            else:
                os.chmod(tmp, mode)
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        if replace:
            os.replace(tmp, path)
        else:
            _link_new(tmp, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
    _sync_dir(path.parent)


def _link_new(tmp: Path, target: Path) -> None:
    """Move ``tmp`` to ``target`` only if nothing is there, atomically where possible."""
    try:
        os.link(tmp, target)
    except FileExistsError:
        raise
    except OSError:
        # No hard links on this file system: check, then rename (tiny race window).
        if target.exists():
            raise FileExistsError(errno.EEXIST, os.strerror(errno.EEXIST), str(target)) from None
        os.replace(tmp, target)


def _sync_dir(folder: Path) -> None:
    """Make a rename in ``folder`` durable (POSIX only; best effort)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
