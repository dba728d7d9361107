"""Concurrency primitives of the blocking client (hand-written twin of `_async/_backend.py`)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any, TypeVar

Handler = Callable[[Any], None]
T = TypeVar("T")


def sleep(seconds: float) -> None:
    time.sleep(seconds)


def monotonic() -> float:
    return time.monotonic()


class Lock:
    def __init__(self) -> None:
        self._lock = threading.Lock()

    def __enter__(self) -> None:
        self._lock.acquire()

    def __exit__(self, *exc: object) -> None:
        self._lock.release()


class Signal:
    """A flag that can be waited on with a timeout."""

    def __init__(self) -> None:
        self._event = threading.Event()

    def set(self) -> None:
        self._event.set()

    def is_set(self) -> bool:
        return self._event.is_set()

    def wait(self, timeout: float | None = None) -> bool:
        """True when set, False when the timeout passed first."""
        return self._event.wait(timeout)


class BackgroundTask:
    """Runs a function in a daemon thread; callers stop it through their own signal and call."""

    def __init__(self, target: Callable[[], None], name: str) -> None:
        self._thread = threading.Thread(target=target, name=name, daemon=True)
        self._thread.start()

    def join(self) -> None:
        """Wait for the thread to finish (the owner has already told it to stop)."""
        if self._thread is not threading.current_thread():
            self._thread.join(timeout=10)


def run_blocking(fn: Callable[[], T], name: str) -> T:
    """Run a blocking call (inline: the blocking client's callers are threads already)."""
    return fn()
