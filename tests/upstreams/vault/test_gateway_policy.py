"""The demo seeding and the gateway's own Vault policy (`GATEWAY_POLICY_HCL`: what `make dev`
gives the gateway, and what the README tells operators to write).

The policy must allow every call the gateway makes, nothing else, and each of its lines must
be needed by some call.
"""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path
from typing import Any

import hvac.exceptions
import psycopg
import pytest

from latchkey_server.devstack.seed import (
    DEMO_DATABASE,
    DEMO_ROLE,
    DEMO_SECRET_PATH,
    GATEWAY_POLICY,
    GATEWAY_POLICY_HCL,
    seed_vault,
)
from latchkey_server.errors import LatchkeyError
from latchkey_server.observability.telemetry import Telemetry
from latchkey_server.upstreams.vault import (
    AppRoleAuth,
    TokenAuth,
    VaultAdapter,
    VaultAdapterConfig,
)
from latchkey_server.upstreams.vault_port import IssuedLease
from tests.fixtures.vault import VaultDatabase, VaultServer
from tests.upstreams.vault.conftest import token_with_policy

OPERATIONS = (
    "kv_read", "kv_metadata", "role_read", "mount_read", "creds", "lease_renew", "lease_lookup",
    "lease_revoke",
)  # fmt: skip
POLICY_LINES = [line for line in GATEWAY_POLICY_HCL.splitlines() if line.startswith("path ")]
# What the gateway's tokens get from Vault's `default` policy and the gateway uses: looking up,
# renewing and revoking themselves. (`default` also grants sys/leases/renew, which would hide
# whether the gateway's own policy needs it, so the tokens below go without `default`.)
TOKEN_SELF_SERVICE = """
path "auth/token/lookup-self" { capabilities = ["read"] }
path "auth/token/renew-self"  { capabilities = ["update"] }
path "auth/token/revoke-self" { capabilities = ["update"] }
"""


def gateway_token(root: hvac.Client, policy_lines: list[str]) -> str:
    return token_with_policy(root, "\n".join(policy_lines) + TOKEN_SELF_SERVICE, default=False)


async def gateway_calls(vault: VaultServer, token: str) -> tuple[set[str], IssuedLease | None]:
    """Every Vault call the gateway makes, made with `token` on the seeded demo; returns the
    operations Vault refused, and the credential issued (if it was)."""
    telemetry = Telemetry()
    config = VaultAdapterConfig(addr=vault.addr, auth=TokenAuth(token), retry_attempts=1)
    adapter = VaultAdapter(config, telemetry=telemetry)
    issued: IssuedLease | None = None
    try:
        with contextlib.suppress(LatchkeyError):
            await adapter.read_kv("secret", DEMO_SECRET_PATH)
        with contextlib.suppress(LatchkeyError):
            await adapter.read_kv("secret", DEMO_SECRET_PATH, 1)
        with contextlib.suppress(LatchkeyError):  # Secrets.WatchSecret's poll
            await adapter.kv_current_version("secret", DEMO_SECRET_PATH)
        await adapter.role_max_ttl("database", DEMO_ROLE)  # falls back on refusals
        with contextlib.suppress(LatchkeyError):
            issued = await adapter.issue_credentials("database", DEMO_ROLE)
            with contextlib.suppress(LatchkeyError):
                await adapter.renew_lease(issued.lease_id)
            with contextlib.suppress(LatchkeyError):  # an operator's RevokeLease(force)
                await adapter.lookup_lease(issued.lease_id)
            with contextlib.suppress(LatchkeyError):
                await adapter.revoke_lease(issued.lease_id)
    finally:
        await adapter.close()
        vault.client().auth.token.revoke(token)  # and, in the background, any lease left
    refused = {
        op
        for op in OPERATIONS
        if telemetry.registry.get_sample_value(
            "latchkey_upstream_requests_total", {"upstream": "vault", "op": op, "outcome": "error"}
        )
    }
    return refused, issued


async def test_the_gateway_policy_allows_every_call_the_gateway_makes(
    demo_env: dict[str, Any], vault_server: VaultServer
) -> None:
    token = gateway_token(vault_server.client(), POLICY_LINES)
    refused, issued = await gateway_calls(vault_server, token)
    assert refused == set()
    assert issued is not None


def test_the_gateway_policy_allows_nothing_else(
    demo_env: dict[str, Any], vault_server: VaultServer, vault_database: VaultDatabase
) -> None:
    root = vault_server.client()
    gateway = vault_server.client(token_with_policy(root, GATEWAY_POLICY_HCL))  # with `default`
    refused: list[Any] = [
        lambda: gateway.secrets.kv.v2.create_or_update_secret(DEMO_SECRET_PATH, {"x": "y"}),
        lambda: gateway.secrets.kv.v2.delete_latest_version_of_secret(DEMO_SECRET_PATH),
        lambda: gateway.secrets.database.read_connection(DEMO_DATABASE),
        lambda: gateway.secrets.database.create_role(
            "evil", db_name=DEMO_DATABASE, creation_statements=["SELECT 1"]
        ),
        lambda: gateway.secrets.database.generate_credentials(
            "any", mount_point=vault_database.mount_point
        ),
        lambda: gateway.sys.list_mounted_secrets_engines(),
        lambda: gateway.sys.read_policy(GATEWAY_POLICY),
        lambda: gateway.sys.list_leases("database/creds/"),
        lambda: gateway.auth.token.create(policies=["default"]),
    ]
    for call in refused:
        with pytest.raises(hvac.exceptions.Forbidden):
            call()


async def test_every_line_of_the_gateway_policy_is_needed(
    demo_env: dict[str, Any], vault_server: VaultServer
) -> None:
    root = vault_server.client()
    surplus = []
    for line in POLICY_LINES:
        without = [other for other in POLICY_LINES if other != line]
        refused, _ = await gateway_calls(vault_server, gateway_token(root, without))
        if not refused:
            surplus.append(line.strip())
    assert surplus == [], "the gateway never needs these grants"


async def test_seeding_again_leaves_a_demo_the_gateway_can_use(
    demo_env: dict[str, Any], vault_server: VaultServer
) -> None:
    """`make dev` and the compose bootstrap seed a Vault that may already be seeded."""
    approle = await asyncio.to_thread(
        seed_vault, vault_server.addr, vault_server.root_token, demo_env["db"]
    )
    auth = AppRoleAuth(approle.role_id, approle.secret_id)
    adapter = VaultAdapter(VaultAdapterConfig(addr=vault_server.addr, auth=auth))
    try:
        secret = await adapter.read_kv("secret", DEMO_SECRET_PATH)
        assert secret.data["greeting"] == "hello from Vault"
        assert await adapter.role_max_ttl("database", DEMO_ROLE) == 300
        issued = await adapter.issue_credentials("database", DEMO_ROLE)
        postgres = demo_env["db"]
        assert await asyncio.to_thread(
            can_read_the_demo, postgres.host, postgres.port, issued.username, issued.password
        )
        await adapter.revoke_lease(issued.lease_id)
    finally:
        await adapter.close()


def can_read_the_demo(host: str, port: int, user: str, password: str) -> bool:
    """Whether a credential logs in to the demo database and reads its table."""
    try:
        with psycopg.connect(
            host=host, port=port, user=user, password=password, dbname=DEMO_DATABASE,
            connect_timeout=5,
        ) as conn:  # fmt: skip
            conn.execute("SELECT count(*) FROM items")
    except psycopg.OperationalError:
        return False
    return True


def test_the_readme_gives_operators_the_same_policy() -> None:
    text = (Path(__file__).resolve().parents[3] / "README.md").read_text()
    block = text.split("vault policy write latchkey-gateway - <<'HCL'", 1)[1].split("HCL", 1)[0]
    documented = [line.strip() for line in block.splitlines() if line.strip()]
    assert documented == [line.strip() for line in POLICY_LINES]
