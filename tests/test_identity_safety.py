"""Safety numbers."""

from __future__ import annotations

import re

import pytest

from btchat.identity.keys import Identity
from btchat.identity.safety import fingerprint_digits, safety_number

A = Identity.from_seed(b"\x01" * 32).public_key
B = Identity.from_seed(b"\x02" * 32).public_key
C = Identity.from_seed(b"\x03" * 32).public_key


def test_format() -> None:
    number = safety_number(A, B)
    assert re.fullmatch(r"\d{5}( \d{5}){11}", number)


def test_symmetric() -> None:
    assert safety_number(A, B) == safety_number(B, A)


def test_halves_are_per_key_and_sorted() -> None:
    digits = safety_number(A, B).replace(" ", "")
    low, high = sorted((A, B))
    assert digits == fingerprint_digits(low) + fingerprint_digits(high)


def test_changes_with_either_key() -> None:
    ab = safety_number(A, B)
    assert safety_number(A, C) != ab
    assert safety_number(C, B) != ab


def test_matches_independent_computation() -> None:
    import hashlib

    digest = b""
    for _ in range(5200):
        digest = hashlib.sha512(b"\x00\x00" + A + digest).digest()
    chunks = [int.from_bytes(digest[i : i + 5], "big") % 100000 for i in range(0, 30, 5)]
    assert fingerprint_digits(A) == "".join(f"{c:05d}" for c in chunks)


def test_known_answer() -> None:
    """Pinned: a change here would make every user's safety numbers change."""
    a = Identity.from_seed(bytes(32)).public_key
    b = Identity.from_seed(b"\x01" * 32).public_key
    assert safety_number(a, b) == (
        "56176 08946 57908 40601 70661 36517 92321 15931 85738 24950 43189 82189"
    )


def test_bad_key() -> None:
    with pytest.raises(ValueError, match="32 bytes"):
        safety_number(A, b"\x00" * 31)
