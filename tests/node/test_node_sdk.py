"""The Node SDK's own tests (clients/node, `node --test`) against the real stack.

This test starts nothing of its own beyond the suite's fixtures: real Consul, OpenBao and
PostgreSQL, and the shared gateway. It seeds what the Node tests read, writes a gateway config
(JSON, which `latchkey-server serve --config` reads as YAML) that the Node tests use to start
gateway processes of their own (to restart one, or to serve mTLS), and runs `npm test` with
`LATCHKEY_TEST_*` variables saying where everything is. `LATCHKEY_NODE_TEST_FILES` (paths under
clients/node, space-separated) runs only some of the Node test files.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import sys
from pathlib import Path
from typing import Any

import consul
import hvac
import pytest

from latchkey_server.access.certs import init_ca, issue_client, issue_server
from latchkey_server.devstack.consul import ConsulAgent
from latchkey_server.devstack.postgres import PostgresCluster
from latchkey_server.devstack.seed import READONLY_CREATION, seed_consul
from tests.fixtures.gateway import TEST_REPLICA, GatewayHandle

REPO = Path(__file__).resolve().parents[2]
NODE_DIR = REPO / "clients" / "node"
NODE_TIMEOUT = 240  # seconds; the Node suite itself takes well under two minutes


def _require_node() -> str:
    npm = shutil.which("npm")
    if shutil.which("node") is None or npm is None:
        pytest.fail(
            "Node.js 20+ and npm are required for the Node SDK tests: install them "
            "(see clients/node/scripts/ensure-node.sh), then run `make test`",
            pytrace=False,
        )
    if not (NODE_DIR / "node_modules" / ".installed").exists():
        pytest.fail(
            "the Node SDK's packages are not installed: run `make node-deps` "
            "(npm ci in clients/node), or `make test`, which does it",
            pytrace=False,
        )
    return npm


def _gateway_config(
    demo_env: dict[str, Any], consul_agent: ConsulAgent, vault_addr: str, workdir: Path
) -> dict[str, Any]:
    """What a Node test's own gateway runs with (it sets `listen`, and `tls` for mTLS)."""
    return {
        "listen": "127.0.0.1:0",
        "insecure": True,
        "log_format": "text",
        "metrics": {"listen": "127.0.0.1:0"},
        "health": {"probe_interval": 0.5},
        "heartbeat_interval": 0.5,
        "shutdown_grace": 1.0,
        "vault": {
            "addr": vault_addr,
            "auth": {
                "method": "approle",
                "role_id": demo_env["approle"].role_id,
                "secret_id": demo_env["approle"].secret_id,
            },
        },
        "consul": {"addr": consul_agent.http_addr, "wait": 20},
        "leases": {"grace": 3.0, "unheld_grace": 0.5},
        "replica": TEST_REPLICA,  # helpers.ts gives each gateway an id of its own
        "cache": {"secret_ttl": 2.0, "negative_ttl": 0.5, "stale_limit": 120.0},
        "auth": {
            "tokens_file": str(demo_env["tokens_file"]),
            "policies_dir": str(demo_env["policies_dir"]),
        },
        "audit": {"sink": str(workdir / "audit.log")},
    }


def _seed(gateway: GatewayHandle, consul_agent: ConsulAgent) -> dict[str, str]:
    """The secret, roles, keys and services the Node tests and README examples read."""
    vault = hvac.Client(url=gateway.vault_addr, token=gateway.vault_root_token)
    vault.secrets.kv.v2.create_or_update_secret(
        path="myapp/database",
        secret={"username": "myapp", "password": "node-readme-password"},
        mount_point="secret",
    )
    # POOL rotates every few seconds. ACK rotates about 7 s after issue and its old login stays
    # valid about 3 s more (the gateway rotates a third of the TTL before the max TTL), time for
    # a test to see that only the acknowledgement ends it. LONG and README leases last minutes.
    roles = {
        "LATCHKEY_TEST_ROLE_POOL": ("node-pool", "3s", "6s"),
        "LATCHKEY_TEST_ROLE_ACK": ("node-ack", "10s", "10s"),
        "LATCHKEY_TEST_ROLE_LONG": ("node-long", "60s", "5m"),
        "LATCHKEY_TEST_ROLE_README": ("myapp-readonly", "60s", "5m"),
    }
    for role, ttl, max_ttl in roles.values():
        vault.secrets.database.create_role(
            name=role, db_name="demo", creation_statements=READONLY_CREATION,
            default_ttl=ttl, max_ttl=max_ttl,
        )  # fmt: skip
    seed_consul(consul_agent.http_addr)
    kv = consul.Consul(host="127.0.0.1", port=consul_agent.http_port).kv
    kv.put("config/myapp/log_level", "info")
    kv.put("config/myapp/max_connections", "10")
    return {variable: role for variable, (role, _, _) in roles.items()}


async def test_node_sdk(
    gateway: GatewayHandle, consul_agent: ConsulAgent, postgres: PostgresCluster,
    demo_env: dict[str, Any], tmp_path: Path,
) -> None:  # fmt: skip
    npm = _require_node()
    roles = _seed(gateway, consul_agent)
    tls_dir = tmp_path / "tls"
    init_ca(tls_dir)
    issue_server(tls_dir)
    issue_client(tls_dir, identity="app")
    config_file = tmp_path / "gateway.json"
    config_file.write_text(
        json.dumps(_gateway_config(demo_env, consul_agent, gateway.vault_addr, tmp_path), indent=2)
    )
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("LATCHKEY_")},
        **roles,
        "LATCHKEY_TEST_ADDR": f"http://{gateway.addr}",
        "LATCHKEY_TEST_TOKEN": gateway.tokens["app"],
        "LATCHKEY_TEST_CONSUL": consul_agent.http_addr,
        # Vault's root token, for tests that write new secret versions (secrets.watch).
        "LATCHKEY_TEST_VAULT_ADDR": gateway.vault_addr,
        "LATCHKEY_TEST_VAULT_TOKEN": gateway.vault_root_token,
        "LATCHKEY_TEST_PG_HOST": "127.0.0.1",
        "LATCHKEY_TEST_PG_PORT": str(postgres.port),
        "LATCHKEY_TEST_PG_DATABASE": "demo",
        "LATCHKEY_TEST_SERVE": json.dumps([str(REPO / ".venv/bin/latchkey-server"), "serve"]),
        "LATCHKEY_TEST_GATEWAY_CONFIG": str(config_file),
        "LATCHKEY_TEST_TLS_DIR": str(tls_dir),
        "LATCHKEY_TEST_WORKDIR": str(tmp_path),
    }
    files = os.environ.get("LATCHKEY_NODE_TEST_FILES", "").split()
    proc = await asyncio.create_subprocess_exec(
        npm, *(["run", "test:files", "--", *files] if files else ["test"]), cwd=NODE_DIR, env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    try:
        out, _ = await asyncio.wait_for(proc.communicate(), NODE_TIMEOUT)
    except TimeoutError:
        proc.kill()
        out, _ = await proc.communicate()
        pytest.fail(f"npm test ran over {NODE_TIMEOUT}s:\n{out.decode()[-6000:]}", pytrace=False)
    text = out.decode()
    sys.stdout.write(text[-3000:])  # shown with -s or -rA; the summary lines end the output
    assert proc.returncode == 0, f"npm test failed:\n{text[-12000:]}"
    # The spec reporter's summary lines: "\u2139 pass N" and "\u2139 fail N".
    passed = re.search(r"^\u2139 pass (\d+)$", text, flags=re.M)
    failed = re.search(r"^\u2139 fail (\d+)$", text, flags=re.M)
    assert passed, f"no node:test summary in the output:\n{text[-3000:]}"
    assert failed, f"no node:test summary in the output:\n{text[-3000:]}"
    assert int(failed.group(1)) == 0
    assert int(passed.group(1)) >= (1 if files else 20), "fewer Node tests ran than expected"
