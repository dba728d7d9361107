"""The interceptor: authentication, undecodable input, and the one error mapping.

Uses an in-process gRPC server with in-memory sources; the same paths run end to end against
real upstreams in tests/gateway/.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, AsyncIterator
from pathlib import Path
from typing import Any

import grpc
import pytest

from latchkey.v1 import config_pb2, config_pb2_grpc, secrets_pb2, secrets_pb2_grpc
from latchkey_server import models
from latchkey_server.access.authn import Authenticator
from latchkey_server.access.authz import AllowAuthenticated
from latchkey_server.access.gate import AccessGate
from latchkey_server.access.tokens import TokenStore, append_token, generate_token
from latchkey_server.errors import NotFound, Unavailable
from latchkey_server.transport.config import ConfigServicer
from latchkey_server.transport.errors import INTERNAL_MESSAGE
from latchkey_server.transport.interceptor import GatewayInterceptor
from latchkey_server.transport.secrets import SecretsServicer

SECRET_VALUE = "hunter2-do-not-leak"


class FakeSecrets:
    async def get(
        self, mount: str, path: str, version: int = 0
    ) -> tuple[models.KvSecret, models.Freshness]:
        if path == "missing":
            raise NotFound(f"no secret at {mount}/{path}")
        if path == "down":
            raise Unavailable("vault is unreachable", retry_after=2.5)
        if path == "boom":
            raise RuntimeError(f"driver said {SECRET_VALUE}")
        secret = models.KvSecret(
            data={"password": SECRET_VALUE}, version=3, created_time=None, custom_metadata={}
        )
        return secret, models.Freshness(index=3, confirmed_at=models.utcnow())


class FakeConfig:
    async def get(self, key: str) -> tuple[models.ConfigEntry, models.Freshness]:
        raise NotFound(key)

    async def list(self, prefix: str) -> tuple[list[models.ConfigEntry], models.Freshness]:
        return [], models.Freshness(index=1, confirmed_at=models.utcnow())

    async def watch(
        self, prefix: str, resume_index: int = 0, resume_epoch: str = ""
    ) -> AsyncGenerator[models.ConfigEvent, None]:
        fresh = models.Freshness(index=7, confirmed_at=models.utcnow())
        yield models.ConfigSnapshot(entries=(), index=7, freshness=fresh)
        raise Unavailable("consul went away", retry_after=1)


@pytest.fixture
async def gateway_addr(tmp_path: Path) -> AsyncIterator[tuple[str, str]]:
    tokens = tmp_path / "tokens.yaml"
    token = generate_token()
    append_token(tokens, "tester", token)
    server = grpc.aio.server(
        interceptors=[GatewayInterceptor(Authenticator(TokenStore.load(tokens)))]
    )
    authz = AccessGate(AllowAuthenticated())
    secrets_pb2_grpc.add_SecretsServicer_to_server(
        SecretsServicer(FakeSecrets(), object(), authz),  # type: ignore[arg-type]
        server,
    )
    config_pb2_grpc.add_ConfigServicer_to_server(ConfigServicer(FakeConfig(), authz), server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    yield f"127.0.0.1:{port}", token
    await server.stop(0)


def _md(token: str) -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {token}"),)


async def test_no_credentials_is_unauthenticated(gateway_addr: tuple[str, str]) -> None:
    addr, _ = gateway_addr
    async with grpc.aio.insecure_channel(addr) as ch:
        stub = secrets_pb2_grpc.SecretsStub(ch)
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await stub.GetSecret(secrets_pb2.GetSecretRequest(path="demo/app"))
        assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await stub.GetSecret(
                secrets_pb2.GetSecretRequest(path="demo/app"), metadata=_md("wrong")
            )
        assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED


async def test_errors_map_to_status_codes(gateway_addr: tuple[str, str]) -> None:
    addr, token = gateway_addr
    async with grpc.aio.insecure_channel(addr) as ch:
        stub = secrets_pb2_grpc.SecretsStub(ch)
        ok = await stub.GetSecret(
            secrets_pb2.GetSecretRequest(path="demo/app"), metadata=_md(token)
        )
        assert ok.metadata.version == 3
        cases = {
            "missing": grpc.StatusCode.NOT_FOUND,
            "down": grpc.StatusCode.UNAVAILABLE,
            "a/../b": grpc.StatusCode.INVALID_ARGUMENT,
            "": grpc.StatusCode.INVALID_ARGUMENT,
            "boom": grpc.StatusCode.INTERNAL,
        }
        for path, code in cases.items():
            call = stub.GetSecret(secrets_pb2.GetSecretRequest(path=path), metadata=_md(token))
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await call
            assert err.value.code() == code, path
            assert SECRET_VALUE not in (err.value.details() or "")
            if path == "down":
                trailers = dict(await call.trailing_metadata() or ())
                assert trailers["retry-after"] == "3"
                assert "retry after 3s" in (err.value.details() or "")
            if path == "boom":
                assert err.value.details() == INTERNAL_MESSAGE


async def test_non_utf8_request_is_invalid_argument(gateway_addr: tuple[str, str]) -> None:
    addr, token = gateway_addr
    # GetSecretRequest{path = b"\xff\xfe"}: field 2, wire type 2, length 2, invalid UTF-8.
    raw = b"\x12\x02\xff\xfe"
    async with grpc.aio.insecure_channel(addr) as ch:
        call = ch.unary_unary("/latchkey.v1.Secrets/GetSecret")
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await call(raw, metadata=_md(token))
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "UTF-8" in (err.value.details() or "")
        # The server keeps serving.
        stub = secrets_pb2_grpc.SecretsStub(ch)
        ok = await stub.GetSecret(
            secrets_pb2.GetSecretRequest(path="demo/app"), metadata=_md(token)
        )
        assert ok.metadata.version == 3


async def test_stream_error_after_first_event_maps_status(gateway_addr: tuple[str, str]) -> None:
    addr, token = gateway_addr
    async with grpc.aio.insecure_channel(addr) as ch:
        stub = config_pb2_grpc.ConfigStub(ch)
        events: list[Any] = []
        with pytest.raises(grpc.aio.AioRpcError) as err:
            async for event in stub.Watch(
                config_pb2.WatchConfigRequest(prefix="config/"), metadata=_md(token)
            ):
                events.append(event)
        assert [e.WhichOneof("event") for e in events] == ["snapshot"]
        assert err.value.code() == grpc.StatusCode.UNAVAILABLE
        bad = stub.Watch(config_pb2.WatchConfigRequest(prefix="../x"), metadata=_md(token))
        with pytest.raises(grpc.aio.AioRpcError) as err:
            async for _ in bad:
                pass
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
