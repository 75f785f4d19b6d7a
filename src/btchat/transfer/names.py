"""A file name someone else chose, made safe to save under our save folder.

Why: the name in an offer is a stranger's text (a contact's, but their device may be
hostile), and it becomes a path on our disk and a line on our screen. So only the last
path component survives (no ``..``, no absolute path, no drive letter, on any OS's
separators), characters that could lie on screen or confuse a shell or a file system are
dropped (the shown-name rule of :mod:`btchat.identity.names`, plus the characters
Windows refuses), Windows' reserved device names get a prefix, leading dots are removed
(no hidden files, no ``.`` or ``..``), and the result is bounded in UTF-8 bytes with its
extension kept. Nothing is ever refused: a name with nothing left becomes ``file``.
"""

from __future__ import annotations

import re
import unicodedata

from btchat.identity.names import unsafe_char

__all__ = ["MAX_NAME_BYTES", "RESERVED_NAMES", "safe_name"]

#: Most file systems (ext4, NTFS, APFS) allow 255 bytes per name component.
MAX_NAME_BYTES = 255
#: Windows device names, with or without an extension ("CON.txt" is still CON).
RESERVED_NAMES = frozenset(
    {"CON", "PRN", "AUX", "NUL", "CONIN$", "CONOUT$"}
    | {f"COM{i}" for i in "123456789¹²³"}
    | {f"LPT{i}" for i in "123456789¹²³"}
)
#: Refused by Windows in a name, or path separators somewhere.
_FORBIDDEN = frozenset('<>:"/\\|?*')
_FALLBACK = "file"


def _cut(text: str, limit: int) -> str:
    """``text`` cut to ``limit`` UTF-8 bytes at a character boundary."""
    return text.encode("utf-8")[:limit].decode("utf-8", "ignore")


def safe_name(name: str) -> str:
    """The name we save ``name`` under (before making it unique in the folder)."""
    name = unicodedata.normalize("NFC", name)
    name = re.split(r"[/\\]", name)[-1]  # the last component, whatever the separator
    name = "".join(" " if c.isspace() else c for c in name)  # tabs, newlines -> spaces
    kept = "".join(c for c in name if c not in _FORBIDDEN and unsafe_char(c) is None)
    kept = " ".join(kept.split())  # runs of spaces -> one space
    kept = kept.lstrip(". ").rstrip(". ")  # no hidden files; Windows drops trailing dots
    if not kept:
        return _FALLBACK
    stem, dot, ext = kept.rpartition(".")
    if not dot:
        stem, ext = kept, ""
    if stem.split(".")[0].upper().rstrip(" ") in RESERVED_NAMES or kept.upper() in RESERVED_NAMES:
        stem = "_" + stem
    ext = _cut(ext, 32) if dot else ""
    room = MAX_NAME_BYTES - (len(ext.encode()) + 1 if dot else 0)
    stem = _cut(stem, room).rstrip(". ") or _FALLBACK
    return f"{stem}.{ext}" if dot and ext else stem
