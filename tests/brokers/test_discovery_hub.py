"""DiscoveryHub against the real Consul agent, with TTL checks flipped by python-consul2."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator, Iterator

import consul
import pytest

from latchkey_server.brokers.consul_watch import WatchSettings
from latchkey_server.brokers.discovery_hub import DiscoveryHub
from latchkey_server.devstack.consul import ConsulAgent
from latchkey_server.errors import NotFound
from latchkey_server.models import HealthStatus, InstanceSet, ServiceQuery
from latchkey_server.upstreams.consul import ConsulAdapter, ConsulConfig
from tests.brokers.helpers import next_data, until

FAST = WatchSettings(wait=55.0, backoff_base=0.05, backoff_cap=0.2)


@pytest.fixture
async def hub(consul_agent: ConsulAgent) -> AsyncIterator[DiscoveryHub]:
    async with ConsulAdapter(ConsulConfig(address=consul_agent.http_addr)) as adapter:
        h = DiscoveryHub(adapter, heartbeat_interval=0.2, linger=0.05, watch_settings=FAST)
        await h.start()
        yield h
        await h.close()


@pytest.fixture
def web(consul_agent: ConsulAgent) -> Iterator[tuple[str, consul.Consul.Agent.Check]]:
    """A `web-…` service: instance 1 and 2 passing, 3 critical (TTL checks)."""
    c = consul.Consul(host="127.0.0.1", port=consul_agent.http_port)
    name = f"web-{uuid.uuid4().hex[:8]}"
    for n in (1, 2, 3):
        c.agent.service.register(
            name,
            service_id=f"{name}-{n}",
            address=f"10.0.0.{n}",
            port=8000 + n,
            tags=["http"],
            meta={"zone": f"z{n}"},
            check=consul.Check.ttl("10m"),
        )
    c.agent.check.ttl_pass(f"service:{name}-1")
    c.agent.check.ttl_pass(f"service:{name}-2")
    c.agent.check.ttl_fail(f"service:{name}-3")
    yield name, c.agent.check
    for n in (1, 2, 3):
        c.agent.service.deregister(f"{name}-{n}")


def _ids(instances: InstanceSet) -> set[str]:
    return {i.id for i in instances.instances}


async def test_healthy_and_watch_follow_checks(
    hub: DiscoveryHub, web: tuple[str, consul.Consul.Agent.Check]
) -> None:
    name, checks = web
    now = await hub.healthy(ServiceQuery(name))
    assert _ids(now) == {f"{name}-1", f"{name}-2"}
    assert {i.health for i in now.instances} == {HealthStatus.PASSING}
    one = next(i for i in now.instances if i.id == f"{name}-1")
    assert (one.address, one.port, one.tags, one.meta) == (
        "10.0.0.1",
        8001,
        ("http",),
        {"zone": "z1"},
    )
    assert now.freshness.reachable
    assert now.index == now.freshness.index >= 1

    async with contextlib.aclosing(hub.watch(ServiceQuery(name))) as stream:
        first = await next_data(stream)
        assert _ids(first) == {f"{name}-1", f"{name}-2"}

        checks.ttl_fail(f"service:{name}-2")
        dropped = await next_data(stream)
        assert _ids(dropped) == {f"{name}-1"}
        assert dropped.index > first.index

        checks.ttl_pass(f"service:{name}-2")
        back = await next_data(stream)
        assert _ids(back) == {f"{name}-1", f"{name}-2"}

        # Warning instances: only for subscribers that ask for them, flagged WARNING.
        checks.ttl_warn(f"service:{name}-3")
        warn_query = ServiceQuery(name, include_warning=True)
        async with contextlib.aclosing(hub.watch(warn_query)) as warned:
            with_warning = await next_data(warned)
            if len(with_warning.instances) == 2:  # joined before the watch saw the flip
                with_warning = await next_data(warned)
            assert _ids(with_warning) == {f"{name}-1", f"{name}-2", f"{name}-3"}
            health = {i.id: i.health for i in with_warning.instances}
            assert health[f"{name}-3"] == HealthStatus.WARNING
            assert health[f"{name}-1"] == HealthStatus.PASSING
            # Both subscribers share one upstream watch.
            assert hub.active_watches == 1
            assert _ids(await hub.healthy(ServiceQuery(name))) == {f"{name}-1", f"{name}-2"}
            assert len((await hub.healthy(warn_query)).instances) == 3

            checks.ttl_fail(f"service:{name}-1")
            # The passing-only stream skipped the warning flip; its next event is this drop.
            assert _ids(await next_data(stream)) == {f"{name}-2"}
            assert _ids(await next_data(warned)) == {f"{name}-2", f"{name}-3"}
    await until(lambda: hub.active_watches == 0, what="watch stopped")


async def test_tag_filter_and_unknown_service(
    hub: DiscoveryHub, web: tuple[str, consul.Consul.Agent.Check]
) -> None:
    name, _ = web
    assert len((await hub.healthy(ServiceQuery(name, tag="http"))).instances) == 2
    with pytest.raises(NotFound, match="with tag 'grpc'"):
        await hub.healthy(ServiceQuery(name, tag="grpc"))
    unknown = f"none-{uuid.uuid4().hex[:8]}"
    with pytest.raises(NotFound, match=f"no instance of service '{unknown}'"):
        await hub.healthy(ServiceQuery(unknown))


async def test_many_watchers_one_upstream_query(
    consul_agent: ConsulAgent, web: tuple[str, consul.Consul.Agent.Check]
) -> None:
    name, _ = web
    async with ConsulAdapter(ConsulConfig(address=consul_agent.http_addr)) as adapter:
        hub = DiscoveryHub(adapter, heartbeat_interval=0.2, watch_settings=FAST)
        queries = [ServiceQuery(name, include_warning=bool(n % 2)) for n in range(50)]
        streams = [hub.watch(q) for q in queries]
        try:
            firsts = await asyncio.gather(*(next_data(s) for s in streams))
            assert all(_ids(f) == {f"{name}-1", f"{name}-2"} for f in firsts)
            target = f"{name}||"
            await until(lambda: adapter.in_flight("health_service", target) == 1)
            assert adapter.requests_started["health_service"] <= 3
        finally:
            for s in streams:
                await s.aclose()
            await hub.close()
