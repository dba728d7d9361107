"""The tokens file is re-read while the gateway runs, as the policies and TLS files are: a token
added with `latchkey-server token create` works without a restart, a removed one is refused,
and an invalid file keeps the tokens in force."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import grpc
import yaml

from latchkey.v1 import gateway_pb2, gateway_pb2_grpc
from latchkey_server.access.tokens import append_token, generate_token, hash_token
from latchkey_server.devstack.consul import ConsulAgent
from latchkey_server.devstack.postgres import PostgresCluster
from tests.fixtures.gateway import start_gateway
from tests.gateway.helpers import eventually


async def _status(channel: grpc.aio.Channel, token: str) -> grpc.StatusCode:
    stub = gateway_pb2_grpc.GatewayStub(channel)
    try:
        await stub.Status(
            gateway_pb2.StatusRequest(), metadata=(("authorization", f"Bearer {token}"),)
        )
    except grpc.aio.AioRpcError as err:
        return err.code()
    return grpc.StatusCode.OK


async def test_tokens_file_changes_take_effect_without_a_restart(
    tmp_path: Path, demo_env: dict[str, Any], consul_agent: ConsulAgent, vault_server: Any,
    postgres: PostgresCluster,
) -> None:  # fmt: skip
    tokens_file = tmp_path / "tokens.yaml"
    shutil.copy(demo_env["tokens_file"], tokens_file)
    env = {**demo_env, "tokens_file": tokens_file}
    handle = await start_gateway(env, consul_agent, vault_server, postgres)
    old = demo_env["tokens"]["app"]
    new = generate_token()
    try:
        async with handle.channel() as channel:
            assert await _status(channel, old) == grpc.StatusCode.OK
            assert await _status(channel, new) == grpc.StatusCode.UNAUTHENTICATED

            append_token(tokens_file, "app", new)  # what `latchkey-server token create` does

            async def new_token_works() -> bool:
                return await _status(channel, new) == grpc.StatusCode.OK

            await eventually(new_token_works, what="the new token to be accepted")

            # Removing a token revokes it: the file keeps only the new one (SIGHUP's path).
            only_new = {"tokens": [{"identity": "app", "sha256": hash_token(new)}]}
            tokens_file.write_text(yaml.safe_dump(only_new))
            assert handle.gateway.reload_tokens()
            assert await _status(channel, old) == grpc.StatusCode.UNAUTHENTICATED
            assert await _status(channel, new) == grpc.StatusCode.OK

            # An invalid file keeps the tokens in force, and says why in the log.
            tokens_file.write_text("tokens: [{identity: app}]\n")
            assert not handle.gateway.reload_tokens()
            assert await _status(channel, new) == grpc.StatusCode.OK
    finally:
        await handle.gateway.stop()
