"""Database secrets engine on the real PostgreSQL fixture, leases and the revocation cascade."""

from __future__ import annotations

import re

import hvac
import hvac.exceptions
import pytest

from tests.fixtures.vault import VaultDatabase, VaultServer
from tests.upstreams.vault.conftest import (
    Raw,
    make_db_role,
    role_exists,
    unique,
    valid_until,
    wait_until,
)


def creds(client: hvac.Client, db: VaultDatabase, role: str) -> dict[str, object]:
    result: dict[str, object] = client.secrets.database.generate_credentials(
        role, mount_point=db.mount_point
    )
    return result


def test_generated_credentials_log_in_and_lease_revoke_drops_them(
    vault_database: VaultDatabase, root: hvac.Client
) -> None:
    db = vault_database
    role = make_db_role(db, root)
    issued = creds(root, db, role)
    data = issued["data"]
    assert isinstance(data, dict)
    username, password = data["username"], data["password"]
    assert re.fullmatch(rf"v-token-{role[:8]}-[A-Za-z0-9]{{20}}-\d+", username), username
    assert re.fullmatch(r"[A-Za-z0-9-]{20}", password)
    assert (
        issued["lease_id"]
        == f"{db.mount_point}/creds/{role}/" + str(issued["lease_id"]).rsplit("/", 1)[1]
    )
    assert issued["renewable"] is True
    assert issued["lease_duration"] == 3600
    assert db.postgres.can_login(username, password)
    lease = root.sys.read_lease(issued["lease_id"])["data"]
    assert lease["id"] == issued["lease_id"]
    assert lease["renewable"] is True
    assert 3590 <= lease["ttl"] <= 3600
    assert lease["last_renewal"] is None
    response = root.sys.revoke_lease(issued["lease_id"])
    assert response.status_code == 204
    assert not db.postgres.can_login(username, password)
    assert not role_exists(db, username)
    with pytest.raises(hvac.exceptions.InvalidRequest, match="invalid lease"):
        root.sys.read_lease(issued["lease_id"])


def test_lease_expiry_drops_the_user(vault_database: VaultDatabase, root: hvac.Client) -> None:
    db = vault_database
    role = make_db_role(db, root, default_ttl="2s", max_ttl="10s")
    issued = creds(root, db, role)
    data = issued["data"]
    assert isinstance(data, dict)
    assert issued["lease_duration"] == 2
    assert db.postgres.can_login(data["username"], data["password"])
    wait_until(lambda: not role_exists(db, data["username"]), what="expired lease revocation")
    assert not db.postgres.can_login(data["username"], data["password"])


def test_revoking_the_creating_token_revokes_its_leases(
    vault_database: VaultDatabase, vault_server: VaultServer, root: hvac.Client
) -> None:
    db = vault_database
    role = make_db_role(db, root)
    policy = unique("dbread")
    root.sys.create_or_update_policy(
        policy, f'path "{db.mount_point}/creds/*" {{ capabilities = ["read"] }}'
    )
    tok = root.auth.token.create(policies=[policy], ttl="10m")["auth"]["client_token"]
    app = vault_server.client(tok)
    data = creds(app, db, role)["data"]
    assert isinstance(data, dict)
    assert db.postgres.can_login(data["username"], data["password"])
    root.auth.token.revoke(tok)
    assert not db.postgres.can_login(data["username"], data["password"])


def test_token_expiry_revokes_its_leases(
    vault_database: VaultDatabase, vault_server: VaultServer, root: hvac.Client
) -> None:
    db = vault_database
    role = make_db_role(db, root)
    policy = unique("dbread")
    root.sys.create_or_update_policy(
        policy, f'path "{db.mount_point}/creds/*" {{ capabilities = ["read"] }}'
    )
    tok = root.auth.token.create(policies=[policy], ttl="2s")["auth"]["client_token"]
    issued = creds(vault_server.client(tok), db, role)
    data = issued["data"]
    assert isinstance(data, dict)
    assert issued["lease_duration"] == 3600
    wait_until(lambda: not role_exists(db, data["username"]), what="cascade on token expiry")


def test_renew_moves_valid_until_and_is_capped_by_max_ttl(
    vault_database: VaultDatabase, root: hvac.Client
) -> None:
    db = vault_database
    role = make_db_role(db, root, default_ttl="5s", max_ttl="30s")
    issued = creds(root, db, role)
    data = issued["data"]
    assert isinstance(data, dict)
    before = valid_until(db, data["username"])
    assert before is not None
    renewed = root.sys.renew_lease(issued["lease_id"], increment=20)
    assert renewed["lease_id"] == issued["lease_id"]
    assert renewed["lease_duration"] == 20
    assert renewed["data"] is None
    after = valid_until(db, data["username"])
    assert after is not None
    assert after > before
    assert root.sys.read_lease(issued["lease_id"])["data"]["last_renewal"] is not None
    capped = root.sys.renew_lease(issued["lease_id"], increment=3600)
    assert capped["lease_duration"] <= 30
    assert re.fullmatch(
        r'TTL of "1h" exceeded the effective max_ttl of "\d+s"; TTL value is capped accordingly',
        capped["warnings"][0],
    )
    plain = root.sys.renew_lease(issued["lease_id"])
    assert plain["lease_duration"] == 5
    root.sys.revoke_lease(issued["lease_id"])


def test_role_and_config_endpoints(
    vault_database: VaultDatabase, root: hvac.Client, raw: Raw
) -> None:
    db = vault_database
    role = make_db_role(db, root, default_ttl="90s", max_ttl="1h30m")
    info = root.secrets.database.read_role(role, mount_point=db.mount_point)["data"]
    assert info["db_name"] == db.db_name
    assert info["default_ttl"] == 90
    assert info["max_ttl"] == 5400
    assert info["revocation_statements"] == []
    assert role in root.secrets.database.list_roles(mount_point=db.mount_point)["data"]["keys"]
    config = root.secrets.database.read_connection(db.db_name, mount_point=db.mount_point)["data"]
    assert config["plugin_name"] == "postgresql-database-plugin"
    assert "password" not in config["connection_details"]
    assert db.postgres.password not in str(config)
    r = raw("GET", f"{db.mount_point}/creds/{unique('ghost')}")
    assert r.status_code == 400
    assert r.json()["errors"][0].startswith("unknown role: ")
    root.secrets.database.delete_role(role, mount_point=db.mount_point)
    with pytest.raises(hvac.exceptions.InvalidPath):
        root.secrets.database.read_role(role, mount_point=db.mount_point)


def test_config_verification_failure_hides_password(
    vault_database: VaultDatabase, root: hvac.Client
) -> None:
    db = vault_database
    wrong = "definitely-Wrong-pw-1"
    with pytest.raises(hvac.exceptions.InvalidRequest) as info:
        root.secrets.database.configure(
            name=unique("bad"),
            plugin_name="postgresql-database-plugin",
            connection_url=f"postgresql://{{{{username}}}}:{{{{password}}}}@127.0.0.1:{db.postgres.port}/postgres",
            username=db.postgres.superuser,
            password=wrong,
            mount_point=db.mount_point,
        )
    message = str(info.value)
    assert "error verifying connection" in message
    assert wrong not in message
    assert db.postgres.password not in message


def test_allowed_roles_is_enforced(
    vault_database: VaultDatabase, root: hvac.Client, raw: Raw
) -> None:
    db = vault_database
    name = unique("narrow")
    root.secrets.database.configure(
        name=name,
        plugin_name="postgresql-database-plugin",
        allowed_roles=["only-this"],
        connection_url=f"postgresql://{{{{username}}}}:{{{{password}}}}@127.0.0.1:{db.postgres.port}/postgres",
        username=db.postgres.superuser,
        password=db.postgres.password,
        mount_point=db.mount_point,
    )
    role = unique("other")
    root.secrets.database.create_role(
        role, db_name=name, creation_statements=["SELECT 1"], mount_point=db.mount_point
    )
    r = raw("GET", f"{db.mount_point}/creds/{role}")
    assert r.status_code == 500
    assert r.json() == {"errors": [f'1 error occurred:\n\t* "{role}" is not an allowed role\n\n']}


def test_list_and_revoke_prefix(vault_database: VaultDatabase, root: hvac.Client) -> None:
    db = vault_database
    role = make_db_role(db, root)
    users = []
    for _ in range(2):
        data = creds(root, db, role)["data"]
        assert isinstance(data, dict)
        users.append(data["username"])
    keys = root.sys.list_leases(f"{db.mount_point}/creds/{role}")["data"]["keys"]
    assert len(keys) == 2
    assert root.sys.revoke_prefix(f"{db.mount_point}/creds/{role}").status_code == 204
    for user in users:
        assert not role_exists(db, user)
    with pytest.raises(hvac.exceptions.InvalidPath):
        root.sys.list_leases(f"{db.mount_point}/creds/{role}")


def test_lease_errors(root: hvac.Client, raw: Raw) -> None:
    r = raw(
        "PUT", "sys/leases/renew", body={"lease_id": "database/creds/x/nope", "increment": None}
    )
    assert r.status_code == 400
    assert r.json() == {"errors": ["lease not found"]}
    r = raw("PUT", "sys/leases/lookup", body={})
    assert r.json() == {"errors": ["lease_id must be specified"]}
    assert root.sys.revoke_lease("database/creds/x/unknown").status_code == 204


def test_renewal_needs_no_extra_policy_but_revoke_does(
    vault_database: VaultDatabase, vault_server: VaultServer, root: hvac.Client
) -> None:
    db = vault_database
    role = make_db_role(db, root)
    policy = unique("dbread")
    root.sys.create_or_update_policy(
        policy, f'path "{db.mount_point}/creds/*" {{ capabilities = ["read"] }}'
    )
    tok = root.auth.token.create(policies=[policy], ttl="10m")["auth"]["client_token"]
    app = vault_server.client(tok)
    issued = creds(app, db, role)
    assert app.sys.renew_lease(issued["lease_id"])["lease_duration"] == 3600
    assert app.sys.read_lease(issued["lease_id"])["data"]["id"] == issued["lease_id"]
    with pytest.raises(hvac.exceptions.Forbidden):
        app.sys.revoke_lease(issued["lease_id"])
    root.auth.token.revoke(tok)


def test_log_never_contains_passwords_or_tokens(
    vault_database: VaultDatabase, vault_server: VaultServer, root: hvac.Client
) -> None:
    if vault_server.log_path is None:
        pytest.skip("only vault-dev's log is ours to inspect")
    db = vault_database
    role = make_db_role(db, root)
    issued = creds(root, db, role)
    data = issued["data"]
    assert isinstance(data, dict)
    child = root.auth.token.create(policies=["default"], ttl="1m")["auth"]["client_token"]
    root.auth.token.lookup(child)
    vault_server.client(child).auth.token.lookup_self()
    root.sys.revoke_lease(issued["lease_id"])
    text = vault_server.log_path.read_text()
    assert "GET /v1/" in text
    for secret in (db.postgres.password, data["password"], child):
        assert secret not in text
