"""Other people's text, made unable to drive the terminal it is printed on.

Why: messages, names, notes and channel posts come from others. An escape sequence
(ESC, CSI) can move the cursor, rewrite earlier lines, change the window title or, on
some terminals, answer back; a carriage return can overwrite what a line seemed to
say; bidi overrides reorder it. So every human-readable line the CLI prints passes
through :func:`terminal_safe`: control characters become visible control pictures
(ESC shows as ``␛``), C1 controls, bidi controls and line separators become U+FFFD.
Emoji sequences (zero-width joiners, variation selectors, tags) and every script stay.
"""

from __future__ import annotations

from btchat.identity.names import BIDI_CONTROLS

__all__ = ["indent_lines", "terminal_safe"]

_LINE_SEPARATORS = frozenset("\u2028\u2029\u0085")


def _safe_char(c: str) -> str:
    o = ord(c)
    if c in "\n\t":
        return c
    if o < 0x20:
        return chr(0x2400 + o)  # ␀..␟: seen, not obeyed
    if o == 0x7F:
        return "\u2421"  # ␡
    if 0x80 <= o <= 0x9F or c in BIDI_CONTROLS or c in _LINE_SEPARATORS:
        return "\ufffd"
    return c


def terminal_safe(text: str) -> str:
    """``text`` with nothing a terminal would obey but line breaks and tabs."""
    if text.isprintable():  # the common case: no work
        return text
    return "".join(_safe_char(c) for c in text)


def indent_lines(text: str, indent: str = "    ") -> str:
    """A multi-line text as one entry: continuation lines indented, so a message cannot
    fake a line of its own (``bob: ok`` on a line after Alice's message)."""
    return text.replace("\r\n", "\n").replace("\n", "\n" + indent)
