"""Concurrent credential creation and revocation on one database, through hvac.

GRANT/REVOKE on a shared object from concurrent transactions race in PostgreSQL ("tuple
concurrently updated"); issuing and revoking many credentials at once must still succeed.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import Any

import hvac

from latchkey_server.devstack.postgres import PostgresCluster

GRANTING_ROLE = [
    "CREATE ROLE \"{{name}}\" WITH LOGIN PASSWORD '{{password}}' VALID UNTIL '{{expiration}}';",
    'GRANT CONNECT ON DATABASE postgres TO "{{name}}";',
    'GRANT USAGE ON SCHEMA public TO "{{name}}";',
]


def test_concurrent_creds_and_revokes_all_succeed(
    vault_database: Any, vault_server: Any, postgres: PostgresCluster
) -> None:
    client = hvac.Client(url=vault_server.addr, token=vault_server.root_token)
    mount, db_name = vault_database.mount_point, vault_database.db_name
    client.secrets.database.create_role(
        name="racy", db_name=db_name, creation_statements=GRANTING_ROLE,
        default_ttl="60s", max_ttl="120s", mount_point=mount,
    )  # fmt: skip
    with ThreadPoolExecutor(max_workers=8) as pool:
        issued = list(
            pool.map(
                lambda _: client.secrets.database.generate_credentials("racy", mount_point=mount),
                range(16),
            )
        )
        for reply in issued:
            assert postgres.can_login(reply["data"]["username"], reply["data"]["password"])
        list(pool.map(lambda r: client.sys.revoke_lease(r["lease_id"]), issued))
    for reply in issued:
        assert not postgres.can_login(reply["data"]["username"], reply["data"]["password"])
