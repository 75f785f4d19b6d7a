"""JSON text from local clients, parsed with a bound on nesting.

Why: :func:`json.loads` recurses once per nesting level, so a body of 20,000 ``[``
raises :class:`RecursionError` (not a ``ValueError``) and would surface as an HTTP 500
with a traceback, or close a WebSocket. Nothing in our API nests deeper than a few
levels, so anything past :data:`MAX_DEPTH` is refused as bad input, whatever size it is.
"""

from __future__ import annotations

import json
from typing import Any

__all__ = ["MAX_DEPTH", "JsonError", "loads"]

#: Deepest nesting of arrays and objects we accept; our models use at most four.
MAX_DEPTH = 32


class JsonError(ValueError):
    """The text is not JSON we accept; the message says why, for the caller."""


def _reject_constant(name: str) -> Any:
    raise JsonError(f"{name} is not JSON")


def _depth(value: Any) -> int:
    """Nesting depth of a parsed value, iteratively (no recursion to exhaust)."""
    deepest = 0
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, level = stack.pop()
        if isinstance(item, dict):
            children: Any = item.values()
        elif isinstance(item, list):
            children = item
        else:
            continue
        deepest = max(deepest, level)
        if deepest > MAX_DEPTH:
            return deepest
        stack.extend((child, level + 1) for child in children)
    return deepest


def loads(raw: str | bytes) -> Any:
    """``raw`` parsed; :class:`JsonError` for invalid text, NaN/Infinity or deep nesting."""
    try:
        value = json.loads(raw, parse_constant=_reject_constant)
    except RecursionError:
        raise JsonError(f"nested more than {MAX_DEPTH} levels deep") from None
    except JsonError:
        raise
    except (ValueError, UnicodeDecodeError) as exc:
        raise JsonError(str(exc)) from None
    if _depth(value) > MAX_DEPTH:
        raise JsonError(f"nested more than {MAX_DEPTH} levels deep")
    return value
