"""Hashcash proof of work, so sending contact requests to strangers costs something.

A contact request arrives from someone the recipient has never heard of, so nothing but
cost stands between an inbox and a flood. The requester searches for a nonce such that
``BLAKE2b-256(b"btchat-pow-v1" || challenge || nonce)`` (nonce as 8 bytes big-endian)
starts with ``difficulty_bits`` zero bits; checking one takes a single hash.

Each try succeeds with probability ``2**-d``, so finding a nonce takes ``2**d`` hashes on
average (geometric: sometimes a few times more), about a second of one CPU core at
d = 20 in CPython; verifying always takes one. The challenge must bind the request
(recipient, sender, time), or one solution could be replayed to many inboxes: that is
the caller's protocol, not this module's.
"""

from __future__ import annotations

import hashlib

from btchat.errors import BtchatError

__all__ = ["MAX_DIFFICULTY", "POW_CONTEXT", "PowExhausted", "pow_hash", "solve", "verify"]

POW_CONTEXT = b"btchat-pow-v1"
#: 2**40 hashes is hours of work; anything above is a mistake or an attack on the solver.
MAX_DIFFICULTY = 40
_MAX_NONCE = (1 << 64) - 1


class PowExhausted(BtchatError, RuntimeError):
    """``solve`` gave up after ``max_iterations`` nonces without a solution."""


def _check(challenge: bytes, difficulty_bits: int) -> None:
    if not isinstance(challenge, bytes):
        raise TypeError("the challenge is bytes")
    if (
        not isinstance(difficulty_bits, int)
        or isinstance(difficulty_bits, bool)
        or not 0 <= difficulty_bits <= MAX_DIFFICULTY
    ):
        raise ValueError(f"difficulty must be an integer from 0 to {MAX_DIFFICULTY} bits")


def pow_hash(challenge: bytes, nonce: int) -> bytes:
    """The 32-byte hash a nonce is judged by."""
    return hashlib.blake2b(
        POW_CONTEXT + challenge + nonce.to_bytes(8, "big"), digest_size=32
    ).digest()


def solve(challenge: bytes, difficulty_bits: int, max_iterations: int | None = None) -> int:
    """The smallest nonce meeting the difficulty: ``2**difficulty_bits`` tries expected.

    Raises PowExhausted after ``max_iterations`` tries, so a caller can bound the time
    spent on a difficulty demanded by someone else.
    """
    _check(challenge, difficulty_bits)
    if max_iterations is not None and max_iterations < 0:
        raise ValueError("max_iterations cannot be negative")
    # Leading zero bits of the 256-bit hash; difficulty <= 40 fits in its first 8 bytes.
    limit = 1 << (64 - difficulty_bits)
    base = hashlib.blake2b(POW_CONTEXT + challenge, digest_size=32)
    budget = _MAX_NONCE + 1 if max_iterations is None else min(max_iterations, _MAX_NONCE + 1)
    for nonce in range(budget):
        h = base.copy()
        h.update(nonce.to_bytes(8, "big"))
        if int.from_bytes(h.digest()[:8], "big") < limit:
            return nonce
    raise PowExhausted(
        f"no proof of work found in {max_iterations} tries at difficulty {difficulty_bits}"
    )


def verify(challenge: bytes, nonce: int, difficulty_bits: int) -> bool:
    """Whether ``nonce`` proves the work; False for any nonce out of the 8-byte range."""
    _check(challenge, difficulty_bits)
    if not isinstance(nonce, int) or isinstance(nonce, bool) or not 0 <= nonce <= _MAX_NONCE:
        return False
    digest = pow_hash(challenge, nonce)
    return int.from_bytes(digest[:8], "big") < (1 << (64 - difficulty_bits))
