"""The token bucket: the one rate-limiting mechanism of the server.

Used by the per-identity request limits (`access/ratelimit.py`) and by the gateway's request
budget for Consul (`upstreams/_consul_budget.py`). Pure arithmetic on a monotonic clock: no
I/O, no sleeping; callers decide whether to refuse or to wait.
"""

from __future__ import annotations

import time
from collections.abc import Callable

__all__ = ["TokenBucket"]


class TokenBucket:
    """`rate` tokens per second, at most `burst` saved up; starts full."""

    __slots__ = ("_clock", "_stamp", "_tokens", "burst", "rate")

    def __init__(
        self, rate: float, burst: float, *, clock: Callable[[], float] = time.monotonic
    ) -> None:
        if rate <= 0 or burst < 1:
            raise ValueError("a token bucket needs rate > 0 and burst >= 1")
        self.rate = rate
        self.burst = float(burst)
        self._clock = clock
        self._tokens = self.burst
        self._stamp = clock()

    def _refill(self) -> None:
        now = self._clock()
        self._tokens = min(self.burst, self._tokens + (now - self._stamp) * self.rate)
        self._stamp = now

    @property
    def tokens(self) -> float:
        """Tokens available now (fractional while one is being earned)."""
        self._refill()
        return self._tokens

    def try_take(self) -> float:
        """Take one token if there is one (returns 0.0), else return the seconds until there
        will be one (nothing is taken then)."""
        self._refill()
        if self._tokens >= 1.0:
            self._tokens -= 1.0
            return 0.0
        return (1.0 - self._tokens) / self.rate
