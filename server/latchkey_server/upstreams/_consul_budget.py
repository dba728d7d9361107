"""The gateway's one request budget for Consul: a `TokenBucket` shared fairly by all flows.

Every request the adapter sends (blocking re-reads of watches, shared overflow queries, plain
reads, pings) first takes a token. While tokens are left nobody waits. When they run out,
requests queue per *flow* (operation and target: one prefix, one service) and the flows are
served round-robin, one request each per turn, as tokens are earned back. A hot prefix
therefore cannot starve the others: each waiting flow is served within one round of the
waiting flows, whatever the others ask for.

A request that gives up (cancelled, or a plain read past its timeout) leaves the queue without
consuming a token.
"""

from __future__ import annotations

import asyncio
import collections
import time
from collections.abc import Callable, Hashable
from dataclasses import dataclass

from latchkey_server.tokenbucket import TokenBucket

__all__ = ["BudgetStats", "RequestBudget"]


@dataclass(frozen=True, slots=True)
class BudgetStats:
    """A point-in-time view of the budget, for metrics."""

    rate: float
    """Tokens earned per second (0: no budget)."""
    burst: float
    tokens: float
    """Tokens available now."""
    waiting: int
    """Requests queued for a token now."""
    granted: int
    """Requests that got a token (counter)."""
    waited: int
    """Requests that had to queue for their token (counter)."""
    wait_seconds: float
    """Total seconds requests spent queued (counter)."""


class RequestBudget:
    """`rate` requests per second with bursts up to `burst`, fair across flows. A rate of 0
    disables the budget (every request goes at once)."""

    def __init__(
        self, rate: float, burst: int, *, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.rate = rate
        self.burst = max(1, burst)
        self._clock = clock
        self._bucket = TokenBucket(rate, self.burst, clock=clock) if rate > 0 else None
        self._queues: collections.OrderedDict[Hashable, collections.deque[asyncio.Future[None]]] = (
            collections.OrderedDict()
        )
        self._timer: asyncio.TimerHandle | None = None
        self.granted = 0
        self.waited = 0
        self.wait_seconds = 0.0

    @property
    def waiting(self) -> int:
        return sum(1 for q in self._queues.values() for f in q if not f.done())

    def stats(self) -> BudgetStats:
        bucket = self._bucket
        return BudgetStats(
            rate=self.rate,
            burst=float(self.burst) if bucket else 0.0,
            tokens=bucket.tokens if bucket else 0.0,
            waiting=self.waiting,
            granted=self.granted,
            waited=self.waited,
            wait_seconds=self.wait_seconds,
        )

    async def acquire(self, flow: Hashable) -> None:
        """Take one token for a request of `flow`, waiting for its turn if there is none."""
        bucket = self._bucket
        if bucket is None or (not self._queues and bucket.try_take() == 0.0):
            self.granted += 1
            return
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._queues.setdefault(flow, collections.deque()).append(future)
        queued_at = self._clock()
        self._schedule(0.0)
        await future  # cancelling the waiter cancels the future: dispatch skips it
        self.granted += 1
        self.waited += 1
        self.wait_seconds += self._clock() - queued_at

    def _schedule(self, delay: float) -> None:
        if self._timer is None:
            self._timer = asyncio.get_running_loop().call_later(delay, self._dispatch)

    def _dispatch(self) -> None:
        self._timer = None
        bucket = self._bucket
        assert bucket is not None
        while self._queues:
            flow, queue = next(iter(self._queues.items()))
            while queue and queue[0].done():
                queue.popleft()  # gave up while queued
            if not queue:
                del self._queues[flow]
                continue
            delay = bucket.try_take()
            if delay > 0:
                self._schedule(delay)
                return
            queue.popleft().set_result(None)
            if queue:
                self._queues.move_to_end(flow)  # its next request waits for the next round
            else:
                del self._queues[flow]
