"""The aiohttp Consul adapter against the real agent, plus a scripted HTTP server for failures."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Callable

import consul
import pytest
from aiohttp import web

from latchkey_server.devstack.consul import ConsulAgent
from latchkey_server.devstack.ports import free_ports
from latchkey_server.errors import InvalidArgument, NotFound, Unavailable
from latchkey_server.models import HealthStatus
from latchkey_server.upstreams.consul import (
    ConsulAdapter,
    ConsulConfig,
    ConsulSaturated,
    ConsulUnavailable,
    classify_checks,
    go_duration,
    read_timeout_for,
)


@pytest.fixture
async def adapter(consul_agent: ConsulAgent) -> AsyncIterator[ConsulAdapter]:
    async with ConsulAdapter(ConsulConfig(address=consul_agent.http_addr)) as a:
        yield a


def _client(agent: ConsulAgent) -> consul.Consul:
    return consul.Consul(host="127.0.0.1", port=agent.http_port)


# ---------------------------------------------------------------- real agent


async def test_kv_get_and_list(consul_agent: ConsulAgent, adapter: ConsulAdapter) -> None:
    c = _client(consul_agent)
    prefix = f"t/adapter/{uuid.uuid4().hex}/"
    c.kv.put(prefix + "b", "two")
    c.kv.put(prefix + "a", "one", flags=7)
    c.kv.put(prefix + "empty", "")
    index, entry = await adapter.kv_get(prefix + "a")
    assert (entry.key, entry.value, entry.flags) == (prefix + "a", b"one", 7)
    assert isinstance(index, int)
    assert index == entry.modify_index
    list_index, entries = await adapter.kv_list(prefix)
    assert [e.key for e in entries] == [prefix + "a", prefix + "b", prefix + "empty"]
    assert [e.value for e in entries] == [b"one", b"two", b""]
    assert list_index == max(e.modify_index for e in entries)
    assert adapter.requests_started["kv_get"] == 1
    assert adapter.requests_started["kv_list"] == 1
    assert adapter.requests_in_flight == 0


async def test_missing_key_and_empty_prefix(adapter: ConsulAdapter) -> None:
    with pytest.raises(NotFound):
        await adapter.kv_get(f"t/missing/{uuid.uuid4().hex}")
    index, entries = await adapter.kv_list(f"t/nothing/{uuid.uuid4().hex}/")
    assert entries == []
    assert index >= 1


async def test_blocking_list_returns_on_change(
    consul_agent: ConsulAgent, adapter: ConsulAdapter
) -> None:
    c = _client(consul_agent)
    prefix = f"t/block/{uuid.uuid4().hex}/"
    c.kv.put(prefix + "k", "v1")
    index, _ = await adapter.kv_list(prefix)
    pending = asyncio.create_task(adapter.kv_list(prefix, index=index, wait=30.0))
    deadline = asyncio.get_running_loop().time() + 10
    while adapter.in_flight("kv_list", prefix) != 1:  # parked in its blocking query
        assert asyncio.get_running_loop().time() < deadline
        await asyncio.sleep(0.01)
    c.kv.put(prefix + "k", "v2")
    async with asyncio.timeout(15):
        new_index, entries = await pending
    assert new_index > index
    assert entries[0].value == b"v2"
    assert adapter.in_flight("kv_list", prefix) == 0


async def test_health_classifies_each_instance_by_its_worst_check(
    consul_agent: ConsulAgent, adapter: ConsulAdapter
) -> None:
    c = _client(consul_agent)
    svc = f"adapt-{uuid.uuid4().hex[:8]}"
    for n, verdict in ((1, "pass"), (2, "warn"), (3, "fail")):
        c.agent.service.register(
            svc, service_id=f"{svc}-{n}", port=9000 + n, tags=["v1"], check=consul.Check.ttl("5m")
        )
        getattr(c.agent.check, f"ttl_{verdict}")(f"service:{svc}-{n}")
    try:
        index, instances = await adapter.health_service(svc)
        assert index >= 1
        health = {i.id: i.health for i in instances}
        assert health == {
            f"{svc}-1": HealthStatus.PASSING,
            f"{svc}-2": HealthStatus.WARNING,
            f"{svc}-3": HealthStatus.CRITICAL,
        }
        first = instances[0]
        assert first.address == "127.0.0.1"  # falls back to the node's address
        assert first.port == 9001
        assert first.tags == ("v1",)
        assert first.node == "latchkey-dev"
        assert first.datacenter == "dc1"
        _, none = await adapter.health_service(svc, tag="no-such-tag")
        assert none == []
        _, unknown = await adapter.health_service(f"nope-{uuid.uuid4().hex[:8]}")
        assert unknown == []
    finally:
        for n in (1, 2, 3):
            c.agent.service.deregister(f"{svc}-{n}")


def test_classify_checks() -> None:
    passing, warning, critical = ({"Status": s} for s in ("passing", "warning", "critical"))
    assert classify_checks([]) == HealthStatus.PASSING
    assert classify_checks([passing, warning]) == HealthStatus.WARNING
    assert classify_checks([warning, critical, passing]) == HealthStatus.CRITICAL
    assert classify_checks([{"Status": "maintenance"}]) == HealthStatus.CRITICAL


def test_timeouts_cover_the_servers_jitter() -> None:
    assert read_timeout_for(55.0, 5.0) == pytest.approx(55.0 + 55.0 / 16 + 5.0)
    assert go_duration(55.0) == "55000ms"


# ---------------------------------------------------------------- scripted server


class Scripted:
    """A tiny HTTP server: answers with `status`, records headers and queries."""

    def __init__(self) -> None:
        self.status = 200
        self.body = b"[]"
        self.index = "7"
        self.seen: list[tuple[dict[str, str], dict[str, str]]] = []
        self.hold: asyncio.Event | None = None
        self.hold_plain: asyncio.Event | None = None
        self.active = 0
        self.max_active = 0

    async def handle(self, request: web.Request) -> web.Response:
        self.seen.append((dict(request.headers), dict(request.query)))
        self.active += 1
        self.max_active = max(self.max_active, self.active)
        try:
            if self.hold is not None and "index" in request.query:
                await self.hold.wait()
            if self.hold_plain is not None and "index" not in request.query:
                await self.hold_plain.wait()
            return web.Response(
                status=self.status, body=self.body, headers={"X-Consul-Index": self.index}
            )
        finally:
            self.active -= 1


@pytest.fixture
async def scripted() -> AsyncIterator[tuple[Scripted, str]]:
    server = Scripted()
    app = web.Application()
    app.router.add_route("GET", "/{tail:.*}", server.handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    yield server, f"http://127.0.0.1:{port}"
    for event in (server.hold, server.hold_plain):
        if event is not None:
            event.set()
    await runner.cleanup()


async def test_environment_token_never_leaks(
    scripted: tuple[Scripted, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    server, url = scripted
    monkeypatch.setenv("CONSUL_HTTP_TOKEN", "env-token-must-not-leak")
    async with ConsulAdapter(ConsulConfig(address=url)) as plain:
        await plain.kv_list("p/")
    async with ConsulAdapter(ConsulConfig(address=url, token="configured")) as with_token:
        await with_token.kv_list("p/")
    assert "X-Consul-Token" not in server.seen[0][0]
    assert server.seen[1][0]["X-Consul-Token"] == "configured"
    assert all("env-token" not in str(headers) for headers, _ in server.seen)
    assert "configured" not in repr(with_token.settings)


async def test_blocking_params_only_with_an_index(scripted: tuple[Scripted, str]) -> None:
    server, url = scripted
    async with ConsulAdapter(ConsulConfig(address=url)) as a:
        index, entries = await a.kv_list("p/")
        await a.kv_list("p/", index=index, wait=30.0)
    assert (index, entries) == (7, [])
    assert "index" not in server.seen[0][1]
    assert "wait" not in server.seen[0][1]
    assert server.seen[1][1]["index"] == "7"
    assert server.seen[1][1]["wait"] == "30000ms"
    assert "recurse" in server.seen[1][1]


@pytest.mark.parametrize(("status", "error"), [(500, ConsulUnavailable), (403, ConsulUnavailable)])
async def test_server_errors_become_unavailable(
    scripted: tuple[Scripted, str], status: int, error: type[Exception]
) -> None:
    server, url = scripted
    server.status = status
    server.body = b"rpc error: secret-ish detail"
    async with ConsulAdapter(ConsulConfig(address=url, token="s3cr3t-t0ken")) as a:
        with pytest.raises(error) as info:
            await a.kv_list("p/")
    assert isinstance(info.value, Unavailable)
    assert info.value.retry_after is not None
    assert "secret-ish" not in str(info.value)
    assert "s3cr3t" not in str(info.value)


async def test_bad_request_is_invalid_argument(scripted: tuple[Scripted, str]) -> None:
    server, url = scripted
    server.status = 400
    async with ConsulAdapter(ConsulConfig(address=url)) as a:
        with pytest.raises(InvalidArgument):
            await a.kv_list("p/")


async def test_unreachable_agent_is_unavailable() -> None:
    (port,) = free_ports(1)
    async with ConsulAdapter(ConsulConfig(address=f"127.0.0.1:{port}")) as a:
        with pytest.raises(Unavailable):
            await a.kv_get("k")
        assert a.requests_in_flight == 0


async def test_blocking_queries_leave_a_reserve_of_the_connection_budget(
    scripted: tuple[Scripted, str],
) -> None:
    server, url = scripted
    server.hold = asyncio.Event()
    async with ConsulAdapter(ConsulConfig(address=url, connection_budget=4)) as a:
        assert a.blocking_capacity == 3
        blocked = [asyncio.create_task(a.kv_list(f"p{i}/", index=5, wait=30.0)) for i in range(5)]
        deadline = asyncio.get_running_loop().time() + 10
        while server.active < 3:
            assert asyncio.get_running_loop().time() < deadline
            await asyncio.sleep(0.01)
        assert a.in_flight("kv_list") == 5  # two of them wait for a slot
        await a.kv_list("plain/")  # a plain read still gets through on the reserve
        assert a.connections_open <= a.connection_budget
        server.hold.set()
        async with asyncio.timeout(10):
            await asyncio.gather(*blocked)
    assert server.max_active <= 4


async def _eventually(condition: Callable[[], bool], within: float = 10.0) -> None:
    """Poll an observable condition (a hang guard of `within` s, not a timing assertion)."""
    deadline = asyncio.get_running_loop().time() + within
    while not condition():
        assert asyncio.get_running_loop().time() < deadline, "condition not met in time"
        await asyncio.sleep(0.01)


async def test_plain_reads_never_queue_behind_blocking_queries(
    scripted: tuple[Scripted, str],
) -> None:
    server, url = scripted
    server.hold = asyncio.Event()
    async with ConsulAdapter(ConsulConfig(address=url, connection_budget=4)) as a:
        blocked = [asyncio.create_task(a.kv_list(f"p{i}/", index=5, wait=30.0)) for i in range(10)]
        deadline = asyncio.get_running_loop().time() + 10
        while server.active < a.blocking_capacity:
            assert asyncio.get_running_loop().time() < deadline
            await asyncio.sleep(0.01)
        async with asyncio.timeout(10):  # a hang guard, not a timing assertion
            for _ in range(5):
                await a.kv_list("plain/")
                await a.health_service("svc")
        assert a.reachable
        assert a.saturations == 0
        server.hold.set()
        async with asyncio.timeout(10):
            await asyncio.gather(*blocked)
    assert server.max_active <= 4


async def test_a_saturated_read_reserve_is_not_an_unreachable_consul(
    scripted: tuple[Scripted, str],
) -> None:
    server, url = scripted
    server.hold_plain = asyncio.Event()
    settings = ConsulConfig(address=url, connection_budget=2, pool_timeout=0.2)
    async with ConsulAdapter(settings) as a:
        assert (a.blocking_capacity, a.read_reserve) == (1, 1)
        first = asyncio.create_task(a.kv_list("a/"))
        await _eventually(lambda: server.active == 1)
        with pytest.raises(ConsulSaturated) as info:
            await a.kv_list("b/")
        assert isinstance(info.value, Unavailable)
        assert "saturated" in info.value.message
        assert "unreachable" not in info.value.message
        assert info.value.retry_after is not None
        assert a.reachable  # nothing failed on the network
        assert a.saturations == 1
        server.hold_plain.set()
        assert await first == (7, [])
        assert a.reachable
    assert server.max_active == 1


async def test_kv_tree_and_health_state(consul_agent: ConsulAgent, adapter: ConsulAdapter) -> None:
    c = _client(consul_agent)
    prefix = f"t/tree/{uuid.uuid4().hex}/"
    c.kv.put(prefix + "a", "1")
    c.kv.put(prefix + "b/c", "2")
    index, pairs = await adapter.kv_tree(prefix)
    _, entries = await adapter.kv_list(prefix)
    assert pairs == [(e.key, e.modify_index) for e in entries]
    waiting = asyncio.create_task(adapter.kv_tree(prefix, index=index, wait=30.0))
    await _eventually(lambda: adapter.in_flight("kv_tree", prefix) == 1)
    c.kv.delete(prefix + "a")  # a delete moves the index too
    async with asyncio.timeout(20):
        moved, after = await waiting
    assert moved > index
    assert [key for key, _ in after] == [prefix + "b/c"]

    svc = f"state-{uuid.uuid4().hex[:8]}"
    c.agent.service.register(svc, service_id=f"{svc}-1", port=9100, check=consul.Check.ttl("5m"))
    try:
        c.agent.check.ttl_warn(f"service:{svc}-1")
        _, checks = await adapter.health_state()
        mine = [ch for ch in checks if ch.service_name == svc]
        assert [(ch.service_id, ch.status) for ch in mine] == [(f"{svc}-1", "warning")]
        assert mine[0].modify_index > 0
        assert any(ch.check_id == "serfHealth" and not ch.service_id for ch in checks)
    finally:
        c.agent.service.deregister(f"{svc}-1")


async def test_real_reads_pass_while_all_blocking_slots_are_held(
    consul_agent: ConsulAgent,
) -> None:
    c = _client(consul_agent)
    key = f"t/held/{uuid.uuid4().hex}"
    c.kv.put(key, "v")
    settings = ConsulConfig(address=consul_agent.http_addr, connection_budget=8)
    async with ConsulAdapter(settings) as a:
        index, _ = await a.kv_list("t/held/none/")
        blocked = [
            asyncio.create_task(a.kv_list(f"t/held/none/{i}/", index=index, wait=30.0))
            for i in range(a.blocking_capacity + 5)
        ]
        try:
            await _eventually(lambda: a.connections_open >= a.blocking_capacity)
            async with asyncio.timeout(10):  # a hang guard, not a timing assertion
                _, got = await a.kv_get(key)
                _, listed = await a.kv_list(key)
            assert got.value == b"v"
            assert [e.key for e in listed] == [key]
            assert a.connections_open <= a.connection_budget
            assert a.reachable
        finally:
            for task in blocked:
                task.cancel()
            await asyncio.gather(*blocked, return_exceptions=True)
