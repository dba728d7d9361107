"""Pool integrations against real PostgreSQL: queries keep working across rotations."""

from __future__ import annotations

import asyncio
import queue
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy
from psycopg.conninfo import conninfo_to_dict

import latchkey
from latchkey.integrations import psycopg as lk_psycopg
from latchkey.integrations import sqlalchemy as lk_sqlalchemy
from tests.fixtures.gateway import GatewayHandle
from tests.sdk.conftest import Upstreams, sync_client


@dataclass
class Load:
    """Worker threads running `SELECT count(*) FROM items` in a loop."""

    query: Callable[[], int]
    ok: int = 0
    failures: list[str] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def run(self) -> None:
        while not self.stop.is_set():
            try:
                assert self.query() == 3
                with self.lock:
                    self.ok += 1
            except Exception as exc:
                with self.lock:
                    self.failures.append(f"{type(exc).__name__}: {exc}")

    def during(self, workers: int, body: Callable[[], None]) -> None:
        threads = [threading.Thread(target=self.run, daemon=True) for _ in range(workers)]
        for t in threads:
            t.start()
        try:
            body()
        finally:
            self.stop.set()
            for t in threads:
                t.join(timeout=30)


def wait_rotations(creds: latchkey.RotatingCredentials, n: int) -> list[str]:
    rotated: queue.Queue[latchkey.DatabaseCredentials] = queue.Queue()
    creds.on_rotate(rotated.put)
    return [rotated.get(timeout=40).lease_id for _ in range(n)]


def psycopg_soak(gateway: GatewayHandle, role: str) -> tuple[Load, list[str]]:
    base = gateway.postgres.dsn_for("placeholder", "placeholder", "demo")
    with (
        sync_client(gateway) as client,
        client.database.watch(role) as creds,
        lk_psycopg.pool(creds, base, size=4, open=True) as pool,
    ):

        def query() -> int:
            with pool.connection() as conn:
                row = conn.execute("SELECT count(*) FROM items").fetchone()
                return int(row[0]) if row else -1

        load = Load(query)
        leases: list[str] = []
        load.during(4, lambda: leases.extend(wait_rotations(creds, 3)))
        users = {creds.current.username}
        with pool.connection() as conn:
            assert conn.info.user in users
    return load, leases


async def test_psycopg_pool_three_rotations_zero_failed_queries(
    gateway: GatewayHandle, upstreams: Upstreams
) -> None:
    role = upstreams.short_role()
    load, leases = await asyncio.to_thread(psycopg_soak, gateway, role)
    assert len(set(leases)) == 3
    assert load.ok > 0
    assert load.failures == []


@dataclass
class Switchable:
    """Stands in for `RotatingCredentials` where a test needs to say which one is current."""

    current: latchkey.DatabaseCredentials
    callbacks: list[Callable[[latchkey.DatabaseCredentials], None]] = field(default_factory=list)

    def on_rotate(self, callback: Callable[[latchkey.DatabaseCredentials], None]) -> None:
        self.callbacks.append(callback)


def stale_connection_run(gateway: GatewayHandle, role: str) -> tuple[str, str, str]:
    """A connection the pool opened with a credential that was rotated meanwhile (its connect
    began before the rotation and ended after the pool was drained) must not stay in the pool:
    it is closed and replaced, and the rotation's retirement wait does not hang on it."""
    with sync_client(gateway) as one, sync_client(gateway, "other") as two:
        old, new = one.database.credentials(role), two.database.credentials(role)
    creds = Switchable(old)
    base = gateway.postgres.dsn_for("placeholder", "placeholder", "demo")
    with lk_psycopg.pool(creds, base, size=1, retire_timeout=10, open=True) as pool:  # type: ignore[arg-type]
        pool.wait(timeout=30)
        creds.current = new  # the pool's one connection now carries a rotated credential
        with pool.connection(timeout=10) as conn:
            user = conn.info.user
        retired = threading.Event()
        threading.Thread(
            target=lambda: (creds.callbacks[0](new), retired.set()), daemon=True
        ).start()
        assert retired.wait(30), "the rotation hook did not return"
        with pool.connection(timeout=10) as conn:
            after = conn.info.user
    return user, after, new.username


async def test_psycopg_pool_replaces_a_connection_with_a_rotated_credential(
    gateway: GatewayHandle, caplog: Any
) -> None:
    user, after, expected = await asyncio.to_thread(stale_connection_run, gateway, "demo-readonly")
    assert user == after == expected
    assert "still open" not in caplog.text


def sqlalchemy_run(gateway: GatewayHandle, role: str) -> Load:
    params = conninfo_to_dict(gateway.postgres.dsn_for("placeholder", "placeholder", "demo"))
    url = sqlalchemy.URL.create(
        "postgresql+psycopg",
        host=str(params["host"]),
        port=int(str(params["port"])),
        database="demo",
    )
    with sync_client(gateway) as client, client.database.watch(role) as creds:
        engine = lk_sqlalchemy.engine(
            creds, url, pool_size=4, max_overflow=0
        )  # fmt: skip

        def query() -> int:
            with engine.connect() as conn:
                return int(conn.execute(sqlalchemy.text("SELECT count(*) FROM items")).scalar_one())

        load = Load(query)
        load.during(4, lambda: wait_rotations(creds, 1))
        engine.dispose()
    return load


async def test_sqlalchemy_engine_follows_a_rotation(
    gateway: GatewayHandle, upstreams: Upstreams
) -> None:
    role = upstreams.short_role()
    load = await asyncio.to_thread(sqlalchemy_run, gateway, role)
    assert load.ok > 0
    assert load.failures == []
