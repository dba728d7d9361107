"""How the gateway authenticates: a given token, AppRole, userpass and JWT, each against the real
Vault. (That credentials survive a re-login under each method is in
tests/brokers/test_leases_e2e.py::test_credentials_survive_the_gateways_relogin.)"""

from __future__ import annotations

import asyncio
from datetime import datetime
from pathlib import Path
from typing import Any

import hvac
import hvac.exceptions
import pytest

from latchkey_server.upstreams.vault import AppRoleAuth, JwtAuth, UserpassAuth, VaultAdapter
from tests.fixtures.vault import VaultDatabase, VaultServer
from tests.upstreams.vault.conftest import (
    TOKEN_PREFIXES,
    adapter_for,
    make_db_role,
    role_exists,
    unique,
    wait_until,
)
from tests.upstreams.vault.gateway_auth import LOGIN_METHODS, METHODS, GatewayLogin, set_up_login


def gateway_policy(root: hvac.Client, db: VaultDatabase, kv_path: str) -> str:
    """A policy granting one KV secret and the database calls, for one test's gateway."""
    name = unique("gw")
    root.sys.create_or_update_acl_policy(
        name,
        f'path "secret/data/{kv_path}" {{ capabilities = ["read"] }}\n'
        f'path "{db.mount_point}/creds/*" {{ capabilities = ["read"] }}\n'
        'path "sys/leases/renew" { capabilities = ["update"] }\n'
        'path "sys/leases/revoke" { capabilities = ["update"] }\n',
    )
    return name


def current_token(adapter: VaultAdapter) -> str:
    tok = adapter._current
    assert tok is not None
    token: str = tok.client.token
    return token


def token_is_valid(root: hvac.Client, token: str) -> bool:
    try:
        root.auth.token.lookup(token)
    except (hvac.exceptions.Forbidden, hvac.exceptions.InvalidRequest):
        return False
    return True


@pytest.mark.parametrize("method", METHODS)
async def test_the_adapter_logs_in_with_each_method(
    vault_database: VaultDatabase, root: hvac.Client, method: str, tmp_path: Path
) -> None:
    db, kv_path = vault_database, unique("logins/app")
    root.secrets.kv.v2.create_or_update_secret(kv_path, {"who": method})
    policy = gateway_policy(root, db, kv_path)
    login = set_up_login(root, method, policy=policy, ttl="1h", max_ttl="2h", workdir=tmp_path)
    adapter = adapter_for(db.vault, login.auth)
    try:
        # Only this policy grants the secret: reading it proves the login took place.
        assert (await adapter.read_kv("secret", kv_path)).data == {"who": method}
        issued = await adapter.issue_credentials(db.mount_point, make_db_role(db, root))
        assert await asyncio.to_thread(db.postgres.can_login, issued.username, issued.password)
        assert adapter.logins == 1
        token = current_token(adapter)
        assert token.startswith(TOKEN_PREFIXES)
        info = root.auth.token.lookup(token)["data"]
        assert policy in info["policies"]
        if method != "token":
            assert info["path"].startswith(f"auth/{login.mount}/login")
    finally:
        await adapter.close()
    if method == "token":
        # A given token is the operator's: the adapter neither owns nor revokes it.
        assert token_is_valid(root, token)
        root.auth.token.revoke(token)
    else:
        assert not token_is_valid(root, token), "the adapter revokes tokens it logged in for"
    await asyncio.to_thread(
        wait_until, lambda: not role_exists(db, issued.username), what="the token's lease"
    )


async def test_a_given_token_is_kept_alive_while_its_leases_are_held(
    vault_database: VaultDatabase, root: hvac.Client, tmp_path: Path
) -> None:
    """A renewable token with a 3 s TTL: the adapter renews it, so a lease it issued still
    logs in after the token's first TTL is long gone."""
    db = vault_database
    policy = gateway_policy(root, db, unique("unused"))
    login = set_up_login(root, "token", policy=policy, ttl="3s", max_ttl="1h", workdir=tmp_path)
    token = login.credential
    first_expiry = datetime.fromisoformat(root.auth.token.lookup(token)["data"]["expire_time"])
    adapter = adapter_for(db.vault, login.auth)
    try:
        issued = await adapter.issue_credentials(db.mount_point, make_db_role(db, root))

        def renewed_past_first_expiry() -> bool:
            data = root.auth.token.lookup(token)["data"]
            expiry = datetime.fromisoformat(data["expire_time"])
            return expiry > first_expiry and datetime.now(expiry.tzinfo) > first_expiry

        await asyncio.to_thread(
            wait_until, renewed_past_first_expiry, what="the token renewed past its first TTL"
        )
        assert token_is_valid(root, token)
        assert await asyncio.to_thread(db.postgres.can_login, issued.username, issued.password)
        await adapter.revoke_lease(issued.lease_id)
    finally:
        await adapter.close()
        root.auth.token.revoke(token)


@pytest.mark.parametrize("method", LOGIN_METHODS)
def test_renewal_stops_at_the_max_ttl_with_a_warning(
    vault_server: VaultServer, root: hvac.Client, method: str, tmp_path: Path
) -> None:
    """What the adapter's token keeper reads to know a token is running out: a login's token
    has the role's TTL, and renewing it past the max TTL grants less, with a warning."""
    login = set_up_login(root, method, policy="default", ttl="30s", max_ttl="40s", workdir=tmp_path)
    client = vault_server.client(token="")
    auth = log_in(client, login)["auth"]
    assert auth["client_token"].startswith(TOKEN_PREFIXES)
    assert auth["lease_duration"] == 30
    assert auth["renewable"] is True
    me = vault_server.client(auth["client_token"]).auth.token.lookup_self()["data"]
    assert me["ttl"] <= 30
    assert me["renewable"] is True
    renewed = vault_server.client(auth["client_token"]).auth.token.renew_self(increment=3600)
    assert renewed["auth"]["lease_duration"] <= 40
    assert any("capped" in w for w in renewed["warnings"])
    assert vault_server.client(auth["client_token"]).auth.token.revoke_self().status_code == 204
    assert not token_is_valid(root, auth["client_token"])


def log_in(client: hvac.Client, login: GatewayLogin) -> dict[str, Any]:
    """The login call the adapter makes for `login`, made here with hvac directly."""
    auth, secret = login.auth, login.credential
    if isinstance(auth, AppRoleAuth):
        result = client.auth.approle.login(
            auth.role_id, secret, use_token=False, mount_point=auth.mount
        )
    elif isinstance(auth, UserpassAuth):
        result = client.auth.userpass.login(
            auth.username, secret, use_token=False, mount_point=auth.mount
        )
    else:
        assert isinstance(auth, JwtAuth)
        result = client.auth.jwt.jwt_login(auth.role, secret, use_token=False, path=auth.mount)
    assert isinstance(result, dict)
    return result
