"""Our own Consul blocking-query loop, driven by a fetch callable (consul-notes §0).

    fetch(index, wait) -> (index, payload)

- The first call (and every call after a reset or an error) passes `index=None`: a plain read.
- The index is an int. If it goes backwards, the next call starts again from 0 (a full
  re-read); an index below 1 is treated as 1.
- A returned query is not a change: the payload is compared with the last one before the
  owner is told it changed.
- Each loop iteration takes a token from a per-watch token bucket (burst 2), so churn cannot
  turn the loop into a hot spin, while the happy path never sleeps.
- Errors back off exponentially with full jitter; the owner keeps its last good value and is
  told when reachability changes (up -> down, down -> up). A `Saturated` error (our own
  connection budget was busy, Consul was never asked) is retried the same way but says nothing
  about Consul, so it does not change reachability.

`WatchSlots` decides which watches get a blocking query of their own: the adapter's blocking
capacity is finite, and the watches beyond it share one blocking query per group instead
(brokers/_overflow.py).
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Generic, Protocol, TypeVar

from latchkey_server.errors import LatchkeyError, Unavailable

log = logging.getLogger(__name__)

__all__ = [
    "Backoff",
    "ConsulWatch",
    "Saturated",
    "TokenBucket",
    "WatchOwner",
    "WatchSettings",
    "WatchSlots",
    "next_index",
]

T = TypeVar("T")
T_contra = TypeVar("T_contra", contravariant=True)

Fetch = Callable[[int | None, float | None], Awaitable[tuple[int, T]]]


class Saturated(Unavailable):
    """The gateway's own connection budget had no free connection in time. Consul was not
    asked, so this says nothing about its reachability; retry later."""


class WatchSlots:
    """Shares the adapter's blocking capacity between dedicated watches and shared queries.

    First come, first served: a watch gets a blocking query of its own while one is free, else
    it becomes an overflow watch covered by its group's shared query. `shared_reserve` slots are
    kept for the shared queries (one for KV, one per datacenter for health) so that overflow
    never waits for a slot. A dedicated watch keeps its slot until it stops; overflow watches
    are not promoted when a slot frees up (they already see changes promptly).
    """

    def __init__(self, capacity: int, shared_reserve: int = 2) -> None:
        self.capacity = capacity
        self.shared_reserve = shared_reserve
        self.dedicated = 0
        """Watches holding a blocking query of their own."""
        self.shared = 0
        """Shared (overflow group) blocking queries."""
        self.overflow = 0
        """Watches covered by a shared query instead of their own."""

    def try_dedicated(self) -> bool:
        """Claim a dedicated slot if one is free (then `release_dedicated` when done)."""
        if self.dedicated + max(self.shared, self.shared_reserve) >= self.capacity:
            return False
        self.dedicated += 1
        return True

    def release_dedicated(self) -> None:
        self.dedicated = max(0, self.dedicated - 1)

    def add_shared(self, delta: int) -> None:
        self.shared = max(0, self.shared + delta)

    def add_overflow(self, delta: int) -> None:
        self.overflow = max(0, self.overflow + delta)


@dataclass(frozen=True, slots=True)
class WatchSettings:
    """Tuning of one blocking-query loop."""

    wait: float = 55.0
    """Blocking `wait` in seconds. Moderate on purpose: an abandoned blocking query keeps its
    connection slot on the agent until its wait expires."""
    burst: int = 2
    """Token-bucket capacity: this many requests may follow each other without delay."""
    refill_interval: float = 15.0
    """Seconds to earn one token back once the burst is used up (only matters under churn)."""
    backoff_base: float = 0.5
    """First error backoff ceiling in seconds; doubles per consecutive error."""
    backoff_cap: float = 30.0
    """Largest error backoff ceiling in seconds."""


def next_index(previous: int, returned: int) -> tuple[int, bool]:
    """Apply the index rules to a response. Returns (index to send next, reset?).

    `previous` is the last index observed (0: none). A returned index below 1 is
    treated as 1; an index lower than the previous one means the data went backwards, and the
    next request starts again from 0.
    """
    index = max(1, returned)
    if previous > 0 and index < previous:
        return 0, True
    return index, False


def _where(exc: BaseException) -> str:
    tb = exc.__traceback__
    if tb is None:
        return "?"
    while tb.tb_next is not None:
        tb = tb.tb_next
    return f"{tb.tb_frame.f_code.co_filename}:{tb.tb_lineno}"


class TokenBucket:
    """A token bucket: `capacity` tokens, one earned back every `refill_interval` seconds."""

    def __init__(
        self,
        capacity: int,
        refill_interval: float,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        if capacity < 1 or refill_interval <= 0:
            raise ValueError("capacity must be >= 1 and refill_interval > 0")
        self.capacity = capacity
        self.refill_interval = refill_interval
        self._clock = clock
        self._sleep = sleep
        self._tokens = float(capacity)
        self._stamp = clock()

    def _refill(self) -> None:
        now = self._clock()
        earned = (now - self._stamp) / self.refill_interval
        self._tokens = min(float(self.capacity), self._tokens + earned)
        self._stamp = now

    def try_take(self) -> float:
        """Take a token if one is there (returns 0.0), else return the seconds until one is."""
        self._refill()
        if self._tokens >= 1.0:
            self._tokens -= 1.0
            return 0.0
        return (1.0 - self._tokens) * self.refill_interval

    async def take(self) -> None:
        """Wait until a token is available and take it. No wait while tokens are left."""
        while (delay := self.try_take()) > 0:
            await self._sleep(delay)


class Backoff:
    """Exponential backoff with full jitter: uniform(0, min(cap, base * 2**(n-1)))."""

    def __init__(
        self, base: float, cap: float, *, rng: Callable[[float, float], float] = random.uniform
    ) -> None:
        self.base = base
        self.cap = cap
        self._rng = rng
        self.failures = 0

    def ceiling(self) -> float:
        if self.failures <= 0:
            return 0.0
        return min(self.cap, self.base * 2.0 ** min(self.failures - 1, 62))

    def next_delay(self) -> float:
        """Count one more failure and return how long to wait before retrying."""
        self.failures += 1
        return self._rng(0.0, self.ceiling())

    def reset(self) -> None:
        self.failures = 0


class WatchOwner(Protocol[T_contra]):
    """Receives what a watch observes. Called from the watch's task; must not block."""

    def on_response(self, index: int, payload: T_contra, changed: bool, reset: bool) -> None:
        """Every successful response. `changed`: the payload differs from the last one (always
        True for the first). `reset`: the index went backwards (history before it is void)."""

    def on_reachability(self, reachable: bool, error: LatchkeyError | None) -> None:
        """The upstream became unreachable (with the error) or reachable again."""


class ConsulWatch(Generic[T]):
    """One blocking-query loop. `start()` runs it in a task; `stop()` cancels the in-flight
    request so its connection is released at once."""

    def __init__(
        self,
        name: str,
        fetch: Fetch[T],
        owner: WatchOwner[T],
        settings: WatchSettings | None = None,
        *,
        equal: Callable[[T, T], bool] | None = None,
        limiter: TokenBucket | None = None,
        backoff: Backoff | None = None,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self.name = name
        self.settings = settings or WatchSettings()
        self._fetch = fetch
        self._owner = owner
        self._equal: Callable[[T, T], bool] = equal or (lambda a, b: a == b)
        self._limiter = limiter or TokenBucket(
            self.settings.burst, self.settings.refill_interval, sleep=sleep
        )
        self._backoff = backoff or Backoff(self.settings.backoff_base, self.settings.backoff_cap)
        self._sleep = sleep
        self._task: asyncio.Task[None] | None = None
        self.index = 0
        """The index the next request will send (0: a plain read)."""
        self.last_index = 0
        """The last index observed (0: none yet); the reference for the backwards rule."""
        self.reachable: bool | None = None
        """None until the first response or error."""
        self.retry_at: float | None = None
        """Monotonic time of the next retry while backing off (for retry hints)."""

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(
                self.run(), name=f"consul-watch:{self.name}"
            )

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is None:
            return
        task.cancel()
        try:
            await task
        except asyncio.CancelledError:
            current = asyncio.current_task()
            if current is not None and current.cancelling():
                raise  # we ourselves are being cancelled, not just the watch

    def cancel(self) -> asyncio.Task[None] | None:
        """Cancel without waiting (from synchronous code); returns the task to await later."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
        return task

    async def run(self) -> None:
        previous: list[T] = []  # the last payload, once there is one
        while True:
            await self._limiter.take()
            sent = self.index
            try:
                if sent > 0:
                    returned, payload = await self._fetch(sent, self.settings.wait)
                else:
                    returned, payload = await self._fetch(None, None)
            except asyncio.CancelledError:
                raise
            except Saturated:
                # Our own pool was busy: retry with backoff, but Consul's reachability and the
                # index are unknown rather than bad, so neither changes.
                delay = self._backoff.next_delay()
                self.retry_at = time.monotonic() + delay
                await self._sleep(delay)
                continue
            except LatchkeyError as exc:
                await self._failed(exc)
                continue
            except Exception as exc:  # a bug or an unexpected shape: never kill the loop
                # Type and place only: an exception's text could quote a KV value.
                log.error(
                    "consul watch %s: unexpected %s at %s",
                    self.name,
                    type(exc).__name__,
                    _where(exc),
                )
                await self._failed(Unavailable("Consul watch failed", retry_after=1.0))
                continue
            self._backoff.reset()
            self.retry_at = None
            if self.reachable is not True:
                self.reachable = True
                self._owner.on_reachability(True, None)
            self.index, reset = next_index(self.last_index, returned)
            self.last_index = max(1, returned)
            if reset:
                log.info("consul watch %s: index went backwards; re-reading", self.name)
            changed = not previous or not self._equal(payload, previous[0])
            previous[:] = [payload]
            self._owner.on_response(self.last_index, payload, changed, reset)

    async def _failed(self, exc: LatchkeyError) -> None:
        # After an error the next request is a plain read: if the agent came back with a lower
        # index (a restarted -dev agent), a blocking query with our old index would hang for a
        # whole wait before revealing the reset. Returned != changed keeps this quiet.
        self.index = 0
        delay = self._backoff.next_delay()
        self.retry_at = time.monotonic() + delay
        if self.reachable is not False:
            self.reachable = False
            log.warning("consul watch %s: upstream unreachable (%s)", self.name, exc.message)
            self._owner.on_reachability(False, exc)
        await self._sleep(delay)
