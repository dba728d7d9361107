"""Overflow watches with an in-memory Consul: beyond the blocking capacity, watches share one
blocking query and are re-read only when their own keys changed."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Any

from latchkey_server.brokers._overflow import Checks, HealthShared
from latchkey_server.brokers.config_hub import ConfigHub
from latchkey_server.brokers.consul_watch import WatchSettings
from latchkey_server.models import ChangeType, ConfigChange, ConfigSnapshot, Heartbeat
from latchkey_server.upstreams.consul import CheckState
from latchkey_server.upstreams.consul_port import WatchSlots
from tests.brokers.helpers import SlottedFake, next_data, next_event, until

FAST = WatchSettings(wait=55.0, min_interval=0.001, backoff_base=0.01, backoff_cap=0.02)
PREFIXES = [f"app/p{n:02d}/" for n in range(11)] + ["zzz/"]  # the last one widens the scope


def test_slots_keep_room_for_the_shared_queries() -> None:
    slots = WatchSlots(capacity=5, shared_reserve=2)
    assert [slots.try_dedicated() for _ in range(4)] == [True, True, True, False]
    slots.add_shared(1)
    slots.add_shared(1)
    slots.add_shared(1)  # a third datacenter: dedicated watches yield to it
    slots.release_dedicated()
    assert not slots.try_dedicated()
    slots.add_shared(-1)
    assert slots.try_dedicated()


async def _settled(fake: SlottedFake, hub: ConfigHub) -> None:
    dedicated = len(PREFIXES) - hub.overflow_watches
    await until(
        lambda: fake.blocking["kv_list"] == dedicated and fake.blocking["kv_tree"] == 1,
        what="dedicated watches and the shared query parked",
    )


async def test_overflow_watches_share_one_query_and_see_their_changes() -> None:
    fake = SlottedFake(capacity=4)  # 2 dedicated + the shared-query reserve
    for prefix in PREFIXES:
        fake.put(prefix + "k", b"0")
    hub = ConfigHub(fake, heartbeat_interval=30.0, linger=0.01, watch_settings=FAST)
    async with contextlib.AsyncExitStack() as stack:
        streams: list[AsyncIterator[Any]] = [
            await stack.enter_async_context(contextlib.aclosing(hub.watch(p))) for p in PREFIXES
        ]
        for prefix, stream in zip(PREFIXES, streams, strict=True):
            snap = await next_data(stream)
            assert isinstance(snap, ConfigSnapshot)
            assert [e.key for e in snap.entries] == [prefix + "k"]
        assert hub.overflow_watches == len(PREFIXES) - 2
        assert fake.watch_slots.overflow == len(PREFIXES) - 2
        await _settled(fake, hub)

        for n, (prefix, stream) in enumerate(zip(PREFIXES, streams, strict=True)):
            before = dict(fake.reads)
            fake.put(prefix + "k", str(n + 1).encode())
            change = await next_data(stream)
            assert isinstance(change, ConfigChange)
            assert [(c.type, c.key) for c in change.changes] == [(ChangeType.PUT, prefix + "k")]
            assert change.changes[0].entry is not None
            assert change.changes[0].entry.value == str(n + 1).encode()
            await _settled(fake, hub)
            # Only the prefix that changed was read again (a dedicated one not even that).
            reread = {p for p in PREFIXES if fake.reads[p] != before.get(p, 0)}
            assert reread <= {prefix}
        assert fake.peak_blocking <= 4

        # Deleted, then created again: both reach the overflow watch.
        last, stream = PREFIXES[-1], streams[-1]
        fake.delete(last + "k")
        gone = await next_data(stream)
        assert [(c.type, c.key) for c in gone.changes] == [(ChangeType.DELETE, last + "k")]
        fake.put(last + "k", b"again")
        back = await next_data(stream)
        assert [(c.type, c.key) for c in back.changes] == [(ChangeType.PUT, last + "k")]
    await until(lambda: hub.active_watches == 0, what="watches stopped after the linger")
    slots = fake.watch_slots
    assert (slots.dedicated, slots.shared, slots.overflow) == (0, 0, 0)
    await until(lambda: sum(fake.blocking.values()) == 0, what="blocking queries cancelled")
    await hub.close()


async def test_overflow_watch_reports_outage_and_recovers() -> None:
    fake = SlottedFake(capacity=3)  # 1 dedicated
    fake.put("a/k", b"1")
    fake.put("b/k", b"1")
    hub = ConfigHub(fake, heartbeat_interval=30.0, watch_settings=FAST)
    async with (
        contextlib.aclosing(hub.watch("a/")) as first,
        contextlib.aclosing(hub.watch("b/")) as overflow,
    ):
        await next_data(first)
        await next_data(overflow)
        topic = hub._core.get("b/")
        assert topic is not None
        assert topic.overflow
        await until(lambda: fake.blocking["kv_tree"] == 1, what="shared query parked")
        fake.set_down(True)
        beat = await next_event(overflow)
        assert isinstance(beat, Heartbeat)
        assert (beat.freshness.reachable, beat.freshness.stale) == (False, True)
        entry, fresh = await hub.get("b/k")  # stale-if-error from the overflow watch
        assert entry.value == b"1"
        assert fresh.stale
        fake.set_down(False)
        beat = await next_event(overflow)
        assert isinstance(beat, Heartbeat)
        assert beat.freshness.reachable
        fake.put("b/k", b"2")
        change = await next_data(overflow)
        assert isinstance(change, ConfigChange)
        assert change.changes[0].entry is not None
        assert change.changes[0].entry.value == b"2"
    await hub.close()


def _check(service: str, node: str, status: str, modify: int, check_id: str = "") -> CheckState:
    sid = f"{service}-1" if service else ""
    return CheckState(service, node, check_id or f"c-{service}-{node}", status, sid, modify)


def test_health_fingerprint_follows_own_and_node_checks_only() -> None:
    group = HealthShared.__new__(HealthShared)  # fingerprinting needs no upstream
    key = ("web", "", "")
    base = [
        _check("web", "n1", "passing", 5),
        _check("", "n1", "passing", 3, "serfHealth"),
        _check("db", "n2", "passing", 4),
        _check("", "n2", "passing", 3, "serfHealth"),
    ]
    fp = group.fingerprint(Checks(base), key)
    other = [*base[:2], _check("db", "n2", "critical", 9), base[3]]
    assert group.fingerprint(Checks(other), key) == fp  # another service's check
    node_down = [base[0], _check("", "n1", "critical", 9, "serfHealth"), *base[2:]]
    assert group.fingerprint(Checks(node_down), key) != fp  # its node failed
    flapped = [_check("web", "n1", "passing", 11), *base[1:]]
    assert group.fingerprint(Checks(flapped), key) != fp  # failed and back: a new index
