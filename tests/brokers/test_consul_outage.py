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
from latchkey_server.brokers.consul_watch import WatchSettings
from latchkey_server.devstack.consul import ConsulAgent
from latchkey_server.devstack.process import ComponentError
from latchkey_server.models import ChangeType, ConfigChange, ConfigSnapshot, Heartbeat
from latchkey_server.upstreams.consul import ConsulAdapter, ConsulConfig
from tests.brokers.helpers import WAIT, next_data, next_event, until
from tests.fixtures.components import register_component, unregister_component

FAST = WatchSettings(wait=55.0, backoff_base=0.05, backoff_cap=0.2)


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
    async with ConsulAdapter(ConsulConfig(address=own_agent.http_addr)) as a:
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
        # The client's state follows snapshots (which replace it: a -dev agent that came back
        # with a lower index starts a new epoch, announced by a snapshot flagged reset) and
        # changes, until "after" arrives.
        state = {e.key: e.value for e in snap.entries}
        last: list[ConfigSnapshot | ConfigChange] = []

        def delivered(event: Any) -> bool:
            if isinstance(event, ConfigSnapshot):
                assert event.reset
                state.clear()
                state.update({e.key: e.value for e in event.entries})
            elif isinstance(event, ConfigChange):
                for c in event.changes:
                    if c.type is ChangeType.DELETE:
                        state.pop(c.key, None)
                    else:
                        assert c.entry is not None
                        state[c.key] = c.entry.value
            else:
                return False
            last[:] = [event]
            return prefix + "after" in state

        await _until_event(stream, delivered)
        assert state[prefix + "after"] == b"v2"
        assert last[0].freshness.reachable
        assert not last[0].freshness.stale
        if own_agent.persistent:
            assert set(state) == {prefix + "before", prefix + "after"}  # the data survived
        else:
            assert set(state) == {prefix + "after"}  # a -dev agent comes back empty
        entry, fresh = await hub.get(prefix + "after")
        assert entry.value == b"v2"
        assert not fresh.stale
    await hub.close()
