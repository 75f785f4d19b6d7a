"""What a name shown on screen may contain: petnames, suggested names, channel names.

Why one rule: a name is text someone else may have chosen, shown beside messages
everywhere. Control and format characters (bidi overrides that reverse what follows,
zero-width characters that make two names look alike) would let it lie about who is
speaking, so names never contain them; and a petname must never be mistaken for an
ID, since the CLI and API accept both where a contact is named.
"""

from __future__ import annotations

import unicodedata

__all__ = [
    "BIDI_CONTROLS",
    "MAX_PETNAME",
    "PetnameError",
    "clean_suggestion",
    "petname",
    "unsafe_char",
]

#: Characters that reorder or hide text on screen (Unicode bidi controls).
BIDI_CONTROLS = frozenset(
    "\u061c\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069"
)
#: Longest petname, in characters.
MAX_PETNAME = 64
#: Unicode categories never allowed in a name: controls, format, surrogates,
#: unassigned and private use, line and paragraph separators.
_REFUSED = frozenset({"Cc", "Cf", "Cs", "Cn", "Co", "Zl", "Zp"})


class PetnameError(ValueError):
    """The name cannot be a petname; the message says why."""


def unsafe_char(text: str) -> str | None:
    """The first character of ``text`` that must not be shown in a name, if any."""
    for c in text:
        if c in BIDI_CONTROLS or unicodedata.category(c) in _REFUSED:
            return c
    return None


def petname(name: str) -> str:
    """``name`` as stored (NFC, outer spaces removed), or :class:`PetnameError`."""
    name = unicodedata.normalize("NFC", name).strip()
    if not name:
        raise PetnameError("a name cannot be empty or only spaces")
    if len(name) > MAX_PETNAME:
        raise PetnameError(f"a name is at most {MAX_PETNAME} characters")
    bad = unsafe_char(name)
    if bad is not None:
        code = f"U+{ord(bad):04X}"
        raise PetnameError(f"a name may not contain {code} (a control or format character)")
    if any(c.isspace() and c != " " for c in name):
        raise PetnameError("a name may not contain tabs or line breaks")
    return name


def clean_suggestion(name: str | None, limit: int = MAX_PETNAME) -> str | None:
    """A name someone else suggested, made safe to show (refused characters dropped,
    whitespace collapsed), or None if nothing is left."""
    if not name:
        return None
    name = unicodedata.normalize("NFC", name)
    kept = "".join(" " if c.isspace() else c for c in name if unsafe_char(c) is None)
    kept = " ".join(kept.split())[:limit].strip()
    return kept or None
