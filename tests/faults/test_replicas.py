"""Issue 13: no credential outlives a killed gateway; replicas coordinate through Consul only.

Before: a SIGKILLed gateway left every credential it brokered alive until its Vault TTL ran
out (8 of 8 PostgreSQL roles still logged in 55 s after the kill, with a 60 s TTL), and the
restarted gateway knew nothing of them. Now every lease is journaled in Consul KV before its
credential leaves the gateway; a restarted replica revokes what its previous incarnation
journaled, and another replica's reaper revokes a dead replica's journal once its session died
and it did not come back within the grace.

Gateways are `latchkey-server serve` processes; sessions have a 3 s TTL (the test agents allow
it), the reap grace is 2 s. Deadlines below are hang guards, not timing assertions: the times
are measured by `make bench` ("orphan lifetime after SIGKILL").
"""

from __future__ import annotations

import asyncio
import json
import secrets
import signal
from typing import Any

import consul
import grpc
import pytest

from latchkey.v1 import secrets_pb2, secrets_pb2_grpc
from latchkey_server.devstack.consul import ConsulAgent
from latchkey_server.devstack.ports import free_ports
from latchkey_server.devstack.seed import DEMO_DATABASE, READONLY_CREATION
from tests.cli.helpers import clean_env, run_cli
from tests.faults.conftest import GatewayFactory
from tests.faults.process import GatewayProcess
from tests.gateway.helpers import can_login, eventually

pytestmark = pytest.mark.faults

ROLES = 8
SERVICE = "latchkey"
WAIT = 60.0
"""Hang guard: session TTL 3 s (invalidated within 6 s), grace 2 s, revocations well under."""


def _roles(vault_server: Any, count: int) -> list[str]:
    client = vault_server.client()
    names = [f"replica-{secrets.token_hex(3)}-{n}" for n in range(count)]
    for name in names:
        client.secrets.database.create_role(
            name=name, db_name=DEMO_DATABASE, creation_statements=READONLY_CREATION,
            default_ttl="60s", max_ttl="5m",
        )  # fmt: skip
    return names


async def _credentials(gw: GatewayProcess, roles: list[str]) -> list[Any]:
    async with grpc.aio.insecure_channel(gw.addr) as channel:
        stub = secrets_pb2_grpc.SecretsStub(channel)
        replies = [
            await stub.GetDatabaseCredentials(
                secrets_pb2.GetDatabaseCredentialsRequest(role=role), metadata=gw.metadata()
            )
            for role in roles
        ]
    return [reply.credential for reply in replies]


async def _logins(postgres: Any, creds: list[Any]) -> list[bool]:
    return [await can_login(postgres, c.username, c.password) for c in creds]


def _journal(agent: ConsulAgent, replica: str = "") -> list[str]:
    """Keys under `latchkey/v1/replicas/` (of one replica: its key and its records)."""
    key = f"latchkey/v1/replicas/{replica}"
    _, items = consul.Consul(host="127.0.0.1", port=agent.http_port).kv.get(
        "latchkey/v1/replicas/", recurse=True
    )
    found = [str(item["Key"]) for item in items or []]
    return [k for k in found if not replica or k == key or k.startswith(key + "/")]


def _instances(agent: ConsulAgent, *, passing: bool = False) -> set[str]:
    """`address:port` of every registered (or only the passing) `latchkey` service instance."""
    _, items = consul.Consul(host="127.0.0.1", port=agent.http_port).health.service(
        SERVICE, passing=passing
    )
    return {f"{i['Service']['Address']}:{i['Service']['Port']}" for i in items}


def _restart(gw: GatewayProcess) -> None:
    """Start the gateway again, with its replica id, on a fresh port (its old one may have
    been taken by an outgoing connection meanwhile)."""
    gw.port = free_ports(1)[0]
    gw.config["listen"] = gw.addr
    gw.start()


def _replica(gw: GatewayProcess) -> str:
    return str(gw.config["replica"]["id"])


async def _list_leases(gw: GatewayProcess) -> list[Any]:
    async with grpc.aio.insecure_channel(gw.addr) as channel:
        reply = await secrets_pb2_grpc.SecretsStub(channel).ListLeases(
            secrets_pb2.ListLeasesRequest(), metadata=gw.metadata("operator")
        )
    return list(reply.leases)


async def test_a_killed_replica_revokes_its_leases_when_it_restarts(
    gateway_process: GatewayFactory, private_consul: ConsulAgent, vault_server: Any,
    postgres: Any,
) -> None:  # fmt: skip
    roles = _roles(vault_server, ROLES)
    gw = gateway_process("solo", consul=private_consul)
    creds = await _credentials(gw, roles)
    assert await _logins(postgres, creds) == [True] * ROLES
    assert len(_journal(private_consul, _replica(gw))) == ROLES + 1  # the key and 8 records

    gw.signal(signal.SIGKILL)
    gw.wait_exit()
    # The orphans: every credential still logs in, and the journal still holds them.
    assert await _logins(postgres, creds) == [True] * ROLES
    _restart(gw)  # the same replica id, as a restarted pod or service has
    await eventually(
        lambda: _all_refused(postgres, creds), within=WAIT, what="every role to be refused"
    )
    await eventually(
        lambda: _journal(private_consul, _replica(gw)) == [f"latchkey/v1/replicas/{_replica(gw)}"],
        within=WAIT, what="the previous incarnation's journal to be cleared",
    )  # fmt: skip
    assert "revoked 8 lease(s) of its previous incarnation" in gw.log_text()


async def _all_refused(postgres: Any, creds: list[Any]) -> bool:
    return not any(await _logins(postgres, creds))


async def test_the_reaper_revokes_a_killed_replicas_leases(
    gateway_process: GatewayFactory, private_consul: ConsulAgent, vault_server: Any,
    postgres: Any,
) -> None:  # fmt: skip
    roles = _roles(vault_server, 3)
    a = gateway_process("reap-a", consul=private_consul)
    b = gateway_process("reap-b", consul=private_consul)
    mine = await _credentials(a, roles)
    theirs = await _credentials(b, roles[:1])
    # ListLeases on either replica shows both replicas' leases, each with its replica.
    for gw in (a, b):
        listed = {(x.lease_id, x.replica) for x in await _list_leases(gw)}
        expected = {(c.lease_id, _replica(a)) for c in mine} | {(theirs[0].lease_id, _replica(b))}
        assert expected <= listed
    cli = await run_cli(
        "leases", "list", "--format", "json",
        env=clean_env(LATCHKEY_ADDR=b.addr, LATCHKEY_TOKEN=b.tokens["operator"]),
    )  # fmt: skip
    assert cli.code == 0, cli.stderr
    assert {(x["lease_id"], x["replica"]) for x in json.loads(cli.stdout)} >= expected

    a.signal(signal.SIGKILL)
    a.wait_exit()
    await eventually(
        lambda: _all_refused(postgres, mine), within=WAIT, what="B's reaper to revoke A's leases"
    )
    await eventually(lambda: _journal(private_consul, _replica(a)) == [], within=WAIT,
                     what="A's journal and key to be removed")  # fmt: skip
    assert f"revoked 3 lease(s) of replica {_replica(a)}" in b.log_text()
    assert await _logins(postgres, theirs) == [True], "B's own lease is untouched"
    # Restarting A finds nothing left to revoke.
    _restart(a)
    assert "previous incarnation left" not in a.log_text().split("latchkey gateway listening")[-1]


async def test_a_second_live_replica_with_the_same_id_is_refused(
    gateway_process: GatewayFactory, private_consul: ConsulAgent
) -> None:
    first = gateway_process("twin", consul=private_consul)
    twin = gateway_process("twin-2", consul=private_consul, start=False)
    twin.config["replica"]["id"] = _replica(first)
    twin.launch()
    assert await asyncio.to_thread(twin.wait_exit, WAIT) == 1
    log = twin.log_text()
    assert f"replica id {_replica(first)!r} is in use by another live gateway" in log, log[-2000:]
    assert "replica.id" in log
    # The first one is untouched: it still holds its key.
    assert _journal(private_consul, _replica(first)) == [f"latchkey/v1/replicas/{_replica(first)}"]


async def test_a_graceful_stop_leaves_no_journal_keys(
    gateway_process: GatewayFactory, private_consul: ConsulAgent, vault_server: Any,
    postgres: Any,
) -> None:  # fmt: skip
    roles = _roles(vault_server, 2)
    gw = gateway_process("graceful", consul=private_consul)
    creds = await _credentials(gw, roles)
    async with grpc.aio.insecure_channel(gw.addr) as channel:
        stream = secrets_pb2_grpc.SecretsStub(channel).WatchDatabaseCredentials(
            secrets_pb2.WatchDatabaseCredentialsRequest(role=roles[0]), metadata=gw.metadata()
        )
        await asyncio.wait_for(stream.read(), WAIT)
        assert len(_journal(private_consul, _replica(gw))) == 1 + len(creds)
        assert _instances(private_consul, passing=True) == {gw.addr}
        gw.signal(signal.SIGTERM)
        assert await asyncio.to_thread(gw.wait_exit, WAIT) == 0
    assert _journal(private_consul) == []
    assert _instances(private_consul) == set(), "the service instance is deregistered"
    assert not any(await _logins(postgres, creds))


async def test_an_operator_force_revokes_a_lease_nobody_journaled(
    gateway_process: GatewayFactory, private_consul: ConsulAgent, vault_server: Any,
    postgres: Any,
) -> None:  # fmt: skip
    (role,) = _roles(vault_server, 1)
    gw = gateway_process("force", consul=private_consul)
    # Issued straight from Vault: no gateway holds or journaled it.
    issued = vault_server.client().secrets.database.generate_credentials(role)
    lease_id = issued["lease_id"]
    assert await can_login(postgres, issued["data"]["username"], issued["data"]["password"])
    async with grpc.aio.insecure_channel(gw.addr) as channel:
        stub = secrets_pb2_grpc.SecretsStub(channel)
        revoke = secrets_pb2.RevokeLeaseRequest(lease_id=lease_id, force=True)
        with pytest.raises(grpc.aio.AioRpcError) as not_forced:
            await stub.RevokeLease(
                secrets_pb2.RevokeLeaseRequest(lease_id=lease_id), metadata=gw.metadata()
            )
        assert not_forced.value.code() == grpc.StatusCode.NOT_FOUND
        reply = await stub.RevokeLease(revoke, metadata=gw.metadata("operator"))
        assert reply.revoked
        assert not await can_login(postgres, issued["data"]["username"], issued["data"]["password"])
        with pytest.raises(grpc.aio.AioRpcError) as again:
            await stub.RevokeLease(revoke, metadata=gw.metadata("operator"))
    assert again.value.code() == grpc.StatusCode.NOT_FOUND
    assert "Vault knows no lease" in (again.value.details() or "")


async def test_a_replica_rewrites_its_journal_when_consul_comes_back_empty(
    gateway_process: GatewayFactory, private_consul: ConsulAgent, vault_server: Any,
    postgres: Any,
) -> None:  # fmt: skip
    roles = _roles(vault_server, 2)
    gw = gateway_process("rejournal", consul=private_consul)
    creds = await _credentials(gw, roles)
    expected = sorted(_journal(private_consul, _replica(gw)))
    assert len(expected) == 3
    await asyncio.to_thread(private_consul.restart)  # a -dev agent comes back with nothing
    await eventually(
        lambda: sorted(_journal(private_consul, _replica(gw))) == expected, within=WAIT,
        what="the replica to take a new session and write its journal again",
    )  # fmt: skip
    assert "journal record(s) rewritten" in gw.log_text()
    await eventually(
        lambda: _instances(private_consul, passing=True) == {gw.addr}, within=WAIT,
        what="the replica to register its service instance again",
    )  # fmt: skip
    # It goes on brokering, journaled as before.
    (more,) = await _credentials(gw, _roles(vault_server, 1))
    assert any(key.endswith(more.lease_id) for key in _journal(private_consul, _replica(gw)))
    assert await _logins(postgres, [*creds, more]) == [True] * 3


async def test_the_cli_finds_the_replicas_through_consul(
    gateway_process: GatewayFactory, private_consul: ConsulAgent
) -> None:
    gw = gateway_process("cli", consul=private_consul)
    await eventually(
        lambda: _instances(private_consul, passing=True) == {gw.addr}, within=WAIT,
        what="the replica to be registered and passing",
    )  # fmt: skip
    addr = f"consul://{private_consul.http_addr}/{SERVICE}"
    env = clean_env(LATCHKEY_ADDR=addr, LATCHKEY_TOKEN=gw.tokens["app"])
    cli = await run_cli("status", "--format", "json", env=env)
    assert cli.code == 0, cli.stderr
    assert json.loads(cli.stdout)["address"] == gw.addr
    # No passing replica: a message that says where the client looked and what to check.
    gw.signal(signal.SIGTERM)
    assert await asyncio.to_thread(gw.wait_exit, WAIT) == 0
    cli = await run_cli("status", env=clean_env(LATCHKEY_ADDR=addr, LATCHKEY_TOKEN="x"))
    assert cli.code != 0
    assert f"Consul lists no passing instance of service {SERVICE!r}" in cli.stderr, cli.stderr
