"""Rate limiters shared by the API client (requests per second) and the work queue (retry delays).

They only compute delays; callers sleep. That keeps them deterministic under a fake clock in tests.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Hashable
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)
Clock = Callable[[], float]


class TokenBucket:
    """`rate` tokens per second, at most `burst` saved up; a reservation may go into debt, which later
    callers wait out in turn (so concurrent callers are spread, not released together)."""

    def __init__(self, rate: float, burst: int, clock: Clock = time.monotonic) -> None:
        if rate <= 0 or burst < 1:
            raise ValueError("rate must be > 0 and burst >= 1")
        self.rate = rate
        self.burst = burst
        self._clock = clock
        self._tokens = float(burst)
        self._last = clock()

    def reserve(self) -> float:
        """Takes one token; returns the seconds to wait before using it (0 when one was available)."""
        now = self._clock()
        self._tokens = min(float(self.burst), self._tokens + (now - self._last) * self.rate)
        self._last = now
        self._tokens -= 1.0
        return 0.0 if self._tokens >= 0 else -self._tokens / self.rate


class ItemBackoff(Generic[K]):
    """Per-key exponential backoff: base * 2^failures, capped; `forget` resets a key after success."""

    def __init__(self, base: float = 0.005, cap: float = 300.0) -> None:
        self.base = base
        self.cap = cap
        self._failures: dict[K, int] = {}

    def when(self, key: K) -> float:
        n = self._failures.get(key, 0)
        self._failures[key] = n + 1
        return min(self.cap, self.base * (2**n)) if n < 64 else self.cap

    def retries(self, key: K) -> int:
        return self._failures.get(key, 0)

    def forget(self, key: K) -> None:
        self._failures.pop(key, None)


class QueueRateLimiter(Generic[K]):
    """client-go's default controller limiter: the larger of the per-item backoff and an overall
    token bucket (so a burst of failing keys cannot hammer the API server)."""

    def __init__(self, backoff: ItemBackoff[K] | None = None, bucket: TokenBucket | None = None) -> None:
        self.backoff: ItemBackoff[K] = backoff or ItemBackoff()
        self.bucket = bucket or TokenBucket(rate=10.0, burst=100)

    def when(self, key: K) -> float:
        return max(self.backoff.when(key), self.bucket.reserve())

    def retries(self, key: K) -> int:
        return self.backoff.retries(key)

    def forget(self, key: K) -> None:
        self.backoff.forget(key)
