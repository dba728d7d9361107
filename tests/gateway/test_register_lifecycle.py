"""A registration across the gateway's life: a draining gateway deregisters its instances
before it ends their streams, and the SDK registers the same instance again on the next
gateway; Consul's own view (the agent's service list) agrees at each step."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import consul

import latchkey
from latchkey_server.devstack.consul import ConsulAgent
from latchkey_server.devstack.postgres import PostgresCluster
from tests.fixtures.gateway import GatewayHandle, start_gateway
from tests.gateway.helpers import eventually
from tests.gateway.test_register_e2e import WAIT, discovery


async def test_drain_deregisters_and_the_sdk_registers_again_elsewhere(
    gateway: GatewayHandle, demo_env: dict[str, Any], consul_agent: ConsulAgent,
    vault_server: Any, postgres: PostgresCluster,
) -> None:  # fmt: skip
    agent = consul.Consul(host="127.0.0.1", port=consul_agent.http_port).agent
    service = f"life-{uuid.uuid4().hex[:8]}"
    instance = f"{service}-1"
    first = await start_gateway(demo_env, consul_agent, vault_server, postgres)
    second = await start_gateway(demo_env, consul_agent, vault_server, postgres)
    statuses: asyncio.Queue[latchkey.StreamStatus] = asyncio.Queue()
    try:
        async with (
            latchkey.AsyncClient(
                f"{first.addr},{second.addr}", token=gateway.tokens["app"]
            ) as client,
            discovery(gateway, service) as seen,
        ):
            registration = client.services.register(
                service, instance_id=instance, port=3000, ttl=True
            )
            registration.on_status(statuses.put_nowait)
            async with registration as reg:
                assert reg.instance_id == instance
                await seen.until(lambda ids: ids == {instance}, "registered through the first")
                await first.gateway.stop()  # drains: deregisters, then ends the stream
                async with asyncio.timeout(WAIT):
                    while (await statuses.get()).kind != "reconnected":
                        pass
                assert client.address == second.addr
                await seen.until(lambda ids: ids == {instance}, "registered again, same id")
                await eventually(
                    lambda: instance in agent.services(), what="the agent to list it again"
                )
            await seen.until(lambda ids: not ids, "gone once the registration closed")
            await eventually(lambda: instance not in agent.services(), what="deregistered")
    finally:
        await first.gateway.stop()
        await second.gateway.stop()
