"""Live config and cheap reads against the real Consul agent, with the shipped protection:
the last change of a burst arrives, a hot prefix cannot starve the others under the request
budget, and repeated one-shot reads cost one upstream query."""

from __future__ import annotations

import asyncio
import contextlib
import threading
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any

import consul
import pytest

from latchkey_server.brokers.config_hub import ConfigHub
from latchkey_server.brokers.discovery_hub import DiscoveryHub
from latchkey_server.devstack.consul import ConsulAgent
from latchkey_server.models import ChangeType, ConfigChange, ConfigSnapshot, ServiceQuery
from latchkey_server.upstreams.consul import ConsulAdapter, ConsulConfig
from tests.brokers.helpers import WAIT, next_data, until


@pytest.fixture
async def adapter(consul_agent: ConsulAgent) -> AsyncIterator[ConsulAdapter]:
    async with ConsulAdapter(ConsulConfig(address=consul_agent.http_addr)) as a:
        yield a


@pytest.fixture
def kv(consul_agent: ConsulAgent) -> consul.Consul.KV:
    return consul.Consul(host="127.0.0.1", port=consul_agent.http_port).kv


def _prefix() -> str:
    return f"t/live/{uuid.uuid4().hex}/"


def _value(change: Any) -> str:
    assert isinstance(change, ConfigChange)
    (one,) = change.changes
    assert one.type is ChangeType.PUT
    assert one.entry is not None
    return str(one.entry.value.decode())


async def test_repeated_config_reads_cost_one_upstream_query(
    adapter: ConsulAdapter, kv: consul.Consul.KV
) -> None:
    key = _prefix() + "level"
    kv.put(key, "debug")
    hub = ConfigHub(adapter, read_linger=60.0)  # shipped watch settings
    for _ in range(100):
        entry, fresh = await hub.get(key)
        assert entry.value == b"debug"
        assert not fresh.stale
    for _ in range(20):
        entries, _ = await hub.list(key)
        assert [e.key for e in entries] == [key]
    await until(lambda: adapter.in_flight("kv_list", key) == 1, what="the read watch parked")
    # The read watch's first read, then its one blocking query: nothing per read.
    assert adapter.requests_started == {"kv_list": 2}
    assert (hub.read_watches, hub.active_watches) == (1, 1)

    kv.put(key, "info")  # the watch follows; later reads see it, still without a request
    await until(lambda: adapter.requests_started["kv_list"] == 3, what="the watch re-read")
    await until(lambda: adapter.in_flight("kv_list", key) == 1, what="parked again")
    entry, _ = await hub.get(key)
    assert entry.value == b"info"
    assert adapter.requests_started == {"kv_list": 3}
    await hub.close()


@pytest.fixture
def api(consul_agent: ConsulAgent) -> Iterator[tuple[str, consul.Consul]]:
    c = consul.Consul(host="127.0.0.1", port=consul_agent.http_port)
    name = f"api-{uuid.uuid4().hex[:8]}"
    for n in (1, 2):
        c.agent.service.register(
            name, service_id=f"{name}-{n}", address=f"10.1.0.{n}", port=7000 + n,
            check={"CheckID": f"{name}-{n}-ttl", "TTL": "600s", "Status": "passing"},
        )  # fmt: skip
    yield name, c
    for n in (1, 2):
        c.agent.service.deregister(f"{name}-{n}")


async def test_repeated_healthy_reads_cost_one_upstream_query(
    adapter: ConsulAdapter, api: tuple[str, consul.Consul]
) -> None:
    name, c = api
    hub = DiscoveryHub(adapter, read_linger=60.0)
    for _ in range(100):
        got = await hub.healthy(ServiceQuery(name))
        assert {i.id for i in got.instances} == {f"{name}-1", f"{name}-2"}
    target = f"{name}||"
    await until(lambda: adapter.in_flight("health_service", target) == 1, what="parked")
    assert adapter.requests_started == {"health_service": 2}
    assert hub.read_watches == 1

    c.agent.check.ttl_fail(f"{name}-2-ttl")  # followed by the watch, not by the reads
    await until(lambda: adapter.requests_started["health_service"] == 3, what="re-read")
    got = await hub.healthy(ServiceQuery(name))
    assert {i.id for i in got.instances} == {f"{name}-1"}
    assert adapter.requests_started == {"health_service": 3}
    await hub.close()


async def test_the_last_change_of_a_burst_arrives(
    adapter: ConsulAdapter, kv: consul.Consul.KV
) -> None:
    prefix = _prefix()
    kv.put(prefix + "k", "0")
    hub = ConfigHub(adapter, heartbeat_interval=30.0)
    async with contextlib.aclosing(hub.watch(prefix)) as stream:
        assert isinstance(await next_data(stream), ConfigSnapshot)
        await until(lambda: adapter.in_flight("kv_list", prefix) == 1, what="watch parked")

        def burst() -> None:  # back to back, far faster than the 100 ms between re-reads
            for n in range(1, 41):
                kv.put(prefix + "k", str(n))

        await asyncio.to_thread(burst)
        seen: list[int] = []
        while not seen or seen[-1] != 40:
            seen.append(int(_value(await next_data(stream))))
        assert seen == sorted(seen)  # in order; coalesced, never lost
    await hub.close()


async def test_a_hot_prefix_cannot_starve_the_others_under_the_budget(
    consul_agent: ConsulAgent, kv: consul.Consul.KV
) -> None:
    # A budget of 20 requests/s; five hot prefixes would take 50/s (one re-read per 100 ms
    # each), so requests queue for tokens and the budget decides who goes next.
    config = ConsulConfig(address=consul_agent.http_addr, requests_per_second=20.0, burst=1)
    hot = [_prefix() for _ in range(5)]
    cold = [_prefix() for _ in range(5)]
    for prefix in hot + cold:
        kv.put(prefix + "k", "0")
    stop = threading.Event()
    churned: dict[str, int] = {}

    def churn() -> None:
        n = 0
        while not stop.is_set():
            n += 1
            for prefix in hot:
                kv.put(prefix + "k", str(n))
                churned[prefix] = n

    async with ConsulAdapter(config) as adapter, contextlib.AsyncExitStack() as stack:
        hub = ConfigHub(adapter, heartbeat_interval=30.0)
        streams = {
            p: await stack.enter_async_context(contextlib.aclosing(hub.watch(p)))
            for p in hot + cold
        }
        for stream in streams.values():
            assert isinstance(await next_data(stream), ConfigSnapshot)
        churner = asyncio.create_task(asyncio.to_thread(churn))
        try:
            await until(lambda: adapter.budget().waiting > 0, what="requests queue for tokens")
            for prefix in cold:
                await asyncio.to_thread(kv.put, prefix + "k", "cold")
            for prefix in cold:  # each arrives while the hot ones keep churning
                assert _value(await next_data(streams[prefix], WAIT)) == "cold"
            assert not churner.done()
        finally:
            stop.set()
            await churner
        for prefix in hot:  # and each hot one ends with its last value
            while _value(await next_data(streams[prefix])) != str(churned[prefix]):
                pass
        assert adapter.budget().waited > 0
        await hub.close()
