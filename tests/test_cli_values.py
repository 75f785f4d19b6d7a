"""Sizes as people write and read them on the command line."""

from __future__ import annotations

import argparse

import pytest

from btchat.cli.chat import byte_size
from btchat.cli.render import human_size


@pytest.mark.parametrize(
    ("text", "value"),
    [("500000", 500_000), ("100MB", 10**8), ("1.5 GiB", 3 * 2**29), ("10 kb", 10_000)],
)
def test_sizes_in_decimal_and_binary_units(text: str, value: int) -> None:
    assert byte_size(text) == value


@pytest.mark.parametrize("text", ["abc", "5 parsecs", "-3MB", "MB", ""])
def test_what_is_not_a_size_is_a_usage_error(text: str) -> None:
    with pytest.raises(argparse.ArgumentTypeError, match="not a size"):
        byte_size(text)


def test_sizes_read_back() -> None:
    assert [human_size(n) for n in (0, 812, 3 * 2**20, 5 * 2**40)] == [
        "0 B",
        "812 B",
        "3.0 MiB",
        "5120.0 GiB",
    ]
