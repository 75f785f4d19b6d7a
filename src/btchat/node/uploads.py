"""A file's bytes streamed in by a front end that has no path to give (the web app),
kept on the daemon's disk: a transfer serves its pieces from disk for as long as it
runs, resumes included, and a channel's file for as long as members may fetch it.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import shutil
from collections.abc import AsyncIterator
from pathlib import Path

from btchat.errors import ApiError
from btchat.transfer.manifest import MAX_FILE_SIZE

__all__ = ["stage_upload"]


async def stage_upload(folder: Path, size: int, chunks: AsyncIterator[bytes], margin: int) -> Path:
    """Exactly ``size`` bytes from ``chunks`` in a new file in ``folder``, fsynced; an
    error (too large, no room, a body longer or shorter than announced) leaves nothing."""
    if not 0 <= size <= MAX_FILE_SIZE:
        raise ApiError(413, "too_large", f"a file is at most {MAX_FILE_SIZE} bytes")
    folder.mkdir(parents=True, exist_ok=True)
    free = shutil.disk_usage(folder).free
    if free < size + margin:
        raise ApiError(507, "disk_full", f"{size} bytes needed in {folder}, {free} free")
    path = folder / secrets.token_hex(16)
    try:
        got = 0
        with path.open("xb") as f:
            async for chunk in chunks:
                got += len(chunk)
                if got > size:
                    raise ApiError(400, "bad_length", "the body is longer than announced")
                f.write(chunk)
            f.flush()
            await asyncio.to_thread(os.fsync, f.fileno())  # a big file: seconds, off the loop
        if got != size:
            raise ApiError(400, "bad_length", f"the body ended after {got} of {size} bytes")
    except BaseException:
        path.unlink(missing_ok=True)
        raise
    return path
