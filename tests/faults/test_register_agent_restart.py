"""A registration outlives a Consul agent restart: while the agent is down the stream says so
(a heartbeat: stale, upstream UNREACHABLE); the restarted `-dev` agent comes back empty, the
gateway notices (its TTL pass names an unknown check, or the checks it saw are gone) and
registers the instance again, and the stream is fresh again."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import consul
import grpc
import pytest

from latchkey.v1 import common_pb2, discovery_pb2, discovery_pb2_grpc
from latchkey_server.devstack.consul import ConsulAgent
from tests.faults.conftest import GatewayFactory
from tests.gateway.helpers import eventually

pytestmark = pytest.mark.faults

WAIT = 60.0


async def _until(call: Any, kind: str, test: Any = lambda e: True) -> Any:
    async with asyncio.timeout(WAIT):
        while True:
            event = await call.read()
            assert event is not grpc.aio.EOF, "the register stream ended"
            if event.WhichOneof("event") == kind and test(event):
                return event


async def test_registered_again_after_the_agent_restarts(
    gateway_process: GatewayFactory, private_consul: ConsulAgent
) -> None:
    gw = gateway_process("register-restart", consul=private_consul)
    service = f"restart-{uuid.uuid4().hex[:8]}"
    instance = f"{service}-1"

    def listed() -> bool:
        agent = consul.Consul(host="127.0.0.1", port=private_consul.http_port).agent
        return instance in agent.services()

    async with grpc.aio.insecure_channel(gw.addr) as channel:
        call = discovery_pb2_grpc.DiscoveryStub(channel).Register(
            discovery_pb2.RegisterRequest(service=service, id=instance, port=3000),
            metadata=gw.metadata(),
        )
        await _until(call, "registered")
        passing = discovery_pb2.HEALTH_STATUS_PASSING
        await _until(call, "health", lambda e: e.health.status == passing)
        assert listed()
        await asyncio.to_thread(private_consul.stop)
        down = await _until(call, "heartbeat", lambda e: e.heartbeat.freshness.stale)
        assert down.heartbeat.freshness.upstream == common_pb2.UPSTREAM_STATE_UNREACHABLE
        await asyncio.to_thread(private_consul.start)  # comes back empty
        await eventually(listed, within=WAIT, what="the instance registered again")
        await _until(call, "heartbeat", lambda e: not e.heartbeat.freshness.stale)
        call.cancel()
    await eventually(lambda: not listed(), within=WAIT, what="deregistered after the stream")
    assert '"level": "ERROR"' not in gw.log_text()
