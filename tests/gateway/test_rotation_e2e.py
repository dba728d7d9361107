"""The rotation protocol end to end: new credential before the old expires, overlap, ack."""

from __future__ import annotations

import asyncio
import threading
from dataclasses import dataclass, field

import hvac
import psycopg

from latchkey.v1 import secrets_pb2
from latchkey_server.devstack.seed import READONLY_CREATION
from tests.fixtures.gateway import GatewayHandle, Stubs
from tests.gateway.helpers import can_login, eventually

ROTATING_ROLE = "rotating"


def _create_short_role(gateway: GatewayHandle) -> None:
    client = hvac.Client(url=gateway.vault_addr, token=gateway.vault_root_token)
    client.secrets.database.create_role(
        name=ROTATING_ROLE,
        db_name="demo",
        creation_statements=READONLY_CREATION,
        default_ttl="3s",
        max_ttl="6s",
    )


@dataclass
class QueryLoop:
    """Runs `SELECT count(*) FROM items` in a loop with whatever credential is current."""

    dsn_for: dict[str, str] = field(default_factory=dict)
    current: str = ""
    done_with: str = ""
    """The credential of the last query that finished (queries run one at a time)."""
    ok: int = 0
    failures: list[str] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)

    def run(self) -> None:
        while not self.stop.is_set():
            lease_id = self.current
            try:
                with psycopg.connect(self.dsn_for[lease_id], connect_timeout=5) as conn:
                    conn.execute("SELECT count(*) FROM items").fetchone()
                self.ok += 1
            except psycopg.Error as exc:
                self.failures.append(type(exc).__name__)
            self.done_with = lease_id


async def test_three_rotations_with_zero_failed_queries(
    gateway: GatewayHandle, stubs: Stubs
) -> None:
    _create_short_role(gateway)
    stream = stubs.secrets.WatchDatabaseCredentials(
        secrets_pb2.WatchDatabaseCredentialsRequest(role=ROTATING_ROLE), metadata=gateway.metadata()
    )
    first = await stream.read()
    assert first.WhichOneof("event") == "issued"
    current = first.issued.credential
    loop = QueryLoop()
    loop.dsn_for[current.lease_id] = gateway.postgres.dsn_for(
        current.username, current.password, "demo"
    )
    loop.current = current.lease_id
    worker = threading.Thread(target=loop.run, daemon=True)
    worker.start()
    rotations = 0
    try:
        while rotations < 3:
            event = await asyncio.wait_for(stream.read(), timeout=30)
            kind = event.WhichOneof("event")
            if kind != "rotation":
                continue
            rot = event.rotation
            old, new = current, rot.credential
            assert rot.previous_lease_id == old.lease_id
            # The new credential arrives before the old one can no longer be kept, and both work.
            assert rot.previous_revoke_at.ToDatetime() <= old.max_ttl_deadline.ToDatetime()
            assert await can_login(gateway.postgres, new.username, new.password)
            assert await can_login(gateway.postgres, old.username, old.password)
            loop.dsn_for[new.lease_id] = gateway.postgres.dsn_for(
                new.username, new.password, "demo"
            )
            loop.current = new.lease_id
            # Acknowledge once no query with the old credential is in flight (as a pool does).
            await eventually(
                lambda n=new.lease_id: loop.done_with == n, what="a query with the new credential"
            )
            await stubs.secrets.AckRotation(
                secrets_pb2.AckRotationRequest(
                    watch_id=event.watch_id, rotation_id=rot.rotation_id
                ),
                metadata=gateway.metadata(),
            )

            async def old_gone(u: str = old.username, p: str = old.password) -> bool:
                return not await can_login(gateway.postgres, u, p)

            await eventually(old_gone, what="the acknowledged old credential to stop working")
            current = new
            rotations += 1
    finally:
        loop.stop.set()
        await asyncio.to_thread(worker.join, 10)
        stream.cancel()
    assert rotations == 3
    assert loop.ok > 0
    assert loop.failures == []


async def test_unacknowledged_rotation_revokes_old_after_grace(
    gateway: GatewayHandle, stubs: Stubs
) -> None:
    _create_short_role(gateway)
    stream = stubs.secrets.WatchDatabaseCredentials(
        secrets_pb2.WatchDatabaseCredentialsRequest(role=ROTATING_ROLE),
        metadata=gateway.metadata("other"),
    )
    first = await stream.read()
    old = first.issued.credential
    while True:
        event = await asyncio.wait_for(stream.read(), timeout=30)
        if event.WhichOneof("event") == "rotation":
            break
    assert await can_login(gateway.postgres, old.username, old.password)

    async def old_gone() -> bool:
        return not await can_login(gateway.postgres, old.username, old.password)

    await eventually(old_gone, what="grace deadline to revoke the old credential")
    new = event.rotation.credential
    assert await can_login(gateway.postgres, new.username, new.password)
    stream.cancel()
