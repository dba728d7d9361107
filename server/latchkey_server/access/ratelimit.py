"""Per-identity request rate limits (token buckets)."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from latchkey_server.errors import ResourceExhausted


@dataclass
class _Bucket:
    tokens: float
    updated: float


class RateLimiter:
    """`rate` requests per second per identity, with bursts up to `burst`. rate 0 disables."""

    def __init__(
        self,
        rate: float,
        burst: int,
        *,
        clock: Callable[[], float] = time.monotonic,
        max_identities: int = 100_000,
    ) -> None:
        self._rate = rate
        self._burst = float(max(1, burst))
        self._clock = clock
        self._max = max_identities
        self._buckets: dict[str, _Bucket] = {}

    def check(self, identity: str) -> None:
        """Take one token for `identity`, or raise ResourceExhausted with a retry hint."""
        if self._rate <= 0:
            return
        now = self._clock()
        bucket = self._buckets.get(identity)
        if bucket is None:
            if len(self._buckets) >= self._max:
                self._buckets.clear()  # bounded memory; a reset only grants fresh bursts
            bucket = self._buckets[identity] = _Bucket(self._burst, now)
        bucket.tokens = min(self._burst, bucket.tokens + (now - bucket.updated) * self._rate)
        bucket.updated = now
        if bucket.tokens >= 1.0:
            bucket.tokens -= 1.0
            return
        wait = (1.0 - bucket.tokens) / self._rate
        raise ResourceExhausted(
            f"identity {identity!r} is over its rate limit of {self._rate:g} requests/s",
            retry_after=wait,
        )
