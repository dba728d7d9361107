"""What the config and discovery hubs share, used by composition: `HubCore`.

- Topics by key (`TopicRegistry`), each a `WatchedTopic` fed by one `ConsulWatch`: a blocking
  query of its own while the adapter has a slot free, else an overflow member covered by its
  group's shared query (brokers/_overflow.py). That is the dedicated-or-overflow choice, first
  come, first served (`WatchSlots`).
- Streams: `subscribe(key)` holds the key's topic while a stream is open; the topic lingers
  `linger` seconds after the last one left.
- One-shot reads: `read()` serves from a usable topic; else from a *read watch* on the key,
  started by the read and kept `read_linger` seconds after the last read, so that repeated
  reads are served from memory (at most `max_read_watches` of them exist; beyond that a read
  is one single-flight plain read). A topic that stops leaves its last state as the key's last
  good value, which is served (marked stale) while Consul is unreachable, within
  `stale_limit`.
- `close()` ends every stream and stops every watch; counters for metrics and tests.

What a key's read returns (`P`, the watch payload) is the same for a topic, a plain read and
the last-good store, so each hub says once how to serve a read from a topic and from a payload.
"""

from __future__ import annotations

import abc
import asyncio
import collections
import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Hashable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Generic, TypeVar

from latchkey_server.brokers._overflow import OverflowMember, SharedQuery
from latchkey_server.brokers.consul_watch import ConsulWatch, Fetch, WatchSettings
from latchkey_server.brokers.fanout import Topic, TopicRegistry
from latchkey_server.brokers.singleflight import SingleFlight
from latchkey_server.errors import LatchkeyError, Unavailable
from latchkey_server.models import Freshness, utcnow
from latchkey_server.upstreams.consul_port import ConsulUpstream, SharedWatchUpstream

__all__ = ["HubCore", "LastGood", "ReadOptions", "WatchedTopic"]

E = TypeVar("E")
P = TypeVar("P")
R = TypeVar("R")
K = TypeVar("K", bound=Hashable)
V = TypeVar("V")
TopicT = TypeVar("TopicT", bound="WatchedTopic[Any, Any]")

Read = Callable[[K, int | None, float | None], Awaitable[tuple[int, P]]]
"""Read a key: plain (index None) or blocking (an index and a wait)."""


class WatchedTopic(Topic[E], Generic[E, P]):
    """A topic fed by one `ConsulWatch`: keeps index, confirmation time and reachability.

    Subclasses implement `apply()` (compare with the cached state, update it, set
    `self.index`, publish) and `state()` (the cached state as a payload).
    """

    def __init__(self, name: str, fetch: Fetch[P], settings: WatchSettings) -> None:
        super().__init__()
        self.index = 0
        self.confirmed_at: datetime | None = None
        self.reachable = True
        self.loaded = False
        self.last_error: LatchkeyError | None = None
        self._closed_error: LatchkeyError | None = None
        self._ready = asyncio.Event()
        self.watch: ConsulWatch[P] = ConsulWatch(name, fetch, self, settings)
        self.overflow = False
        """Covered by a shared blocking query rather than one of its own (brokers/_overflow)."""
        self.on_stop: list[Callable[[], None]] = []
        """Run once when the watch stops (gives back its blocking slot or group membership)."""

    @abc.abstractmethod
    def apply(self, index: int, payload: P, reset: bool) -> None:
        """Take a successful response into the cached state (see `WatchOwner.on_response`).
        This is the one place an answer is compared with what came before."""

    @abc.abstractmethod
    def state(self) -> P:
        """The cached state, as a read of the key would return it."""

    def start(self) -> None:
        self.watch.start()

    def cancel(self) -> asyncio.Task[None] | None:
        hooks, self.on_stop = self.on_stop, []
        for hook in hooks:
            hook()
        return self.watch.cancel()

    def freshness(self) -> Freshness:
        return Freshness(
            index=self.index,
            confirmed_at=self.confirmed_at,
            stale=not self.reachable,
            reachable=self.reachable,
        )

    def retry_hint(self) -> float:
        retry_at = self.watch.retry_at
        if retry_at is None:
            return 1.0
        return max(1.0, retry_at - time.monotonic())

    def usable(self, stale_limit: float) -> bool:
        """Loaded, and either reachable or not older than `stale_limit` (stale-if-error)."""
        if not self.loaded:
            return False
        return self.reachable or self.freshness().age_seconds() <= stale_limit

    def check_usable(self, stale_limit: float, what: str) -> None:
        if self._closed_error is not None:
            raise self._closed_error
        if self.usable(stale_limit):
            return
        if self.loaded:
            raise Unavailable(
                f"Consul is unreachable and the cached {what} is older than the stale limit",
                retry_after=self.retry_hint(),
            )
        reason = self.last_error.message if self.last_error else "Consul is unreachable"
        raise Unavailable(f"cannot load {what}: {reason}", retry_after=self.retry_hint())

    async def wait_usable(self, stale_limit: float, what: str) -> None:
        """Wait for the first response (or first error), then `check_usable`."""
        await self._ready.wait()
        self.check_usable(stale_limit, what)

    # WatchOwner
    def on_response(self, index: int, payload: P, reset: bool) -> None:
        self.confirmed_at = utcnow()
        self.reachable = True
        self.last_error = None
        self.apply(index, payload, reset)
        self.loaded = True
        self._ready.set()

    def on_reachability(self, reachable: bool, error: LatchkeyError | None) -> None:
        self.reachable = reachable
        self.last_error = error
        if not reachable:
            self._ready.set()  # a first read that failed releases its waiters (Unavailable)
        self.heartbeat_all()

    def close_all(self, error: LatchkeyError | None) -> None:
        self._closed_error = error or Unavailable("the stream was closed", retry_after=1.0)
        self._ready.set()
        super().close_all(error)


class LastGood(Generic[K, V]):
    """Last good answers per key, for stale-if-error (bounded, least recently used first out)."""

    def __init__(self, size: int) -> None:
        self.size = size
        self._items: collections.OrderedDict[K, tuple[V, Freshness]] = collections.OrderedDict()

    def put(self, key: K, value: V, freshness: Freshness) -> None:
        if self.size <= 0:
            return
        self._items[key] = (value, freshness)
        self._items.move_to_end(key)
        while len(self._items) > self.size:
            self._items.popitem(last=False)

    def stale(self, key: K, stale_limit: float) -> tuple[V, Freshness] | None:
        """The cached value marked stale/unreachable, if it is within `stale_limit`."""
        item = self._items.get(key)
        if item is None:
            return None
        value, fresh = item
        if fresh.age_seconds() > stale_limit:
            return None
        return value, Freshness(fresh.index, fresh.confirmed_at, stale=True, reachable=False)


@dataclass(frozen=True, slots=True)
class ReadOptions:
    """How a hub serves streams and one-shot reads (see the module docstring)."""

    stale_limit: float = 300.0
    linger: float = 5.0
    """Seconds a topic lives on after its last stream."""
    read_linger: float = 10.0
    """Seconds a read watch lives on after its last read."""
    max_read_watches: int = 16
    read_cache_size: int = 1024
    """Last good answers kept (stale-if-error)."""


class HubCore(Generic[K, TopicT, P]):
    """Topics by key with their watches, streams, one-shot reads, close and counters.

    The hub says how to read a key (`read`), how to make its topic (`make_topic`) and, for
    overflow, which shared query covers a key (`group_key`, `new_group`) and how a member
    tells its own change (`own_fingerprint`, else `poll_on_wait`).
    """

    def __init__(
        self,
        consul: ConsulUpstream,
        *,
        read: Read[K, P],
        make_topic: Callable[[K, Fetch[P]], TopicT],
        group_key: Callable[[K], Hashable],
        new_group: Callable[[Hashable, SharedWatchUpstream], SharedQuery[K, Any, Any]],
        own_fingerprint: Callable[[P], Hashable] | None = None,
        poll_on_wait: bool = False,
        options: ReadOptions | None = None,
        closing: str = "the hub is shutting down",
    ) -> None:
        self.options = options or ReadOptions()
        self._read = read
        self._make_topic = make_topic
        self._group_key = group_key
        self._new_group = new_group
        self._own_fingerprint = own_fingerprint
        self._poll_on_wait = poll_on_wait
        self._shared = consul if isinstance(consul, SharedWatchUpstream) else None
        self._groups: dict[Hashable, SharedQuery[K, Any, Any]] = {}
        self._registry: TopicRegistry[K, TopicT] = TopicRegistry(
            self._open, linger=self.options.linger
        )
        self._read_only: set[K] = set()
        self._flight: SingleFlight[K, tuple[int, P]] = SingleFlight()
        self._last: LastGood[K, P] = LastGood(self.options.read_cache_size)
        self._closing = closing
        self._closed = False
        self.closed_error: LatchkeyError = Unavailable(closing, retry_after=1.0)
        self.memory_reads = 0
        """One-shot reads served from a watch's memory (counter)."""
        self.upstream_reads = 0
        """One-shot reads that went to Consul as a plain read, past `max_read_watches`."""

    @property
    def stale_limit(self) -> float:
        return self.options.stale_limit

    # ------------------------------------------------------------------ topics

    def _open(self, key: K) -> TopicT:
        """A new topic for `key`: a blocking query of its own if a slot is free, else an
        overflow member of its group's shared query."""
        shared = self._shared
        if shared is None or shared.watch_slots.try_dedicated():
            read = self._read

            async def fetch(index: int | None, wait: float | None) -> tuple[int, P]:
                return await read(key, index, wait)

            topic = self._make_topic(key, fetch)
            if shared is not None:
                topic.on_stop.append(shared.watch_slots.release_dedicated)
        else:
            gkey = self._group_key(key)
            group = self._groups.get(gkey)
            if group is None:
                group = self._groups[gkey] = self._new_group(gkey, shared)
            member = OverflowMember(
                group,
                key,
                lambda: self._read(key, None, None),
                own_fingerprint=self._own_fingerprint,
                poll_on_wait=self._poll_on_wait,
            )
            group.join(key)
            topic = self._make_topic(key, member.fetch)
            topic.overflow = True
            topic.on_stop.append(lambda: group.leave(key))
        topic.on_stop.append(lambda: self._stopped(key, topic))
        return topic

    def _stopped(self, key: K, topic: TopicT) -> None:
        self._read_only.discard(key)
        if topic.loaded and topic.confirmed_at is not None:
            self._last.put(key, topic.state(), Freshness(topic.index, topic.confirmed_at))

    def get(self, key: K) -> TopicT | None:
        return self._registry.get(key)

    def topics(self) -> list[TopicT]:
        return self._registry.topics()

    def check_open(self) -> None:
        if self._closed:
            raise self.closed_error

    @contextlib.asynccontextmanager
    async def subscribe(self, key: K, what: str) -> AsyncIterator[TopicT]:
        """Hold the key's topic for a stream, once it is usable (else `Unavailable`)."""
        self.check_open()
        topic = self._registry.acquire(key)
        self._read_only.discard(key)
        try:
            await topic.wait_usable(self.stale_limit, what)
            yield topic
        finally:
            self._registry.release(key, topic)

    # ------------------------------------------------------------------ one-shot reads

    async def read(
        self,
        key: K,
        what: str,
        from_topic: Callable[[TopicT], R],
        from_payload: Callable[[P, Freshness], R],
        covering: TopicT | None = None,
    ) -> R:
        """Serve a read of `key` from `covering` (a usable topic that covers it) or the key's
        own topic; else start a read watch; past `max_read_watches`, one plain read."""
        self.check_open()
        topic = covering if covering is not None else self._registry.get(key)
        if topic is not None and topic.usable(self.stale_limit):
            self.memory_reads += 1
            return from_topic(topic)
        if self._registry.get(key) is None:
            if len(self._read_only) >= self.options.max_read_watches:
                self.upstream_reads += 1
                payload, fresh = await self._plain(key)
                return from_payload(payload, fresh)
            self._read_only.add(key)
        topic = self._registry.acquire(key)
        try:
            try:
                await topic.wait_usable(self.stale_limit, what)
            except Unavailable:
                cached = self._last.stale(key, self.stale_limit)
                if cached is None or self._closed:
                    raise
                return from_payload(*cached)
            return from_topic(topic)
        finally:
            self._registry.release(key, topic, self.options.read_linger)

    async def _plain(self, key: K) -> tuple[P, Freshness]:
        try:
            index, payload = await self._flight.do(key, lambda: self._read(key, None, None))
        except Unavailable:
            cached = self._last.stale(key, self.stale_limit)
            if cached is None:
                raise
            return cached
        fresh = Freshness(index, utcnow())
        self._last.put(key, payload, fresh)
        return payload, fresh

    # ------------------------------------------------------------------ lifecycle, counters

    async def close(self, error: LatchkeyError | None = None) -> None:
        """Stop every watch and end every stream with `error` (a drain says why), or
        `Unavailable`; later calls fail with the same error."""
        self._closed = True
        self.closed_error = error or Unavailable(self._closing, retry_after=1.0)
        await self._registry.close(self.closed_error)
        for group in self._groups.values():
            await group.close()
        await self._flight.cancel_all()

    def reopen(self) -> None:
        self._closed = False

    @property
    def active_watches(self) -> int:
        """Upstream watches running (streams', lingering ones and read watches)."""
        return len(self._registry)

    @property
    def overflow_watches(self) -> int:
        """Watches covered by a shared query instead of a blocking query of their own."""
        return sum(1 for topic in self._registry.topics() if topic.overflow)

    @property
    def read_watches(self) -> int:
        """Watches started by one-shot reads that no stream has used (at most
        `max_read_watches`)."""
        return len(self._read_only)
