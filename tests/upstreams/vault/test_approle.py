"""AppRole conformance through hvac."""

from __future__ import annotations

import hvac
import hvac.exceptions
import pytest

from tests.fixtures.vault import VaultServer
from tests.upstreams.vault.conftest import Raw, unique


@pytest.fixture(scope="module")
def approle_mount(vault_server: VaultServer) -> str:
    client = vault_server.client()
    mount = unique("approle")
    client.sys.enable_auth_method("approle", path=mount)
    return mount


def test_role_crud_and_login(
    vault_server: VaultServer, root: hvac.Client, approle_mount: str
) -> None:
    role = unique("app")
    ar = root.auth.approle
    ar.create_or_update_approle(
        role, token_policies=["app-a", "app-b"], token_ttl="5m", token_max_ttl="1h",
        mount_point=approle_mount,
    )  # fmt: skip
    info = ar.read_role(role, mount_point=approle_mount)["data"]
    assert info["token_policies"] == ["app-a", "app-b"]
    assert info["token_ttl"] == 300
    assert info["bind_secret_id"] is True
    assert role in ar.list_roles(mount_point=approle_mount)["data"]["keys"]
    role_id = ar.read_role_id(role, mount_point=approle_mount)["data"]["role_id"]
    secret = ar.generate_secret_id(role, metadata={"host": "web-1"}, mount_point=approle_mount)
    secret_id = secret["data"]["secret_id"]
    assert secret["data"]["secret_id_accessor"]
    client = vault_server.client("hvs.stale-token-is-ignored")
    login = client.auth.approle.login(role_id, secret_id, mount_point=approle_mount)
    auth = login["auth"]
    assert login["data"] is None
    assert auth["policies"] == ["app-a", "app-b", "default"]
    assert auth["token_policies"] == ["app-a", "app-b", "default"]
    assert auth["metadata"] == {"role_name": role, "host": "web-1"}
    assert auth["lease_duration"] == 300
    assert auth["orphan"] is True
    assert auth["renewable"] is True
    assert client.token == auth["client_token"]
    me = client.auth.token.lookup_self()["data"]
    assert me["display_name"] == approle_mount
    assert me["path"] == f"auth/{approle_mount}/login"
    ar.delete_role(role, mount_point=approle_mount)
    with pytest.raises(hvac.exceptions.InvalidPath):
        ar.read_role(role, mount_point=approle_mount)


def test_login_errors(
    vault_server: VaultServer, root: hvac.Client, raw: Raw, approle_mount: str
) -> None:
    role = unique("app")
    ar = root.auth.approle
    ar.create_or_update_approle(
        role, token_policies="x", secret_id_num_uses=1, mount_point=approle_mount
    )
    role_id = ar.read_role_id(role, mount_point=approle_mount)["data"]["role_id"]
    secret_id = ar.generate_secret_id(role, mount_point=approle_mount)["data"]["secret_id"]
    r = raw(
        "POST",
        f"auth/{approle_mount}/login",
        token=None,
        body={"role_id": role_id, "secret_id": "wrong"},
    )
    assert r.status_code == 400
    assert r.json() == {"errors": ["invalid role or secret ID"]}
    r = raw("POST", f"auth/{approle_mount}/login", token=None, body={"secret_id": secret_id})
    assert r.json() == {"errors": ["missing role_id"]}
    fresh = vault_server.client(token="")
    fresh.auth.approle.login(role_id, secret_id, mount_point=approle_mount)
    with pytest.raises(hvac.exceptions.InvalidRequest, match="invalid role or secret ID"):
        fresh.auth.approle.login(role_id, secret_id, mount_point=approle_mount)
    r = raw("POST", f"auth/{approle_mount}/role/{unique('ghost')}/secret-id", body={})
    assert r.status_code == 404


def test_approle_token_expires_and_renews(
    vault_server: VaultServer, root: hvac.Client, approle_mount: str
) -> None:
    role = unique("app")
    ar = root.auth.approle
    ar.create_or_update_approle(
        role, token_ttl="30s", token_max_ttl="40s", mount_point=approle_mount
    )
    role_id = ar.read_role_id(role, mount_point=approle_mount)["data"]["role_id"]
    secret_id = ar.generate_secret_id(role, mount_point=approle_mount)["data"]["secret_id"]
    client = vault_server.client(token="")
    client.auth.approle.login(role_id, secret_id, mount_point=approle_mount)
    renewed = client.auth.token.renew_self(increment=3600)
    assert renewed["auth"]["lease_duration"] <= 40
    assert "capped" in renewed["warnings"][0]
