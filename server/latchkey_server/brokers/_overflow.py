"""Overflow watches: many watches covered by ONE shared blocking query (consul-notes §4).

When every blocking slot is taken (`WatchSlots`), a new watch does not queue for one. It joins
its hub's `SharedQuery` instead: one blocking query that moves whenever anything it covers
changes (KV: a recursive read of the members' longest common prefix; health: every check in the
datacenter). After each answer the group computes a fingerprint per member (KV: the (key,
ModifyIndex) pairs under its prefix; health: the service's checks plus the node checks of its
nodes) and wakes only the members whose fingerprint moved; they re-read their own data with a
plain (non-blocking) request on the read reserve.

Each member keeps its own `ConsulWatch` loop: `OverflowMember.fetch` stands in for the blocking
query, so index rules, returned != changed, the minimum interval, backoff, reachability,
heartbeats and stale-if-error work exactly as for a dedicated watch. Every request (the shared
query's and the members' re-reads) takes a token of the adapter's request budget.
"""

from __future__ import annotations

import abc
import asyncio
import bisect
import time
from collections.abc import Awaitable, Callable, Collection, Hashable, Iterable
from typing import Any, Generic, TypeVar

from latchkey_server.brokers.consul_watch import ConsulWatch, WatchSettings
from latchkey_server.errors import LatchkeyError
from latchkey_server.models import ConfigEntry
from latchkey_server.upstreams.consul_port import CheckState, SharedWatchUpstream, WatchSlots

__all__ = [
    "HealthShared",
    "KvShared",
    "OverflowMember",
    "ServiceKey",
    "SharedQuery",
    "kv_fingerprint",
]

ServiceKey = tuple[str, str, str]
"""(service, tag, datacenter): what one discovery watch covers."""

M = TypeVar("M", bound=Hashable)
S = TypeVar("S")
P = TypeVar("P")
T = TypeVar("T")


class SharedQuery(abc.ABC, Generic[M, S, P]):
    """One blocking query standing for many member watches (keys `M`).

    `S` is the query's scope (what it covers), `P` its prepared answer. Subclasses say how to
    derive a scope from members, whether a scope covers a member, how to fetch, and how to
    fingerprint one member in an answer.
    """

    def __init__(self, name: str, settings: WatchSettings, slots: WatchSlots | None) -> None:
        self.name = name
        self.settings = settings
        self._slots = slots
        self.members: dict[M, int] = {}
        """Member keys with their reference counts."""
        self.gen = 0
        """Bumped on every answer and every error (members compare against it)."""
        self.answer_gen = 0
        self.answer: P | None = None
        self.answer_scope: S | None = None
        self.epoch = 0
        """Bumped when the shared index went backwards: every member re-reads."""
        self.error: LatchkeyError | None = None
        self.error_gen = 0
        self._tick = asyncio.Event()
        self._scope: S | None = None
        self._watch: ConsulWatch[P] | None = None
        self._stopping: set[asyncio.Task[None]] = set()

    # ------------------------------------------------------------------ what subclasses say

    @abc.abstractmethod
    def scope_for(self, members: Collection[M]) -> S:
        """The narrowest scope covering all `members`."""

    @abc.abstractmethod
    def covers(self, scope: S, member: M) -> bool: ...

    @abc.abstractmethod
    async def fetch(self, scope: S, index: int | None, wait: float | None) -> tuple[int, P]: ...

    @abc.abstractmethod
    def fingerprint(self, answer: P, member: M) -> Hashable: ...

    # ------------------------------------------------------------------ membership

    def join(self, member: M) -> None:
        self.members[member] = self.members.get(member, 0) + 1
        if self._slots is not None:
            self._slots.add_overflow(1)
        if self._watch is None or self._scope is None or not self.covers(self._scope, member):
            self._restart()

    def leave(self, member: M) -> None:
        count = self.members.get(member, 0) - 1
        if count < 0:
            return
        if self._slots is not None:
            self._slots.add_overflow(-1)
        if count:
            self.members[member] = count
        else:
            del self.members[member]
        if not self.members:
            self._stop()

    def _restart(self) -> None:
        # Only a member outside the current scope restarts the query, and the new scope is a
        # strict widening, so restarts are bounded by the scope's length. Leaving members
        # never narrow a running query (that would cost a re-read for no change).
        if self._watch is None and self._slots is not None:
            self._slots.add_shared(1)
        self._cancel_watch()
        scope = self.scope_for(list(self.members))
        self._scope = scope

        async def fetch(index: int | None, wait: float | None) -> tuple[int, P]:
            return await self.fetch(scope, index, wait)

        watch: ConsulWatch[P] = ConsulWatch(
            f"{self.name}:{scope}", fetch, _Feed(self, scope), self.settings
        )
        self._watch = watch
        watch.start()

    def _cancel_watch(self) -> None:
        watch, self._watch = self._watch, None
        if watch is not None:
            task = watch.cancel()
            if task is not None:
                self._stopping.add(task)
                task.add_done_callback(self._stopping.discard)

    def _stop(self) -> None:
        if self._watch is not None and self._slots is not None:
            self._slots.add_shared(-1)
        self._cancel_watch()
        self._scope = None

    async def close(self) -> None:
        self._stop()
        tasks, self._stopping = list(self._stopping), set()
        await asyncio.gather(*tasks, return_exceptions=True)

    # ------------------------------------------------------------------ answers

    def current(self, member: M) -> Hashable | None:
        """The member's fingerprint in the latest answer covering it (None: none covers it)."""
        scope, answer = self.answer_scope, self.answer
        if answer is None or scope is None or not self.covers(scope, member):
            return None
        return self.fingerprint(answer, member)

    def tick(self) -> asyncio.Event:
        return self._tick

    def _notify(self) -> None:
        self._tick.set()
        self._tick = asyncio.Event()

    def _on_answer(self, scope: S, answer: P, reset: bool) -> None:
        if scope != self._scope:
            return  # a superseded query that answered while being cancelled
        self.gen += 1
        self.answer_gen = self.gen
        self.answer, self.answer_scope = answer, scope
        if reset:
            self.epoch += 1
        self.error = None
        self._notify()

    def _on_error(self, scope: S, error: LatchkeyError | None) -> None:
        if scope != self._scope:
            return
        if error is None:
            self.error = None
            return
        self.gen += 1
        self.error, self.error_gen = error, self.gen
        self._notify()


class _Feed(Generic[M, S, P]):
    """The shared query's `WatchOwner`, bound to the scope it was started with."""

    def __init__(self, group: SharedQuery[M, S, P], scope: S) -> None:
        self._group = group
        self._scope = scope

    def on_response(self, index: int, payload: P, reset: bool) -> None:
        self._group._on_answer(self._scope, payload, reset)

    def on_reachability(self, reachable: bool, error: LatchkeyError | None) -> None:
        self._group._on_error(self._scope, None if reachable else error)


class OverflowMember(Generic[M, T]):
    """The `Fetch` of one overflow watch.

    A plain call (index None) reads the member's data at once. A blocking call waits until the
    shared query shows a different fingerprint for this member (or a reset, or a shared-query
    error newer than our last read), then re-reads; if `wait` passes first it returns the last
    answer unchanged (what a blocking query does on timeout), unless `poll_on_wait` or the
    shared query is failing.

    The reference fingerprint is computed from our own read when `own_fingerprint` can (KV:
    exact, so even "deleted then recreated" cannot hide). Otherwise (health: instances do not
    carry their checks) it is the latest shared answer at the time of the read, which may
    predate the read; fingerprints carry ModifyIndexes so a flap cannot look unchanged, and
    `poll_on_wait` re-reads once per `wait` for what checks cannot show.
    """

    def __init__(
        self,
        group: SharedQuery[M, Any, Any],
        key: M,
        read: Callable[[], Awaitable[tuple[int, T]]],
        *,
        own_fingerprint: Callable[[T], Hashable] | None = None,
        poll_on_wait: bool = False,
    ) -> None:
        self.group = group
        self.key = key
        self._read = read
        self._own_fingerprint = own_fingerprint
        self._poll_on_wait = poll_on_wait
        self._last: tuple[int, T] | None = None
        self._base_gen = 0
        self._base_epoch = 0
        self._base_fp: Hashable | None = None
        self.rereads = 0
        """Re-reads after the shared query showed a change (observability, tests)."""

    async def fetch(self, index: int | None, wait: float | None) -> tuple[int, T]:
        if index and self._last is not None:
            changed = await self._changed(self.group.settings.wait if wait is None else wait)
            if not changed and not self._poll_on_wait and self.group.error is None:
                return index, self._last[1]
            self.rereads += 1
        # Only answers arriving after the read started are compared: one that predates the
        # read can only cause one needless re-read, never a missed change.
        self._base_gen = self.group.gen
        self._base_epoch = self.group.epoch
        self._base_fp = self.group.current(self.key)
        result = await self._read()
        self._last = result
        if self._own_fingerprint is not None:
            self._base_fp = self._own_fingerprint(result[1])
        return result

    async def _changed(self, wait: float) -> bool:
        group = self.group
        deadline = time.monotonic() + wait
        while True:
            if group.error is not None and group.error_gen > self._base_gen:
                raise group.error
            if group.answer_gen > self._base_gen:
                fp = group.current(self.key)
                if fp is not None:
                    if self._base_fp is None or fp != self._base_fp:
                        return True
                    if group.epoch != self._base_epoch:
                        return True
                    self._base_gen = group.answer_gen
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            tick = group.tick()
            try:
                async with asyncio.timeout(remaining):
                    await tick.wait()
            except TimeoutError:
                return False


# ---------------------------------------------------------------------- KV


class KvTree:
    """A shared KV answer: (key, ModifyIndex) pairs sorted by key."""

    __slots__ = ("_keys", "pairs")

    def __init__(self, pairs: Iterable[tuple[str, int]]) -> None:
        self.pairs = tuple(pairs)
        self._keys = [key for key, _ in self.pairs]

    def __eq__(self, other: object) -> bool:
        return isinstance(other, KvTree) and self.pairs == other.pairs

    __hash__ = None  # type: ignore[assignment]

    def under(self, prefix: str) -> tuple[tuple[str, int], ...]:
        start = bisect.bisect_left(self._keys, prefix)
        end = start
        while end < len(self._keys) and self._keys[end].startswith(prefix):
            end += 1
        return self.pairs[start:end]


def kv_fingerprint(entries: list[ConfigEntry]) -> Hashable:
    """What `KvTree.under` shows for a prefix, computed from that prefix's own read."""
    return tuple((e.key, e.modify_index) for e in sorted(entries, key=lambda e: e.key))


class KvShared(SharedQuery[str, str, KvTree]):
    """Overflow KV prefixes, covered by one recursive blocking read of their longest common
    prefix (a plain string prefix, as Consul's `recurse` is; it may be empty: the whole KV)."""

    def __init__(
        self, consul: SharedWatchUpstream, settings: WatchSettings, slots: WatchSlots | None
    ) -> None:
        super().__init__("kv-shared", settings, slots)
        self._consul = consul

    def scope_for(self, members: Collection[str]) -> str:
        # Character-wise on purpose: Consul's `recurse` is a plain string prefix too.
        if not members:
            return ""
        low, high = min(members), max(members)
        size = 0
        while size < min(len(low), len(high)) and low[size] == high[size]:
            size += 1
        return low[:size]

    def covers(self, scope: str, member: str) -> bool:
        return member.startswith(scope)

    async def fetch(self, scope: str, index: int | None, wait: float | None) -> tuple[int, KvTree]:
        got, pairs = await self._consul.kv_tree(scope, index=index, wait=wait)
        return got, KvTree(pairs)

    def fingerprint(self, answer: KvTree, member: str) -> Hashable:
        return answer.under(member)


# ---------------------------------------------------------------------- health


class Checks:
    """A shared health answer: every check of the datacenter, indexed by service and node."""

    __slots__ = ("by_node", "by_service", "checks")

    def __init__(self, checks: Iterable[CheckState]) -> None:
        self.checks = tuple(checks)
        self.by_service: dict[str, list[CheckState]] = {}
        self.by_node: dict[str, list[CheckState]] = {}
        for check in self.checks:
            if check.service_id:
                self.by_service.setdefault(check.service_name, []).append(check)
            else:
                self.by_node.setdefault(check.node, []).append(check)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Checks) and self.checks == other.checks

    __hash__ = None  # type: ignore[assignment]


class HealthShared(SharedQuery[ServiceKey, str, Checks]):
    """Overflow services of one datacenter, covered by one blocking read of every check in it
    (`/v1/health/state/any`). A service's fingerprint is its own checks plus the node-level
    checks of the nodes they run on (a failing node fails its instances)."""

    def __init__(
        self,
        consul: SharedWatchUpstream,
        datacenter: str,
        settings: WatchSettings,
        slots: WatchSlots | None,
    ) -> None:
        super().__init__(f"health-shared:{datacenter}", settings, slots)
        self._consul = consul
        self.datacenter = datacenter

    def scope_for(self, members: Collection[ServiceKey]) -> str:
        return self.datacenter

    def covers(self, scope: str, member: ServiceKey) -> bool:
        return member[2] == scope

    async def fetch(self, scope: str, index: int | None, wait: float | None) -> tuple[int, Checks]:
        got, checks = await self._consul.health_state(datacenter=scope, index=index, wait=wait)
        return got, Checks(checks)

    def fingerprint(self, answer: Checks, member: ServiceKey) -> Hashable:
        own = tuple(answer.by_service.get(member[0], ()))
        nodes = sorted({check.node for check in own})
        return own, tuple(tuple(answer.by_node.get(node, ())) for node in nodes)
