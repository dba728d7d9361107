"""Concurrency primitives of the async client (hand-written twin: `_sync/_backend.py`)."""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, TypeVar

AsyncHandler = Callable[[Any], Awaitable[None]]
T = TypeVar("T")


async def sleep(seconds: float) -> None:
    await asyncio.sleep(seconds)


def monotonic() -> float:
    return time.monotonic()


class AsyncLock:
    def __init__(self) -> None:
        self._lock = asyncio.Lock()

    async def __aenter__(self) -> None:
        await self._lock.acquire()

    async def __aexit__(self, *exc: object) -> None:
        self._lock.release()


class AsyncSignal:
    """A flag that can be waited on with a timeout."""

    def __init__(self) -> None:
        self._event = asyncio.Event()

    def set(self) -> None:
        self._event.set()

    def is_set(self) -> bool:
        return self._event.is_set()

    async def wait(self, timeout: float | None = None) -> bool:  # noqa: ASYNC109 - mirrors threading.Event.wait
        """True when set, False when the timeout passed first."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._event.wait(), timeout)
        return self._event.is_set()


class AsyncBackgroundTask:
    """Runs a coroutine function in the background (an asyncio task)."""

    def __init__(self, target: Callable[[], Coroutine[Any, Any, None]], name: str) -> None:
        self._task: asyncio.Task[None] = asyncio.get_running_loop().create_task(target(), name=name)

    async def join(self) -> None:
        """Stop the task (cancelling it) and wait for it to finish."""
        if not self._task.done():
            self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task


async def run_blocking(fn: Callable[[], T], name: str) -> T:
    """Run a blocking call in a daemon thread of its own and await its result.

    Not the loop's default executor: a call blocked in I/O would hold `asyncio.run()`'s exit
    (it joins that executor) until it returns. The caller ends such a call (closing its socket)
    when it stops waiting; a result arriving after the loop closed is dropped.
    """
    loop = asyncio.get_running_loop()
    future: asyncio.Future[T] = loop.create_future()

    def settle(result: T | None, error: BaseException | None) -> None:
        if future.done():
            return
        if error is not None:
            future.set_exception(error)
        else:
            future.set_result(result)  # type: ignore[arg-type]

    def work() -> None:
        try:
            result, error = fn(), None
        except BaseException as exc:  # handed over to the awaiting task
            result, error = None, exc
        with contextlib.suppress(RuntimeError):  # the loop is closed: nobody waits any more
            loop.call_soon_threadsafe(settle, result, error)

    threading.Thread(target=work, name=name, daemon=True).start()
    return await future
