"""Every AsyncClient call against the real stack (gateway, Consul, OpenBao, PostgreSQL)."""

from __future__ import annotations

import asyncio

import pytest
from pydantic import BaseModel

import latchkey
from tests.fixtures.gateway import GatewayHandle
from tests.gateway.helpers import can_login, eventually
from tests.sdk.conftest import Upstreams


async def test_secrets_get(client: latchkey.AsyncClient) -> None:
    secret = await client.secrets.get("demo/app")
    assert secret.data["greeting"] == "hello from Vault"
    assert secret.version >= 1
    assert secret.data["api_key"] not in repr(secret)
    again = await client.secrets.get("demo/app", mount="secret", version=secret.version)
    assert again.data == secret.data


async def test_errors_carry_their_code(
    client: latchkey.AsyncClient, gateway: GatewayHandle
) -> None:
    with pytest.raises(latchkey.NotFound) as missing:
        await client.secrets.get("demo/does-not-exist")
    assert missing.value.code is latchkey.StatusCode.NOT_FOUND
    with pytest.raises(latchkey.InvalidArgument) as bad:
        await client.secrets.get("../escape")
    assert bad.value.code is latchkey.StatusCode.INVALID_ARGUMENT
    async with latchkey.AsyncClient(gateway.addr, token="not-a-token") as stranger:
        with pytest.raises(latchkey.Unauthenticated):
            await stranger.status()
    creds = await client.database.credentials("demo-readonly")
    async with latchkey.AsyncClient(gateway.addr, token=gateway.tokens["other"]) as other:
        # Someone else's lease: the same NotFound as a lease that does not exist.
        with pytest.raises(latchkey.NotFound) as denied:
            await other.leases.renew(creds.lease_id)
    assert isinstance(denied.value, latchkey.StatusError)
    assert isinstance(denied.value.__cause__, Exception)


async def test_unavailable_is_retried_then_raised() -> None:
    async with latchkey.AsyncClient("127.0.0.1:1", retry_deadline=0.5) as nowhere:
        with pytest.raises(latchkey.Unavailable):
            await nowhere.status()


async def test_database_credentials_and_leases(
    client: latchkey.AsyncClient, gateway: GatewayHandle
) -> None:
    creds = await client.database.credentials("demo-readonly")
    password = creds.password.get_secret_value()
    assert password not in repr(creds)
    assert password not in str(creds)
    assert creds.expires_at is not None
    assert await can_login(gateway.postgres, creds.username, password)
    leases = await client.leases.list(role="demo-readonly")
    assert creds.lease_id in {lease.lease_id for lease in leases}
    renewed = await client.leases.renew(creds.lease_id)
    assert renewed.lease_id == creds.lease_id
    assert await client.leases.revoke(creds.lease_id, force=True) is True

    async def gone() -> bool:
        return not await can_login(gateway.postgres, creds.username, password)

    await eventually(gone, what="the revoked credential to stop working")


async def test_config_get_list_watch(
    client: latchkey.AsyncClient, upstreams: Upstreams, unique: str
) -> None:
    prefix = f"sdk/{unique}/"
    upstreams.put(prefix + "a", "1")
    assert (await client.config.get(prefix + "a")).text == "1"
    assert [e.key for e in await client.config.list(prefix)] == [prefix + "a"]
    with pytest.raises(latchkey.NotFound):
        await client.config.get(prefix + "missing")
    events: asyncio.Queue[latchkey.ConfigEvent | latchkey.StreamStatus] = asyncio.Queue()
    watch = await client.config.watch(prefix, events.put_nowait)
    first = await asyncio.wait_for(events.get(), 10)
    assert isinstance(first, latchkey.ConfigEvent)
    assert first.kind == "snapshot"
    upstreams.put(prefix + "b", "2")
    while True:
        event = await asyncio.wait_for(events.get(), 10)
        if isinstance(event, latchkey.ConfigEvent) and prefix + "b" in event.entries:
            break
    assert event.entries[prefix + "a"].text == "1"
    await watch.aclose()
    assert watch.closed


class Pool(BaseModel):
    size: int
    name: str = "default"
    flags: dict[str, bool] = {}


async def test_config_bind_keeps_last_good_value(
    client: latchkey.AsyncClient, upstreams: Upstreams, unique: str
) -> None:
    prefix = f"bind/{unique}"
    upstreams.put(prefix + "/size", "4")
    upstreams.put(prefix + "/flags", '{"fast": true}')
    errors: list[Exception] = []
    pool = await client.config.bind(prefix, Pool, on_error=errors.append)
    assert pool.size == 4
    assert pool.flags == {"fast": True}
    upstreams.put(prefix + "/size", "8")
    await eventually(lambda: pool.size == 8, what="the bound model to follow the change")
    upstreams.put(prefix + "/size", "not a number")
    await eventually(lambda: len(errors) == 1, what="the validation error to be reported")
    assert pool.size == 8
    upstreams.put(prefix + "/name", '"primary"')
    upstreams.put(prefix + "/size", "16")
    await eventually(lambda: pool.size == 16 and pool.name == "primary", what="recovery")


async def test_services_healthy_watch_pick(
    client: latchkey.AsyncClient, upstreams: Upstreams, unique: str
) -> None:
    name = f"svc-{unique}"
    a = upstreams.register(name, 1, tags=("blue",))
    upstreams.register(name, 2)
    upstreams.register(name, 3, status="critical")
    healthy = await client.services.healthy(name)
    assert sorted(i.id for i in healthy) == [a, f"{name}-2"]
    assert [i.id for i in await client.services.healthy(name, tag="blue")] == [a]
    events: asyncio.Queue[latchkey.ServiceEvent | latchkey.StreamStatus] = asyncio.Queue()
    watch = await client.services.watch(name, events.put_nowait)
    first = await asyncio.wait_for(events.get(), 10)
    assert isinstance(first, latchkey.ServiceEvent)
    assert len(first.instances) == 2
    picks = {(await client.services.pick(name)).id for _ in range(4)}
    assert picks == {a, f"{name}-2"}
    assert (await client.services.pick(name, strategy="random")).id in picks
    upstreams.set_health(a, "critical")
    while True:
        event = await asyncio.wait_for(events.get(), 10)
        if isinstance(event, latchkey.ServiceEvent) and len(event.instances) == 1:
            break

    async def only_two_left() -> bool:
        return {(await client.services.pick(name)).id for _ in range(3)} == {f"{name}-2"}

    await eventually(only_two_left, what="pick to follow the live set")
    await watch.aclose()
    with pytest.raises(latchkey.NoHealthyInstances):
        await client.services.pick(f"nothing-{unique}")


async def test_status(client: latchkey.AsyncClient, gateway: GatewayHandle) -> None:
    status = await client.status()
    assert status.identity == "app"
    assert status.auth_method == "token"
    assert {u.name for u in status.upstreams} == {"vault", "consul"}
    assert status.address == gateway.addr
