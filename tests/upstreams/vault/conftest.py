"""Helpers for the vault-dev conformance tests (they speak HTTP only, never to internals)."""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable
from datetime import datetime
from typing import Any

import hvac
import psycopg
import pytest
import requests

from tests.fixtures.vault import VaultDatabase, VaultServer


def wait_until(
    predicate: Callable[[], bool], timeout: float = 15.0, what: str = "condition"
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


class Raw:
    """Raw HTTP against the Vault under test (for envelope details hvac hides)."""

    def __init__(self, vault: VaultServer) -> None:
        self.addr = vault.addr
        self.token = vault.root_token

    def __call__(
        self, method: str, path: str, *, token: str | None = "", body: Any = None, **kw: Any
    ) -> requests.Response:
        headers = dict(kw.pop("headers", {}))
        tok = self.token if token == "" else token
        if tok is not None:
            headers["X-Vault-Token"] = tok
        if body is not None:
            kw["json"] = body
        return requests.request(method, f"{self.addr}/v1/{path}", headers=headers, timeout=30, **kw)


@pytest.fixture
def raw(vault_server: VaultServer) -> Raw:
    return Raw(vault_server)


@pytest.fixture
def root(vault_server: VaultServer) -> hvac.Client:
    return vault_server.client()


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


CREATE_SQL = [
    "CREATE ROLE \"{{name}}\" WITH LOGIN PASSWORD '{{password}}' VALID UNTIL '{{expiration}}';",
    'GRANT CONNECT ON DATABASE postgres TO "{{name}}";',
]


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
