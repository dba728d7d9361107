"""The Consul blocking-query loop, driven by a fetch callable (consul-notes §0).

    fetch(index, wait) -> (index, payload)

Broker machinery: it knows Consul's index rules but no wire format (the fetch is a method of
the port, `upstreams/consul_port.py`, or an overflow member standing in for one).

- The first call (and every call after a reset or an error) passes `index=None`: a plain read.
- The index is an int. If it goes backwards, the next call starts again from 0 (a full
  re-read); an index below 1 is treated as 1.
- Every answer goes to the owner, which compares it with what it holds (once: the loop keeps
  no copy). A returned query is not a change; the owner decides.
- A request that follows a blocking query starts at least `min_interval` (plus up to
  `dither`) after it, so a key that churns cannot turn the loop into a hot spin. The happy
  path never sleeps: a blocking query returns only on a change, normally long after the
  interval. Nothing is lost by the pause: the next request carries the index of the last
  answer, so Consul answers it at once with the latest state, and the last change of a burst
  is always delivered.
- Across the gateway, every request also takes a token of the adapter's request budget, which
  is shared fairly by all watches and reads (`upstreams/_consul_budget.py`).
- Errors back off exponentially with full jitter; the owner keeps its last good value and is
  told when reachability changes (up -> down, down -> up). A `Saturated` error (our own
  connection budget was busy, Consul was never asked) is retried the same way but says nothing
  about Consul, so it does not change reachability.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Generic, Protocol, TypeVar

from latchkey_server.backoff import Backoff
from latchkey_server.errors import LatchkeyError, Unavailable
from latchkey_server.upstreams.consul_port import Saturated

log = logging.getLogger(__name__)

__all__ = [
    "ConsulWatch",
    "Fetch",
    "WatchOwner",
    "WatchSettings",
    "next_index",
]

T = TypeVar("T")
T_contra = TypeVar("T_contra", contravariant=True)

Fetch = Callable[[int | None, float | None], Awaitable[tuple[int, T]]]


@dataclass(frozen=True, slots=True)
class WatchSettings:
    """Tuning of one blocking-query loop."""

    wait: float = 55.0
    """Blocking `wait` in seconds. Moderate on purpose: an abandoned blocking query keeps its
    connection slot on the agent until its wait expires."""
    min_interval: float = 0.1
    """Least seconds between the starts of two requests of one watch."""
    dither: float = 0.005
    """Up to this many seconds added at random to each pause (watches woken by one change do
    not ask again in lockstep)."""
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


class WatchOwner(Protocol[T_contra]):
    """Receives what a watch observes. Called from the watch's task; must not block."""

    def on_response(self, index: int, payload: T_contra, reset: bool) -> None:
        """Every successful response; the owner tells a change from a mere return by comparing
        `payload` with what it holds. `reset`: the index went backwards (history before it is
        void)."""

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
        backoff: Backoff | None = None,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        clock: Callable[[], float] = time.monotonic,
        rng: Callable[[float, float], float] = random.uniform,
    ) -> None:
        self.name = name
        self.settings = settings or WatchSettings()
        self._fetch = fetch
        self._owner = owner
        self._backoff = backoff or Backoff(self.settings.backoff_base, self.settings.backoff_cap)
        self._sleep = sleep
        self._clock = clock
        self._rng = rng
        self._task: asyncio.Task[None] | None = None
        self.index = 0
        """The index the next request will send (0: a plain read)."""
        self.last_index = 0
        """The last index observed (0: none yet); the reference for the backwards rule."""
        self.reachable: bool | None = None
        """None until the first response or error."""
        self.retry_at: float | None = None
        """Monotonic time of the next retry while backing off (for retry hints)."""
        self.requests = 0
        """Requests started (observability, tests)."""

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

    async def _pace(self, last_start: float | None) -> float:
        """Wait out the rest of the minimum interval since `last_start`; return the new start."""
        settings = self.settings
        if last_start is not None:
            pause = last_start + settings.min_interval - self._clock()
            if pause > 0:
                await self._sleep(pause + self._rng(0.0, settings.dither))
        return self._clock()

    async def run(self) -> None:
        blocked_at: float | None = None  # start of the last blocking request
        while True:
            started = await self._pace(blocked_at)
            self.requests += 1
            sent = self.index
            # Only a blocking query that returns can start a spin; the first one after a
            # plain read goes at once (it parks unless something changed).
            blocked_at = started if sent > 0 else None
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
            self._owner.on_response(self.last_index, payload, reset)

    async def _failed(self, exc: LatchkeyError) -> None:
        # After an error the next request is a plain read: if the agent came back with a lower
        # index (a restarted -dev agent), a blocking query with our old index would hang for a
        # whole wait before revealing the reset.
        self.index = 0
        delay = self._backoff.next_delay()
        self.retry_at = time.monotonic() + delay
        if self.reachable is not False:
            self.reachable = False
            log.warning("consul watch %s: upstream unreachable (%s)", self.name, exc.message)
            self._owner.on_reachability(False, exc)
        await self._sleep(delay)
