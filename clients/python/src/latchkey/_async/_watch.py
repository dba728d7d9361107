"""A stream that reconnects on its own: the loop behind every watch handle."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from latchkey._async._backend import AsyncBackgroundTask, AsyncHandler, AsyncSignal
from latchkey._async._transport import AsyncStream, AsyncTransport
from latchkey._errors import LatchkeyError
from latchkey._models import StreamStatus
from latchkey._retry import Backoff, is_retryable
from latchkey._settings import Endpoint

log = logging.getLogger("latchkey")

FIRST_EVENT_TIMEOUT = 30.0


class AsyncWatch:
    """A running watch. Close it with `aclose()` or by leaving its `async with` block.

    The stream is reopened whenever it breaks (after a gateway restart, or on another gateway
    when several are configured) and resumes where it left off. While the gateway cannot be
    reached the callback receives a `StreamStatus(kind="unreachable")`, and
    `StreamStatus(kind="reconnected")` once it is back.
    """

    def __init__(
        self,
        transport: AsyncTransport,
        name: str,
        open_stream: Callable[[], tuple[AsyncStream[Any], Endpoint]],
        on_message: AsyncHandler,
        on_status: Callable[[StreamStatus], None],
        backoff: Backoff | None = None,
    ) -> None:
        self._transport = transport
        self._name = name
        self._open = open_stream
        self._on_message = on_message
        self._on_status = on_status
        self._backoff = backoff or Backoff(initial=0.1, maximum=2.0)
        self._stop = AsyncSignal()
        self._ready = AsyncSignal()
        self._first_error: LatchkeyError | None = None
        self._last_error: LatchkeyError | None = None
        self._stream: AsyncStream[Any] | None = None
        self._task: AsyncBackgroundTask | None = None

    async def start(self) -> None:
        """Start the loop; returns after the first event, raising the first error, if any."""
        self._task = AsyncBackgroundTask(self._run, name=f"latchkey-watch-{self._name}")
        try:
            ready = await self._ready.wait(FIRST_EVENT_TIMEOUT)
        except BaseException:  # cancelled (the blocking client: Ctrl-C) before the first event
            await self.aclose()  # nobody else holds this watch to close it
            raise
        if not ready:
            await self.aclose()
            if self._last_error is not None:  # why it never started, in words naming the fix
                raise self._last_error
            raise LatchkeyError(
                f"watch {self._name}: no first event within {FIRST_EVENT_TIMEOUT:.0f}s"
            )
        if self._first_error is not None:
            await self.aclose()
            raise self._first_error

    @property
    def closed(self) -> bool:
        return self._stop.is_set()

    async def _run(self) -> None:
        attempt = 0
        down = False
        while not self._stop.is_set():
            endpoint: Endpoint | None = None
            try:
                await self._transport.ready()
                stream, endpoint = self._open()
                self._stream = stream
                async for message in stream:
                    if self._stop.is_set():
                        return
                    if down:
                        down = False
                        self._deliver_status(
                            StreamStatus(kind="reconnected", detail=self._transport.address)
                        )
                    attempt = 0
                    await self._deliver(message)
                    self._ready.set()
                error: LatchkeyError | None = None
            except LatchkeyError as exc:
                error = self._last_error = exc
            if self._stop.is_set():
                return
            if error is not None and not is_retryable(error):
                if not self._ready.is_set():
                    self._first_error = error
                    self._ready.set()
                    return
                log.warning("watch %s: %s; retrying", self._name, error.message)
            if endpoint is not None:
                self._transport.failover(endpoint)
            if not down:
                down = True
                detail = error.message if error is not None else "the stream ended"
                self._deliver_status(StreamStatus(kind="unreachable", detail=detail))
            await self._stop.wait(
                self._backoff.delay(attempt, error.retry_after if error else None)
            )
            attempt = min(attempt + 1, 10)

    async def _deliver(self, message: Any) -> None:
        try:
            await self._on_message(message)
        except Exception:
            log.exception("watch %s: the callback raised", self._name)

    def _deliver_status(self, status: StreamStatus) -> None:
        try:
            self._on_status(status)
        except Exception:
            log.exception("watch %s: the status callback raised", self._name)

    async def aclose(self) -> None:
        """Stop the stream (idempotent)."""
        self._stop.set()
        self._ready.set()
        if self._stream is not None:
            self._stream.cancel()
        if self._task is not None:
            await self._task.join()

    async def __aenter__(self) -> AsyncWatch:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()
