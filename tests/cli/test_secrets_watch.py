"""`latchkey secrets watch` (the real CLI, a subprocess): the current version, then the one
`bao kv put` writes, one JSON line each, values hidden unless --reveal; ends after --count."""

from __future__ import annotations

import asyncio
import json
import uuid

import pytest

from tests.cli.helpers import LATCHKEY, clean_env
from tests.fixtures.gateway import GatewayHandle
from tests.gateway.test_secret_watch_e2e import bao_kv_put


@pytest.mark.parametrize("reveal", [False, True])
async def test_secrets_watch_prints_each_version(gateway: GatewayHandle, reveal: bool) -> None:
    path = f"cli-watch/{uuid.uuid4().hex[:8]}"
    vault = (gateway.vault_addr, gateway.vault_root_token)
    await asyncio.to_thread(bao_kv_put, *vault, path, api_key="first-value")
    proc = await asyncio.create_subprocess_exec(
        str(LATCHKEY), "--addr", gateway.addr, "--token", gateway.tokens["app"],
        "secrets", "watch", f"secret/{path}", "--count", "2", *(["--reveal"] if reveal else []),
        env=clean_env(), stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    assert proc.stdout is not None
    try:
        async with asyncio.timeout(30):
            first = json.loads(await proc.stdout.readline())
        assert (first["event"], first["path"], first["version"]) == ("version", f"secret/{path}", 1)
        await asyncio.to_thread(bao_kv_put, *vault, path, api_key="second-value")
        async with asyncio.timeout(30):
            lines = [json.loads(line) for line in (await proc.stdout.read()).splitlines()]
        versions = [doc for doc in lines if doc["event"] == "version"]
        assert [doc["version"] for doc in versions] == [2]
        shown = versions[0]["data"]["api_key"]
        assert (shown == "second-value") is reveal
        assert await asyncio.wait_for(proc.wait(), 30) == 0
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
