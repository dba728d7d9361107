"""Helpers for hub tests: a deterministic in-memory Consul and event-waiting utilities."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import AsyncIterator, Callable
from typing import Any

from latchkey_server.errors import NotFound
from latchkey_server.models import ConfigEntry, Heartbeat, Instance
from latchkey_server.upstreams.consul import CheckState, ConsulUnavailable
from latchkey_server.upstreams.consul_port import WatchSlots

WAIT = 15.0
"""Upper bound for any single wait in these tests (a hang guard, not a timing assertion)."""


async def next_event(stream: AsyncIterator[Any], within: float = WAIT) -> Any:
    async with asyncio.timeout(within):
        return await anext(stream)


async def next_data(stream: AsyncIterator[Any], within: float = WAIT) -> Any:
    """The next event that is not a Heartbeat."""
    async with asyncio.timeout(within):
        while True:
            event = await anext(stream)
            if not isinstance(event, Heartbeat):
                return event


async def until(condition: Callable[[], bool], within: float = WAIT, what: str = "") -> None:
    """Poll an observable condition until it holds (fails after `within` s)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while True:
        if condition():
            return
        if loop.time() > deadline:
            raise AssertionError(f"condition not met in time: {what}")
        await asyncio.sleep(0.01)


class FakeConsul:
    """In-memory `ConsulUpstream` with real blocking semantics (index + change wake-up)."""

    def __init__(self) -> None:
        self.kv: dict[str, ConfigEntry] = {}
        self.index = 1
        self.down = False
        self.calls: Counter[str] = Counter()
        self.plain: Counter[str] = Counter()
        """Non-blocking calls per operation."""
        self.parked: list[int] = []
        """Indexes of blocking calls currently waiting."""
        self.gate: asyncio.Event | None = None
        """When set to an unset Event, non-blocking calls wait for it (single-flight tests)."""
        self._tick = asyncio.Event()

    def _bump(self) -> None:
        self._tick.set()
        self._tick = asyncio.Event()

    def put(self, key: str, value: bytes) -> int:
        self.index += 1
        old = self.kv.get(key)
        create = old.create_index if old else self.index
        self.kv[key] = ConfigEntry(key, value, create, self.index)
        self._bump()
        return self.index

    def delete(self, key: str) -> int:
        self.index += 1
        self.kv.pop(key, None)
        self._bump()
        return self.index

    def set_down(self, down: bool) -> None:
        self.down = down
        self._bump()

    async def _block(self, index: int | None, op: str = "") -> None:
        if not index:
            self.plain[op] += 1
        if self.gate is not None and not index:
            await self.gate.wait()
        if self.down:
            raise ConsulUnavailable("fake consul is down")
        if not index:
            return
        self.parked.append(index)
        try:
            while self.index <= index:
                await self._tick.wait()
                if self.down:
                    raise ConsulUnavailable("fake consul is down")
        finally:
            self.parked.remove(index)

    async def kv_get(self, key: str) -> tuple[int, ConfigEntry]:
        self.calls["kv_get"] += 1
        await self._block(None, "kv_get")
        if key not in self.kv:
            raise NotFound("missing")
        return self.index, self.kv[key]

    async def kv_list(
        self, prefix: str, index: int | None = None, wait: float | None = None
    ) -> tuple[int, list[ConfigEntry]]:
        self.calls["kv_list"] += 1
        await self._block(index, "kv_list")
        return self.index, [self.kv[k] for k in sorted(self.kv) if k.startswith(prefix)]

    async def health_service(
        self,
        service: str,
        *,
        tag: str = "",
        datacenter: str = "",
        index: int | None = None,
        wait: float | None = None,
    ) -> tuple[int, list[Instance]]:
        self.calls["health_service"] += 1
        await self._block(index, "health_service")
        return self.index, []


class SlottedFake(FakeConsul):
    """A `FakeConsul` with a finite blocking capacity: watches beyond it overflow into the
    shared queries (`kv_tree`, `health_state`)."""

    def __init__(self, capacity: int) -> None:
        super().__init__()
        self._slots = WatchSlots(capacity)
        self.reads: Counter[str] = Counter()
        """Plain (non-blocking) `kv_list` reads per prefix."""
        self.blocking: Counter[str] = Counter()
        """Blocking calls in flight per operation."""
        self.peak_blocking = 0

    @property
    def watch_slots(self) -> WatchSlots:
        return self._slots

    async def _counted_block(self, op: str, index: int | None) -> None:
        if not index:
            await self._block(index, op)
            return
        self.blocking[op] += 1
        self.peak_blocking = max(self.peak_blocking, sum(self.blocking.values()))
        try:
            await self._block(index)
        finally:
            self.blocking[op] -= 1

    async def kv_list(
        self, prefix: str, index: int | None = None, wait: float | None = None
    ) -> tuple[int, list[ConfigEntry]]:
        self.calls["kv_list"] += 1
        if not index:
            self.reads[prefix] += 1
        await self._counted_block("kv_list", index)
        return self.index, [self.kv[k] for k in sorted(self.kv) if k.startswith(prefix)]

    async def kv_tree(
        self, prefix: str, index: int | None = None, wait: float | None = None
    ) -> tuple[int, list[tuple[str, int]]]:
        self.calls["kv_tree"] += 1
        await self._counted_block("kv_tree", index)
        under = sorted(k for k in self.kv if k.startswith(prefix))
        return self.index, [(k, self.kv[k].modify_index) for k in under]

    async def health_state(
        self, *, datacenter: str = "", index: int | None = None, wait: float | None = None
    ) -> tuple[int, list[CheckState]]:
        self.calls["health_state"] += 1
        await self._counted_block("health_state", index)
        return self.index, []
