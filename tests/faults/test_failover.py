"""Issue 13 item 5: an app fails over between replicas without a failed query.

Two `latchkey-server serve` replicas (distinct ids) share one Consul, OpenBao and PostgreSQL and
register in Consul as service `latchkey`; the app finds them with
`LATCHKEY_ADDR=consul://AGENT/latchkey`. It holds a credential stream feeding a psycopg pool that
runs queries in a loop on four threads, and a config watch. The replica it is connected to is
SIGKILLed: the credential stream attaches to the other replica, which brokers a new credential
that reaches the pool as a rotation (it swaps its connections); the config watch resumes from
its index; the killed replica's credential is revoked by the survivor's reaper. Session TTL 3 s,
reap grace 2 s (`TEST_REPLICA`). The failover gap is printed (last query through the killed
replica's credential to the first through the new one); it is measured, never asserted.
"""

from __future__ import annotations

import asyncio
import secrets
import signal
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import consul
import pytest

import latchkey
from latchkey.integrations import psycopg as lk_psycopg
from latchkey_server.devstack.consul import ConsulAgent
from tests.faults.conftest import GatewayFactory
from tests.faults.process import GatewayProcess
from tests.faults.test_replicas import (
    SERVICE,
    WAIT,
    _instances,
    _journal,
    _replica,
    _restart,
    _roles,
)
from tests.fixtures.gateway import TEST_REPLICA
from tests.gateway.helpers import can_login, eventually

pytestmark = [pytest.mark.faults, pytest.mark.timeout(120)]  # about 15 s each


def _put(agent: ConsulAgent, key: str, value: str) -> None:
    assert consul.Consul(host="127.0.0.1", port=agent.http_port).kv.put(key, value)


@dataclass
class Queries:
    """Threads running `SELECT count(*) FROM items` through the pool, recording each query's
    database user (the credential it went through) and time."""

    pool: Any
    done: list[tuple[float, str]] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)
    lock: threading.Lock = field(default_factory=threading.Lock)
    threads: list[threading.Thread] = field(default_factory=list)

    def run(self) -> None:
        while not self.stop.is_set():
            try:
                with self.pool.connection() as conn:
                    row = conn.execute("SELECT count(*) FROM items").fetchone()
                    user = conn.info.user
                assert row == (3,), row
                with self.lock:
                    self.done.append((time.monotonic(), user))
            except Exception as exc:
                with self.lock:
                    self.failures.append(f"{type(exc).__name__}: {exc}")

    def start(self, workers: int) -> None:
        self.threads = [threading.Thread(target=self.run, daemon=True) for _ in range(workers)]
        for thread in self.threads:
            thread.start()

    def finish(self) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join(timeout=30)

    def by(self, user: str) -> list[float]:
        with self.lock:
            return [t for t, u in self.done if u == user]


@dataclass
class App:
    """The app: a blocking client, a credential stream with a psycopg pool, a config watch
    recording every key put it is told about, and a discovery watch of the gateway's own
    service (the replicas' ids, as the gateway it is connected to reports them)."""

    client: latchkey.Client
    creds: latchkey.RotatingCredentials
    pool: Any
    watch: Any = None
    replicas_watch: Any = None
    puts: dict[str, list[str]] = field(default_factory=dict)
    replicas: set[str] = field(default_factory=set)

    def on_config(self, event: Any) -> None:
        if isinstance(event, latchkey.ConfigEvent):
            for change in event.changes:
                if change.type == "put" and change.entry is not None:
                    self.puts.setdefault(change.key, []).append(change.entry.text)

    def on_replicas(self, event: Any) -> None:
        if isinstance(event, latchkey.ServiceEvent):
            self.replicas = {instance.id for instance in event.instances}

    def close(self) -> None:
        for watch in (self.watch, self.replicas_watch):
            if watch is not None:
                watch.close()
        self.pool.close()
        self.creds.close()
        self.client.close()


def _open_app(addr: str, token: str, role: str, prefix: str, dsn: str) -> App:
    client = latchkey.Client(addr, token=token)
    creds = client.database.watch(role)
    app = App(client, creds, lk_psycopg.pool(creds, dsn, size=4, open=True))
    app.watch = client.config.watch(prefix, app.on_config)
    app.replicas_watch = client.services.watch(SERVICE, app.on_replicas)
    return app


@pytest.mark.parametrize("addressing", ["consul", "list"])
async def test_an_app_fails_over_to_another_replica_without_a_failed_query(
    addressing: str, gateway_process: GatewayFactory, private_consul: ConsulAgent,
    vault_server: Any, postgres: Any,
) -> None:  # fmt: skip
    """`consul`: LATCHKEY_ADDR=consul://AGENT/latchkey; `list`: a static list, A first."""
    (role,) = _roles(vault_server, 1)
    a = gateway_process("fo-a", consul=private_consul)
    b = gateway_process("fo-b", consul=private_consul)
    gateways = {gw.addr: gw for gw in (a, b)}
    await eventually(
        lambda: _instances(private_consul, passing=True) == set(gateways), within=WAIT,
        what="both replicas to be registered and passing in Consul",
    )  # fmt: skip
    prefix = f"failover-{secrets.token_hex(3)}/"
    _put(private_consul, prefix + "before", "1")
    dsn = postgres.dsn_for("placeholder", "placeholder", "demo")
    addr = {
        "consul": f"consul://{private_consul.http_addr}/{SERVICE}",
        "list": f"{a.addr},{b.addr}",
    }[addressing]
    app = await asyncio.to_thread(_open_app, addr, a.tokens["app"], role, prefix, dsn)
    queries = Queries(app.pool)
    try:
        # The replica the app went to is the one that dies (its first listed replica).
        doomed: GatewayProcess = gateways[app.client.address]
        survivor = b if doomed is a else a
        old = app.creds.current
        assert app.replicas == {_replica(a), _replica(b)}
        queries.start(4)
        await eventually(lambda: len(queries.by(old.username)) >= 20, within=WAIT,
                         what="queries through the first credential")  # fmt: skip

        doomed.signal(signal.SIGKILL)
        killed = time.monotonic()
        await asyncio.to_thread(doomed.wait_exit)
        _put(private_consul, prefix + "during", "2")  # while the streams reconnect
        await eventually(
            lambda: app.creds.current.username != old.username
            and len(queries.by(app.creds.current.username)) >= 20,
            within=WAIT, what="queries through the credential the survivor brokered",
        )  # fmt: skip
        new = app.creds.current
        assert app.client.address == survivor.addr
        _put(private_consul, prefix + "after", "3")  # once the app runs on the survivor
        await eventually(lambda: app.puts.get(prefix + "after") == ["3"], within=WAIT,
                         what="the change written after the failover")  # fmt: skip
        # The discovery watch resumed on the survivor, which reports the killed replica gone.
        await eventually(lambda: app.replicas == {_replica(survivor)}, within=WAIT,
                         what="the killed replica to leave the discovered instances")  # fmt: skip

        # The killed replica's credential is revoked by the survivor's reaper.
        deadline = killed + TEST_REPLICA["session_ttl"] + 10
        while await can_login(postgres, old.username, old.password.get_secret_value()):
            assert time.monotonic() < deadline, "the killed replica's credential still logs in"
            await asyncio.sleep(0.1)  # polling interval of the login probe
        orphan_lifetime = time.monotonic() - killed
    finally:
        await asyncio.to_thread(queries.finish)
    assert queries.failures == [], queries.failures[:5]
    assert app.puts.get(prefix + "before") == ["1"]
    assert app.puts.get(prefix + "during") == ["2"], app.puts
    last_old, first_new = max(queries.by(old.username)), min(queries.by(new.username))
    print(
        f"\nfailover gap ({addressing}): {(first_new - last_old) * 1000:.0f} ms (last query "
        "through the killed replica's credential to the first through the survivor's; "
        "negative: they overlapped); "
        f"SIGKILL to the first query through the new credential: "
        f"{(first_new - killed) * 1000:.0f} ms; {len(queries.done)} queries, 0 failed; "
        f"the killed replica's credential refused {orphan_lifetime:.1f} s after the SIGKILL"
    )
    assert await can_login(postgres, new.username, new.password.get_secret_value())

    # Restarted, the killed replica finds nothing left to revoke: the reaper did it all.
    await eventually(lambda: _journal(private_consul, _replica(doomed)) == [], within=WAIT,
                     what="the reaper to clear the killed replica's journal and key")  # fmt: skip
    await asyncio.to_thread(_restart, doomed)
    started = doomed.log_text().split(f"replica {_replica(doomed)} holds")[-1]
    assert "previous incarnation left" not in started
    assert _journal(private_consul, _replica(doomed)) == [
        f"latchkey/v1/replicas/{_replica(doomed)}"
    ]
    await asyncio.to_thread(app.close)

    # Graceful stops leave no journal key and no service instance behind.
    for gw in (a, b):
        gw.signal(signal.SIGTERM)
        assert await asyncio.to_thread(gw.wait_exit, WAIT) == 0
    assert _journal(private_consul) == []
    assert _instances(private_consul) == set()
