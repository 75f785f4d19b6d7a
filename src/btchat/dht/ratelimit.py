"""Per-source token buckets, so one remote cannot make us spend unbounded CPU or bandwidth."""

from __future__ import annotations

from collections.abc import Hashable

__all__ = ["MAX_TRACKED_SOURCES", "RateLimiter"]

#: Sources tracked at once. Beyond this, idle (refilled) entries are pruned, and if every
#: entry is busy the newcomer is refused: memory stays bounded under a spoofed-IP flood.
MAX_TRACKED_SOURCES = 50_000


class RateLimiter:
    """Token bucket per key: ``rate`` tokens/s, holding at most ``burst``."""

    __slots__ = ("_buckets", "burst", "max_sources", "rate")

    def __init__(
        self, rate: float, burst: float, *, max_sources: int = MAX_TRACKED_SOURCES
    ) -> None:
        if rate <= 0 or burst < 1:
            raise ValueError("rate must be positive and burst at least 1")
        self.rate = rate
        self.burst = burst
        self.max_sources = max_sources
        self._buckets: dict[Hashable, list[float]] = {}

    def allow(self, key: Hashable, now: float) -> bool:
        bucket = self._buckets.get(key)
        if bucket is None:
            if len(self._buckets) >= self.max_sources and not self._prune(now):
                return False
            self._buckets[key] = [self.burst - 1.0, now]
            return True
        tokens = min(self.burst, bucket[0] + (now - bucket[1]) * self.rate)
        bucket[1] = now
        if tokens < 1.0:
            bucket[0] = tokens
            return False
        bucket[0] = tokens - 1.0
        return True

    def _prune(self, now: float) -> bool:
        """Forget sources whose bucket has refilled: they are indistinguishable from new."""
        full_after = self.burst / self.rate
        stale = [k for k, (_, last) in self._buckets.items() if now - last >= full_after]
        for k in stale:
            del self._buckets[k]
        return len(self._buckets) < self.max_sources

    def __len__(self) -> int:
        return len(self._buckets)
