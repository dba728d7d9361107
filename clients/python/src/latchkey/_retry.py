"""Retry decisions shared by the sync and async clients: exponential backoff with full jitter."""

from __future__ import annotations

import random
from dataclasses import dataclass

from latchkey._errors import LatchkeyError, Unavailable


@dataclass(frozen=True)
class Backoff:
    """Exponential backoff with full jitter.

    Attributes:
        initial: Upper bound of the first delay, seconds.
        maximum: Upper bound of any delay, seconds.
        multiplier: Growth of the upper bound per attempt.
    """

    initial: float = 0.1
    maximum: float = 2.0
    multiplier: float = 2.0

    def delay(self, attempt: int, retry_after: float | None = None) -> float:
        """Seconds to wait before retry number `attempt` (0-based); at least `retry_after`."""
        cap = min(self.maximum, self.initial * self.multiplier**attempt)
        delay = random.uniform(0, cap)
        if retry_after is not None:
            delay = max(delay, min(retry_after, self.maximum))
        return delay


def is_retryable(exc: LatchkeyError) -> bool:
    """Only UNAVAILABLE is retried (the request never reached a working gateway or upstream),
    and not when waiting cannot help (`Unavailable.retryable`)."""
    return isinstance(exc, Unavailable) and exc.retryable
