"""ACL policies: storage endpoints and enforcement on every request."""

from __future__ import annotations

import hvac
import hvac.exceptions
import pytest

from tests.fixtures.vault import VaultServer
from tests.upstreams.vault.conftest import Raw, unique


def token_with(
    root: hvac.Client, vault: VaultServer, policy: str | dict[str, object]
) -> hvac.Client:
    name = unique("pol")
    root.sys.create_or_update_policy(name, policy)
    tok = root.auth.token.create(policies=[name], ttl="10m")["auth"]["client_token"]
    return vault.client(tok)


def test_policy_crud_modern_and_legacy(root: hvac.Client, raw: Raw) -> None:
    name = unique("crud")
    text = 'path "secret/data/app/*" {\n  capabilities = ["read"]\n}\n'
    root.sys.create_or_update_acl_policy(name, text)
    assert root.sys.read_acl_policy(name)["data"] == {"name": name, "policy": text}
    assert root.sys.read_policy(name)["data"]["rules"] == text
    assert name in root.sys.list_acl_policies()["data"]["keys"]
    assert name in root.sys.list_policies()["data"]["policies"]
    assert root.get_policy(name) is not None
    root.sys.delete_acl_policy(name)
    assert root.get_policy(name) is None
    r = raw("DELETE", "sys/policies/acl/root")
    assert r.json() == {"errors": ['cannot delete "root" policy']}
    r = raw("DELETE", "sys/policies/acl/default")
    assert r.json() == {"errors": ["cannot delete default policy"]}
    r = raw("PUT", f"sys/policies/acl/{name}", body={"policy": ""})
    assert r.status_code == 400
    r = raw(
        "PUT", f"sys/policies/acl/{name}", body={"policy": 'path "x" { capabilities = ["fly"] }'}
    )
    assert r.status_code == 400
    assert r.json()["errors"][0].startswith("failed to parse policy")


def test_read_only_token_is_refused_a_write(root: hvac.Client, vault_server: VaultServer) -> None:
    path = unique("ro")
    root.secrets.kv.v2.create_or_update_secret(path, {"k": "v"})
    client = token_with(
        root, vault_server, f'path "secret/data/{path}" {{ capabilities = ["read"] }}'
    )
    read = client.secrets.kv.v2.read_secret_version(path, raise_on_deleted_version=True)
    assert read["data"]["data"] == {"k": "v"}
    with pytest.raises(hvac.exceptions.Forbidden):
        client.secrets.kv.v2.create_or_update_secret(path, {"k": "w"})
    with pytest.raises(hvac.exceptions.Forbidden):
        client.secrets.kv.v2.read_secret_version(unique("other"), raise_on_deleted_version=True)


def test_json_policy_from_hvac_dict(root: hvac.Client, vault_server: VaultServer) -> None:
    path = unique("json")
    root.secrets.kv.v2.create_or_update_secret(path, {"k": "v"})
    client = token_with(
        root, vault_server, {"path": {f"secret/data/{path}": {"capabilities": ["read"]}}}
    )
    assert client.secrets.kv.v2.read_secret_version(path, raise_on_deleted_version=True)


def test_create_versus_update(root: hvac.Client, vault_server: VaultServer) -> None:
    base = unique("cu")
    creator = token_with(
        root, vault_server, f'path "secret/data/{base}/*" {{ capabilities = ["create"] }}'
    )
    creator.secrets.kv.v2.create_or_update_secret(f"{base}/new", {"a": 1})
    with pytest.raises(hvac.exceptions.Forbidden):
        creator.secrets.kv.v2.create_or_update_secret(f"{base}/new", {"a": 2})
    updater = token_with(
        root, vault_server, f'path "secret/data/{base}/*" {{ capabilities = ["update"] }}'
    )
    updater.secrets.kv.v2.create_or_update_secret(f"{base}/new", {"a": 3})
    with pytest.raises(hvac.exceptions.Forbidden):
        updater.secrets.kv.v2.create_or_update_secret(f"{base}/other", {"a": 1})


def test_most_specific_rule_wins_and_deny(root: hvac.Client, vault_server: VaultServer) -> None:
    base = unique("spec")
    root.secrets.kv.v2.create_or_update_secret(f"{base}/open", {"a": 1})
    root.secrets.kv.v2.create_or_update_secret(f"{base}/closed", {"a": 1})
    policy = (
        f'path "secret/data/{base}/*" {{ capabilities = ["deny"] }}\n'
        f'path "secret/data/{base}/open" {{ capabilities = ["read"] }}\n'
    )
    client = token_with(root, vault_server, policy)
    assert client.secrets.kv.v2.read_secret_version(f"{base}/open", raise_on_deleted_version=True)
    with pytest.raises(hvac.exceptions.Forbidden):
        client.secrets.kv.v2.read_secret_version(f"{base}/closed", raise_on_deleted_version=True)


def test_plus_segment_wildcard(root: hvac.Client, vault_server: VaultServer) -> None:
    base = unique("plus")
    root.secrets.kv.v2.create_or_update_secret(f"{base}/a/conf", {"a": 1})
    root.secrets.kv.v2.create_or_update_secret(f"{base}/a/b/conf", {"a": 1})
    client = token_with(
        root, vault_server, f'path "secret/data/{base}/+/conf" {{ capabilities = ["read"] }}'
    )
    assert client.secrets.kv.v2.read_secret_version(f"{base}/a/conf", raise_on_deleted_version=True)
    with pytest.raises(hvac.exceptions.Forbidden):
        client.secrets.kv.v2.read_secret_version(f"{base}/a/b/conf", raise_on_deleted_version=True)


def test_sudo_paths_need_sudo(root: hvac.Client, vault_server: VaultServer) -> None:
    plain = token_with(root, vault_server, 'path "sys/leases/lookup/*" { capabilities = ["list"] }')
    with pytest.raises(hvac.exceptions.Forbidden):
        plain.sys.list_leases("secret/")
    sudo = token_with(
        root, vault_server, 'path "sys/leases/lookup/*" { capabilities = ["list", "sudo"] }'
    )
    with pytest.raises(hvac.exceptions.InvalidPath):
        sudo.sys.list_leases(unique("nothing-here"))


def test_default_policy_allows_self_service(root: hvac.Client, vault_server: VaultServer) -> None:
    client = token_with(root, vault_server, 'path "nothing" { capabilities = ["read"] }')
    assert "default" in client.auth.token.lookup_self()["data"]["policies"]
    client.auth.token.renew_self()
    with pytest.raises(hvac.exceptions.Forbidden):
        client.sys.list_mounted_secrets_engines()
    caps = client.write_data("sys/capabilities-self", data={"paths": ["auth/token/lookup-self"]})
    assert caps["data"]["capabilities"] == ["read"]
    assert client.auth.token.revoke_self().status_code == 204


def test_policy_changes_apply_to_existing_tokens(
    root: hvac.Client, vault_server: VaultServer
) -> None:
    path = unique("live")
    root.secrets.kv.v2.create_or_update_secret(path, {"a": 1})
    name = unique("live-pol")
    root.sys.create_or_update_policy(name, 'path "nothing" { capabilities = ["read"] }')
    tok = root.auth.token.create(policies=[name], ttl="10m")["auth"]["client_token"]
    client = vault_server.client(tok)
    with pytest.raises(hvac.exceptions.Forbidden):
        client.secrets.kv.v2.read_secret_version(path, raise_on_deleted_version=True)
    root.sys.create_or_update_policy(
        name, f'path "secret/data/{path}" {{ capabilities = ["read"] }}'
    )
    assert client.secrets.kv.v2.read_secret_version(path, raise_on_deleted_version=True)
