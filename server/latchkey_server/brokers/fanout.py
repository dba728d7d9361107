"""Fan-out machinery shared by the hubs: topics, subscribers, lingering, last-good values.

- A `Topic` is one upstream watch shared by any number of `Subscriber`s.
- `TopicRegistry` creates a topic with its first subscriber and stops it (cancelling its
  in-flight upstream request) `linger` seconds after its last subscriber left.
- A `Subscriber` has a queue bounded in events and, with a `weigh` function, in bytes. When it
  overflows (a slow consumer), its queued events are dropped and it is marked for a resync:
  its stream then yields whatever the hub's `resync` callable returns (a fresh snapshot), so
  no update is ever silently lost.
- `Subscriber.stream()` interleaves events with heartbeats every `heartbeat_interval` seconds
  and an immediate heartbeat on request (reachability changes).
"""

from __future__ import annotations

import abc
import asyncio
import collections
import time
from collections.abc import AsyncIterator, Callable, Hashable, Sequence
from datetime import datetime
from typing import Any, Generic, TypeVar

from latchkey_server.errors import LatchkeyError, Unavailable
from latchkey_server.models import Freshness, Heartbeat, utcnow
from latchkey_server.upstreams.consul_watch import ConsulWatch, Fetch, WatchSettings

__all__ = [
    "LastGood",
    "Subscriber",
    "Topic",
    "TopicRegistry",
    "WatchedTopic",
]

E = TypeVar("E")
T = TypeVar("T")
K = TypeVar("K", bound=Hashable)
V = TypeVar("V")
TopicT = TypeVar("TopicT", bound="Topic[Any]")


class Subscriber(Generic[E]):
    """One consumer's queue. Everything but `stream()` is synchronous and never blocks."""

    def __init__(
        self,
        maxsize: int = 256,
        *,
        max_bytes: int | None = None,
        weigh: Callable[[E], int] | None = None,
    ) -> None:
        self.maxsize = maxsize
        self.max_bytes = max_bytes
        self._weigh = weigh
        self.queued_bytes = 0
        """Approximate bytes of the queued events (when a `weigh` function is given)."""
        self._queue: collections.deque[E] = collections.deque()
        self._wake = asyncio.Event()
        self.resync_needed = False
        self.heartbeat_due = False
        self.overflows = 0
        self._closed = False
        self._error: LatchkeyError | None = None

    def push(self, event: E) -> None:
        """Queue an event; on overflow drop the queue and ask for a resync instead."""
        if self._closed:
            return
        size = self._weigh(event) if self._weigh is not None else 0
        if self.resync_needed:
            pass  # the coming resync supersedes anything queued now
        elif len(self._queue) >= self.maxsize or (
            self.max_bytes is not None and self.queued_bytes + size > self.max_bytes
        ):
            self._queue.clear()
            self.queued_bytes = 0
            self.resync_needed = True
            self.overflows += 1
        else:
            self._queue.append(event)
            self.queued_bytes += size
        self._wake.set()

    def _pop(self) -> E:
        event = self._queue.popleft()
        if self._weigh is not None:
            self.queued_bytes = max(0, self.queued_bytes - self._weigh(event))
        return event

    def replace(self, event: E) -> None:
        """Latest-value mode: the queue holds only `event` (for full-state events)."""
        if self._closed:
            return
        self._queue.clear()
        self._queue.append(event)
        self.queued_bytes = self._weigh(event) if self._weigh is not None else 0
        self._wake.set()

    def request_heartbeat(self) -> None:
        self.heartbeat_due = True
        self._wake.set()

    def close(self, error: LatchkeyError | None = None) -> None:
        """End the stream: after the queued events, or at once with `error`."""
        self._closed = True
        self._error = error
        self._wake.set()

    async def stream(
        self,
        heartbeat_interval: float,
        heartbeat: Callable[[], Heartbeat],
        resync: Callable[[], Sequence[E]] | None = None,
    ) -> AsyncIterator[E | Heartbeat]:
        """Yield queued events, resyncs and heartbeats until closed."""
        loop = asyncio.get_running_loop()
        next_beat = loop.time() + heartbeat_interval
        while True:
            if self._error is not None:
                raise self._error
            if self.resync_needed:
                self.resync_needed = False
                self._queue.clear()
                self.queued_bytes = 0
                for event in resync() if resync else ():
                    yield event
                continue
            if self._queue:
                yield self._pop()
                continue
            if self._closed:
                return
            now = loop.time()
            if self.heartbeat_due or now >= next_beat:
                self.heartbeat_due = False
                next_beat = max(next_beat + heartbeat_interval, now + heartbeat_interval / 2)
                yield heartbeat()
                continue
            self._wake.clear()
            try:
                async with asyncio.timeout(next_beat - now):
                    await self._wake.wait()
            except TimeoutError:
                pass


class Topic(abc.ABC, Generic[E]):
    """One upstream watch and the subscribers it fans out to."""

    def __init__(self) -> None:
        self.subscribers: set[Subscriber[E]] = set()
        self.refs = 0
        self.linger_handle: asyncio.TimerHandle | None = None

    @abc.abstractmethod
    def start(self) -> None:
        """Start the upstream watch (called once, inside the running loop)."""

    @abc.abstractmethod
    def cancel(self) -> asyncio.Task[None] | None:
        """Stop the upstream watch now; return its task so the caller can await it."""

    def broadcast(self, event: E) -> None:
        for sub in self.subscribers:
            sub.push(event)

    def heartbeat_all(self) -> None:
        for sub in self.subscribers:
            sub.request_heartbeat()

    def close_all(self, error: LatchkeyError | None) -> None:
        for sub in self.subscribers:
            sub.close(error)
        self.subscribers.clear()


class TopicRegistry(Generic[K, TopicT]):
    """Topics by key: created on first `acquire`, stopped `linger` s after the last `release`."""

    def __init__(self, factory: Callable[[K], TopicT], *, linger: float) -> None:
        self._factory = factory
        self._linger = linger
        self._topics: dict[K, TopicT] = {}
        self._stopping: set[asyncio.Task[None]] = set()

    def __len__(self) -> int:
        return len(self._topics)

    def get(self, key: K) -> TopicT | None:
        return self._topics.get(key)

    def topics(self) -> list[TopicT]:
        return list(self._topics.values())

    def acquire(self, key: K) -> TopicT:
        topic = self._topics.get(key)
        if topic is None:
            topic = self._factory(key)
            self._topics[key] = topic
            topic.start()
        if topic.linger_handle is not None:
            topic.linger_handle.cancel()
            topic.linger_handle = None
        topic.refs += 1
        return topic

    def release(self, key: K, topic: TopicT) -> None:
        topic.refs -= 1
        if topic.refs > 0 or self._topics.get(key) is not topic:
            return
        loop = asyncio.get_running_loop()
        topic.linger_handle = loop.call_later(self._linger, self._expire, key, topic)

    def _expire(self, key: K, topic: TopicT) -> None:
        topic.linger_handle = None
        if topic.refs > 0 or self._topics.get(key) is not topic:
            return
        del self._topics[key]
        task = topic.cancel()
        if task is not None:
            self._stopping.add(task)
            task.add_done_callback(self._stopping.discard)

    async def close(self, error: LatchkeyError | None) -> None:
        """Stop every topic, end every subscriber's stream (with `error`), await the tasks."""
        topics, self._topics = list(self._topics.values()), {}
        for topic in topics:
            if topic.linger_handle is not None:
                topic.linger_handle.cancel()
                topic.linger_handle = None
            topic.close_all(error)
            task = topic.cancel()
            if task is not None:
                self._stopping.add(task)
        tasks, self._stopping = list(self._stopping), set()
        await asyncio.gather(*tasks, return_exceptions=True)


class WatchedTopic(Topic[E], Generic[E, T]):
    """A topic fed by one `ConsulWatch`: keeps index, confirmation time and reachability.

    Subclasses implement `apply()` (update the cached state, set `self.index`, publish).
    """

    def __init__(self, name: str, fetch: Fetch[T], settings: WatchSettings) -> None:
        super().__init__()
        self.index = 0
        self.confirmed_at: datetime | None = None
        self.reachable = True
        self.loaded = False
        self.last_error: LatchkeyError | None = None
        self._closed_error: LatchkeyError | None = None
        self._ready = asyncio.Event()
        self.watch: ConsulWatch[T] = ConsulWatch(name, fetch, self, settings)
        self.overflow = False
        """Covered by a shared blocking query rather than one of its own (brokers/_overflow)."""
        self.on_stop: list[Callable[[], None]] = []
        """Run once when the watch stops (gives back its blocking slot or group membership)."""

    @abc.abstractmethod
    def apply(self, index: int, payload: T, changed: bool, reset: bool) -> None:
        """Take a successful response into the cached state (see `WatchOwner.on_response`)."""

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
    def on_response(self, index: int, payload: T, changed: bool, reset: bool) -> None:
        self.confirmed_at = utcnow()
        self.reachable = True
        self.last_error = None
        self.apply(index, payload, changed, reset)
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
    """Last good results of one-shot reads, for stale-if-error (bounded, least recently used
    first out)."""

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

    def discard(self, key: K) -> None:
        self._items.pop(key, None)

    def stale(self, key: K, stale_limit: float) -> tuple[V, Freshness] | None:
        """The cached value marked stale/unreachable, if it is within `stale_limit`."""
        item = self._items.get(key)
        if item is None:
            return None
        value, fresh = item
        if fresh.age_seconds() > stale_limit:
            return None
        return value, Freshness(fresh.index, fresh.confirmed_at, stale=True, reachable=False)
