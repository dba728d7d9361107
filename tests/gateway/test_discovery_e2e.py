"""Discovery through the gateway: passing only, and watches follow check flips."""

from __future__ import annotations

import asyncio
import uuid

import consul

from latchkey.v1 import discovery_pb2
from latchkey_server.devstack.consul import ConsulAgent
from tests.fixtures.gateway import GatewayHandle, Stubs


def _register(agent: ConsulAgent, service: str) -> consul.Consul:
    c = consul.Consul(host="127.0.0.1", port=agent.http_port)
    for n, status in ((1, "passing"), (2, "passing"), (3, "critical")):
        c.agent.service.register(
            service, service_id=f"{service}-{n}", address="127.0.0.1", port=9000 + n,
            check={"CheckID": f"{service}-{n}-ttl", "TTL": "600s", "Status": status},
        )  # fmt: skip
    return c


async def test_critical_dropped_and_flips_follow(
    gateway: GatewayHandle, stubs: Stubs, consul_agent: ConsulAgent
) -> None:
    service = f"svc-{uuid.uuid4().hex[:8]}"
    c = _register(consul_agent, service)
    reply = await stubs.discovery.GetHealthyInstances(
        discovery_pb2.GetHealthyInstancesRequest(service=service), metadata=gateway.metadata()
    )
    assert sorted(i.id for i in reply.instances) == [f"{service}-1", f"{service}-2"]
    assert all(i.health == discovery_pb2.HEALTH_STATUS_PASSING for i in reply.instances)

    stream = stubs.discovery.Watch(
        discovery_pb2.WatchServiceRequest(service=service), metadata=gateway.metadata()
    )

    async def next_set() -> list[str]:
        while True:
            event = await asyncio.wait_for(stream.read(), timeout=30)
            if event.WhichOneof("event") == "instances":
                return sorted(i.id for i in event.instances.instances)

    try:
        assert await next_set() == [f"{service}-1", f"{service}-2"]
        c.agent.check.ttl_fail(f"{service}-2-ttl")
        assert await next_set() == [f"{service}-1"]
        c.agent.check.ttl_pass(f"{service}-2-ttl")
        assert await next_set() == [f"{service}-1", f"{service}-2"]
        c.agent.check.ttl_warn(f"{service}-1-ttl")
        assert await next_set() == [f"{service}-2"]
    finally:
        stream.cancel()
    warn = await stubs.discovery.GetHealthyInstances(
        discovery_pb2.GetHealthyInstancesRequest(service=service, include_warning=True),
        metadata=gateway.metadata(),
    )
    health = {i.id: i.health for i in warn.instances}
    assert health == {
        f"{service}-1": discovery_pb2.HEALTH_STATUS_WARNING,
        f"{service}-2": discovery_pb2.HEALTH_STATUS_PASSING,
    }
