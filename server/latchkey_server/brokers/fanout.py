"""Fan-out machinery shared by the hubs: topics, subscribers, lingering.

- A `Topic` is one upstream watch shared by any number of `Subscriber`s.
- `TopicRegistry` creates a topic with its first user (a stream, or a one-shot read) and stops
  it (cancelling its in-flight upstream request) `linger` seconds after its last user left.
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
from collections.abc import AsyncIterator, Callable, Hashable, Sequence
from typing import Any, Generic, TypeVar

from latchkey_server.errors import LatchkeyError
from latchkey_server.models import Heartbeat

__all__ = [
    "Subscriber",
    "Topic",
    "TopicRegistry",
]

E = TypeVar("E")
K = TypeVar("K", bound=Hashable)
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
        self._queue: collections.deque[tuple[E, int]] = collections.deque()
        """(event, its weight), so an event is weighed once."""
        self._wake = asyncio.Event()
        self.resync_needed = False
        self.heartbeat_due = False
        self.overflows = 0
        self._closed = False
        self._error: LatchkeyError | None = None

    def push(self, event: E, size: int | None = None) -> int:
        """Queue an event; on overflow drop the queue and ask for a resync instead. `size`: its
        weight if already known (one event fanned out to many is weighed once); returns it."""
        if size is None:
            size = self._weigh(event) if self._weigh is not None else 0
        if self._closed:
            return size
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
            self._queue.append((event, size))
            self.queued_bytes += size
        self._wake.set()
        return size

    def _pop(self) -> E:
        event, size = self._queue.popleft()
        self.queued_bytes = max(0, self.queued_bytes - size)
        return event

    def replace(self, event: E) -> None:
        """Latest-value mode: the queue holds only `event` (for full-state events)."""
        if self._closed:
            return
        size = self._weigh(event) if self._weigh is not None else 0
        self._queue.clear()
        self._queue.append((event, size))
        self.queued_bytes = size
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
        """Yield queued events, resyncs and heartbeats until closed.

        Heartbeats come every `heartbeat_interval` seconds from one timer per stream, re-armed
        only when a heartbeat goes out, so waiting for an event costs no timer of its own.
        """
        loop = asyncio.get_running_loop()
        wake = self._wake

        def beat() -> None:
            self.heartbeat_due = True
            wake.set()

        timer = loop.call_later(heartbeat_interval, beat)
        try:
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
                if self.heartbeat_due:
                    self.heartbeat_due = False
                    timer.cancel()
                    timer = loop.call_later(heartbeat_interval, beat)
                    yield heartbeat()
                    continue
                wake.clear()
                await wake.wait()
        finally:
            timer.cancel()


class Topic(abc.ABC, Generic[E]):
    """One upstream watch and the subscribers it fans out to."""

    def __init__(self) -> None:
        self.subscribers: set[Subscriber[E]] = set()
        self.refs = 0
        """Users now: open streams and reads in progress."""
        self.linger_handle: asyncio.TimerHandle | None = None

    @abc.abstractmethod
    def start(self) -> None:
        """Start the upstream watch (called once, inside the running loop)."""

    @abc.abstractmethod
    def cancel(self) -> asyncio.Task[None] | None:
        """Stop the upstream watch now; return its task so the caller can await it."""

    def broadcast(self, event: E) -> None:
        """Queue `event` for every subscriber (they share one weigh function: weighed once)."""
        size: int | None = None
        for sub in self.subscribers:
            size = sub.push(event, size)

    def heartbeat_all(self) -> None:
        for sub in self.subscribers:
            sub.request_heartbeat()

    def close_all(self, error: LatchkeyError | None) -> None:
        for sub in self.subscribers:
            sub.close(error)
        self.subscribers.clear()


class TopicRegistry(Generic[K, TopicT]):
    """Topics by key: created on first `acquire`, stopped `linger` s after the last `release`
    (or the linger that release asks for)."""

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

    def release(self, key: K, topic: TopicT, linger: float | None = None) -> None:
        topic.refs -= 1
        if topic.refs > 0 or self._topics.get(key) is not topic:
            return
        loop = asyncio.get_running_loop()
        delay = self._linger if linger is None else linger
        topic.linger_handle = loop.call_later(delay, self._expire, key, topic)

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
