"""Consul dies mid-watch: the stream says so, serves stale, and resumes after a restart."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import consul

from latchkey.v1 import common_pb2, config_pb2
from latchkey_server.devstack.consul import ConsulAgent
from latchkey_server.devstack.postgres import PostgresCluster
from tests.fixtures.gateway import start_gateway, stubs_for


async def test_consul_restart_during_watch(
    demo_env: dict[str, Any], vault_server: Any, postgres: PostgresCluster, tmp_path: Path
) -> None:
    agent = ConsulAgent(tmp_path / "consul")
    await asyncio.to_thread(agent.start)
    handle = None
    try:
        handle = await start_gateway(
            demo_env, agent, vault_server, postgres, consul={"addr": agent.http_addr, "wait": 5}
        )
        kv = consul.Consul(host="127.0.0.1", port=agent.http_port).kv
        kv.put("outage/a", "before")
        async with handle.channel() as channel:
            stubs = stubs_for(channel)
            md = handle.metadata()
            stream = stubs.config.Watch(
                config_pb2.WatchConfigRequest(prefix="outage/"), metadata=md
            )
            first = await stream.read()
            assert [e.value for e in first.snapshot.entries] == [b"before"]

            await asyncio.to_thread(agent.kill)
            # The stream reports the outage explicitly instead of going quiet.
            while True:
                event = await asyncio.wait_for(stream.read(), timeout=30)
                if event.WhichOneof("event") != "heartbeat":
                    continue
                fresh = event.heartbeat.freshness
                if fresh.upstream == common_pb2.UPSTREAM_STATE_UNREACHABLE:
                    assert fresh.stale
                    break
            # Reads keep serving the last known value, marked stale.
            got = await stubs.config.Get(config_pb2.GetConfigRequest(key="outage/a"), metadata=md)
            assert got.entry.value == b"before"
            assert got.freshness.stale
            assert got.freshness.upstream == common_pb2.UPSTREAM_STATE_UNREACHABLE

            await asyncio.to_thread(agent.start)
            kv = consul.Consul(host="127.0.0.1", port=agent.http_port).kv
            kv.put("outage/b", "after")
            # The change made after the restart is delivered (as a change or a fresh snapshot).
            while True:
                event = await asyncio.wait_for(stream.read(), timeout=60)
                kind = event.WhichOneof("event")
                if kind == "change" and any(
                    c.key == "outage/b" and c.entry.value == b"after" for c in event.change.changes
                ):
                    break
                if kind == "snapshot" and any(
                    e.key == "outage/b" and e.value == b"after" for e in event.snapshot.entries
                ):
                    break
            stream.cancel()
    finally:
        if handle is not None:
            await handle.gateway.stop()
        await asyncio.to_thread(agent.stop)
