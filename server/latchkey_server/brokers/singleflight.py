"""Single-flight: concurrent callers asking for the same key share one in-flight call."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Hashable
from typing import Generic, TypeVar

from latchkey_server.observability.tracing import SpanContext, child_span, current_span_context

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class SingleFlight(Generic[K, V]):
    """Runs at most one call per key at a time; every concurrent caller gets its result.

    The call runs in its own task, so a caller that is cancelled does not cancel the call for
    the others. The key is forgotten as soon as the call ends (success or error). Traced: the
    call's upstream spans belong to the first caller's trace; a caller that joins it gets a
    `singleflight.join` span linked to the first caller's span.
    """

    def __init__(self) -> None:
        self._tasks: dict[K, asyncio.Task[V]] = {}
        self._leaders: dict[K, SpanContext | None] = {}

    def in_flight(self, key: K) -> bool:
        return key in self._tasks

    async def do(self, key: K, fn: Callable[[], Awaitable[V]]) -> V:
        task = self._tasks.get(key)
        if task is None:

            async def run() -> V:
                return await fn()

            task = asyncio.create_task(run())
            self._tasks[key] = task
            self._leaders[key] = current_span_context()
            task.add_done_callback(lambda t: self._done(key, t))
            return await asyncio.shield(task)
        leader = self._leaders.get(key)
        with child_span("singleflight.join", {"latchkey.singleflight": "join"}, links=(leader,)):
            return await asyncio.shield(task)

    def _done(self, key: K, task: asyncio.Task[V]) -> None:
        if self._tasks.get(key) is task:
            del self._tasks[key]
            self._leaders.pop(key, None)
        if not task.cancelled():
            task.exception()  # mark retrieved: every caller may have gone away

    async def cancel_all(self) -> None:
        tasks = list(self._tasks.values())
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(BaseException):
                await task
