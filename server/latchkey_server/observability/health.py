"""Upstream health for the gRPC health service.

Every `interval` seconds each upstream is pinged (so the state is known even with no traffic).
A service is NOT_SERVING while its upstream has been unreachable for longer than the staleness
budget (the gateway serves cached data up to then), and SERVING again once it answers.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from latchkey_server.errors import LatchkeyError
from latchkey_server.models import utcnow

log = logging.getLogger("latchkey.health")


class Pingable(Protocol):
    @property
    def name(self) -> str: ...
    @property
    def reachable(self) -> bool: ...
    @property
    def last_contact(self) -> datetime | None: ...
    async def ping(self) -> None: ...


@dataclass(frozen=True)
class Dependency:
    upstream: Pingable
    services: Sequence[str]
    """gRPC service names that depend on this upstream."""


SetServing = Callable[[str, bool], Awaitable[None]]


def within_budget(upstream: Pingable, stale_limit: float, now: datetime | None = None) -> bool:
    """Reachable, or unreachable for no longer than `stale_limit` seconds."""
    if upstream.reachable:
        return True
    contact = upstream.last_contact
    if contact is None:
        return False
    return ((now or utcnow()) - contact).total_seconds() <= stale_limit


class HealthMonitor:
    def __init__(
        self,
        dependencies: Sequence[Dependency],
        set_serving: SetServing,
        *,
        stale_limit: float,
        interval: float = 5.0,
    ) -> None:
        self._deps = dependencies
        self._set = set_serving
        self._stale_limit = stale_limit
        self._interval = interval
        self._state: dict[str, bool] = {}
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run())

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def check_once(self) -> None:
        for dep in self._deps:
            with contextlib.suppress(LatchkeyError):
                await dep.upstream.ping()
            serving = within_budget(dep.upstream, self._stale_limit)
            for service in dep.services:
                if self._state.get(service) != serving:
                    self._state[service] = serving
                    await self._set(service, serving)
                    if serving:
                        log.info("%s is SERVING again (%s answers)", service, dep.upstream.name)
                    else:
                        log.warning(
                            "%s is NOT_SERVING: %s unreachable beyond the staleness budget",
                            service,
                            dep.upstream.name,
                        )

    async def _run(self) -> None:
        while True:
            await self.check_once()
            await asyncio.sleep(self._interval)  # the probe interval
