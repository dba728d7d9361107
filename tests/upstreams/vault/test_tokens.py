"""Token auth method conformance through hvac."""

from __future__ import annotations

import hvac
import hvac.exceptions
import pytest

from tests.fixtures.vault import VaultServer
from tests.upstreams.vault.conftest import Raw, wait_until

CREATOR = "token-creator"
CREATOR_HCL = 'path "auth/token/create" { capabilities = ["update"] }'


def test_root_token_is_fixed_dev_root(root: hvac.Client) -> None:
    data = root.lookup_token()["data"]
    assert data["policies"] == ["root"]
    assert data["path"] == "auth/token/create"
    assert data["display_name"] == "token"
    assert data["expire_time"] is None
    assert data["ttl"] == 0
    assert root.is_authenticated()


def test_create_lookup_renew_revoke(vault_server: VaultServer, root: hvac.Client) -> None:
    created = root.auth.token.create(policies=["default"], ttl="1h", meta={"who": "test"})
    auth = created["auth"]
    assert created["data"] is None
    assert auth["client_token"].startswith("hvs.")
    assert auth["policies"] == ["default"]
    assert auth["lease_duration"] == 3600
    assert auth["renewable"] is True
    assert auth["orphan"] is False
    assert auth["metadata"] == {"who": "test"}
    child = vault_server.client(auth["client_token"])
    me = child.auth.token.lookup_self()["data"]
    assert me["display_name"] == "token-token"
    assert me["creation_ttl"] == 3600
    assert me["meta"] == {"who": "test"}
    other = root.auth.token.lookup(auth["client_token"])["data"]
    assert other["accessor"] == auth["accessor"]
    renewed = child.auth.token.renew_self(increment=600)
    assert renewed["auth"]["lease_duration"] == 600
    assert renewed["auth"]["client_token"] == auth["client_token"]
    renewed = root.auth.token.renew(auth["client_token"], increment="20m")
    assert renewed["auth"]["lease_duration"] == 1200
    response = child.auth.token.revoke_self()
    assert response.status_code == 204
    assert not child.is_authenticated()


def test_lookup_unknown_token_is_403_bad_token(raw: Raw) -> None:
    r = raw("POST", "auth/token/lookup", body={"token": "hvs.unknown"})
    assert r.status_code == 403
    assert r.json() == {"errors": ["bad token"]}


def test_root_token_is_not_renewable(root: hvac.Client) -> None:
    with pytest.raises(hvac.exceptions.InvalidRequest, match="lease is not renewable"):
        root.auth.token.renew_self()


def test_children_are_revoked_with_parent(vault_server: VaultServer, root: hvac.Client) -> None:
    root.sys.create_or_update_policy(CREATOR, CREATOR_HCL)
    parent_tok = root.auth.token.create(policies=[CREATOR], ttl="1h")["auth"]["client_token"]
    parent = vault_server.client(parent_tok)
    child_tok = parent.auth.token.create(ttl="30m")["auth"]["client_token"]
    orphan = root.auth.token.create_orphan(policies=["default"], ttl="1h")["auth"]
    assert orphan["orphan"] is True
    root.auth.token.revoke(parent_tok)
    assert not vault_server.client(child_tok).is_authenticated()
    assert vault_server.client(orphan["client_token"]).is_authenticated()


def test_child_policies_must_be_subset(vault_server: VaultServer, root: hvac.Client) -> None:
    root.sys.create_or_update_policy(CREATOR, CREATOR_HCL)
    tok = root.auth.token.create(policies=[CREATOR], ttl="1h")["auth"]["client_token"]
    with pytest.raises(hvac.exceptions.InvalidRequest, match="subset"):
        vault_server.client(tok).auth.token.create(policies=["something-else"])
    with pytest.raises(hvac.exceptions.InvalidRequest, match="sudo"):
        vault_server.client(tok).auth.token.create(no_parent=True)


def test_token_expires(vault_server: VaultServer, root: hvac.Client) -> None:
    tok = root.auth.token.create(policies=["default"], ttl="2s")["auth"]["client_token"]
    client = vault_server.client(tok)
    assert client.is_authenticated()
    wait_until(lambda: not client.is_authenticated(), what="token expiry")
    with pytest.raises(hvac.exceptions.Forbidden):
        client.auth.token.lookup_self()


def test_num_uses(vault_server: VaultServer, root: hvac.Client) -> None:
    tok = root.auth.token.create(policies=["default"], ttl="1h", num_uses=2)["auth"]["client_token"]
    client = vault_server.client(tok)
    client.auth.token.lookup_self()
    client.auth.token.lookup_self()
    assert not client.is_authenticated()


def test_token_renew_capped_by_explicit_max(vault_server: VaultServer, root: hvac.Client) -> None:
    tok = root.auth.token.create(policies=["default"], ttl="10s", explicit_max_ttl="20s")
    client = vault_server.client(tok["auth"]["client_token"])
    renewed = client.auth.token.renew_self(increment=3600)
    assert renewed["auth"]["lease_duration"] <= 20
    assert "TTL value is capped accordingly" in renewed["warnings"][0]
