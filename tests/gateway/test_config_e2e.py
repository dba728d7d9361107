"""Config through the gateway against the real Consul agent: coalescing and fan-out."""

from __future__ import annotations

import asyncio
import uuid

import consul
import grpc
import pytest

from latchkey.v1 import config_pb2
from latchkey_server.devstack.consul import ConsulAgent
from tests.fixtures.gateway import GatewayHandle, Stubs
from tests.gateway.helpers import eventually

SUBSCRIBERS = 200


async def test_200_watchers_share_one_upstream_query_and_all_get_the_change(
    gateway: GatewayHandle, stubs: Stubs, consul_agent: ConsulAgent
) -> None:
    prefix = f"e2e/fanout-{uuid.uuid4().hex[:8]}/"
    kv = consul.Consul(host="127.0.0.1", port=consul_agent.http_port).kv
    kv.put(prefix + "a", "1")
    adapter = gateway.gateway.components.consul
    streams = [
        stubs.config.Watch(
            config_pb2.WatchConfigRequest(prefix=prefix), metadata=gateway.metadata()
        )
        for _ in range(SUBSCRIBERS)
    ]
    try:
        firsts = await asyncio.gather(*(s.read() for s in streams))
        assert all(f.WhichOneof("event") == "snapshot" for f in firsts)
        assert all([e.key for e in f.snapshot.entries] == [prefix + "a"] for f in firsts)
        await eventually(
            lambda: adapter.in_flight("kv_list", prefix) == 1,
            what="the single upstream blocking query to be in flight",
        )
        kv.put(prefix + "b", "2")

        async def next_change(stream: grpc.aio.UnaryStreamCall) -> config_pb2.ConfigChange:  # type: ignore[type-arg]
            while True:
                event = await asyncio.wait_for(stream.read(), timeout=30)
                if event.WhichOneof("event") == "change":
                    return event.change

        changes = await asyncio.gather(*(next_change(s) for s in streams))
        for change in changes:
            assert [(c.type, c.key, c.entry.value) for c in change.changes] == [
                (config_pb2.CHANGE_TYPE_PUT, prefix + "b", b"2")
            ]
        # Still exactly one blocking query for the prefix, whatever the subscriber count.
        assert adapter.in_flight("kv_list", prefix) <= 1
    finally:
        for stream in streams:
            stream.cancel()


async def test_get_list_and_resume(
    gateway: GatewayHandle, stubs: Stubs, consul_agent: ConsulAgent
) -> None:
    prefix = f"e2e/resume-{uuid.uuid4().hex[:8]}/"
    kv = consul.Consul(host="127.0.0.1", port=consul_agent.http_port).kv
    kv.put(prefix + "x", "one")
    got = await stubs.config.Get(
        config_pb2.GetConfigRequest(key=prefix + "x"), metadata=gateway.metadata()
    )
    assert got.entry.value == b"one"
    listed = await stubs.config.List(
        config_pb2.ListConfigRequest(prefix=prefix), metadata=gateway.metadata()
    )
    assert [e.key for e in listed.entries] == [prefix + "x"]
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await stubs.config.Get(
            config_pb2.GetConfigRequest(key=prefix + "nope"), metadata=gateway.metadata()
        )
    assert err.value.code() == grpc.StatusCode.NOT_FOUND

    stream = stubs.config.Watch(
        config_pb2.WatchConfigRequest(prefix=prefix), metadata=gateway.metadata()
    )
    snapshot = (await stream.read()).snapshot
    last_index, epoch = snapshot.index, snapshot.epoch
    stream.cancel()
    # Changes made while the client is away...
    kv.put(prefix + "y", "two")
    kv.delete(prefix + "x")
    resumed = stubs.config.Watch(
        config_pb2.WatchConfigRequest(prefix=prefix, resume_index=last_index, resume_epoch=epoch),
        metadata=gateway.metadata(),
    )
    # ...reach the client as the missed changes, or as a snapshot (flagged reset) that replaces
    # what it held, possibly followed by changes the gateway saw after it.
    state = {e.key for e in snapshot.entries}
    try:
        while state != {prefix + "y"}:
            event = await asyncio.wait_for(resumed.read(), timeout=30)
            kind = event.WhichOneof("event")
            if kind == "snapshot":
                assert event.snapshot.reset
                state = {e.key for e in event.snapshot.entries}
            elif kind == "change":
                for c in event.change.changes:
                    if c.type == config_pb2.CHANGE_TYPE_DELETE:
                        state.discard(c.key)
                    else:
                        state.add(c.key)
    finally:
        resumed.cancel()
