"""Metrics after a scripted sequence, health flips with upstream outages, logs free of secrets."""

from __future__ import annotations

import asyncio
import logging
import urllib.request
from pathlib import Path
from typing import Any

import consul
import grpc
import hvac
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from prometheus_client.parser import text_string_to_metric_families

from latchkey.v1 import config_pb2, config_pb2_grpc, secrets_pb2, secrets_pb2_grpc
from latchkey_server.devstack.consul import ConsulAgent
from latchkey_server.devstack.postgres import PostgresCluster
from latchkey_server.devstack.seed import DEMO_ROLE, seed_vault
from tests.fixtures.gateway import start_gateway, stubs_for
from tests.fixtures.vault import VaultServer
from tests.gateway.helpers import eventually


def _scrape(port: int) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
        text = resp.read().decode()
    samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


async def test_metrics_after_a_scripted_sequence(
    demo_env: dict[str, Any],
    consul_agent: ConsulAgent,
    vault_server: Any,
    postgres: PostgresCluster,
) -> None:
    vault = hvac.Client(url=vault_server.addr, token=vault_server.root_token)
    vault.secrets.kv.v2.create_or_update_secret(
        path="metrics/app", secret={"k": "v"}, mount_point="secret"
    )
    handle = await start_gateway(demo_env, consul_agent, vault_server, postgres)
    try:
        async with handle.channel() as channel:
            stubs, md = stubs_for(channel), handle.metadata()
            for _ in range(5):
                await stubs.secrets.GetSecret(
                    secrets_pb2.GetSecretRequest(path="metrics/app"), metadata=md
                )
            with pytest.raises(grpc.aio.AioRpcError):
                await stubs.secrets.GetSecret(
                    secrets_pb2.GetSecretRequest(path="a/../b"), metadata=md
                )
            await stubs.secrets.GetDatabaseCredentials(
                secrets_pb2.GetDatabaseCredentialsRequest(role=DEMO_ROLE), metadata=md
            )
            stream = stubs.config.Watch(
                config_pb2.WatchConfigRequest(prefix="metrics/"), metadata=md
            )
            await stream.read()
            # A one-shot read with no watch open starts a read watch (kept for the next reads).
            await stubs.config.List(
                config_pb2.ListConfigRequest(prefix="metrics-once/"), metadata=md
            )
            m = _scrape(handle.gateway.metrics_port)
            stream.cancel()
    finally:
        await handle.gateway.stop()

    def value(name: str, **labels: str) -> float:
        return m.get((name, tuple(sorted(labels.items()))), 0.0)

    assert value("latchkey_rpc_requests_total", method="GetSecret", code="OK") == 5
    assert value("latchkey_rpc_requests_total", method="GetSecret", code="INVALID_ARGUMENT") == 1
    assert value("latchkey_rpc_requests_total", method="GetDatabaseCredentials", code="OK") == 1
    assert value("latchkey_rpc_duration_seconds_count", method="GetSecret", type="unary") == 6
    assert value("latchkey_secret_cache_requests_total", result="miss") == 1
    assert value("latchkey_secret_cache_requests_total", result="hit") == 4
    assert value("latchkey_active_leases") == 1
    assert value("latchkey_active_streams", kind="config") == 1
    assert value("latchkey_upstream_watches", kind="config") == 2
    assert value("latchkey_upstream_watches", kind="config_read") == 1
    assert value("latchkey_upstream_up", upstream="vault") == 1
    assert value("latchkey_upstream_up", upstream="consul") == 1
    assert value("latchkey_consul_connection_budget") == 64
    # The one request budget for Consul, with its shipped defaults.
    assert value("latchkey_consul_budget_rate") == 500
    assert value("latchkey_consul_budget_burst") == 100
    assert 0 <= value("latchkey_consul_budget_tokens") <= 100
    assert value("latchkey_consul_budget_waiting") == 0
    assert value("latchkey_consul_budget_requests_total") >= 3  # two watches' reads, pings
    assert ("latchkey_consul_budget_waits_total", ()) in m
    assert ("latchkey_consul_budget_wait_seconds_total", ()) in m
    assert (
        value("latchkey_upstream_requests_total", upstream="vault", op="creds", outcome="ok") == 1
    )
    assert 0 < value("latchkey_lease_seconds_to_max_ttl") <= 300
    assert value("latchkey_audit_failures_total") == 0
    # Labels come from fixed vocabularies: no path, key, role or secret in any label value.
    for _, labels in m:
        for _, label_value in labels:
            assert "/" not in label_value
            assert DEMO_ROLE not in label_value


async def _serving(addr: str, service: str) -> bool:
    async with grpc.aio.insecure_channel(addr) as channel:
        reply = await health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(service=service), timeout=5
        )
    return bool(reply.status == health_pb2.HealthCheckResponse.SERVING)


async def test_health_flips_when_upstreams_go_away_and_back(
    demo_env: dict[str, Any], openbao_process: VaultServer, postgres: PostgresCluster,
    tmp_path: Path,
) -> None:  # fmt: skip
    agent = ConsulAgent(tmp_path / "consul")
    await asyncio.to_thread(agent.start)
    vault = openbao_process.process
    assert vault is not None
    approle = await asyncio.to_thread(
        seed_vault, openbao_process.addr, openbao_process.root_token, demo_env["db"]
    )
    env = {**demo_env, "approle": approle}
    handle = await start_gateway(
        env, agent, openbao_process, postgres,
        cache={"stale_limit": 0.5}, health={"probe_interval": 0.1},
    )  # fmt: skip
    secrets_svc, config_svc = "latchkey.v1.Secrets", "latchkey.v1.Config"
    try:
        assert await _serving(handle.addr, secrets_svc)
        assert await _serving(handle.addr, config_svc)
        await asyncio.to_thread(agent.kill)

        async def config_down() -> bool:
            return not await _serving(handle.addr, config_svc)

        await eventually(config_down, what="Config to become NOT_SERVING")
        assert await _serving(handle.addr, secrets_svc)
        assert await _serving(handle.addr, "")
        await asyncio.to_thread(agent.start)
        await eventually(lambda: _serving(handle.addr, config_svc), what="Config SERVING again")

        await asyncio.to_thread(vault.seal)

        async def secrets_down() -> bool:
            return not await _serving(handle.addr, secrets_svc)

        await eventually(secrets_down, what="Secrets to become NOT_SERVING (Vault sealed)")
        await asyncio.to_thread(vault.unseal)
        await eventually(lambda: _serving(handle.addr, secrets_svc), what="Secrets SERVING again")
        await asyncio.to_thread(vault.pause)
        await eventually(secrets_down, what="Secrets to become NOT_SERVING (Vault paused)")
        await asyncio.to_thread(vault.resume)
        await eventually(lambda: _serving(handle.addr, secrets_svc), what="Secrets SERVING again")
    finally:
        await handle.gateway.stop()
        await asyncio.to_thread(agent.stop)


async def test_logs_of_a_full_scenario_hold_no_secret(
    demo_env: dict[str, Any], consul_agent: ConsulAgent, vault_server: Any,
    postgres: PostgresCluster, caplog: pytest.LogCaptureFixture,
) -> None:  # fmt: skip
    caplog.set_level(logging.DEBUG)
    vault = hvac.Client(url=vault_server.addr, token=vault_server.root_token)
    vault.secrets.kv.v2.create_or_update_secret(
        path="logs/app", secret={"api_key": "sk-logcheck-7f3a9"}, mount_point="secret"
    )
    consul.Consul(host="127.0.0.1", port=consul_agent.http_port).kv.put("logs/flag", "on")
    handle = await start_gateway(demo_env, consul_agent, vault_server, postgres)
    seen: list[str] = ["sk-logcheck-7f3a9", demo_env["tokens"]["app"]]
    try:
        async with handle.channel() as channel:
            md = handle.metadata()
            stub = secrets_pb2_grpc.SecretsStub(channel)
            await stub.GetSecret(secrets_pb2.GetSecretRequest(path="logs/app"), metadata=md)
            cred = (await stub.GetDatabaseCredentials(
                secrets_pb2.GetDatabaseCredentialsRequest(role=DEMO_ROLE), metadata=md
            )).credential  # fmt: skip
            seen.append(cred.password)
            stream = stub.WatchDatabaseCredentials(
                secrets_pb2.WatchDatabaseCredentialsRequest(role=DEMO_ROLE), metadata=md
            )
            seen.append((await stream.read()).issued.credential.password)
            stream.cancel()
            await stub.RevokeLease(
                secrets_pb2.RevokeLeaseRequest(lease_id=cred.lease_id), metadata=md
            )
            await config_pb2_grpc.ConfigStub(channel).Get(
                config_pb2.GetConfigRequest(key="logs/flag"), metadata=md
            )
            with pytest.raises(grpc.aio.AioRpcError):
                await stub.GetSecret(
                    secrets_pb2.GetSecretRequest(path="logs/app"),
                    metadata=(("authorization", "Bearer wrong-token-x1"),),
                )
    finally:
        await handle.gateway.stop()
    seen.append(demo_env["approle"].secret_id)
    text = caplog.text
    assert "latchkey" in text  # the capture did record the gateway's logs
    for value in seen:
        assert value not in text
