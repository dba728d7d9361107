"""Consul KV fanned out to many subscribers: one blocking query per distinct prefix.

A watch stream starts with a `ConfigSnapshot` of every key under its prefix (or, with a
`resume_index` and `resume_epoch` the hub's history provably covers, the missed
`ConfigChange`s), then yields one `ConfigChange` per upstream change, interleaved with
`Heartbeat`s. A subscriber too slow to keep up has its queued changes replaced by a fresh
snapshot; nothing is lost silently.

Epochs: indexes are comparable only within one epoch of a prefix's watch. A watch starts a new
epoch when it starts and whenever Consul's index does not move forward across a change (a
restarted `-dev` agent, a restored snapshot). A resume from another epoch, or from an index the
history does not cover, gets a snapshot flagged `reset`; at a new epoch every open stream gets
one too (instead of a change), carrying the new epoch. Within one epoch the history holds the
watch's own successive states, so replaying it from any index it covers is exact, even across
an outage during which Consul restarted and moved past the old index.

Watches beyond the adapter's blocking capacity are not queued for a blocking slot: they are
"overflow" watches, all covered by one shared blocking query on their longest common prefix,
and re-read (plain reads) only when that query shows their keys changed (brokers/_overflow.py).
Which watches get their own query is first come, first served (`WatchSlots`).

Unsubscribe by closing the stream: `async with contextlib.aclosing(hub.watch(p)) as events:`
(cancelling the task that iterates it does the same).
"""

from __future__ import annotations

import collections
import secrets
from collections.abc import AsyncGenerator

from latchkey_server.brokers._overflow import KvShared, OverflowMember, kv_fingerprint
from latchkey_server.brokers.fanout import (
    LastGood,
    Subscriber,
    TopicRegistry,
    WatchedTopic,
)
from latchkey_server.brokers.singleflight import SingleFlight
from latchkey_server.errors import InvalidArgument, LatchkeyError, NotFound, Unavailable
from latchkey_server.models import (
    ChangeType,
    ConfigChange,
    ConfigEntry,
    ConfigSnapshot,
    Freshness,
    Heartbeat,
    KeyChange,
    utcnow,
)
from latchkey_server.upstreams.consul import ConsulUpstream, SharedWatchUpstream
from latchkey_server.upstreams.consul_watch import Fetch, WatchSettings

__all__ = ["ConfigHub", "diff_entries"]

ConfigDelta = ConfigSnapshot | ConfigChange


def diff_entries(old: dict[str, ConfigEntry], new: dict[str, ConfigEntry]) -> list[KeyChange]:
    """Per-key puts (new or modified entries) and deletes (keys gone), sorted by key."""
    changes: list[KeyChange] = []
    for key in sorted(old.keys() | new.keys()):
        before, after = old.get(key), new.get(key)
        if after is None:
            changes.append(KeyChange(ChangeType.DELETE, key, None))
        elif before != after:
            changes.append(KeyChange(ChangeType.PUT, key, after))
    return changes


def new_epoch() -> str:
    return secrets.token_hex(8)


def weigh(event: ConfigDelta) -> int:
    """Approximate bytes an event holds (keys and values), for the per-stream queue bound."""
    if isinstance(event, ConfigSnapshot):
        return sum(len(e.key) + len(e.value) for e in event.entries)
    return sum(len(c.key) + (len(c.entry.value) if c.entry else 0) for c in event.changes)


def _validate(what: str, value: str) -> None:
    if value.startswith("/"):
        raise InvalidArgument(f"a config {what} must not start with '/'")


class _PrefixTopic(WatchedTopic[ConfigDelta, list[ConfigEntry]]):
    """One prefix: its entries, index and a bounded history of changes for resumption."""

    def __init__(
        self,
        prefix: str,
        fetch: Fetch[list[ConfigEntry]],
        settings: WatchSettings,
        history: int,
    ) -> None:
        super().__init__(f"kv:{prefix}", fetch, settings)
        self.prefix = prefix
        self.entries: dict[str, ConfigEntry] = {}
        self.history_size = history
        self.history: collections.deque[tuple[int, ConfigChange]] = collections.deque()
        """(index before the change, the change), oldest first."""
        self.covered_from = 0
        """History can bring a client at any index >= this up to date."""
        self._snapshots: dict[bool, ConfigSnapshot] = {}
        self.epoch = new_epoch()
        """Indexes compare only within one epoch (see the module docstring)."""

    def apply(self, index: int, payload: list[ConfigEntry], changed: bool, reset: bool) -> None:
        previous_index = self.index
        # A change whose index did not move forward cannot be ordered after what came before:
        # like an index that went backwards, it starts a new epoch.
        reset = reset or (self.loaded and changed and index <= previous_index)
        if not self.loaded or reset:
            self.history.clear()
            self.covered_from = index
            self.epoch = new_epoch()
            self._snapshots.clear()
        self.index = index
        if not changed and not reset:
            return
        new = {entry.key: entry for entry in payload}
        old, self.entries = self.entries, new
        self._snapshots.clear()
        if not self.loaded:
            return
        if reset:
            # Open streams learn the new epoch from a full snapshot, whatever changed.
            self.broadcast(self.snapshot(reset=True))
            return
        changes = diff_entries(old, new)
        if not changes:
            return
        event = ConfigChange(tuple(changes), index, self.freshness())
        self.history.append((previous_index, event))
        if len(self.history) > self.history_size:
            _, dropped = self.history.popleft()
            self.covered_from = dropped.index
        self.broadcast(event)

    def snapshot(self, *, reset: bool = False) -> ConfigSnapshot:
        """The current state; one shared object until the state or its freshness changes."""
        fresh = self.freshness()
        cached = self._snapshots.get(reset)
        if cached is not None and cached.index == self.index and cached.freshness == fresh:
            return cached
        entries = tuple(self.entries[key] for key in sorted(self.entries))
        snapshot = ConfigSnapshot(entries, self.index, fresh, epoch=self.epoch, reset=reset)
        self._snapshots[reset] = snapshot
        return snapshot

    def catch_up(self, resume_index: int, resume_epoch: str, limit: int) -> list[ConfigDelta]:
        """What a client at (`resume_index`, `resume_epoch`) needs: nothing, the missed changes
        (only when this epoch's history provably leads from there to now), or a snapshot
        (flagged `reset` when it replaces a resume)."""
        if resume_index <= 0:
            return [self.snapshot()]
        if resume_epoch == self.epoch:
            if resume_index == self.index:
                return []
            if self.covered_from <= resume_index < self.index:
                missed: list[ConfigDelta] = [
                    change for _, change in self.history if change.index > resume_index
                ]
                if len(missed) <= limit:
                    return missed
        return [self.snapshot(reset=True)]


class ConfigHub:
    """Consul KV for many readers and watchers, with one upstream watch per prefix."""

    def __init__(
        self,
        consul: ConsulUpstream,
        *,
        heartbeat_interval: float = 10.0,
        stale_limit: float = 300.0,
        history: int = 1000,
        linger: float = 5.0,
        queue_size: int = 256,
        queue_bytes: int = 8 << 20,
        read_cache_size: int = 1024,
        watch_settings: WatchSettings | None = None,
    ) -> None:
        self._consul = consul
        self.heartbeat_interval = heartbeat_interval
        self.stale_limit = stale_limit
        self.history = history
        self.queue_size = queue_size
        self.queue_bytes = queue_bytes
        """Bytes of changes one subscriber may have queued before it is resynced instead."""
        self._settings = watch_settings or WatchSettings()
        self._topics: TopicRegistry[str, _PrefixTopic] = TopicRegistry(
            self._new_topic, linger=linger
        )
        self._get_flight: SingleFlight[str, tuple[int, ConfigEntry]] = SingleFlight()
        self._list_flight: SingleFlight[str, tuple[int, list[ConfigEntry]]] = SingleFlight()
        self._got: LastGood[str, ConfigEntry] = LastGood(read_cache_size)
        self._listed: LastGood[str, list[ConfigEntry]] = LastGood(read_cache_size)
        self._closed = False
        self._closed_error: LatchkeyError = Unavailable(
            "the config hub is shutting down", retry_after=1.0
        )
        self._shared = consul if isinstance(consul, SharedWatchUpstream) else None
        self._group: KvShared | None = None

    def _new_topic(self, prefix: str) -> _PrefixTopic:
        consul, shared = self._consul, self._shared
        if shared is None or shared.watch_slots.try_dedicated():

            async def fetch(index: int | None, wait: float | None) -> tuple[int, list[ConfigEntry]]:
                return await consul.kv_list(prefix, index=index, wait=wait)

            topic = _PrefixTopic(prefix, fetch, self._settings, self.history)
            if shared is not None:
                topic.on_stop.append(shared.watch_slots.release_dedicated)
            return topic
        if self._group is None:
            self._group = KvShared(shared, self._settings, shared.watch_slots)
        group = self._group
        member = OverflowMember(
            group, prefix, lambda: consul.kv_list(prefix), own_fingerprint=kv_fingerprint
        )
        group.join(prefix)
        topic = _PrefixTopic(prefix, member.fetch, self._settings, self.history)
        topic.overflow = True
        topic.on_stop.append(lambda: group.leave(prefix))
        return topic

    async def start(self) -> None:
        """Nothing to warm up: watches start with their first subscriber."""
        self._closed = False

    async def close(self, error: LatchkeyError | None = None) -> None:
        """Stop every upstream watch and end every stream with `error` (a drain says why), or
        `Unavailable`; later calls fail with the same error."""
        self._closed = True
        self._closed_error = error or Unavailable(
            "the config hub is shutting down", retry_after=1.0
        )
        await self._topics.close(self._closed_error)
        if self._group is not None:
            await self._group.close()
        await self._get_flight.cancel_all()
        await self._list_flight.cancel_all()

    @property
    def active_watches(self) -> int:
        """Upstream watches currently running (including lingering ones)."""
        return len(self._topics)

    @property
    def overflow_watches(self) -> int:
        """Watches covered by the shared query instead of a blocking query of their own."""
        return sum(1 for topic in self._topics.topics() if topic.overflow)

    def _check_open(self) -> None:
        if self._closed:
            raise self._closed_error

    def _covering(self, prefix: str) -> _PrefixTopic | None:
        """A usable live watch whose prefix covers `prefix` (keys are plain string prefixes)."""
        best: _PrefixTopic | None = None
        for topic in self._topics.topics():
            if prefix.startswith(topic.prefix) and topic.usable(self.stale_limit):
                if topic.reachable:
                    return topic
                best = best or topic
        return best

    # ------------------------------------------------------------------ reads

    async def get(self, key: str) -> tuple[ConfigEntry, Freshness]:
        """One key, from a live watch when one covers it, else one (single-flight) read."""
        self._check_open()
        if not key:
            raise InvalidArgument("a config key must not be empty")
        _validate("key", key)
        topic = self._covering(key)
        if topic is not None:
            entry = topic.entries.get(key)
            if entry is None:
                raise NotFound(f"config key {key!r} does not exist")
            return entry, topic.freshness()
        try:
            index, entry = await self._get_flight.do(key, lambda: self._consul.kv_get(key))
        except NotFound:
            self._got.discard(key)
            raise
        except Unavailable:
            cached = self._got.stale(key, self.stale_limit)
            if cached is None:
                raise
            return cached
        fresh = Freshness(index, utcnow())
        self._got.put(key, entry, fresh)
        return entry, fresh

    async def list(self, prefix: str) -> tuple[list[ConfigEntry], Freshness]:
        """Every key under `prefix`, sorted by key (empty when there are none)."""
        self._check_open()
        _validate("prefix", prefix)
        topic = self._covering(prefix)
        if topic is not None:
            entries = [topic.entries[k] for k in sorted(topic.entries) if k.startswith(prefix)]
            return entries, topic.freshness()
        try:
            index, entries = await self._list_flight.do(
                prefix, lambda: self._consul.kv_list(prefix)
            )
        except Unavailable:
            cached = self._listed.stale(prefix, self.stale_limit)
            if cached is None:
                raise
            return list(cached[0]), cached[1]
        fresh = Freshness(index, utcnow())
        self._listed.put(prefix, entries, fresh)
        return list(entries), fresh

    # ------------------------------------------------------------------ streams

    def watch(
        self, prefix: str, resume_index: int = 0, resume_epoch: str = ""
    ) -> AsyncGenerator[ConfigSnapshot | ConfigChange | Heartbeat, None]:
        """Stream a prefix. Arguments are checked now; the subscription starts on first
        iteration and ends when the iterator is closed (or its consumer is cancelled)."""
        self._check_open()
        _validate("prefix", prefix)
        if resume_index < 0:
            raise InvalidArgument("resume_index must not be negative")
        return self._stream(prefix, resume_index, resume_epoch)

    async def _stream(
        self, prefix: str, resume_index: int, resume_epoch: str
    ) -> AsyncGenerator[ConfigSnapshot | ConfigChange | Heartbeat, None]:
        self._check_open()
        topic = self._topics.acquire(prefix)
        sub: Subscriber[ConfigDelta] = Subscriber(
            self.queue_size, max_bytes=self.queue_bytes, weigh=weigh
        )
        try:
            await topic.wait_usable(self.stale_limit, f"config under prefix {prefix!r}")
            for missed in topic.catch_up(resume_index, resume_epoch, self.queue_size // 2):
                sub.push(missed)
            topic.subscribers.add(sub)
            async for event in sub.stream(
                self.heartbeat_interval,
                lambda: Heartbeat(topic.freshness()),
                lambda: [topic.snapshot(reset=True)],
            ):
                yield event
        finally:
            topic.subscribers.discard(sub)
            self._topics.release(prefix, topic)
