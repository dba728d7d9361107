"""Consul health fanned out to many subscribers: one blocking query per (service, tag, dc).

The upstream watch fetches every instance (not `?passing`) with its worst check status; each
subscriber sees its filtered view: passing instances, plus warning ones (flagged WARNING) when
its query has `include_warning`. Critical instances are never served. A stream yields the full
`InstanceSet` whenever its filtered set changes (and first thing), plus `Heartbeat`s. Each
answer is compared once with the topic's instances, and each of the two views is computed and
compared once per change, then the same `InstanceSet` goes to every subscriber of that view.
Sets carry the watch's epoch: when Consul's index goes backwards (or a change comes without the
index moving forward) a new epoch starts, and every stream gets the set flagged `reset`, even
if its instances did not change.

Watches beyond the adapter's blocking capacity are "overflow" watches: one shared blocking query
on the datacenter's checks (`/v1/health/state/any`) covers all of them, and only services whose
checks changed are re-read (brokers/_overflow.py). First come, first served (`WatchSlots`).

Unsubscribe by closing the stream: `async with contextlib.aclosing(hub.watch(q)) as events:`
(cancelling the task that iterates it does the same).
"""

from __future__ import annotations

import secrets
from collections.abc import AsyncGenerator

from latchkey_server.brokers._hub import HubCore, ReadOptions, WatchedTopic
from latchkey_server.brokers._overflow import HealthShared, ServiceKey
from latchkey_server.brokers.consul_watch import Fetch, WatchSettings
from latchkey_server.brokers.fanout import Subscriber
from latchkey_server.errors import LatchkeyError, NotFound
from latchkey_server.models import (
    Freshness,
    HealthStatus,
    Heartbeat,
    Instance,
    InstanceSet,
    ServiceQuery,
)
from latchkey_server.upstreams.consul_port import ConsulUpstream, SharedWatchUpstream

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


class _ServiceTopic(WatchedTopic[InstanceSet, list[Instance]]):
    def __init__(
        self, key: ServiceKey, fetch: Fetch[list[Instance]], settings: WatchSettings
    ) -> None:
        service, tag, datacenter = key
        super().__init__(f"health:{service}|{tag}|{datacenter}", fetch, settings)
        self.instances: list[Instance] = []
        self.epoch = secrets.token_hex(8)
        self.views: dict[bool, tuple[Instance, ...]] = {False: (), True: ()}
        """The serveable instances without and with warning ones (what subscribers have)."""
        self.by_view: dict[bool, set[Subscriber[InstanceSet]]] = {False: set(), True: set()}

    def apply(self, index: int, payload: list[Instance], reset: bool) -> None:
        first = not self.loaded
        changed = first or (payload is not self.instances and payload != self.instances)
        reset = not first and (reset or (changed and index <= self.index))
        if reset:
            self.epoch = secrets.token_hex(8)
        self.index = index
        if not changed and not reset:
            return
        self.instances = payload
        freshness = self.freshness()
        for include_warning, subscribers in self.by_view.items():
            view = serveable(payload, include_warning)
            if view == self.views[include_warning] and not reset and not first:
                continue
            self.views[include_warning] = view
            event = InstanceSet(view, index, freshness, epoch=self.epoch, reset=reset)
            for sub in subscribers:
                sub.replace(event)  # latest value wins

    def state(self) -> list[Instance]:
        return self.instances

    def view(self, include_warning: bool) -> InstanceSet:
        return InstanceSet(
            self.views[include_warning], self.index, self.freshness(), epoch=self.epoch
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
        read_linger: float = 10.0,
        max_read_watches: int = 16,
        read_cache_size: int = 1024,
        watch_settings: WatchSettings | None = None,
    ) -> None:
        self.heartbeat_interval = heartbeat_interval
        settings = self._settings = watch_settings or WatchSettings()

        async def read(
            key: ServiceKey, index: int | None, wait: float | None
        ) -> tuple[int, list[Instance]]:
            service, tag, datacenter = key
            return await consul.health_service(
                service, tag=tag, datacenter=datacenter, index=index, wait=wait
            )

        def new_group(datacenter: object, shared: SharedWatchUpstream) -> HealthShared:
            assert isinstance(datacenter, str)
            return HealthShared(shared, datacenter, settings, shared.watch_slots)

        # Checks cannot show every change (an instance without checks, a new address), so an
        # overflow service is also re-read once per `wait` (poll_on_wait).
        self._core: HubCore[ServiceKey, _ServiceTopic, list[Instance]] = HubCore(
            consul,
            read=read,
            make_topic=lambda key, fetch: _ServiceTopic(key, fetch, settings),
            group_key=lambda key: key[2],  # one shared query per datacenter
            new_group=new_group,
            poll_on_wait=True,
            options=ReadOptions(
                stale_limit=stale_limit,
                linger=linger,
                read_linger=read_linger,
                max_read_watches=max_read_watches,
                read_cache_size=read_cache_size,
            ),
            closing="the discovery hub is shutting down",
        )

    @property
    def stale_limit(self) -> float:
        return self._core.stale_limit

    async def start(self) -> None:
        """Nothing to warm up: watches start with their first subscriber or read."""
        self._core.reopen()

    async def close(self, error: LatchkeyError | None = None) -> None:
        """Stop every upstream watch and end every stream with `error` (a drain says why), or
        `Unavailable`; later calls fail with the same error."""
        await self._core.close(error)

    @property
    def active_watches(self) -> int:
        return self._core.active_watches

    @property
    def overflow_watches(self) -> int:
        """Watches covered by a shared query instead of a blocking query of their own."""
        return self._core.overflow_watches

    @property
    def read_watches(self) -> int:
        """Watches started by one-shot reads (no stream uses them)."""
        return self._core.read_watches

    async def healthy(self, query: ServiceQuery) -> InstanceSet:
        """The serveable instances now: from a live watch, else from a read watch (kept a
        while for the next reads), else one single-flight read. NotFound when Consul knows no
        instance of the service (of any health); an empty set means every instance fails a
        check. Watches, unlike this read, may start before the service is registered."""

        def from_topic(topic: _ServiceTopic) -> InstanceSet:
            _registered(query, topic.instances)
            return topic.view(query.include_warning)

        def from_payload(instances: list[Instance], fresh: Freshness) -> InstanceSet:
            view = serveable(_registered(query, instances), query.include_warning)
            return InstanceSet(view, fresh.index, fresh)

        what = f"instances of service {query.service!r}"
        return await self._core.read(_key(query), what, from_topic, from_payload)

    def watch(self, query: ServiceQuery) -> AsyncGenerator[InstanceSet | Heartbeat, None]:
        """Stream a service's serveable instances (the query validated by the caller). The
        subscription starts on first iteration and ends when the iterator is closed."""
        self._core.check_open()
        return self._stream(query)

    async def _stream(self, query: ServiceQuery) -> AsyncGenerator[InstanceSet | Heartbeat, None]:
        sub: Subscriber[InstanceSet] = Subscriber(maxsize=1)
        what = f"instances of service {query.service!r}"
        async with self._core.subscribe(_key(query), what) as topic:
            sub.replace(topic.view(query.include_warning))
            group = topic.by_view[query.include_warning]
            topic.subscribers.add(sub)
            group.add(sub)
            try:
                async for event in sub.stream(
                    self.heartbeat_interval, lambda: Heartbeat(topic.freshness())
                ):
                    yield event
            finally:
                group.discard(sub)
                topic.subscribers.discard(sub)
