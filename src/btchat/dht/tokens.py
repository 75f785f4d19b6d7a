"""Write tokens for ``announce_peer`` (BEP 5) and ``put`` (BEP 44).

A token proves the writer recently received our ``get_peers``/``get`` reply at the IP it
writes from, so nobody can sign up someone else's address. It is a keyed hash of the
packed IP under a secret that rotates lazily; keeping the previous secret means a token
stays valid for one to two rotation intervals. No state per requester is kept, so the hot
path costs one BLAKE2b call and no memory.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import socket
from collections.abc import Callable

__all__ = ["ROTATE_INTERVAL", "SECRET_BYTES", "TOKEN_BYTES", "TokenManager"]

#: BEP 5: the reference implementation changes its secret every five minutes.
ROTATE_INTERVAL = 300.0
#: Length of each secret; BLAKE2b accepts keys up to 64 bytes, 32 is plenty.
SECRET_BYTES = 32
#: Token length. Short keeps replies small (BEP 5: "a short binary string"); 64 bits make
#: guessing hopeless within a token's ten-minute life.
TOKEN_BYTES = 8


def _pack_ip(ip: str) -> bytes:
    return socket.inet_pton(socket.AF_INET6 if ":" in ip else socket.AF_INET, ip)


class TokenManager:
    """Issue and check write tokens bound to the requester's IP (and optionally a key)."""

    def __init__(
        self,
        secret_source: Callable[[int], bytes] = os.urandom,
        rotate_interval: float = ROTATE_INTERVAL,
    ) -> None:
        if rotate_interval <= 0:
            raise ValueError("rotate_interval must be positive")
        self._secret_source = secret_source
        self._interval = rotate_interval
        self._epoch: float | None = None  # when the current secret came into use
        self._current = b""
        self._previous: bytes | None = None

    def _rotate(self, now: float) -> None:
        """Advance secrets so the current one covers ``now``; lazy, so no timer is needed."""
        if self._epoch is None:
            self._epoch = now
            self._current = self._secret_source(SECRET_BYTES)
            return
        elapsed = now - self._epoch
        if elapsed < self._interval:  # also ignores a clock that steps backwards
            return
        periods = int(elapsed // self._interval)
        # BEP 5: tokens up to ten minutes old are accepted, i.e. current and previous
        # secret. After two or more idle periods the old current secret is too old too.
        self._previous = self._current if periods == 1 else None
        self._current = self._secret_source(SECRET_BYTES)
        self._epoch += periods * self._interval

    @staticmethod
    def _mac(secret: bytes, ip: str, key: bytes) -> bytes:
        # BEP 5: the token is a hash of the requester's IP and a secret. A keyed BLAKE2b is a
        # proper MAC (no length extension) and the cheapest one in the stdlib.
        h = hashlib.blake2b(key=secret, digest_size=TOKEN_BYTES)
        h.update(_pack_ip(ip))
        h.update(key)
        return h.digest()

    def token_for(self, ip: str, now: float, key: bytes = b"") -> bytes:
        """The token to hand ``ip``. ``key`` (an infohash or BEP 44 target) optionally binds
        the token to that key, which BEP 44 permits; pass the same key to :meth:`is_valid`."""
        self._rotate(now)
        return self._mac(self._current, ip, key)

    def is_valid(self, token: bytes, ip: str, now: float, key: bytes = b"") -> bool:
        """True if ``token`` was issued to ``ip`` (for ``key``) under the current or
        previous secret."""
        if not isinstance(token, bytes) or len(token) != TOKEN_BYTES:
            return False
        self._rotate(now)
        if hmac.compare_digest(token, self._mac(self._current, ip, key)):
            return True
        return self._previous is not None and hmac.compare_digest(
            token, self._mac(self._previous, ip, key)
        )
