"""SIGTERM on vault-dev revokes every outstanding lease: no role it created survives."""

from __future__ import annotations

import signal
from pathlib import Path

import hvac
import pytest

from latchkey_server.devstack.postgres import PostgresCluster
from tests.devvault.conftest import CREATE_SQL, unique
from tests.fixtures.components import register_component, unregister_component
from tests.fixtures.vault import VaultDevProcess, VaultServer


def test_sigterm_drops_every_created_role(
    postgres: PostgresCluster, vault_dev: VaultServer, tmp_path: Path
) -> None:
    if vault_dev.real_vault:
        pytest.skip("starts its own vault-dev process")
    proc = VaultDevProcess(tmp_path / "vault-dev-2.log", root_token="second-root")
    proc.start()
    register_component("vault-dev-2", proc)
    try:
        client = hvac.Client(url=proc.addr, token=proc.root_token)
        client.sys.enable_secrets_engine("database", path="database")
        client.secrets.database.configure(
            name="pg",
            plugin_name="postgresql-database-plugin",
            allowed_roles="*",
            connection_url=f"postgresql://{{{{username}}}}:{{{{password}}}}@127.0.0.1:{postgres.port}/postgres",
            username=postgres.superuser,
            password=postgres.password,
        )
        role = unique("bye")
        client.secrets.database.create_role(role, db_name="pg", creation_statements=CREATE_SQL)
        issued = [client.secrets.database.generate_credentials(role)["data"] for _ in range(3)]
        for data in issued:
            assert postgres.can_login(data["username"], data["password"])
        proc.process.stop(timeout=30, sig=signal.SIGTERM)
        assert proc.process._proc is not None
        assert proc.process._proc.returncode == 0
        for data in issued:
            assert not postgres.can_login(data["username"], data["password"])
        assert "shutting down" in proc.log_tail(200)
    finally:
        unregister_component("vault-dev-2")
        proc.stop()
