"""The server's one retry backoff: exponential, capped, with full jitter.

Every retry loop uses it: the Vault adapter's request retries and token renewals, the Consul
watch loop, lease renewals, the replica's session and the reaper. The delay is a pure function
of the failure count and a draw in [0, 1), so timing rules stay testable without randomness;
`Backoff` keeps the count for a loop and draws for it.
"""

from __future__ import annotations

import random
from collections.abc import Callable


def ceiling(failures: int, base: float, cap: float) -> float:
    """The longest wait after the `failures`-th failure in a row: base, 2*base, 4*base, ... up to
    `cap` (0 before any failure)."""
    if failures <= 0:
        return 0.0
    return min(cap, base * 2.0 ** min(failures - 1, 62))


def delay(failures: int, base: float, cap: float, draw: float) -> float:
    """Full jitter: uniform in [0, ceiling) for a uniform `draw` in [0, 1). Spreads the retries
    of many clients that failed together (AWS Architecture Blog, "Exponential Backoff And
    Jitter")."""
    return ceiling(failures, base, cap) * draw


class Backoff:
    """A retry loop's failure count and its next delay."""

    def __init__(
        self, base: float, cap: float, *, draw: Callable[[], float] = random.random
    ) -> None:
        self.base = base
        self.cap = cap
        self._draw = draw
        self.failures = 0

    def ceiling(self) -> float:
        return ceiling(self.failures, self.base, self.cap)

    def next_delay(self) -> float:
        """Count one more failure and return how long to wait before retrying."""
        self.failures += 1
        return delay(self.failures, self.base, self.cap, self._draw())

    def reset(self) -> None:
        self.failures = 0
