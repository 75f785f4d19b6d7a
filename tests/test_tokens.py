"""Write tokens: bound to IP, rotating secret, previous secret still accepted."""

from __future__ import annotations

import itertools
from collections.abc import Callable

import pytest

from btchat.dht.tokens import TOKEN_BYTES, TokenManager


def counting_source() -> Callable[[int], bytes]:
    """A deterministic secret source: each call returns a fresh distinct secret."""
    counter = itertools.count()

    def source(n: int) -> bytes:
        return next(counter).to_bytes(n, "big")

    return source


@pytest.fixture
def tm() -> TokenManager:
    return TokenManager(secret_source=counting_source(), rotate_interval=300.0)


def test_valid_for_same_ip(tm: TokenManager) -> None:
    token = tm.token_for("1.2.3.4", 1000.0)
    assert len(token) == TOKEN_BYTES
    assert tm.is_valid(token, "1.2.3.4", 1000.0)
    assert tm.is_valid(token, "1.2.3.4", 1299.9)
    assert tm.token_for("1.2.3.4", 1100.0) == token


def test_invalid_for_other_ip(tm: TokenManager) -> None:
    token = tm.token_for("1.2.3.4", 0.0)
    assert not tm.is_valid(token, "1.2.3.5", 0.0)
    assert not tm.is_valid(token, "::ffff:1.2.3.4", 0.0)


def test_ipv6(tm: TokenManager) -> None:
    token = tm.token_for("2001:db8::1", 0.0)
    assert tm.is_valid(token, "2001:db8::1", 1.0)
    assert not tm.is_valid(token, "2001:db8::2", 1.0)


def test_valid_after_one_rotation(tm: TokenManager) -> None:
    token = tm.token_for("1.2.3.4", 0.0)
    assert tm.is_valid(token, "1.2.3.4", 300.0)
    assert tm.is_valid(token, "1.2.3.4", 599.0)
    assert tm.token_for("1.2.3.4", 300.0) != token


def test_invalid_after_two_rotations(tm: TokenManager) -> None:
    token = tm.token_for("1.2.3.4", 0.0)
    assert tm.is_valid(token, "1.2.3.4", 300.0)
    assert not tm.is_valid(token, "1.2.3.4", 600.0)


def test_invalid_after_long_idle_gap(tm: TokenManager) -> None:
    # No calls during two whole intervals: both secrets are too old when we look again.
    token = tm.token_for("1.2.3.4", 0.0)
    assert not tm.is_valid(token, "1.2.3.4", 650.0)
    fresh = tm.token_for("1.2.3.4", 650.0)
    assert tm.is_valid(fresh, "1.2.3.4", 900.0)  # epoch advanced to 600, rotated at 900
    assert not tm.is_valid(fresh, "1.2.3.4", 1200.0)


def test_garbage_token_invalid(tm: TokenManager) -> None:
    tm.token_for("1.2.3.4", 0.0)
    for garbage in (b"", b"x", b"\x00" * TOKEN_BYTES, b"a" * 40, "string"):
        assert not tm.is_valid(garbage, "1.2.3.4", 1.0)  # type: ignore[arg-type]


def test_is_valid_before_any_token_issued(tm: TokenManager) -> None:
    assert not tm.is_valid(b"\x00" * TOKEN_BYTES, "1.2.3.4", 5.0)


def test_token_bound_to_key(tm: TokenManager) -> None:
    token = tm.token_for("1.2.3.4", 0.0, b"A" * 20)
    assert tm.is_valid(token, "1.2.3.4", 0.0, b"A" * 20)
    assert not tm.is_valid(token, "1.2.3.4", 0.0, b"B" * 20)
    assert not tm.is_valid(token, "1.2.3.4", 0.0)


def test_default_source_is_random() -> None:
    a, b = TokenManager(), TokenManager()
    assert a.token_for("1.2.3.4", 0.0) != b.token_for("1.2.3.4", 0.0)


def test_rejects_nonpositive_interval() -> None:
    with pytest.raises(ValueError):
        TokenManager(rotate_interval=0)
