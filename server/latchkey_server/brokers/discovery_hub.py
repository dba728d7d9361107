"""Consul health fanned out to many subscribers: one blocking query per (service, tag, dc).

The upstream watch fetches every instance (not `?passing`) with its worst check status; each
subscriber sees its own filtered view: passing instances, plus warning ones (flagged WARNING)
when its query has `include_warning`. Critical instances are never served. A stream yields the
full `InstanceSet` whenever that subscriber's filtered set changes (and first thing), plus
`Heartbeat`s. Sets carry the watch's epoch: when Consul's index goes backwards (or a change
comes without the index moving forward) a new epoch starts, and every stream gets the set
flagged `reset`, even if its instances did not change.

Watches beyond the adapter's blocking capacity are "overflow" watches: one shared blocking query
on the datacenter's checks (`/v1/health/state/any`) covers all of them, and only services whose
checks changed are re-read (brokers/_overflow.py). First come, first served (`WatchSlots`).

Unsubscribe by closing the stream: `async with contextlib.aclosing(hub.watch(q)) as events:`
(cancelling the task that iterates it does the same).
"""

from __future__ import annotations

import secrets
from collections.abc import AsyncGenerator

from latchkey_server.brokers._overflow import HealthShared, OverflowMember, ServiceKey
from latchkey_server.brokers.fanout import (
    LastGood,
    Subscriber,
    TopicRegistry,
    WatchedTopic,
)
from latchkey_server.brokers.singleflight import SingleFlight
from latchkey_server.errors import InvalidArgument, LatchkeyError, NotFound, Unavailable
from latchkey_server.models import (
    Freshness,
    HealthStatus,
    Heartbeat,
    Instance,
    InstanceSet,
    ServiceQuery,
    utcnow,
)
from latchkey_server.upstreams.consul import ConsulUpstream, SharedWatchUpstream
from latchkey_server.upstreams.consul_watch import Fetch, WatchSettings

__all__ = ["DiscoveryHub", "serveable"]


def serveable(instances: list[Instance], include_warning: bool) -> tuple[Instance, ...]:
    """The instances a subscriber may see: passing, plus warning ones if asked; never critical."""
    allowed = {HealthStatus.PASSING}
    if include_warning:
        allowed.add(HealthStatus.WARNING)
    return tuple(i for i in instances if i.health in allowed)


def _key(query: ServiceQuery) -> ServiceKey:
    return (query.service, query.tag, query.datacenter)


def _registered(query: ServiceQuery, instances: list[Instance]) -> list[Instance]:
    """`instances` (any health), or NotFound when Consul knows none: an unknown service must
    not look like one whose instances are all critical."""
    if not instances:
        tag = f" with tag {query.tag!r}" if query.tag else ""
        dc = f" in datacenter {query.datacenter!r}" if query.datacenter else ""
        raise NotFound(
            f"Consul knows no instance of service {query.service!r}{tag}{dc}: check the name "
            "(consul catalog services lists them)"
        )
    return instances


class _ServiceSubscriber(Subscriber[InstanceSet]):
    def __init__(self, include_warning: bool) -> None:
        super().__init__(maxsize=1)
        self.include_warning = include_warning
        self.last_sent: tuple[Instance, ...] | None = None

    def offer(
        self,
        instances: list[Instance],
        index: int,
        freshness: Freshness,
        epoch: str,
        reset: bool = False,
    ) -> None:
        """Queue the filtered set if it differs from the last one queued, or starts a new
        epoch (latest value wins)."""
        view = serveable(instances, self.include_warning)
        if view == self.last_sent and not reset:
            return
        self.last_sent = view
        self.replace(InstanceSet(view, index, freshness, epoch=epoch, reset=reset))


class _ServiceTopic(WatchedTopic[InstanceSet, list[Instance]]):
    def __init__(
        self, key: ServiceKey, fetch: Fetch[list[Instance]], settings: WatchSettings
    ) -> None:
        service, tag, datacenter = key
        super().__init__(f"health:{service}|{tag}|{datacenter}", fetch, settings)
        self.instances: list[Instance] = []
        self.epoch = secrets.token_hex(8)

    def apply(self, index: int, payload: list[Instance], changed: bool, reset: bool) -> None:
        reset = self.loaded and (reset or (changed and index <= self.index))
        if reset:
            self.epoch = secrets.token_hex(8)
        self.index = index
        if not changed and not reset:
            return
        self.instances = payload
        freshness = self.freshness()
        for sub in self.subscribers:
            if isinstance(sub, _ServiceSubscriber):
                sub.offer(payload, index, freshness, self.epoch, reset)

    def view(self, include_warning: bool) -> InstanceSet:
        return InstanceSet(
            serveable(self.instances, include_warning),
            self.index,
            self.freshness(),
            epoch=self.epoch,
        )


class DiscoveryHub:
    """Healthy service instances for many readers and watchers, one upstream watch each."""

    def __init__(
        self,
        consul: ConsulUpstream,
        *,
        heartbeat_interval: float = 10.0,
        stale_limit: float = 300.0,
        linger: float = 5.0,
        read_cache_size: int = 1024,
        watch_settings: WatchSettings | None = None,
    ) -> None:
        self._consul = consul
        self.heartbeat_interval = heartbeat_interval
        self.stale_limit = stale_limit
        self._settings = watch_settings or WatchSettings()
        self._topics: TopicRegistry[ServiceKey, _ServiceTopic] = TopicRegistry(
            self._new_topic, linger=linger
        )
        self._flight: SingleFlight[ServiceKey, tuple[int, list[Instance]]] = SingleFlight()
        self._last: LastGood[ServiceKey, list[Instance]] = LastGood(read_cache_size)
        self._closed = False
        self._closed_error: LatchkeyError = Unavailable(
            "the discovery hub is shutting down", retry_after=1.0
        )
        self._shared = consul if isinstance(consul, SharedWatchUpstream) else None
        self._groups: dict[str, HealthShared] = {}

    def _new_topic(self, key: ServiceKey) -> _ServiceTopic:
        consul, shared = self._consul, self._shared
        service, tag, datacenter = key

        async def read(
            index: int | None = None, wait: float | None = None
        ) -> tuple[int, list[Instance]]:
            return await consul.health_service(
                service, tag=tag, datacenter=datacenter, index=index, wait=wait
            )

        if shared is None or shared.watch_slots.try_dedicated():
            topic = _ServiceTopic(key, read, self._settings)
            if shared is not None:
                topic.on_stop.append(shared.watch_slots.release_dedicated)
            return topic
        group = self._groups.get(datacenter)
        if group is None:
            group = HealthShared(shared, datacenter, self._settings, shared.watch_slots)
            self._groups[datacenter] = group
        # Checks cannot show every change (an instance without checks, a new address), so
        # an overflow service is also re-read once per `wait`.
        member = OverflowMember(group, key, read, poll_on_wait=True)
        group.join(key)
        topic = _ServiceTopic(key, member.fetch, self._settings)
        topic.overflow = True
        topic.on_stop.append(lambda: group.leave(key))
        return topic

    async def start(self) -> None:
        """Nothing to warm up: watches start with their first subscriber."""
        self._closed = False

    async def close(self, error: LatchkeyError | None = None) -> None:
        """Stop every upstream watch and end every stream with `error` (a drain says why), or
        `Unavailable`; later calls fail with the same error."""
        self._closed = True
        self._closed_error = error or Unavailable(
            "the discovery hub is shutting down", retry_after=1.0
        )
        await self._topics.close(self._closed_error)
        await self._flight.cancel_all()
        for group in self._groups.values():
            await group.close()

    @property
    def active_watches(self) -> int:
        return len(self._topics)

    @property
    def overflow_watches(self) -> int:
        """Watches covered by a shared query instead of a blocking query of their own."""
        return sum(1 for topic in self._topics.topics() if topic.overflow)

    def _check(self, query: ServiceQuery) -> None:
        if self._closed:
            raise self._closed_error
        if not query.service:
            raise InvalidArgument("a service name must not be empty")
        if query.service.startswith("/"):
            raise InvalidArgument("a service name must not start with '/'")

    async def healthy(self, query: ServiceQuery) -> InstanceSet:
        """The serveable instances now: from a live watch, else one (single-flight) read.
        NotFound when Consul knows no instance of the service (of any health); an empty set
        means every instance fails a check. Watches, unlike this read, may start before the
        service is registered."""
        self._check(query)
        key = _key(query)
        topic = self._topics.get(key)
        if topic is not None and topic.usable(self.stale_limit):
            _registered(query, topic.instances)
            return topic.view(query.include_warning)

        try:
            index, instances = await self._flight.do(
                key,
                lambda: self._consul.health_service(
                    query.service, tag=query.tag, datacenter=query.datacenter
                ),
            )
        except Unavailable:
            cached = self._last.stale(key, self.stale_limit)
            if cached is None:
                raise
            instances, fresh = cached
            return InstanceSet(
                serveable(_registered(query, instances), query.include_warning), fresh.index, fresh
            )
        fresh = Freshness(index, utcnow())
        self._last.put(key, instances, fresh)
        return InstanceSet(
            serveable(_registered(query, instances), query.include_warning), index, fresh
        )

    def watch(self, query: ServiceQuery) -> AsyncGenerator[InstanceSet | Heartbeat, None]:
        """Stream a service's serveable instances. Arguments are checked now; the subscription
        starts on first iteration and ends when the iterator is closed."""
        self._check(query)
        return self._stream(query)

    async def _stream(self, query: ServiceQuery) -> AsyncGenerator[InstanceSet | Heartbeat, None]:
        self._check(query)
        key = _key(query)
        topic = self._topics.acquire(key)
        sub = _ServiceSubscriber(query.include_warning)
        try:
            await topic.wait_usable(self.stale_limit, f"instances of service {query.service!r}")
            sub.offer(topic.instances, topic.index, topic.freshness(), topic.epoch)
            topic.subscribers.add(sub)
            async for event in sub.stream(
                self.heartbeat_interval, lambda: Heartbeat(topic.freshness())
            ):
                yield event
        finally:
            topic.subscribers.discard(sub)
            self._topics.release(key, topic)
