"""The remaining hvac calls latchkey relies on (reference §8.2), end to end."""

from __future__ import annotations

import secrets

import hvac
import psycopg
import pytest
from psycopg import sql

from tests.fixtures.vault import VaultDatabase, VaultServer
from tests.upstreams.vault.conftest import CREATE_SQL, role_exists, unique


def test_generic_read_list_write(root: hvac.Client) -> None:
    path = unique("generic")
    root.write_data(f"secret/data/{path}/x", data={"data": {"a": "b"}})
    assert root.read(f"secret/data/{path}/x")["data"]["data"] == {"a": "b"}
    assert root.list(f"secret/metadata/{path}")["data"]["keys"] == ["x"]
    assert root.read(f"secret/data/{path}/missing") is None
    assert root.list(f"secret/metadata/{unique('none')}") is None
    assert root.sys.retrieve_mount_option("secret", "version") == "2"


def test_revoke_force(vault_database: VaultDatabase, root: hvac.Client) -> None:
    db = vault_database
    role = unique("force")
    root.secrets.database.create_role(
        role, db_name=db.db_name, creation_statements=CREATE_SQL, mount_point=db.mount_point
    )
    data = root.secrets.database.generate_credentials(role, mount_point=db.mount_point)["data"]
    assert root.sys.revoke_force(f"{db.mount_point}/creds/{role}").status_code == 204
    assert not role_exists(db, data["username"])


def test_rotate_root_credentials(
    vault_database: VaultDatabase, vault_server: VaultServer, root: hvac.Client
) -> None:
    db = vault_database
    admin, admin_pw = unique("vault_admin"), secrets.token_urlsafe(12)
    with psycopg.connect(db.postgres.dsn, autocommit=True) as conn:
        conn.execute(
            sql.SQL("CREATE ROLE {} LOGIN CREATEROLE PASSWORD {}").format(
                sql.Identifier(admin), sql.Literal(admin_pw)
            )
        )
        conn.execute(
            sql.SQL("GRANT CONNECT ON DATABASE postgres TO {} WITH GRANT OPTION").format(
                sql.Identifier(admin)
            )
        )
    name = unique("rot")
    root.secrets.database.configure(
        name=name,
        plugin_name="postgresql-database-plugin",
        allowed_roles="*",
        connection_url=f"postgresql://{{{{username}}}}:{{{{password}}}}@127.0.0.1:{db.postgres.port}/postgres",
        username=admin,
        password=admin_pw,
        mount_point=db.mount_point,
    )
    assert db.postgres.can_login(admin, admin_pw)
    root.secrets.database.rotate_root_credentials(name, mount_point=db.mount_point)
    assert not db.postgres.can_login(admin, admin_pw)
    role = unique("after")
    root.secrets.database.create_role(
        role, db_name=name, creation_statements=CREATE_SQL, mount_point=db.mount_point
    )
    issued = root.secrets.database.generate_credentials(role, mount_point=db.mount_point)
    assert db.postgres.can_login(issued["data"]["username"], issued["data"]["password"])
    root.sys.revoke_lease(issued["lease_id"])
    root.secrets.database.delete_connection(name, mount_point=db.mount_point)
    with psycopg.connect(db.postgres.dsn, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP OWNED BY {}").format(sql.Identifier(admin)))
        conn.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(admin)))


def test_mount_and_auth_listing(root: hvac.Client) -> None:
    mounts = root.sys.list_mounted_secrets_engines()["data"]
    for path in ("secret/", "sys/", "cubbyhole/", "identity/"):
        assert path in mounts
    assert mounts["secret/"]["type"] == "kv"
    assert root.sys.list_auth_methods()["data"]["token/"]["type"] == "token"
    with pytest.raises(hvac.exceptions.InvalidRequest, match="cannot mount"):
        root.sys.enable_secrets_engine("kv", path="sys/foo")
