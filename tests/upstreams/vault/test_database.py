"""Database credentials as the gateway uses them, with real PostgreSQL logins: issue, renew,
revoke and expiry through the adapter, and the rule the adapter's token keeping rests on (a
lease dies with the token that created it)."""

from __future__ import annotations

import asyncio

import hvac
import pytest

from latchkey_server.errors import NotFound
from latchkey_server.upstreams.vault import VaultAdapter
from tests.fixtures.vault import VaultDatabase, VaultServer
from tests.upstreams.vault.conftest import (
    make_db_role,
    role_exists,
    token_with_policy,
    valid_until,
    wait_until,
)


async def can_login(db: VaultDatabase, username: str, password: str) -> bool:
    return await asyncio.to_thread(db.postgres.can_login, username, password)


async def test_issue_renew_revoke(vault_database: VaultDatabase, adapter: VaultAdapter) -> None:
    db = vault_database
    role = make_db_role(db, db.vault.client(), default_ttl="30s", max_ttl="45s")
    assert await adapter.role_max_ttl(db.mount_point, role) == 45
    issued = await adapter.issue_credentials(db.mount_point, role)
    assert issued.lease_id.startswith(f"{db.mount_point}/creds/{role}/")
    assert issued.lease_duration == 30
    assert issued.renewable
    assert issued.password not in repr(issued)
    assert await can_login(db, issued.username, issued.password)
    before = valid_until(db, issued.username)
    renewed = await adapter.renew_lease(issued.lease_id, 40)
    assert renewed.lease_id == issued.lease_id
    assert 0 < renewed.lease_duration <= 45
    after = valid_until(db, issued.username)
    assert before is not None
    assert after is not None
    assert after > before, "renewal moves the role's VALID UNTIL in PostgreSQL"
    capped = await adapter.renew_lease(issued.lease_id, 3600)
    assert capped.lease_duration <= 45
    assert any("capped" in w for w in capped.warnings), "Vault says it capped the TTL"
    await adapter.revoke_lease(issued.lease_id)
    assert not await can_login(db, issued.username, issued.password)
    assert not role_exists(db, issued.username)
    await adapter.revoke_lease(issued.lease_id)  # revoking a revoked lease succeeds
    with pytest.raises(NotFound, match="no longer exists"):
        await adapter.renew_lease(issued.lease_id)


async def test_an_expired_lease_drops_the_user(
    vault_database: VaultDatabase, adapter: VaultAdapter
) -> None:
    db = vault_database
    role = make_db_role(db, db.vault.client(), default_ttl="2s", max_ttl="10s")
    issued = await adapter.issue_credentials(db.mount_point, role)
    assert issued.lease_duration == 2
    assert await can_login(db, issued.username, issued.password)
    await asyncio.to_thread(
        wait_until, lambda: not role_exists(db, issued.username), what="the expired lease's user"
    )
    assert not await can_login(db, issued.username, issued.password)
    with pytest.raises(NotFound):
        await adapter.renew_lease(issued.lease_id)


def test_revoking_the_creating_token_revokes_its_leases(
    vault_database: VaultDatabase, vault_server: VaultServer, root: hvac.Client
) -> None:
    """Vault revokes a revoked token's leases in the background (not before it answers the
    revocation), so the users disappear soon after, not at once."""
    db = vault_database
    role = make_db_role(db, root)
    token = token_with_policy(
        root, f'path "{db.mount_point}/creds/*" {{ capabilities = ["read"] }}'
    )
    data = vault_server.client(token).secrets.database.generate_credentials(
        role, mount_point=db.mount_point
    )["data"]
    assert db.postgres.can_login(data["username"], data["password"])
    root.auth.token.revoke(token)
    wait_until(lambda: not role_exists(db, data["username"]), what="the revoked token's lease")
    assert not db.postgres.can_login(data["username"], data["password"])


def test_an_expired_token_takes_its_leases_with_it(
    vault_database: VaultDatabase, vault_server: VaultServer, root: hvac.Client
) -> None:
    """A lease's own TTL (1 h here) does not outlive the token that created it (2 s)."""
    db = vault_database
    role = make_db_role(db, root)
    hcl = f'path "{db.mount_point}/creds/*" {{ capabilities = ["read"] }}'
    token = token_with_policy(root, hcl, ttl="2s")
    issued = vault_server.client(token).secrets.database.generate_credentials(
        role, mount_point=db.mount_point
    )
    assert issued["lease_duration"] == 3600
    wait_until(
        lambda: not role_exists(db, issued["data"]["username"]), what="cascade on token expiry"
    )
