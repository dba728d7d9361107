"""Seeding the demo: the same code configures `make dev` and the compose bootstrap service.

It acts as an operator would, through Vault's and Consul's own client libraries, so it uses
hvac and python-consul2 directly (the gateway's rooms never do: they go through upstreams/).
"""

from __future__ import annotations

import json
import secrets
from dataclasses import dataclass
from typing import Any

import consul
import hvac
import psycopg
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo

DEMO_DATABASE = "demo"
DEMO_ROLE = "demo-readonly"
DEMO_SECRET_PATH = "demo/app"
DEMO_CONFIG_PREFIX = "config/demo/"
DEMO_SERVICE = "web"
GATEWAY_POLICY = "latchkey-gateway"
GATEWAY_APPROLE = "latchkey-gateway"

GATEWAY_POLICY_HCL = """
# What the latchkey gateway needs from Vault, and nothing more.
path "database/creds/*"         { capabilities = ["read"] }
path "database/roles/*"         { capabilities = ["read"] }
path "sys/mounts/database/tune" { capabilities = ["read"] }
path "sys/leases/renew"         { capabilities = ["update"] }
path "sys/leases/revoke"        { capabilities = ["update"] }
path "sys/leases/lookup"        { capabilities = ["update"] }
path "secret/data/*"            { capabilities = ["read"] }
path "secret/metadata/*"        { capabilities = ["read"] }
"""

DEMO_READERS = "demo_readers"
# Privileges live on one group role granted once at seed time; each credential only joins it.
# (GRANTs on a shared object from concurrent creations fail in PostgreSQL with "tuple
# concurrently updated", so creation statements must not grant on shared objects.)
READONLY_CREATION = [
    "CREATE ROLE \"{{name}}\" WITH LOGIN PASSWORD '{{password}}' VALID UNTIL '{{expiration}}' "
    f"IN ROLE {DEMO_READERS};",
]


@dataclass(frozen=True)
class DemoDatabase:
    host: str
    port: int
    admin_user: str
    admin_password: str
    admin_dsn: str

    @property
    def vault_connection_url(self) -> str:
        """Templated URL: Vault fills in the admin credentials it stores separately."""
        return f"postgresql://{{{{username}}}}:{{{{password}}}}@{self.host}:{self.port}/{DEMO_DATABASE}"


@dataclass(frozen=True)
class AppRoleCredentials:
    role_id: str
    secret_id: str


def seed_postgres(admin_dsn: str) -> DemoDatabase:
    """Create the `demo` database with a small table the read-only role can query."""
    params = conninfo_to_dict(admin_dsn)
    with psycopg.connect(admin_dsn, autocommit=True) as conn:
        exists = conn.execute(
            "SELECT 1 FROM pg_database WHERE datname = %s", (DEMO_DATABASE,)
        ).fetchone()
        if not exists:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(DEMO_DATABASE)))
    demo_dsn = make_conninfo(admin_dsn, dbname=DEMO_DATABASE)
    readers = sql.Identifier(DEMO_READERS)
    with psycopg.connect(demo_dsn, autocommit=True) as conn:
        has_group = conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (DEMO_READERS,))
        if not has_group.fetchone():
            conn.execute(sql.SQL("CREATE ROLE {} NOLOGIN").format(readers))
        conn.execute("CREATE TABLE IF NOT EXISTS items (id int PRIMARY KEY, name text NOT NULL)")
        conn.execute(
            sql.SQL("GRANT CONNECT ON DATABASE {} TO {}").format(
                sql.Identifier(DEMO_DATABASE), readers
            )
        )
        conn.execute(sql.SQL("GRANT USAGE ON SCHEMA public TO {}").format(readers))
        conn.execute(sql.SQL("GRANT SELECT ON ALL TABLES IN SCHEMA public TO {}").format(readers))
        conn.execute(
            "INSERT INTO items VALUES (1, 'latch'), (2, 'key'), (3, 'gateway') "
            "ON CONFLICT (id) DO NOTHING"
        )
    return DemoDatabase(
        host=str(params.get("host", "127.0.0.1")),
        port=int(str(params.get("port") or 5432)),
        admin_user=str(params.get("user", "postgres")),
        admin_password=str(params.get("password", "")),
        admin_dsn=admin_dsn,
    )


def seed_vault(
    addr: str,
    root_token: str,
    db: DemoDatabase,
    *,
    default_ttl: str = "60s",
    max_ttl: str = "5m",
    approle: AppRoleCredentials | None = None,
) -> AppRoleCredentials:
    """Database engine + demo role, KV secret, the gateway's policy and AppRole.

    `approle`: give the gateway's AppRole this role_id and secret_id (as an operator re-running
    their provisioning after Vault lost its data does, so the gateway logs in again unchanged);
    by default Vault generates them."""
    client = hvac.Client(url=addr, token=root_token)
    mounts = client.sys.list_mounted_secrets_engines()["data"]
    if "database/" not in mounts:
        client.sys.enable_secrets_engine("database", path="database")
    client.secrets.database.configure(
        name=DEMO_DATABASE,
        plugin_name="postgresql-database-plugin",
        connection_url=db.vault_connection_url,
        username=db.admin_user,
        password=db.admin_password,
        allowed_roles="*",
    )
    client.secrets.database.create_role(
        name=DEMO_ROLE,
        db_name=DEMO_DATABASE,
        creation_statements=READONLY_CREATION,
        default_ttl=default_ttl,
        max_ttl=max_ttl,
    )
    client.secrets.kv.v2.create_or_update_secret(
        path=DEMO_SECRET_PATH,
        secret={"api_key": "demo-" + secrets.token_hex(8), "greeting": "hello from Vault"},
        mount_point="secret",
    )
    client.sys.create_or_update_policy(GATEWAY_POLICY, GATEWAY_POLICY_HCL)
    if "approle/" not in client.sys.list_auth_methods()["data"]:
        client.sys.enable_auth_method("approle")
    client.auth.approle.create_or_update_approle(
        GATEWAY_APPROLE, token_policies=[GATEWAY_POLICY], token_ttl="1h", token_max_ttl="24h"
    )
    if approle is not None:
        client.auth.approle.update_role_id(GATEWAY_APPROLE, approle.role_id)
        client.auth.approle.create_custom_secret_id(GATEWAY_APPROLE, approle.secret_id)
        return approle
    role_id = client.auth.approle.read_role_id(GATEWAY_APPROLE)["data"]["role_id"]
    secret_id = client.auth.approle.generate_secret_id(GATEWAY_APPROLE)["data"]["secret_id"]
    return AppRoleCredentials(role_id=role_id, secret_id=secret_id)


DEMO_FLAGS_PREFIX = "flags/production/"
"""Feature flags: one flagd flag set per key (what `LatchkeyProvider` and the flagd sync serve)."""
DEMO_FLAG_SET_KEY = DEMO_FLAGS_PREFIX + "web"


def new_ui_flag_set(percent: int = 10) -> dict[str, Any]:
    """The demo flag set: `new_ui` on for `percent` % of users, bucketed by the targeting key
    (flagd's `fractional` hashes the flag key and the targeting key)."""
    return {
        "flags": {
            "new_ui": {
                "state": "ENABLED",
                "variants": {"on": True, "off": False},
                "defaultVariant": "off",
                "targeting": {"fractional": [["on", percent], ["off", 100 - percent]]},
            }
        },
    }


def seed_consul(http_addr: str) -> None:
    """Config keys under config/demo/, the `new_ui` flag set under flags/production/ and a `web`
    service: two passing instances, one critical."""
    host, _, port = http_addr.rpartition(":")
    client = consul.Consul(host=host or "127.0.0.1", port=int(port))
    client.kv.put(DEMO_CONFIG_PREFIX + "log_level", "info")
    client.kv.put(DEMO_CONFIG_PREFIX + "feature_flags", json.dumps({"new_checkout": True}))
    client.kv.put(DEMO_CONFIG_PREFIX + "max_connections", "10")
    client.kv.put(DEMO_FLAG_SET_KEY, json.dumps(new_ui_flag_set(10), indent=2))
    for n, status in ((1, "passing"), (2, "passing"), (3, "critical")):
        service_id = f"{DEMO_SERVICE}-{n}"
        client.agent.service.register(
            DEMO_SERVICE,
            service_id=service_id,
            address="127.0.0.1",
            port=8080 + n,
            tags=["demo", "v1"],
            check={"CheckID": f"{service_id}-ttl", "TTL": "87600h", "Status": status},
        )
