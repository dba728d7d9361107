"""Many credentials issued and revoked at once on the demo's role, through the adapter.

GRANT/REVOKE on a shared object from concurrent transactions race in PostgreSQL ("tuple
concurrently updated"). The demo's creation statement therefore only joins a group role that
holds the privileges (`READONLY_CREATION`, `IN ROLE demo_readers`): with that pattern every
concurrent issue and revocation succeeds, and every credential reads the demo table.
"""

from __future__ import annotations

import asyncio
from typing import Any

from latchkey_server.devstack.seed import DEMO_ROLE
from latchkey_server.upstreams.vault import VaultAdapter
from tests.fixtures.vault import VaultServer
from tests.upstreams.vault.conftest import adapter_for
from tests.upstreams.vault.test_gateway_policy import can_read_the_demo


async def test_concurrent_creds_and_revokes_all_succeed(
    demo_env: dict[str, Any], vault_server: VaultServer
) -> None:
    db = demo_env["db"]
    adapter: VaultAdapter = adapter_for(vault_server, pool_size=8)
    try:
        issued = await asyncio.gather(
            *(adapter.issue_credentials("database", DEMO_ROLE) for _ in range(16))
        )
        for cred in issued:
            assert await asyncio.to_thread(
                can_read_the_demo, db.host, db.port, cred.username, cred.password
            )
        await asyncio.gather(*(adapter.revoke_lease(cred.lease_id) for cred in issued))
        for cred in issued:
            assert not await asyncio.to_thread(
                can_read_the_demo, db.host, db.port, cred.username, cred.password
            )
    finally:
        await adapter.close()
