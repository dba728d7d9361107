"""ConfigHub behaviours that need precise control of the upstream: an in-memory fake Consul."""

from __future__ import annotations

import asyncio
import contextlib

import pytest

from latchkey_server.brokers.config_hub import ConfigHub, diff_entries
from latchkey_server.brokers.consul_watch import WatchSettings
from latchkey_server.errors import NotFound, Unavailable
from latchkey_server.models import ChangeType, ConfigChange, ConfigEntry, ConfigSnapshot, Heartbeat
from tests.brokers.helpers import FakeConsul, next_data, next_event, until

FAST = WatchSettings(wait=55.0, min_interval=0.001, backoff_base=0.01, backoff_cap=0.02)


def test_diff_entries() -> None:
    a1, a2 = ConfigEntry("a", b"1", 1, 1), ConfigEntry("a", b"2", 1, 5)
    b, c = ConfigEntry("b", b"x", 2, 2), ConfigEntry("c", b"y", 6, 6)
    changes = diff_entries({"a": a1, "b": b}, {"a": a2, "c": c})
    assert [(ch.type, ch.key, ch.entry) for ch in changes] == [
        (ChangeType.PUT, "a", a2),
        (ChangeType.DELETE, "b", None),
        (ChangeType.PUT, "c", c),
    ]
    assert diff_entries({"a": a1}, {"a": a1}) == []


async def test_slow_consumer_gets_a_fresh_snapshot_instead_of_lost_changes() -> None:
    fake = FakeConsul()
    fake.put("app/a", b"0")
    hub = ConfigHub(fake, heartbeat_interval=30.0, queue_size=4, watch_settings=FAST)
    async with contextlib.aclosing(hub.watch("app/")) as stream:
        assert isinstance(await next_data(stream), ConfigSnapshot)
        for n in range(10):  # the consumer reads nothing meanwhile
            fake.put(f"app/k{n}", str(n).encode())
            await until(lambda: fake.parked == [fake.index], what="watch caught up")
        resync = await next_data(stream)
        assert isinstance(resync, ConfigSnapshot)
        assert len(resync.entries) == 11
        assert resync.index == fake.index
        fake.delete("app/a")
        after = await next_data(stream)
        assert isinstance(after, ConfigChange)
        assert [(c.type, c.key) for c in after.changes] == [(ChangeType.DELETE, "app/a")]
    await hub.close()


async def test_concurrent_first_reads_share_one_read_watch() -> None:
    fake = FakeConsul()
    fake.put("cfg/x", b"1")
    fake.gate = asyncio.Event()
    hub = ConfigHub(fake, watch_settings=FAST)
    reads = [asyncio.create_task(hub.get("cfg/x")) for _ in range(50)]
    await until(lambda: fake.plain["kv_list"] == 1, what="first read started")
    fake.gate.set()
    results = await asyncio.gather(*reads)
    assert {entry.value for entry, _ in results} == {b"1"}
    assert fake.plain == {"kv_list": 1}  # one read for all fifty, and no kv_get
    assert hub.read_watches == 1
    await hub.close()


async def test_read_watch_serves_repeats_from_memory_then_stops() -> None:
    fake = FakeConsul()
    fake.put("cfg/y", b"1")
    hub = ConfigHub(fake, watch_settings=FAST, read_linger=0.2)
    for _ in range(20):
        entry, fresh = await hub.get("cfg/y")
        assert entry.value == b"1"
        assert not fresh.stale
    entries, _ = await hub.list("cfg/y")  # the same key as a prefix: the same watch
    assert [e.key for e in entries] == ["cfg/y"]
    assert fake.plain == {"kv_list": 1}
    await until(lambda: fake.parked == [fake.index], what="the read watch parked")
    fake.put("cfg/y", b"2")  # the watch follows, so the next reads see it without a read
    await until(lambda: fake.parked == [fake.index], what="the read watch caught up")
    entry, _ = await hub.get("cfg/y")
    assert entry.value == b"2"
    assert fake.plain == {"kv_list": 1}
    await until(lambda: hub.active_watches == 0, what="the read watch stopped after its linger")
    assert hub.read_watches == 0
    await hub.close()


async def test_past_the_read_watch_cap_reads_are_single_flight_plain_reads() -> None:
    fake = FakeConsul()
    for key in ("a/1", "a/2", "a/3"):
        fake.put(key, key.encode())
    hub = ConfigHub(fake, watch_settings=FAST, max_read_watches=2)
    for key in ("a/1", "a/2"):
        await hub.get(key)
    assert hub.read_watches == 2
    fake.gate = asyncio.Event()
    reads = [asyncio.create_task(hub.get("a/3")) for _ in range(20)]
    await until(lambda: fake.plain["kv_list"] == 3, what="the plain read started")
    fake.gate.set()
    results = await asyncio.gather(*reads)
    assert {entry.value for entry, _ in results} == {b"a/3"}
    assert fake.plain == {"kv_list": 3}  # two read watches' first reads + one plain read
    assert (hub.read_watches, hub.active_watches) == (2, 2)
    with pytest.raises(NotFound):
        await hub.get("a/none")  # also a plain read (past the cap), and it is missing
    await hub.close()


async def test_a_stopped_read_watch_leaves_its_state_for_stale_if_error() -> None:
    fake = FakeConsul()
    fake.put("keep/k", b"v1")
    hub = ConfigHub(fake, watch_settings=FAST, read_linger=0.01, stale_limit=300.0)
    entry, _ = await hub.get("keep/k")
    await until(lambda: hub.active_watches == 0, what="the read watch stopped")
    fake.set_down(True)
    entry, fresh = await hub.get("keep/k")  # a new read watch fails: the last good answer
    assert entry.value == b"v1"
    assert (fresh.stale, fresh.reachable) == (True, False)
    with pytest.raises(Unavailable):
        await hub.get("keep/missing")  # never read before: nothing to serve
    await hub.close()


async def test_the_last_change_of_a_burst_is_always_delivered() -> None:
    fake = FakeConsul()
    fake.put("burst/k", b"0")
    hub = ConfigHub(fake, heartbeat_interval=30.0, watch_settings=WatchSettings())  # defaults
    async with contextlib.aclosing(hub.watch("burst/")) as stream:
        assert isinstance(await next_data(stream), ConfigSnapshot)
        await until(lambda: fake.parked == [fake.index], what="watch parked")
        for n in range(1, 31):  # a burst: faster than the minimum interval between re-reads
            fake.put("burst/k", str(n).encode())
            if n % 3 == 0:
                await asyncio.sleep(0.01)  # spread the burst over several intervals
        seen: list[int] = []
        while not seen or seen[-1] != 30:
            change = await next_data(stream)
            assert isinstance(change, ConfigChange)
            (one,) = change.changes
            assert one.entry is not None
            seen.append(int(one.entry.value))
        assert seen == sorted(seen)  # in order; coalesced under the interval, never lost
    await hub.close()


async def test_outage_serves_stale_within_the_limit_and_recovers() -> None:
    fake = FakeConsul()
    fake.put("svc/k", b"v1")
    hub = ConfigHub(fake, heartbeat_interval=30.0, stale_limit=300.0, watch_settings=FAST)
    async with contextlib.aclosing(hub.watch("svc/")) as stream:
        await next_data(stream)
        fake.set_down(True)
        beat = await next_event(stream)  # immediate, not after the 30 s interval
        assert isinstance(beat, Heartbeat)
        assert (beat.freshness.reachable, beat.freshness.stale) == (False, True)
        entry, fresh = await hub.get("svc/k")
        assert entry.value == b"v1"
        assert (fresh.reachable, fresh.stale) == (False, True)
        with pytest.raises(NotFound):
            await hub.get("svc/missing")  # the watch's view is authoritative while in limit
        with pytest.raises(Unavailable):
            await hub.get("other/k")  # nothing known about it: the first read fails
        fake.set_down(False)
        beat = await next_event(stream)
        assert isinstance(beat, Heartbeat)
        assert (beat.freshness.reachable, beat.freshness.stale) == (True, False)
        fake.put("svc/k", b"v2")
        change = await next_data(stream)
        assert isinstance(change, ConfigChange)
        assert change.changes[0].entry is not None
        assert change.changes[0].entry.value == b"v2"
    await hub.close()


async def test_beyond_the_stale_limit_reads_fail_but_streams_keep_beating() -> None:
    fake = FakeConsul()
    fake.put("old/k", b"v1")
    hub = ConfigHub(fake, heartbeat_interval=0.05, stale_limit=0.001, watch_settings=FAST)
    async with contextlib.aclosing(hub.watch("old/")) as stream:
        await next_data(stream)
        fake.set_down(True)

        topic = hub._core.get("old/")
        assert topic is not None
        await until(lambda: not topic.usable(hub.stale_limit), what="past the stale limit")
        with pytest.raises(Unavailable) as info:
            await hub.get("old/k")
        assert info.value.retry_after is not None
        for _ in range(3):
            beat = await next_event(stream)
            assert isinstance(beat, Heartbeat)
            assert beat.freshness.stale
        with pytest.raises(Unavailable):
            await next_data(hub.watch("old/"))  # a new subscriber is refused
        fake.set_down(False)
        fake.put("old/k", b"v2")
        change = await next_data(stream)
        assert isinstance(change, ConfigChange)
        entry, fresh = await hub.get("old/k")
        assert entry.value == b"v2"
        assert not fresh.stale
    await hub.close()


async def test_first_read_failure_raises_unavailable() -> None:
    fake = FakeConsul()
    fake.set_down(True)
    hub = ConfigHub(fake, watch_settings=FAST, linger=0.01, read_linger=0.01)
    with pytest.raises(Unavailable):
        await next_data(hub.watch("new/"))
    with pytest.raises(Unavailable):
        await hub.list("new/")
    await until(lambda: hub.active_watches == 0, what="watch stopped after linger")
    await hub.close()


async def test_index_reset_is_diffed_into_changes_and_voids_history() -> None:
    fake = FakeConsul()
    for n in range(5):
        fake.put(f"r/k{n}", b"x")
    hub = ConfigHub(fake, heartbeat_interval=30.0, watch_settings=FAST)
    async with contextlib.aclosing(hub.watch("r/")) as stream:
        snap = await next_data(stream)
        old_index = snap.index
        # A restarted -dev agent: empty store, index starts over.
        fake.set_down(True)
        await next_event(stream)
        fake.kv.clear()
        fake.index = 1
        fake.set_down(False)
        # A new epoch: the open stream gets a snapshot flagged reset, with the new epoch.
        wiped = await next_data(stream)
        assert isinstance(wiped, ConfigSnapshot)
        assert wiped.reset
        assert wiped.entries == ()
        assert wiped.epoch != snap.epoch
        assert wiped.index < old_index
        fake.put("r/new", b"y")
        new = await next_data(stream)
        assert isinstance(new, ConfigChange)
        assert [c.key for c in new.changes] == ["r/new"]
        # An index from before the reset cannot be resumed: snapshot.
        async with contextlib.aclosing(hub.watch("r/", old_index, snap.epoch)) as other:
            fresh = await next_data(other)
            assert isinstance(fresh, ConfigSnapshot)
            assert fresh.reset
            assert [e.key for e in fresh.entries] == ["r/new"]
    await hub.close()
