"""Overflow against the real Consul agent: with a small connection budget and many distinct
watches, every watch gets its data and its changes, and the budget is never exceeded."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import urllib.request
import uuid
from collections.abc import AsyncIterator
from typing import Any

from latchkey_server.brokers.config_hub import ConfigHub
from latchkey_server.brokers.consul_watch import WatchSettings
from latchkey_server.brokers.discovery_hub import DiscoveryHub
from latchkey_server.devstack.consul import ConsulAgent
from latchkey_server.models import ConfigChange, ConfigSnapshot, Heartbeat, ServiceQuery
from latchkey_server.upstreams.consul import ConsulAdapter, ConsulConfig
from tests.brokers.helpers import WAIT

FAST = WatchSettings(wait=55.0, backoff_base=0.05, backoff_cap=0.2)
BUDGET = 8


def _sockets_to(port: int) -> int:
    """Established TCP connections from this process to `port` (what the agent counts)."""
    inodes = set()
    for fd in os.listdir("/proc/self/fd"):
        with contextlib.suppress(OSError):
            target = os.readlink(f"/proc/self/fd/{fd}")
            if target.startswith("socket:["):
                inodes.add(target[8:-1])
    count = 0
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(OSError), open(table) as lines:
            for line in list(lines)[1:]:
                fields = line.split()
                remote_port = int(fields[2].rsplit(":", 1)[1], 16)
                if remote_port == port and fields[3] == "01" and fields[9] in inodes:
                    count += 1
    return count


class Sampler:
    """Samples the adapter's budget figures and reachability while a test runs."""

    def __init__(self, adapter: ConsulAdapter, port: int) -> None:
        self.adapter = adapter
        self.port = port
        self.baseline = _sockets_to(port)  # idle keep-alive sockets of earlier tests
        self.peak_sockets = 0
        self.peak_connections = 0
        self.peak_blocking_claims = 0
        self.unreachable_seen = False
        self._task: asyncio.Task[None] | None = None

    def sample(self) -> None:
        a = self.adapter
        self.peak_sockets = max(self.peak_sockets, _sockets_to(self.port) - self.baseline)
        self.peak_connections = max(self.peak_connections, a.connections_open)
        slots = a.watch_slots
        self.peak_blocking_claims = max(self.peak_blocking_claims, slots.dedicated + slots.shared)
        self.unreachable_seen |= not a.reachable

    async def _run(self) -> None:
        while True:
            self.sample()
            await asyncio.sleep(0.01)

    async def __aenter__(self) -> Sampler:
        self._task = asyncio.create_task(self._run())
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._task is not None
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        self.sample()


def _http(agent: ConsulAgent, method: str, path: str, body: bytes | None = None) -> None:
    url = f"http://127.0.0.1:{agent.http_port}{path}"
    req = urllib.request.Request(url, data=body, method=method)
    with urllib.request.urlopen(req, timeout=10) as resp:
        resp.read()


async def http(agent: ConsulAgent, method: str, path: str, body: bytes | None = None) -> None:
    await asyncio.to_thread(_http, agent, method, path, body)


async def next_data(stream: AsyncIterator[Any]) -> Any:
    """The next non-heartbeat event; every heartbeat on the way must say Consul is reachable."""
    async with asyncio.timeout(WAIT):
        while True:
            event = await anext(stream)
            if not isinstance(event, Heartbeat):
                return event
            assert event.freshness.reachable, "a stream reported Consul unreachable"


async def test_forty_prefixes_on_a_budget_of_eight(consul_agent: ConsulAgent) -> None:
    root = f"t/ovf/{uuid.uuid4().hex}/"
    prefixes = [f"{root}p{n:02d}/" for n in range(40)]
    for prefix in prefixes:
        await http(consul_agent, "PUT", f"/v1/kv/{prefix}k", b"0")
    settings = ConsulConfig(address=consul_agent.http_addr, connection_budget=BUDGET)
    async with (
        ConsulAdapter(settings) as adapter,
        Sampler(adapter, consul_agent.http_port) as sampler,
        contextlib.AsyncExitStack() as stack,
    ):
        hub = ConfigHub(adapter, heartbeat_interval=0.2, linger=0.05, watch_settings=FAST)
        stack.push_async_callback(hub.close)
        streams = [
            await stack.enter_async_context(contextlib.aclosing(hub.watch(p))) for p in prefixes
        ]
        snaps = await asyncio.gather(*(next_data(s) for s in streams))
        for prefix, snap in zip(prefixes, snaps, strict=True):
            assert isinstance(snap, ConfigSnapshot)
            assert [(e.key, e.value) for e in snap.entries] == [(prefix + "k", b"0")]
        assert hub.overflow_watches == adapter.overflow_watches > 0
        assert hub.active_watches == len(prefixes)

        for n, (prefix, stream) in enumerate(zip(prefixes, streams, strict=True)):
            await http(consul_agent, "PUT", f"/v1/kv/{prefix}k", str(n + 1).encode())
            change = await next_data(stream)
            assert isinstance(change, ConfigChange)
            assert [(c.key, c.entry.value if c.entry else None) for c in change.changes] == [
                (prefix + "k", str(n + 1).encode())
            ]
        await http(consul_agent, "DELETE", f"/v1/kv/{prefixes[-1]}k")
        gone = await next_data(streams[-1])
        assert [c.key for c in gone.changes] == [prefixes[-1] + "k"]
        assert adapter.in_flight("kv_tree") <= 1  # one shared query, whatever the overflow

    assert 0 < sampler.peak_sockets <= BUDGET  # 0 would mean the count is broken
    assert sampler.peak_connections <= BUDGET
    assert sampler.peak_blocking_claims <= adapter.blocking_capacity
    assert not sampler.unreachable_seen
    assert adapter.saturations == 0


async def test_thirty_services_on_a_budget_of_eight(consul_agent: ConsulAgent) -> None:
    tag = uuid.uuid4().hex[:8]
    names = [f"ovf-{tag}-{n:02d}" for n in range(30)]
    for n, name in enumerate(names):
        body = {
            "Name": name, "ID": f"{name}-1", "Address": "127.0.0.1", "Port": 21000 + n,
            "Check": {"CheckID": f"{name}-ttl", "TTL": "10m", "Status": "passing"},
        }  # fmt: skip
        await http(consul_agent, "PUT", "/v1/agent/service/register", json.dumps(body).encode())
    settings = ConsulConfig(address=consul_agent.http_addr, connection_budget=BUDGET)
    try:
        async with (
            ConsulAdapter(settings) as adapter,
            Sampler(adapter, consul_agent.http_port) as sampler,
            contextlib.AsyncExitStack() as stack,
        ):
            hub = DiscoveryHub(adapter, heartbeat_interval=0.2, linger=0.05, watch_settings=FAST)
            stack.push_async_callback(hub.close)
            streams = [
                await stack.enter_async_context(contextlib.aclosing(hub.watch(ServiceQuery(n))))
                for n in names
            ]
            firsts = await asyncio.gather(*(next_data(s) for s in streams))
            assert [[i.id for i in f.instances] for f in firsts] == [[f"{n}-1"] for n in names]
            overflow = [
                (name, stream)
                for name, stream in zip(names, streams, strict=True)
                if (topic := hub._core.get((name, "", ""))) is not None and topic.overflow
            ]
            assert len(overflow) == hub.overflow_watches > 0
            for name, stream in [overflow[0], overflow[-1], (names[0], streams[0])]:
                await http(consul_agent, "PUT", f"/v1/agent/check/fail/{name}-ttl")
                assert (await next_data(stream)).instances == ()
                await http(consul_agent, "PUT", f"/v1/agent/check/pass/{name}-ttl")
                assert [i.id for i in (await next_data(stream)).instances] == [f"{name}-1"]
            assert adapter.in_flight("health_state") <= 1
    finally:
        for name in names:
            await http(consul_agent, "PUT", f"/v1/agent/service/deregister/{name}-1")

    assert 0 < sampler.peak_sockets <= BUDGET  # 0 would mean the count is broken
    assert sampler.peak_connections <= BUDGET
    assert sampler.peak_blocking_claims <= adapter.blocking_capacity
    assert not sampler.unreachable_seen
    assert adapter.saturations == 0
