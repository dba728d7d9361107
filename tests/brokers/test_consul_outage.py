"""A dedicated Consul agent is killed and restarted under a live ConfigHub watch."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import consul
import pytest

from latchkey_server.brokers.config_hub import ConfigHub
from latchkey_server.devstack.consul import ConsulAgent
from latchkey_server.devstack.process import ComponentError
from latchkey_server.models import ChangeType, ConfigChange, ConfigSnapshot, Heartbeat
from latchkey_server.upstreams.consul import ConsulAdapter, ConsulSettings
from latchkey_server.upstreams.consul_watch import WatchSettings
from tests.brokers.helpers import WAIT, next_data, next_event, until
from tests.fixtures.components import register_component, unregister_component

FAST = WatchSettings(wait=55.0, burst=2, refill_interval=0.05, backoff_base=0.05, backoff_cap=0.2)


@pytest.fixture(params=["dev", "persistent"])
def own_agent(request: pytest.FixtureRequest, tmp_path: Path) -> Any:
    try:
        agent = ConsulAgent(tmp_path / "consul", persistent=request.param == "persistent")
        agent.start()
    except ComponentError as exc:
        pytest.fail(f"Consul is required for this test: {exc}", pytrace=False)
    register_component("consul (outage test)", agent)
    yield agent
    unregister_component("consul (outage test)")
    agent.stop()


@pytest.fixture
async def adapter(own_agent: ConsulAgent) -> AsyncIterator[ConsulAdapter]:
    async with ConsulAdapter(ConsulSettings(address=own_agent.http_addr)) as a:
        yield a


async def _until_event(stream: AsyncIterator[Any], match: Any) -> Any:
    async with asyncio.timeout(WAIT):
        while True:
            event = await next_event(stream)
            if match(event):
                return event


async def test_watch_survives_a_consul_restart(
    own_agent: ConsulAgent, adapter: ConsulAdapter
) -> None:
    kv = consul.Consul(host="127.0.0.1", port=own_agent.http_port).kv
    prefix = "app/outage/"
    kv.put(prefix + "before", "v1")
    hub = ConfigHub(adapter, heartbeat_interval=0.2, stale_limit=300.0, watch_settings=FAST)
    await hub.start()
    async with contextlib.aclosing(hub.watch(prefix)) as stream:
        snap = await next_data(stream)
        assert isinstance(snap, ConfigSnapshot)
        await until(lambda: adapter.in_flight("kv_list", prefix) == 1, what="watch parked")

        await asyncio.to_thread(own_agent.kill)
        down = await _until_event(
            stream, lambda e: isinstance(e, Heartbeat) and not e.freshness.reachable
        )
        assert down.freshness.stale
        assert down.freshness.confirmed_at is not None
        entry, fresh = await hub.get(prefix + "before")  # stale-if-error
        assert entry.value == b"v1"
        assert (fresh.stale, fresh.reachable) == (True, False)
        entries, _ = await hub.list(prefix)
        assert [e.key for e in entries] == [prefix + "before"]

        await asyncio.to_thread(own_agent.start)
        kv.put(prefix + "after", "v2")
        seen: list[ConfigChange] = []

        def delivered(event: Any) -> bool:
            if isinstance(event, ConfigChange):
                seen.append(event)
                return any(c.key == prefix + "after" for c in event.changes)
            return False

        arrived = await _until_event(stream, delivered)
        put = next(c for c in arrived.changes if c.key == prefix + "after")
        assert put.type is ChangeType.PUT
        assert put.entry is not None
        assert put.entry.value == b"v2"
        assert arrived.freshness.reachable
        assert not arrived.freshness.stale
        deleted = {c.key for e in seen for c in e.changes if c.type is ChangeType.DELETE}
        if own_agent.persistent:
            assert deleted == set()  # the data survived the restart
        else:
            assert deleted == {prefix + "before"}  # a -dev agent comes back empty
        entry, fresh = await hub.get(prefix + "after")
        assert entry.value == b"v2"
        assert not fresh.stale
    await hub.close()
