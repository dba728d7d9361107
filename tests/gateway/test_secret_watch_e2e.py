"""Secrets.WatchSecret against the real OpenBao: a version written with `bao kv put` reaches
watchers (SDK and raw gRPC) within a poll interval; every watcher of one secret shares one poll,
which stops with the last watcher; a missing secret is NOT_FOUND. (Access: test_access_e2e.py;
a paused OpenBao: tests/faults/test_secret_watch_stale.py.)"""

from __future__ import annotations

import asyncio
import os
import subprocess
import uuid

import pytest

import latchkey
from latchkey.v1 import secrets_pb2, secrets_pb2_grpc
from latchkey_server.devstack.openbao import find_bao
from tests.fixtures.gateway import GatewayHandle
from tests.gateway.helpers import eventually

WAIT = 30.0
"""Hang guard for one wait (never a timing assertion); the test gateways poll every 0.5 s."""


@pytest.fixture
def unique() -> str:
    return uuid.uuid4().hex[:8]


def bao_kv_put(addr: str, token: str, path: str, **values: str) -> None:
    """`bao kv put secret/PATH k=v ...`, as an operator does it."""
    env = {**os.environ, "BAO_ADDR": addr, "BAO_TOKEN": token, "VAULT_ADDR": addr}
    env["VAULT_TOKEN"] = token
    args = [find_bao(), "kv", "put", f"secret/{path}", *(f"{k}={v}" for k, v in values.items())]
    subprocess.run(args, env=env, check=True, capture_output=True, timeout=30)


async def test_a_new_version_reaches_watchers_through_one_poll(
    gateway: GatewayHandle, unique: str
) -> None:
    path = f"watch/{unique}"
    await asyncio.to_thread(
        bao_kv_put, gateway.vault_addr, gateway.vault_root_token, path, api_key="one"
    )
    hub = gateway.gateway.components.secret_watches
    changed = asyncio.Queue[latchkey.Secret]()
    async with (
        latchkey.AsyncClient(gateway.addr, token=gateway.tokens["app"]) as client,
        gateway.channel() as channel,
    ):
        watched = await client.secrets.watch(path)
        watched.on_change(changed.put_nowait)
        assert watched.current.data == {"api_key": "one"}
        assert watched.current.version == 1
        raw = secrets_pb2_grpc.SecretsStub(channel).WatchSecret(
            secrets_pb2.WatchSecretRequest(path=path), metadata=gateway.metadata("other")
        )
        first = await asyncio.wait_for(raw.read(), WAIT)
        assert first.version.metadata.version == 1
        assert first.version.freshness.index == 1
        assert hub.active_polls >= 1
        polled = [t for t in hub._registry.topics() if t.key == ("secret", path)]
        assert len(polled) == 1, "two watchers of one secret share one poll"

        await asyncio.to_thread(
            bao_kv_put, gateway.vault_addr, gateway.vault_root_token, path, api_key="two"
        )
        new = await asyncio.wait_for(changed.get(), WAIT)
        assert (new.version, new.data) == (2, {"api_key": "two"})
        assert watched.current.version == 2
        assert watched.changes == 1
        while True:  # the raw stream: heartbeats, then the new version
            event = await asyncio.wait_for(raw.read(), WAIT)
            if event.WhichOneof("event") == "version":
                break
            assert event.heartbeat.freshness.index == 1
        assert event.version.metadata.version == 2
        assert event.version.data["api_key"] == "two"
        raw.cancel()
        await watched.aclose()
    await eventually(
        lambda: not any(t.key == ("secret", path) for t in hub._registry.topics()),
        what="the poll to stop with its last watcher",
    )


async def test_a_missing_secret_is_not_found(gateway: GatewayHandle, unique: str) -> None:
    async with latchkey.AsyncClient(gateway.addr, token=gateway.tokens["app"]) as client:
        with pytest.raises(latchkey.NotFound, match="not found"):
            await client.secrets.watch(f"watch/{unique}-missing")
