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

from latchkey_server.brokers._hub import HubCore, ReadOptions, WatchedTopic
from latchkey_server.brokers._overflow import KvShared, kv_fingerprint
from latchkey_server.brokers.consul_watch import Fetch, WatchSettings
from latchkey_server.brokers.fanout import Subscriber
from latchkey_server.errors import LatchkeyError, NotFound
from latchkey_server.models import (
    ChangeType,
    ConfigChange,
    ConfigEntry,
    ConfigSnapshot,
    Freshness,
    Heartbeat,
    KeyChange,
)
from latchkey_server.upstreams.consul_port import ConsulUpstream, SharedWatchUpstream

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
        """The entries by key (an index over `payload`)."""
        self.payload: list[ConfigEntry] = []
        """The last answer that changed something, sorted by key."""
        self.history_size = history
        self.history: collections.deque[tuple[int, ConfigChange]] = collections.deque()
        """(index before the change, the change), oldest first."""
        self.covered_from = 0
        """History can bring a client at any index >= this up to date."""
        self._snapshots: dict[bool, ConfigSnapshot] = {}
        self.epoch = new_epoch()
        """Indexes compare only within one epoch (see the module docstring)."""

    def apply(self, index: int, payload: list[ConfigEntry], reset: bool) -> None:
        previous_index = self.index
        if payload is self.payload and not reset:
            self.index = index  # an overflow member's unchanged answer: the same list
            return
        first = not self.loaded
        new = {entry.key: entry for entry in payload}
        changes = [] if first or reset else diff_entries(self.entries, new)
        # A change whose index did not move forward cannot be ordered after what came before:
        # like an index that went backwards, it starts a new epoch.
        reset = reset or (bool(changes) and index <= previous_index)
        if first or reset:
            self.history.clear()
            self.covered_from = index
            self.epoch = new_epoch()
        self.index = index
        if not (first or reset or changes):
            self.payload = payload  # returned, not changed (equal: the entries stay)
            return
        self.entries, self.payload = new, payload
        self._snapshots.clear()
        if first:
            return
        if reset:
            # Open streams learn the new epoch from a full snapshot, whatever changed.
            self.broadcast(self.snapshot(reset=True))
            return
        event = ConfigChange(tuple(changes), index, self.freshness())
        self.history.append((previous_index, event))
        if len(self.history) > self.history_size:
            _, dropped = self.history.popleft()
            self.covered_from = dropped.index
        self.broadcast(event)

    def state(self) -> list[ConfigEntry]:
        return self.payload

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
        read_linger: float = 10.0,
        max_read_watches: int = 16,
        queue_size: int = 256,
        queue_bytes: int = 8 << 20,
        read_cache_size: int = 1024,
        watch_settings: WatchSettings | None = None,
    ) -> None:
        self.heartbeat_interval = heartbeat_interval
        self.history = history
        self.queue_size = queue_size
        self.queue_bytes = queue_bytes
        """Bytes of changes one subscriber may have queued before it is resynced instead."""
        settings = self._settings = watch_settings or WatchSettings()

        async def read(
            prefix: str, index: int | None, wait: float | None
        ) -> tuple[int, list[ConfigEntry]]:
            return await consul.kv_list(prefix, index=index, wait=wait)

        def new_group(_: object, shared: SharedWatchUpstream) -> KvShared:
            return KvShared(shared, settings, shared.watch_slots)

        self._core: HubCore[str, _PrefixTopic, list[ConfigEntry]] = HubCore(
            consul,
            read=read,
            make_topic=lambda prefix, fetch: _PrefixTopic(prefix, fetch, settings, history),
            group_key=lambda prefix: "",  # one shared query for every overflow prefix
            new_group=new_group,
            own_fingerprint=kv_fingerprint,
            options=ReadOptions(
                stale_limit=stale_limit,
                linger=linger,
                read_linger=read_linger,
                max_read_watches=max_read_watches,
                read_cache_size=read_cache_size,
            ),
            closing="the config hub is shutting down",
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
        """Upstream watches currently running (including lingering ones and read watches)."""
        return self._core.active_watches

    @property
    def overflow_watches(self) -> int:
        """Watches covered by the shared query instead of a blocking query of their own."""
        return self._core.overflow_watches

    @property
    def read_watches(self) -> int:
        """Watches started by one-shot reads (no stream uses them)."""
        return self._core.read_watches

    def _covering(self, key: str) -> _PrefixTopic | None:
        """A usable live watch whose prefix covers `key` (keys are plain string prefixes),
        preferring a reachable one and the longest prefix."""
        best: _PrefixTopic | None = None
        for end in range(len(key), -1, -1):
            topic = self._core.get(key[:end])
            if topic is not None and topic.usable(self.stale_limit):
                if topic.reachable:
                    return topic
                best = best or topic
        return best

    # ------------------------------------------------------------------ reads

    async def get(self, key: str) -> tuple[ConfigEntry, Freshness]:
        """One key: from a live watch that covers it, else from a read watch on the key (kept
        a while for the next reads), else one single-flight read. NotFound when missing."""

        def missing() -> NotFound:
            return NotFound(f"config key {key!r} does not exist")

        def from_topic(topic: _PrefixTopic) -> tuple[ConfigEntry, Freshness]:
            entry = topic.entries.get(key)
            if entry is None:
                raise missing()
            return entry, topic.freshness()

        def from_payload(
            entries: list[ConfigEntry], fresh: Freshness
        ) -> tuple[ConfigEntry, Freshness]:
            for entry in entries:
                if entry.key == key:
                    return entry, fresh
            raise missing()

        return await self._core.read(
            key, f"config key {key!r}", from_topic, from_payload, self._covering(key)
        )

    async def list(self, prefix: str) -> tuple[list[ConfigEntry], Freshness]:
        """Every key under `prefix`, sorted by key (empty when there are none)."""

        def from_topic(topic: _PrefixTopic) -> tuple[list[ConfigEntry], Freshness]:
            if topic.prefix == prefix:
                return list(topic.payload), topic.freshness()
            entries = [topic.entries[k] for k in sorted(topic.entries) if k.startswith(prefix)]
            return entries, topic.freshness()

        def from_payload(
            entries: list[ConfigEntry], fresh: Freshness
        ) -> tuple[list[ConfigEntry], Freshness]:
            return list(entries), fresh

        return await self._core.read(
            prefix,
            f"config under prefix {prefix!r}",
            from_topic,
            from_payload,
            self._covering(prefix),
        )

    # ------------------------------------------------------------------ streams

    def watch(
        self, prefix: str, resume_index: int = 0, resume_epoch: str = ""
    ) -> AsyncGenerator[ConfigSnapshot | ConfigChange | Heartbeat, None]:
        """Stream a prefix (validated by the caller). The subscription starts on first
        iteration and ends when the iterator is closed (or its consumer is cancelled)."""
        self._core.check_open()
        return self._stream(prefix, resume_index, resume_epoch)

    async def _stream(
        self, prefix: str, resume_index: int, resume_epoch: str
    ) -> AsyncGenerator[ConfigSnapshot | ConfigChange | Heartbeat, None]:
        sub: Subscriber[ConfigDelta] = Subscriber(
            self.queue_size, max_bytes=self.queue_bytes, weigh=weigh
        )
        async with self._core.subscribe(prefix, f"config under prefix {prefix!r}") as topic:
            for missed in topic.catch_up(resume_index, resume_epoch, self.queue_size // 2):
                sub.push(missed)
            topic.subscribers.add(sub)
            try:
                async for event in sub.stream(
                    self.heartbeat_interval,
                    lambda: Heartbeat(topic.freshness()),
                    lambda: [topic.snapshot(reset=True)],
                ):
                    yield event
            finally:
                topic.subscribers.discard(sub)
