"""The Vault conformance suite: what latchkey relies on, checked against a real Vault.

Runs against the suite's OpenBao (`vault_server`), or any real Vault named by
LATCHKEY_TEST_VAULT_ADDR/_TOKEN; tests that seal, pause or stop Vault use a private OpenBao
(`openbao_process`). Where OpenBao and HashiCorp Vault differ (token prefixes, extra fields),
the tests accept both.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import AsyncGenerator, Callable
from datetime import datetime
from typing import Any

import hvac
import psycopg
import pytest

from latchkey_server.upstreams.vault import TokenAuth, VaultAdapter, VaultAdapterConfig, VaultAuth
from tests.fixtures.vault import VaultDatabase, VaultServer

TOKEN_PREFIXES = ("hvs.", "s.")
"""HashiCorp Vault 1.10+ service tokens start `hvs.`, OpenBao's (and older Vault's) `s.`."""

CREATE_SQL = [
    "CREATE ROLE \"{{name}}\" WITH LOGIN PASSWORD '{{password}}' VALID UNTIL '{{expiration}}';",
    'GRANT CONNECT ON DATABASE postgres TO "{{name}}";',
]


def wait_until(
    predicate: Callable[[], bool], timeout: float = 30.0, what: str = "condition"
) -> None:
    """Poll observable state until `predicate()` holds; fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    delay = 0.05
    while not predicate():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(delay)  # polling interval, not a synchronisation
        delay = min(delay * 2, 0.25)


def unique(prefix: str) -> str:
    return f"{prefix}-{secrets.token_hex(3)}"


def adapter_for(vault: VaultServer, auth: VaultAuth | None = None, **config: Any) -> VaultAdapter:
    """The gateway's adapter for `vault` (root token unless `auth` is given)."""
    auth = auth or TokenAuth(vault.root_token)
    return VaultAdapter(VaultAdapterConfig(addr=vault.addr, auth=auth, **config))


@pytest.fixture
def root(vault_server: VaultServer) -> hvac.Client:
    return vault_server.client()


@pytest.fixture
async def adapter(vault_server: VaultServer) -> AsyncGenerator[VaultAdapter, None]:
    """The adapter with the root token (a given token: never revoked by the adapter)."""
    adapter = adapter_for(vault_server)
    yield adapter
    await adapter.close()


def token_with_policy(
    root: hvac.Client, hcl: str, ttl: str = "10m", *, default: bool = True
) -> str:
    """A fresh token carrying only a new policy made of `hcl`, plus Vault's `default` policy
    unless `default` is false."""
    name = unique("pol")
    root.sys.create_or_update_acl_policy(name, hcl)
    token: str = root.auth.token.create(policies=[name], ttl=ttl, no_default_policy=not default)[
        "auth"
    ]["client_token"]
    return token


def valid_until(db: VaultDatabase, username: str) -> datetime | None:
    with psycopg.connect(db.postgres.dsn) as conn:
        row = conn.execute(
            "SELECT rolvaliduntil FROM pg_roles WHERE rolname = %s", (username,)
        ).fetchone()
    assert row is not None, f"role {username} does not exist"
    value = row[0]
    assert value is None or isinstance(value, datetime)
    return value


def role_exists(db: VaultDatabase, username: str) -> bool:
    with psycopg.connect(db.postgres.dsn) as conn:
        return (
            conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (username,)).fetchone()
            is not None
        )


def make_db_role(
    db: VaultDatabase, client: hvac.Client, *, default_ttl: str = "1h", max_ttl: str = "24h"
) -> str:
    name = unique("ro")
    client.secrets.database.create_role(
        name=name,
        db_name=db.db_name,
        creation_statements=CREATE_SQL,
        default_ttl=default_ttl,
        max_ttl=max_ttl,
        mount_point=db.mount_point,
    )
    return name
