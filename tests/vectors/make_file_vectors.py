"""Regenerate ``docs/vectors/files.json`` (only when a change to the format is meant).

File contents are generated, not stored: byte ``i`` of a file is ``(i * 31 + 7) % 256``.
"""

from __future__ import annotations

import json
from pathlib import Path

from btchat.transfer.names import safe_name
from btchat.transfer.tree import PieceHasher

OUT = Path(__file__).resolve().parents[2] / "docs" / "vectors" / "files.json"
CASES = [
    (0, 262144),
    (1, 262144),
    (16384, 262144),
    (16385, 262144),
    (49152, 16384),
    (262144, 262144),
    (262145, 262144),
    (1048581, 262144),
]
NAMES = [
    "report.pdf",
    "../../etc/passwd",
    "/etc/shadow",
    "C:\\Windows\\system32\\cmd.exe",
    "CON",
    "nul.txt",
    "LPT9.log",
    "photo\u202egnp.exe",
    "a\u200bb.txt",
    "line\nbreak\ttab.txt",
    "..",
    ".bashrc",
    "",
    "x" * 300 + ".tar.gz",
    "ok<>:|?*name.txt",
    "trailing dots...",
]


def content(size: int) -> bytes:
    return bytes((i * 31 + 7) % 256 for i in range(size))


def main() -> None:
    trees = []
    for size, piece in CASES:
        h = PieceHasher(size, piece)
        h.update(content(size))
        root = h.root()
        trees.append(
            {
                "size": size,
                "piece_size": piece,
                "root": root.hex(),
                "layer": [x.hex() for x in h.layer],
            }
        )
    names = [{"offered": n, "saved": safe_name(n)} for n in NAMES]
    doc = {
        "about": "BEP 52 style SHA-256 tree over 16 KiB leaves; content byte i = (i*31+7)%256",
        "trees": trees,
        "names": names,
    }
    OUT.write_text(json.dumps(doc, indent=1, ensure_ascii=True) + "\n")


if __name__ == "__main__":
    main()
