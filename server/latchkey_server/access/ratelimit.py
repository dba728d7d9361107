"""Per-identity request rate limits: one `TokenBucket` per identity."""

from __future__ import annotations

import time
from collections.abc import Callable

from latchkey_server.errors import ResourceExhausted
from latchkey_server.tokenbucket import TokenBucket


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
        self._burst = max(1, burst)
        self._clock = clock
        self._max = max_identities
        self._buckets: dict[str, TokenBucket] = {}

    def check(self, identity: str) -> None:
        """Take one token for `identity`, or raise ResourceExhausted with a retry hint."""
        if self._rate <= 0:
            return
        bucket = self._buckets.get(identity)
        if bucket is None:
            if len(self._buckets) >= self._max:
                self._buckets.clear()  # bounded memory; a reset only grants fresh bursts
            bucket = self._buckets[identity] = TokenBucket(
                self._rate, self._burst, clock=self._clock
            )
        wait = bucket.try_take()
        if wait > 0:
            raise ResourceExhausted(
                f"identity {identity!r} is over its rate limit of {self._rate:g} requests/s",
                retry_after=wait,
            )
