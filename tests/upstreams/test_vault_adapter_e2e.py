"""VaultAdapter against OpenBao (or another real Vault): KV reads, the lease calls, error mapping."""

from __future__ import annotations

import secrets
from collections.abc import AsyncGenerator

import pytest

from latchkey_server.errors import NotFound, PermissionDenied
from latchkey_server.upstreams.vault import TokenAuth, VaultAdapter, VaultAdapterConfig
from tests.fixtures.vault import VaultDatabase, VaultServer

CREATE = [
    "CREATE ROLE \"{{name}}\" WITH LOGIN PASSWORD '{{password}}' VALID UNTIL '{{expiration}}';"
]


@pytest.fixture
async def adapter(vault_server: VaultServer) -> AsyncGenerator[VaultAdapter, None]:
    adapter = VaultAdapter(
        VaultAdapterConfig(addr=vault_server.addr, auth=TokenAuth(vault_server.root_token))
    )
    yield adapter
    await adapter.close()


async def test_read_kv_versions_and_deleted(
    vault_server: VaultServer, adapter: VaultAdapter
) -> None:
    client = vault_server.client()
    path = f"e2e/{secrets.token_hex(4)}"
    client.secrets.kv.v2.create_or_update_secret(path=path, secret={"a": 1}, mount_point="secret")
    client.secrets.kv.v2.create_or_update_secret(path=path, secret={"a": 2}, mount_point="secret")
    latest = await adapter.read_kv("secret", path)
    assert latest.version == 2
    assert latest.data == {"a": 2}
    assert latest.created_time is not None
    assert (await adapter.read_kv("secret", path, 1)).data == {"a": 1}
    with pytest.raises(NotFound):
        await adapter.read_kv("secret", path, 7)
    with pytest.raises(NotFound):
        await adapter.read_kv("secret", f"{path}-missing")
    client.secrets.kv.v2.delete_latest_version_of_secret(path=path, mount_point="secret")
    with pytest.raises(NotFound):
        await adapter.read_kv("secret", path)
    assert adapter.reachable
    assert adapter.last_contact is not None


async def test_lease_calls(vault_database: VaultDatabase) -> None:
    vault = vault_database.vault
    mount = vault_database.mount_point
    role = f"r{secrets.token_hex(3)}"
    vault.client().secrets.database.create_role(
        name=role, db_name=vault_database.db_name, creation_statements=CREATE,
        default_ttl=30, max_ttl=45, mount_point=mount,
    )  # fmt: skip
    adapter = VaultAdapter(VaultAdapterConfig(addr=vault.addr, auth=TokenAuth(vault.root_token)))
    try:
        assert await adapter.role_max_ttl(mount, role) == 45
        issued = await adapter.issue_credentials(mount, role)
        assert issued.lease_duration == 30
        assert issued.renewable
        assert vault_database.postgres.can_login(issued.username, issued.password)
        renewed = await adapter.renew_lease(issued.lease_id, 3600)
        assert renewed.lease_duration <= 45
        assert renewed.warnings, "Vault says it capped the TTL at the max TTL"
        await adapter.revoke_lease(issued.lease_id)
        assert not vault_database.postgres.can_login(issued.username, issued.password)
        await adapter.revoke_lease(issued.lease_id)  # idempotent
        with pytest.raises(NotFound):
            await adapter.renew_lease(issued.lease_id)
        with pytest.raises(NotFound, match=role + "x"):
            await adapter.issue_credentials(mount, role + "x")
    finally:
        await adapter.close()


async def test_permission_denied_is_safe(vault_server: VaultServer) -> None:
    client = vault_server.client()
    token = client.auth.token.create(policies=["default"], ttl="1h")["auth"]["client_token"]
    adapter = VaultAdapter(VaultAdapterConfig(addr=vault_server.addr, auth=TokenAuth(token)))
    try:
        with pytest.raises(PermissionDenied) as info:
            await adapter.read_kv("secret", "anything")
        assert token not in info.value.message
        assert token not in str(info.value)
    finally:
        await adapter.close()
