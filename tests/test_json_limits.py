"""The nesting bound on JSON from local clients (issue 14 item 5)."""

from __future__ import annotations

import pytest

from btchat.codec import json_limits


def nested(depth: int) -> str:
    return "[" * depth + "]" * depth


def test_shallow_json_parses() -> None:
    assert json_limits.loads('{"a": [1, {"b": null}]}') == {"a": [1, {"b": None}]}
    assert json_limits.loads(nested(json_limits.MAX_DEPTH)) is not None


@pytest.mark.parametrize("depth", [json_limits.MAX_DEPTH + 1, 500, 20_000, 200_000])
def test_deep_json_is_refused_with_a_reason(depth: int) -> None:
    with pytest.raises(json_limits.JsonError, match="nested more than"):
        json_limits.loads(nested(depth))


def test_deep_objects_are_refused_too() -> None:
    with pytest.raises(json_limits.JsonError, match="nested more than"):
        json_limits.loads('{"a": ' * 100 + "1" + "}" * 100)


@pytest.mark.parametrize("raw", ["{", "NaN", '{"x": Infinity}', b"\xff"])
def test_invalid_json_is_a_json_error(raw: str | bytes) -> None:
    with pytest.raises(json_limits.JsonError):
        json_limits.loads(raw)
