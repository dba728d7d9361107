"""`client.services.register` (sync and async) against the real gateway and Consul agent: the
instance is passing for discovery while the `with` block runs and gone after it; its status
follows a real HTTP health endpoint; bad arguments and a missing capability raise the SDK's
errors."""

from __future__ import annotations

import asyncio
import uuid

import pytest

import latchkey
from tests.fixtures.gateway import GatewayHandle
from tests.gateway.test_register_e2e import discovery, health_server
from tests.sdk.conftest import sync_client

WAIT = 30.0


async def test_async_register_with_an_http_check(gateway: GatewayHandle) -> None:
    service = f"sdk-{uuid.uuid4().hex[:8]}"
    changes: asyncio.Queue[latchkey.RegistrationHealth] = asyncio.Queue()
    with health_server() as app:
        async with latchkey.AsyncClient(gateway.addr, token=gateway.tokens["app"]) as client:
            registration = client.services.register(
                service, port=3000, tags=["api", "v1"], http_check=app.url, interval="1s",
                timeout="1s",
            )  # fmt: skip
            registration.on_change(changes.put_nowait)
            async with registration as reg, discovery(gateway, service) as seen:
                assert reg.instance_id.startswith(service + "-")
                await seen.until(lambda ids: ids == {reg.instance_id}, "passing")
                # The registration's own stream hears of the check from its own watch: it may
                # follow discovery by a moment.
                async with asyncio.timeout(WAIT):
                    while reg.status != "passing":
                        await changes.get()
                while not changes.empty():  # Consul starts a check critical until it first runs
                    changes.get_nowait()
                app.healthy = False
                async with asyncio.timeout(WAIT):
                    while (await changes.get()).status != "critical":
                        pass
                assert reg.status == "critical"
                assert reg.health is not None
                assert "500" in reg.health.checks[0].output
                await seen.until(lambda ids: not ids, "critical: not served")
            await seen.until(lambda ids: not ids, "gone after the block")


async def test_sync_register_ttl(gateway: GatewayHandle) -> None:
    service = f"sdk-{uuid.uuid4().hex[:8]}"

    def hold(ready: asyncio.Event, done: asyncio.Event, loop: asyncio.AbstractEventLoop) -> str:
        with (
            sync_client(gateway) as client,
            client.services.register(service, port=8080, ttl=True) as reg,
        ):
            loop.call_soon_threadsafe(ready.set)
            asyncio.run_coroutine_threadsafe(done.wait(), loop).result(WAIT)
            return reg.instance_id

    ready, done = asyncio.Event(), asyncio.Event()
    holder = asyncio.create_task(asyncio.to_thread(hold, ready, done, asyncio.get_running_loop()))
    await asyncio.wait_for(ready.wait(), WAIT)
    async with discovery(gateway, service) as seen:
        await seen.until(lambda ids: len(ids) == 1, "the sync registration passing")
        done.set()
        instance_id = await asyncio.wait_for(holder, WAIT)
        assert seen.ids in ({instance_id}, set())
        await seen.until(lambda ids: not ids, "gone after the with block")


async def test_register_errors(gateway: GatewayHandle) -> None:
    async with latchkey.AsyncClient(gateway.addr, token=gateway.tokens["app"]) as client:
        with pytest.raises(latchkey.InvalidArgument, match="interval"):
            async with client.services.register("x", port=1, tcp_check="h:1", interval="soon"):
                pass
