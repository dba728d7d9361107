"""The audit log's writer thread, for sinks that can block: lines gathered on the event loop,
written in batches.

`AuditLog.submit` (access/audit.py) queues records on the event loop; once per loop iteration
they are formatted into one `Chunk`. A regular file is written there and then; for stdout,
stderr, pipes and sockets the chunk goes to `BatchWriter.put`. One thread takes every
chunk handed over so far, writes them with one `write`, then tells each call waiting on a line
of that batch how the write went: each waiter is an asyncio future, completed on its own loop
(`call_soon_threadsafe`, once per loop and batch) with None, or with `AuditUnavailable` when
the batch could not be written. A line with no waiter is fire-and-forget: a failed write is
counted and logged by the log, never raised.

So under load a batch costs one `write` and one wake-up of the loop, not one per call; the
event loop never waits on the disk, and the thread holds the GIL only briefly (the write itself
releases it). Lines keep their order. The thread starts with the first chunk and is stopped by
`close`, which writes what was handed over first; a chunk handed over after `close` fails.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import queue
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Final

log = logging.getLogger("latchkey.access.audit")

MAX_BATCH_BYTES: Final = 1 << 20
"""A batch stops growing past this many bytes (one `write` each)."""

Waiter = asyncio.Future[None]
Failure = Callable[[], BaseException]
Commit = Callable[[bytes, int, str], bool]
"""Writes `data` holding `lines` whole lines (the first for `rpc`); False when it failed."""


@dataclass(slots=True)
class Chunk:
    """Formatted lines from one loop iteration, and the calls waiting for them."""

    data: bytes
    lines: int
    rpc: str
    """The RPC of the first line (named in the log when the write fails)."""
    waiters: list[Waiter] = field(default_factory=list)


class BatchWriter:
    """One writer thread for one audit sink."""

    def __init__(self, commit: Commit, failed: Failure, *, name: str) -> None:
        """`commit` writes (on the writer thread); `failed()` makes the error each waiter of a
        failed batch gets."""
        self._commit = commit
        self._failed = failed
        self._name = name
        self._queue: queue.SimpleQueue[Chunk | None] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._closed = False

    def put(self, chunk: Chunk) -> None:
        """Hand `chunk` to the writer thread (starting it the first time)."""
        with self._lock:
            closed = self._closed
            if not closed:
                if self._thread is None:
                    self._thread = threading.Thread(target=self._run, name=self._name, daemon=True)
                    self._thread.start()
                self._queue.put(chunk)
        if closed:
            self._finish([chunk], self._commit(chunk.data, chunk.lines, chunk.rpc))

    def close(self, timeout: float = 10.0) -> None:
        """Write what was handed over, stop the thread; later chunks fail."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            thread = self._thread
            self._queue.put(None)
        if thread is not None:
            thread.join(timeout)
            if thread.is_alive():
                log.error("the audit writer did not finish within %gs", timeout)
        leftover: list[Chunk] = []
        with contextlib.suppress(queue.Empty):
            while True:
                item = self._queue.get_nowait()
                if item is not None:
                    leftover.append(item)
        if leftover:
            self._finish(leftover, ok=False)

    # ---------------------------------------------------------------- the thread

    def _run(self) -> None:
        get, get_nowait = self._queue.get, self._queue.get_nowait
        while True:
            first = get()
            if first is None:
                return
            batch = [first]
            size = len(first.data)
            stop = False
            with contextlib.suppress(queue.Empty):
                while size < MAX_BATCH_BYTES:
                    item = get_nowait()
                    if item is None:
                        stop = True
                        break
                    batch.append(item)
                    size += len(item.data)
            try:
                data = first.data if len(batch) == 1 else b"".join([c.data for c in batch])
                ok = self._commit(data, sum(c.lines for c in batch), first.rpc)
            except Exception as exc:  # the thread must outlive any batch
                log.error("the audit writer failed on a batch: %s", type(exc).__name__)
                ok = False
            self._finish(batch, ok)
            if stop:
                return

    def _finish(self, batch: Sequence[Chunk], ok: bool) -> None:
        by_loop: dict[asyncio.AbstractEventLoop, list[Waiter]] = {}
        for chunk in batch:
            for waiter in chunk.waiters:
                by_loop.setdefault(waiter.get_loop(), []).append(waiter)
        failed = None if ok else self._failed
        for loop, waiters in by_loop.items():
            with contextlib.suppress(RuntimeError):  # that loop is closed: nobody waits
                loop.call_soon_threadsafe(settle, waiters, failed)


def settle(waiters: Sequence[Waiter], failed: Failure | None) -> None:
    """Complete `waiters` (on their loop): written, or `failed()` each."""
    for waiter in waiters:
        if waiter.done():
            continue  # the call was cancelled meanwhile
        if failed is None:
            waiter.set_result(None)
        else:
            waiter.set_exception(failed())  # one exception per call: each raises its own
