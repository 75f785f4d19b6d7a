"""Safety numbers: a short code two people compare to rule out a man in the middle.

Whoever hands you an ID (a chat, a web page, a friend of a friend) could have swapped it
for their own. Reading the same 60 digits off both screens, in person or on a call,
proves both sides hold each other's real key. The scheme follows Signal's numeric
fingerprints: each key is hashed on its own with 5200 iterations of SHA-512 (so finding a
key whose half matches a target costs far more than 30 digits alone suggest), and the
two 30-digit halves are ordered by key so both people see the same number.
"""

from __future__ import annotations

from cryptography.hazmat.primitives import hashes

__all__ = ["FINGERPRINT_ITERATIONS", "FINGERPRINT_VERSION", "fingerprint_digits", "safety_number"]

FINGERPRINT_VERSION = 0
FINGERPRINT_ITERATIONS = 5200
_DIGIT_CHUNKS = 6  # 6 chunks of 5 bytes -> 30 digits per key


def fingerprint_digits(public_key: bytes) -> str:
    """The 30 digits one key contributes to a safety number."""
    if not isinstance(public_key, bytes) or len(public_key) != 32:
        raise ValueError("a public key is 32 bytes")
    prefix = FINGERPRINT_VERSION.to_bytes(2, "big") + public_key
    digest = b""
    for _ in range(FINGERPRINT_ITERATIONS):
        h = hashes.Hash(hashes.SHA512())
        h.update(prefix + digest)
        digest = h.finalize()
    return "".join(
        f"{int.from_bytes(digest[i * 5 : i * 5 + 5], 'big') % 100000:05d}"
        for i in range(_DIGIT_CHUNKS)
    )


def safety_number(pk_a: bytes, pk_b: bytes) -> str:
    """The 60-digit safety number of two keys, as 12 space-separated groups of 5.

    Symmetric: ``safety_number(a, b) == safety_number(b, a)``.
    """
    first, second = sorted((pk_a, pk_b))
    digits = fingerprint_digits(first) + fingerprint_digits(second)
    return " ".join(digits[i : i + 5] for i in range(0, len(digits), 5))
