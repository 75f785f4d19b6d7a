"""What both file shells (1:1 :mod:`btchat.node.files` and channels'
:mod:`btchat.node.channel_files`) keep on disk per file, read back the same way: a
JSON record per file in the state folder (one that does not read is skipped and
logged, never fatal) and the piece layer, 32-byte hashes back to back.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

__all__ = ["load_records", "read_layer"]

log = logging.getLogger(__name__)

T = TypeVar("T")


def load_records(folder: Path, parse: Callable[[dict[str, Any]], T], what: str) -> Iterator[T]:
    """Every ``*.json`` record in ``folder`` that ``parse`` takes, in name order."""
    for path in sorted(folder.glob("*.json")):
        try:
            yield parse(json.loads(path.read_text()))
        except (OSError, ValueError, KeyError, TypeError) as exc:
            log.warning("skipping %s record %s: %s", what, path.name, exc)


def read_layer(path: Path) -> list[bytes] | None:
    """The piece hashes saved at ``path``, or None if none were saved."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return None
    return [raw[i : i + 32] for i in range(0, len(raw), 32)]
