"""A watched KV secret while OpenBao is paused (SIGSTOP): the stream turns stale (upstream
UNREACHABLE) with the last version kept, then fresh when OpenBao resumes, and new versions flow
again."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import grpc
import pytest

from latchkey.v1 import common_pb2, secrets_pb2, secrets_pb2_grpc
from latchkey_server.devstack.seed import seed_postgres, seed_vault
from tests.faults.conftest import GatewayFactory
from tests.fixtures.vault import VaultServer
from tests.gateway.test_secret_watch_e2e import WAIT, bao_kv_put

pytestmark = pytest.mark.faults


def _stale(event: Any) -> bool:
    fresh = event.heartbeat.freshness
    return fresh.stale and fresh.upstream == common_pb2.UPSTREAM_STATE_UNREACHABLE


def _fresh(event: Any) -> bool:
    fresh = event.heartbeat.freshness
    return not fresh.stale and fresh.upstream == common_pb2.UPSTREAM_STATE_CONNECTED


async def _until(call: Any, test: Any, seen: list[str]) -> Any:
    async with asyncio.timeout(WAIT):
        while True:
            event = await call.read()
            assert event is not grpc.aio.EOF, f"the stream ended; it said {seen}"
            kind = event.WhichOneof("event")
            seen.append(kind)
            if kind == "heartbeat" and test(event):
                return event


async def test_paused_openbao_makes_the_stream_stale_and_keeps_the_version(
    openbao_process: VaultServer, postgres: Any, gateway_process: GatewayFactory
) -> None:
    vault = openbao_process
    assert vault.process is not None
    db = seed_postgres(postgres.dsn)
    approle = seed_vault(vault.addr, vault.root_token, db)
    auth = {"method": "approle", "role_id": approle.role_id, "secret_id": approle.secret_id}
    gw = gateway_process("secret-watch", vault={"addr": vault.addr, "auth": auth, "timeout": 1.0})
    path = f"paused/{uuid.uuid4().hex[:8]}"
    await asyncio.to_thread(bao_kv_put, vault.addr, vault.root_token, path, value="kept")
    seen: list[str] = []
    async with grpc.aio.insecure_channel(gw.addr) as channel:
        call = secrets_pb2_grpc.SecretsStub(channel).WatchSecret(
            secrets_pb2.WatchSecretRequest(path=path), metadata=gw.metadata()
        )
        first = await asyncio.wait_for(call.read(), WAIT)
        assert first.version.data["value"] == "kept"
        vault.process.pause()
        try:
            stale = await _until(call, _stale, seen)
            assert stale.heartbeat.freshness.index == 1, "the last version is kept"
        finally:
            vault.process.resume()
        await _until(call, _fresh, seen)
        await asyncio.to_thread(bao_kv_put, vault.addr, vault.root_token, path, value="next")
        while True:
            event = await asyncio.wait_for(call.read(), WAIT)
            if event.WhichOneof("event") == "version":
                break
        assert event.version.data["value"] == "next"
        call.cancel()
