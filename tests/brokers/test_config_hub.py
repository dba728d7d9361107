"""ConfigHub against the real Consul agent: coalescing, snapshots, changes, resumption."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator

import consul
import pytest

from latchkey_server.brokers.config_hub import ConfigHub
from latchkey_server.brokers.consul_watch import WatchSettings
from latchkey_server.devstack.consul import ConsulAgent
from latchkey_server.errors import NotFound
from latchkey_server.models import ChangeType, ConfigChange, ConfigSnapshot, Heartbeat
from latchkey_server.upstreams.consul import ConsulAdapter, ConsulConfig
from tests.brokers.helpers import next_data, next_event, until

FAST = WatchSettings(wait=55.0, backoff_base=0.05, backoff_cap=0.2)


@pytest.fixture
async def adapter(consul_agent: ConsulAgent) -> AsyncIterator[ConsulAdapter]:
    async with ConsulAdapter(ConsulConfig(address=consul_agent.http_addr)) as a:
        yield a


@pytest.fixture
def kv(consul_agent: ConsulAgent) -> consul.Consul.KV:
    """python-consul2's KV endpoint, for changing data behind the hub's back."""
    return consul.Consul(host="127.0.0.1", port=consul_agent.http_port).kv


def _prefix() -> str:
    return f"t/hub/{uuid.uuid4().hex}/"


async def test_200_watchers_share_one_blocking_query(
    adapter: ConsulAdapter, kv: consul.Consul.KV
) -> None:
    prefix = _prefix()
    kv.put(prefix + "a", "1")
    hub = ConfigHub(adapter, heartbeat_interval=0.2, linger=0.05, watch_settings=FAST)
    await hub.start()
    streams = [hub.watch(prefix) for _ in range(200)]
    try:
        firsts = await asyncio.gather(*(next_data(s) for s in streams))
        assert all(isinstance(e, ConfigSnapshot) for e in firsts)
        assert {tuple(en.value for en in e.entries) for e in firsts} == {(b"1",)}
        await until(lambda: adapter.in_flight("kv_list", prefix) == 1, what="watch parked")
        assert adapter.in_flight("kv_list", prefix) == 1
        assert adapter.requests_in_flight == 1
        assert hub.active_watches == 1
        assert adapter.requests_started["kv_list"] <= 3  # initial read + the blocking query

        kv.put(prefix + "b", "2")
        changes = await asyncio.gather(*(next_data(s) for s in streams))
        for change in changes:
            assert isinstance(change, ConfigChange)
            assert [(c.type, c.key) for c in change.changes] == [(ChangeType.PUT, prefix + "b")]
            assert change.changes[0].entry is not None
            assert change.changes[0].entry.value == b"2"
        assert len({c.index for c in changes}) == 1
        assert adapter.requests_started["kv_list"] <= 5
    finally:
        for s in streams:
            await s.aclose()
    # The last subscriber left: after the linger the upstream query is cancelled.
    await until(lambda: hub.active_watches == 0, what="watch stopped")
    await until(lambda: adapter.in_flight("kv_list", prefix) == 0, what="request cancelled")
    await hub.close()


async def test_snapshot_changes_and_resume(adapter: ConsulAdapter, kv: consul.Consul.KV) -> None:
    prefix = _prefix()
    kv.put(prefix + "a", "1")
    kv.put(prefix + "b", "2")
    hub = ConfigHub(adapter, heartbeat_interval=0.2, history=2, watch_settings=FAST)
    await hub.start()
    async with contextlib.aclosing(hub.watch(prefix)) as stream:
        snap = await next_data(stream)
        assert isinstance(snap, ConfigSnapshot)
        assert [(e.key, e.value) for e in snap.entries] == [
            (prefix + "a", b"1"),
            (prefix + "b", b"2"),
        ]
        index, _ = kv.get(prefix, recurse=True)
        assert snap.index == int(index)

        kv.put(prefix + "c", "3")
        put_c = await next_data(stream)
        assert isinstance(put_c, ConfigChange)
        (change,) = put_c.changes
        assert (change.type, change.key) == (ChangeType.PUT, prefix + "c")
        assert change.entry is not None
        assert change.entry.value == b"3"
        assert change.entry.modify_index == put_c.index > snap.index

        kv.delete(prefix + "a")
        delete_a = await next_data(stream)
        assert isinstance(delete_a, ConfigChange)
        assert [(c.type, c.key, c.entry) for c in delete_a.changes] == [
            (ChangeType.DELETE, prefix + "a", None)
        ]
        assert delete_a.index > put_c.index

        kv.put(prefix + "b", "22")
        put_b = await next_data(stream)
        assert isinstance(put_b, ConfigChange)
        assert [(c.key, c.entry.value if c.entry else None) for c in put_b.changes] == [
            (prefix + "b", b"22")
        ]
        index, _ = kv.get(prefix, recurse=True)
        assert put_b.index == int(index)
        assert put_b.freshness.index == put_b.index
        assert put_b.freshness.reachable
        assert not put_b.freshness.stale

        # Resume from a recent index of this epoch: the missed changes are replayed, in order.
        epoch = snap.epoch
        assert epoch
        resume = put_c.index
        async with contextlib.aclosing(hub.watch(prefix, resume, epoch)) as resumed:
            assert await next_data(resumed) == delete_a
            assert await next_data(resumed) == put_b

        # Too old for the (2-entry) history, from the future, or of no/another epoch: a fresh
        # snapshot flagged reset.
        for resume, resume_epoch in (
            (snap.index, epoch),
            (put_b.index + 1000, epoch),
            (put_c.index, ""),
            (put_c.index, "0123456789abcdef"),
        ):
            async with contextlib.aclosing(hub.watch(prefix, resume, resume_epoch)) as other:
                fresh = await next_data(other)
                assert isinstance(fresh, ConfigSnapshot)
                assert fresh.reset
                assert fresh.epoch == epoch
                assert [(e.key, e.value) for e in fresh.entries] == [
                    (prefix + "b", b"22"),
                    (prefix + "c", b"3"),
                ]
                assert fresh.index == put_b.index

        # Resume at the current index: nothing until the next change.
        async with contextlib.aclosing(hub.watch(prefix, put_b.index, epoch)) as current:
            assert isinstance(await next_event(current), Heartbeat)  # subscribed, nothing sent
            kv.put(prefix + "d", "4")
            nxt = await next_data(current)
            assert isinstance(nxt, ConfigChange)
            assert [c.key for c in nxt.changes] == [prefix + "d"]
            assert await next_data(stream) == nxt
    await hub.close()


async def test_get_and_list(adapter: ConsulAdapter, kv: consul.Consul.KV) -> None:
    prefix = _prefix()
    kv.put(prefix + "x", "10")
    kv.put(prefix + "sub/y", "20")
    hub = ConfigHub(adapter, heartbeat_interval=0.2, watch_settings=FAST)
    await hub.start()
    entry, fresh = await hub.get(prefix + "x")
    assert entry.value == b"10"
    assert fresh.index >= entry.modify_index
    assert fresh.reachable
    assert not fresh.stale
    with pytest.raises(NotFound):
        await hub.get(prefix + "nope")
    entries, _ = await hub.list(prefix + "sub/")
    assert [e.key for e in entries] == [prefix + "sub/y"]

    # With a live watch the reads come from its cache (no further upstream reads).
    async with contextlib.aclosing(hub.watch(prefix)) as stream:
        await next_data(stream)
        before = adapter.requests_started["kv_get"] + adapter.requests_started["kv_list"]
        entry, _ = await hub.get(prefix + "sub/y")
        assert entry.value == b"20"
        with pytest.raises(NotFound):
            await hub.get(prefix + "nope")
        entries, _ = await hub.list(prefix + "sub/")
        assert [e.key for e in entries] == [prefix + "sub/y"]
        after = adapter.requests_started["kv_get"] + adapter.requests_started["kv_list"]
        assert after == before
    await hub.close()


async def test_close_ends_streams_with_unavailable(adapter: ConsulAdapter) -> None:
    hub = ConfigHub(adapter, heartbeat_interval=0.2, watch_settings=FAST)
    await hub.start()
    stream = hub.watch(_prefix())
    await next_data(stream)
    await hub.close()
    from latchkey_server.errors import Unavailable

    with pytest.raises(Unavailable):
        await next_data(stream)
    assert adapter.requests_in_flight == 0
