"""LeaseBroker end to end: the real adapter, OpenBao's database engine, real PostgreSQL.

Every credential check is a real PostgreSQL login with scram-sha-256 passwords.
"""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import AsyncGenerator, AsyncIterator
from contextlib import aclosing
from pathlib import Path
from typing import Any

import pytest

from latchkey_server.brokers.leases import LeaseBroker
from latchkey_server.models import (
    Credential,
    CredentialEvent,
    CredentialHeartbeat,
    CredentialIssued,
    CredentialRevoked,
    CredentialRotation,
)
from latchkey_server.upstreams.vault import TokenAuth, VaultAdapter, VaultAdapterConfig
from tests.fixtures.vault import VaultDatabase
from tests.upstreams.vault.gateway_auth import LOGIN_METHODS, set_up_login

WAIT = 30.0
CREATE = [
    "CREATE ROLE \"{{name}}\" WITH LOGIN PASSWORD '{{password}}' VALID UNTIL '{{expiration}}';"
]


async def next_of(stream: AsyncIterator[CredentialEvent], kind: type, within: float = WAIT) -> Any:
    async with asyncio.timeout(within):
        while True:
            event = await anext(stream)
            if isinstance(event, kind):
                return event


async def issued(stream: AsyncIterator[CredentialEvent]) -> Credential:
    event = await asyncio.wait_for(anext(stream), WAIT)
    assert isinstance(event, CredentialIssued)
    return event.credential


async def can_login(db: VaultDatabase, cred: Credential) -> bool:
    return await asyncio.to_thread(db.postgres.can_login, cred.username, cred.password)


def make_role(db: VaultDatabase, default_ttl: int, max_ttl: int) -> str:
    name = f"r{secrets.token_hex(3)}"
    db.vault.client().secrets.database.create_role(
        name=name,
        db_name=db.db_name,
        creation_statements=CREATE,
        default_ttl=default_ttl,
        max_ttl=max_ttl,
        mount_point=db.mount_point,
    )
    return name


def gateway_policy(db: VaultDatabase) -> str:
    """What a least-privileged gateway needs for database credentials."""
    mount = db.mount_point
    return f"""
path "{mount}/creds/*" {{ capabilities = ["read"] }}
path "{mount}/roles/*" {{ capabilities = ["read"] }}
path "sys/mounts/{mount}/tune" {{ capabilities = ["read"] }}
path "sys/leases/renew" {{ capabilities = ["update"] }}
path "sys/leases/revoke" {{ capabilities = ["update"] }}
"""


@pytest.fixture
async def adapter(vault_database: VaultDatabase) -> AsyncGenerator[VaultAdapter, None]:
    vault = vault_database.vault
    adapter = VaultAdapter(VaultAdapterConfig(addr=vault.addr, auth=TokenAuth(vault.root_token)))
    yield adapter
    await adapter.close()


@pytest.fixture
async def broker(
    vault_database: VaultDatabase, adapter: VaultAdapter
) -> AsyncGenerator[LeaseBroker, None]:
    broker = LeaseBroker(adapter, mount=vault_database.mount_point, unheld_grace=60.0)
    await broker.start()
    yield broker
    await broker.close()


async def test_brokered_credentials_log_in_until_released(
    vault_database: VaultDatabase, broker: LeaseBroker
) -> None:
    role = make_role(vault_database, default_ttl=300, max_ttl=600)
    cred = await broker.acquire("app", role)
    assert cred.username.startswith("v-")
    assert await can_login(vault_database, cred)
    assert (await broker.acquire("app", role)).lease_id == cred.lease_id
    assert await broker.release("app", cred.lease_id) is False
    assert await can_login(vault_database, cred)
    assert await broker.release("app", cred.lease_id) is True
    assert not await can_login(vault_database, cred)


async def test_rotation_overlap_and_ack(vault_database: VaultDatabase, broker: LeaseBroker) -> None:
    role = make_role(vault_database, default_ttl=3, max_ttl=6)
    async with aclosing(broker.watch("app", role)) as stream:
        old = await issued(stream)
        assert await can_login(vault_database, old)
        rotation = await next_of(stream, CredentialRotation)
        new = rotation.credential
        assert rotation.previous_lease_id == old.lease_id
        # The new credential arrives while the old one still works: both log in.
        assert await can_login(vault_database, old)
        assert await can_login(vault_database, new)
        await broker.ack("app", rotation.watch_id, rotation.rotation_id)
        assert not await can_login(vault_database, old)
        assert await can_login(vault_database, new)
        revoked = await next_of(stream, CredentialRevoked)
        assert revoked.lease_id == old.lease_id


async def test_three_rotations_without_a_failed_login(
    vault_database: VaultDatabase, broker: LeaseBroker
) -> None:
    role = make_role(vault_database, default_ttl=3, max_ttl=6)
    failures: list[str] = []
    logins = 0
    current: Credential | None = None
    used_new = asyncio.Event()

    async def query_loop() -> None:
        nonlocal logins
        while True:
            cred = current
            assert cred is not None
            if await can_login(vault_database, cred):
                logins += 1
            else:
                failures.append(cred.lease_id)
            if cred is current:
                used_new.set()
            await asyncio.sleep(0.05)

    async with aclosing(broker.watch("app", role)) as stream:
        current = await issued(stream)
        seen = {current.lease_id}
        queries = asyncio.create_task(query_loop())
        try:
            for _ in range(3):
                rotation = await next_of(stream, CredentialRotation)
                used_new.clear()
                current = rotation.credential
                seen.add(current.lease_id)
                await asyncio.wait_for(used_new.wait(), WAIT)  # in-flight queries finished
                await broker.ack("app", rotation.watch_id, rotation.rotation_id)
        finally:
            queries.cancel()
            with pytest.raises(asyncio.CancelledError):
                await queries
    assert failures == []
    assert len(seen) == 4
    assert logins > 0


async def test_close_leaves_no_working_credential(
    vault_database: VaultDatabase, adapter: VaultAdapter
) -> None:
    broker = LeaseBroker(adapter, mount=vault_database.mount_point, unheld_grace=60.0)
    role = make_role(vault_database, default_ttl=300, max_ttl=600)
    unary = await broker.acquire("app", role)
    stream = broker.watch("other", role)
    streamed = await issued(stream)
    assert await can_login(vault_database, unary)
    assert await can_login(vault_database, streamed)
    await broker.close()
    assert not await can_login(vault_database, unary)
    assert not await can_login(vault_database, streamed)
    await stream.aclose()


@pytest.mark.parametrize("method", LOGIN_METHODS)
async def test_credentials_survive_the_gateways_relogin(
    vault_database: VaultDatabase, method: str, tmp_path: Path
) -> None:
    """Token TTL 4 s, max TTL 8 s, for each method that logs in: the adapter must log in again
    while leases issued under the first token keep working, and streamed leases must move
    before that token dies. The credential is rotated after the first login (in Vault and in
    its file), so the second login works only because the file is read at every login."""
    vault = vault_database.vault
    root = vault.client()
    policy = f"gw-{secrets.token_hex(3)}"
    root.sys.create_or_update_acl_policy(policy, gateway_policy(vault_database))
    login = set_up_login(root, method, policy=policy, ttl="4s", max_ttl="8s", workdir=tmp_path)
    adapter = VaultAdapter(VaultAdapterConfig(addr=vault.addr, auth=login.auth))
    await adapter.start()
    login.rotate_credential(root)
    broker = LeaseBroker(
        adapter, mount=vault_database.mount_point, unheld_grace=60.0, heartbeat_interval=0.5
    )
    role = make_role(vault_database, default_ttl=60, max_ttl=120)
    try:
        async with aclosing(broker.watch("streamer", role)) as stream:
            first = await issued(stream)
            unary = await broker.acquire("unary", role)
            assert adapter.logins == 1
            # The first token reaches its max TTL: the adapter logs in again and the stream
            # is rotated to a lease owned by the new token before the old token dies.
            rotation = await next_of(stream, CredentialRotation)
            assert adapter.logins >= 2
            assert rotation.previous_lease_id == first.lease_id
            new = rotation.credential
            assert await can_login(vault_database, unary), "lease of the old token still works"
            assert await can_login(vault_database, first)
            assert await can_login(vault_database, new)
            await broker.ack("streamer", rotation.watch_id, rotation.rotation_id)
            assert not await can_login(vault_database, first)
            assert await broker.release("unary", unary.lease_id) is True
            assert not await can_login(vault_database, unary)
            # Once its leases are gone the old token is dropped; the new lease lives on.
            async with asyncio.timeout(WAIT):
                while True:
                    if adapter.token_count == 1:
                        break
                    await asyncio.sleep(0.05)
            assert await can_login(vault_database, new)
            beat_or_event = await asyncio.wait_for(anext(stream), WAIT)
            assert not isinstance(beat_or_event, CredentialRevoked) or (
                beat_or_event.lease_id != new.lease_id
            )
            assert not isinstance(beat_or_event, CredentialHeartbeat) or (
                beat_or_event.freshness.reachable
            )
    finally:
        await broker.close()
        await adapter.close()
