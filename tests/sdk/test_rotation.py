"""`database.watch`: `.current` follows rotations, callbacks run, rotations are acknowledged,
and closing releases the lease (sync and async)."""

from __future__ import annotations

import asyncio
import queue

import latchkey
from tests.fixtures.gateway import GatewayHandle
from tests.gateway.helpers import can_login, eventually
from tests.sdk.conftest import Upstreams, sync_client


async def test_async_rotating_credentials(
    client: latchkey.AsyncClient, gateway: GatewayHandle, upstreams: Upstreams
) -> None:
    role = upstreams.short_role()
    rotated: asyncio.Queue[latchkey.DatabaseCredentials] = asyncio.Queue()
    async with await client.database.watch(role) as creds:
        first = creds.current
        assert first.password.get_secret_value() not in repr(creds)
        creds.on_rotate(rotated.put_nowait)
        new = await asyncio.wait_for(rotated.get(), 30)
        assert new.lease_id != first.lease_id
        assert creds.current == new
        assert await can_login(gateway.postgres, new.username, new.password.get_secret_value())

        async def old_gone() -> bool:
            return not await can_login(
                gateway.postgres, first.username, first.password.get_secret_value()
            )

        # acknowledged: the gateway revokes the old credential without waiting for the grace
        await eventually(old_gone, what="the old credential to be revoked after the ack")
        last = creds.current
    await eventually(
        lambda: last.lease_id not in {x.lease_id for x in gateway.gateway.components.leases.list()},
        what="closing the watch to release the lease",
    )


def _sync_watch(gateway: GatewayHandle, role: str) -> tuple[str, str]:
    rotated: queue.Queue[latchkey.DatabaseCredentials] = queue.Queue()
    with sync_client(gateway) as client, client.database.watch(role) as creds:
        first = creds.current
        creds.on_rotate(rotated.put)
        new = rotated.get(timeout=30)
        assert creds.current.lease_id == new.lease_id
        return first.lease_id, new.lease_id


async def test_sync_rotating_credentials(gateway: GatewayHandle, upstreams: Upstreams) -> None:
    role = upstreams.short_role()
    old, new = await asyncio.to_thread(_sync_watch, gateway, role)
    assert old != new
