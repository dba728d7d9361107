"""Streams survive a gateway restart (resuming where they left off) and clients fail over
between two gateway processes."""

from __future__ import annotations

import asyncio
from typing import Any

import latchkey
from tests.fixtures.gateway import start_gateway
from tests.gateway.helpers import can_login, eventually
from tests.sdk.conftest import Upstreams

Event = latchkey.ConfigEvent | latchkey.StreamStatus


async def next_matching(events: asyncio.Queue[Any], predicate: Any, within: float = 30) -> Any:
    async def find() -> Any:
        while True:
            event = await events.get()
            if predicate(event):
                return event

    return await asyncio.wait_for(find(), within)


async def test_streams_resume_across_a_gateway_restart(
    demo_env: dict[str, Any], consul_agent: Any, vault_server: Any, postgres: Any,
    upstreams: Upstreams, unique: str,
) -> None:  # fmt: skip
    first = await start_gateway(demo_env, consul_agent, vault_server, postgres)
    port = first.addr.rsplit(":", 1)[1]
    prefix = f"restart/{unique}/"
    upstreams.put(prefix + "k", "1")
    events: asyncio.Queue[Event] = asyncio.Queue()
    client = latchkey.AsyncClient(first.addr, token=first.tokens["app"])
    try:
        await client.config.watch(prefix, events.put_nowait)
        await next_matching(events, lambda e: isinstance(e, latchkey.ConfigEvent))
        creds = await client.database.watch("demo-readonly")
        before = creds.current
        await first.gateway.stop()
        await next_matching(events, lambda e: getattr(e, "kind", "") == "unreachable")
        upstreams.put(prefix + "k", "2")  # changed while the gateway is down
        second = await start_gateway(
            demo_env, consul_agent, vault_server, postgres, listen=f"127.0.0.1:{port}"
        )
        try:
            await next_matching(events, lambda e: getattr(e, "kind", "") == "reconnected")
            seen = await next_matching(
                events,
                lambda e: (
                    isinstance(e, latchkey.ConfigEvent) and e.entries[prefix + "k"].text == "2"
                ),
            )
            assert seen.entries[prefix + "k"].text == "2"
            # The old gateway revoked its leases on shutdown: the watch moved to a new one.
            await eventually(lambda: creds.current.lease_id != before.lease_id, what="re-attach")
            now = creds.current
            assert await can_login(postgres, now.username, now.password.get_secret_value())
            await creds.aclose()
        finally:
            await client.aclose()
            await second.gateway.stop()
    finally:
        await client.aclose()


async def test_failover_between_two_gateways(
    demo_env: dict[str, Any], consul_agent: Any, vault_server: Any, postgres: Any,
    upstreams: Upstreams, unique: str,
) -> None:  # fmt: skip
    one = await start_gateway(demo_env, consul_agent, vault_server, postgres)
    two = await start_gateway(demo_env, consul_agent, vault_server, postgres)
    prefix = f"failover/{unique}/"
    upstreams.put(prefix + "k", "a")
    events: asyncio.Queue[Event] = asyncio.Queue()
    try:
        async with latchkey.AsyncClient([one.addr, two.addr], token=one.tokens["app"]) as client:
            assert (await client.status()).address == one.addr
            await client.config.watch(prefix, events.put_nowait)
            await next_matching(events, lambda e: isinstance(e, latchkey.ConfigEvent))
            await one.gateway.stop()
            status = await client.status()  # retried on the other gateway
            assert status.address == two.addr
            assert (await client.secrets.get("demo/app")).data["greeting"] == "hello from Vault"
            upstreams.put(prefix + "k", "b")
            await next_matching(
                events,
                lambda e: (
                    isinstance(e, latchkey.ConfigEvent) and e.entries[prefix + "k"].text == "b"
                ),
            )
    finally:
        await two.gateway.stop()
