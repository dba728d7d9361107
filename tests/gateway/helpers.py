"""Small helpers for end-to-end tests: polling with a deadline (never a fixed sleep)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable


async def eventually(
    check: Callable[[], bool | Awaitable[bool]], *, within: float = 20.0, what: str = "condition"
) -> None:
    """Poll `check` (sync or async) until it is true; fail after `within` seconds."""
    deadline = time.monotonic() + within
    delay = 0.02
    while True:
        result = check()
        if not isinstance(result, bool):
            result = await result
        if result:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {within:.0f}s waiting for {what}")
        await asyncio.sleep(delay)  # polling interval of an observable condition
        delay = min(delay * 2, 0.25)


async def can_login(postgres: object, username: str, password: str) -> bool:
    """PostgreSQL login check off the event loop (psycopg's connect is blocking)."""
    login = postgres.can_login
    return bool(await asyncio.to_thread(login, username, password, "demo"))
