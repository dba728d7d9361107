"""Consul sessions and locks (`upstreams/_consul_sessions.py`) against the real agent."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator

import pytest

from latchkey_server.devstack.consul import ConsulAgent
from latchkey_server.errors import FailedPrecondition
from latchkey_server.upstreams._consul_sessions import ConsulSessions
from latchkey_server.upstreams.consul import ConsulAdapter, ConsulConfig, ConsulUnavailable
from latchkey_server.upstreams.session_port import SessionGone, SessionStore


@pytest.fixture
async def adapter(consul_agent: ConsulAgent) -> AsyncIterator[ConsulAdapter]:
    async with ConsulAdapter(ConsulConfig(address=consul_agent.http_addr)) as a:
        yield a


@pytest.fixture
def store(adapter: ConsulAdapter) -> SessionStore:
    return ConsulSessions(adapter)


def _key() -> str:
    return f"t/sessions/{uuid.uuid4().hex}"


async def test_a_lock_is_held_by_one_session_and_released_with_it(
    store: SessionStore, adapter: ConsulAdapter
) -> None:
    key = _key()
    first = await store.create_session("first", 10)
    second = await store.create_session("second", 10)
    assert await store.acquire(key, b"one", first)
    assert not await store.acquire(key, b"two", second)
    _, held = await store.read(key)
    assert held is not None
    assert (held.value, held.session) == (b"one", first)
    assert await store.renew_session(first)
    await store.destroy_session(first)
    assert not await store.renew_session(first)
    _, released = await store.read(key)
    assert released is not None
    assert released.session == ""
    assert await store.acquire(key, b"two", second), "no lock delay after the session ended"
    with pytest.raises(SessionGone):
        await store.acquire(key, b"x", first)
    assert await store.release(key, second)
    await store.destroy_session(second)
    assert adapter.requests_started["session_create"] == 2
    assert adapter.requests_in_flight == 0


async def test_an_unrenewed_session_is_invalidated_and_its_lock_released(
    store: SessionStore,
) -> None:
    key = _key()
    session = await store.create_session("short", 1)  # the test agents allow 1 s
    assert await store.acquire(key, b"v", session)
    index, record = await store.read(key)
    assert record is not None
    assert record.session == session
    async with asyncio.timeout(30):  # Consul ends it within twice the TTL
        while record is not None and record.session:
            index, record = await store.read(key, index=index, wait=5)
    assert not await store.renew_session(session)


async def test_tree_reads_block_and_deletes_check_and_set(store: SessionStore) -> None:
    prefix = _key() + "/"
    await store.put(prefix + "a", b"1")
    index, records = await store.read_tree(prefix)
    assert [(r.key, r.value, r.session) for r in records] == [(prefix + "a", b"1", "")]
    waiting = asyncio.create_task(store.read_tree(prefix, index=index, wait=10))
    await asyncio.sleep(0.2)  # let the blocking query reach the agent first
    assert not waiting.done()
    await store.put(prefix + "b", b"2")
    new_index, records = await asyncio.wait_for(waiting, 10)
    assert new_index > index
    assert [r.key for r in records] == [prefix + "a", prefix + "b"]
    stale = records[0].modify_index
    await store.put(prefix + "a", b"rewritten")
    assert not await store.delete(prefix + "a", cas=stale)
    assert await store.delete(prefix + "b")
    assert [r.key for r in (await store.read_tree(prefix))[1]] == [prefix + "a"]
    assert (await store.read(prefix + "missing"))[1] is None


async def test_a_ttl_below_the_servers_minimum_names_the_setting(tmp_path: object) -> None:
    agent = ConsulAgent(tmp_path / "consul")  # type: ignore[operator]
    await asyncio.to_thread(agent.start)
    try:
        async with ConsulAdapter(ConsulConfig(address=agent.http_addr)) as adapter:
            store = ConsulSessions(adapter)
            async with asyncio.timeout(30):  # a new agent registers its node first
                while True:
                    try:
                        await store.destroy_session(await store.create_session("ready", 10))
                        break
                    except ConsulUnavailable:
                        await asyncio.sleep(0.1)  # polling interval of the agent's readiness
            with pytest.raises(FailedPrecondition) as refused:
                await store.create_session("too short", 0.5)
        assert "replica.session_ttl" in refused.value.message
        assert "session_ttl_min" in refused.value.message
    finally:
        await asyncio.to_thread(agent.stop)
