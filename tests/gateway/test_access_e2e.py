"""Access control end to end, over real TLS: identities x resources x capabilities."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import consul
import grpc
import hvac
import pytest
from google.rpc import error_details_pb2, status_pb2
from openfeature.schemas.protobuf.flagd.sync.v1 import sync_pb2, sync_pb2_grpc

from latchkey.v1 import (
    config_pb2,
    config_pb2_grpc,
    discovery_pb2,
    discovery_pb2_grpc,
    secrets_pb2,
    secrets_pb2_grpc,
)
from latchkey_server.access.certs import init_ca, issue_client
from latchkey_server.devstack.consul import ConsulAgent
from latchkey_server.devstack.postgres import PostgresCluster
from latchkey_server.devstack.seed import DEMO_ROLE
from tests.gateway.access_helpers import TlsGateway, start_tls_gateway
from tests.gateway.helpers import eventually

BILLING = "spiffe://example.org/billing"
OK = grpc.StatusCode.OK
DENIED = grpc.StatusCode.PERMISSION_DENIED


@pytest.fixture(scope="module")
async def tls_gateway(
    tmp_path_factory: pytest.TempPathFactory, demo_env: dict[str, Any],
    consul_agent: ConsulAgent, vault_server: Any, postgres: PostgresCluster,
) -> AsyncIterator[TlsGateway]:  # fmt: skip
    vault = hvac.Client(url=vault_server.addr, token=vault_server.root_token)
    for path in ("billing/app", "billing/root", "other/app"):
        vault.secrets.kv.v2.create_or_update_secret(
            path=path, secret={"password": f"pw-{path}"}, mount_point="secret"
        )
    kv = consul.Consul(host="127.0.0.1", port=consul_agent.http_port).kv
    for key in ("billing/a", "billing/private", "other/a"):
        kv.put(key, f"value-{key}")
    gw = await start_tls_gateway(
        tmp_path_factory.mktemp("tlsgw"), demo_env, consul_agent, vault_server, postgres
    )
    yield gw
    await gw.handle.gateway.stop()


async def _code(call: Any) -> grpc.StatusCode:
    try:
        if isinstance(call, grpc.aio.UnaryStreamCall):  # a stream: its first message
            await call.read()
            call.cancel()
        else:
            await call
    except grpc.aio.AioRpcError as err:
        return err.code()
    return OK


def _requests() -> dict[str, Any]:
    return {
        "secret billing/app": lambda ch: secrets_pb2_grpc.SecretsStub(ch).GetSecret(
            secrets_pb2.GetSecretRequest(path="billing/app")),
        "secret billing/root (deny)": lambda ch: secrets_pb2_grpc.SecretsStub(ch).GetSecret(
            secrets_pb2.GetSecretRequest(path="billing/root")),
        "secret other/app": lambda ch: secrets_pb2_grpc.SecretsStub(ch).GetSecret(
            secrets_pb2.GetSecretRequest(path="other/app")),
        "database creds": lambda ch: secrets_pb2_grpc.SecretsStub(ch).GetDatabaseCredentials(
            secrets_pb2.GetDatabaseCredentialsRequest(role=DEMO_ROLE)),
        "list leases": lambda ch: secrets_pb2_grpc.SecretsStub(ch).ListLeases(
            secrets_pb2.ListLeasesRequest()),
        "config billing/a": lambda ch: config_pb2_grpc.ConfigStub(ch).Get(
            config_pb2.GetConfigRequest(key="billing/a")),
        "config billing/private (deny)": lambda ch: config_pb2_grpc.ConfigStub(ch).Get(
            config_pb2.GetConfigRequest(key="billing/private")),
        "config other/a": lambda ch: config_pb2_grpc.ConfigStub(ch).Get(
            config_pb2.GetConfigRequest(key="other/a")),
        "service web": lambda ch: discovery_pb2_grpc.DiscoveryStub(ch).GetHealthyInstances(
            discovery_pb2.GetHealthyInstancesRequest(service="web")),
        "watch secret billing/app": lambda ch: secrets_pb2_grpc.SecretsStub(ch).WatchSecret(
            secrets_pb2.WatchSecretRequest(path="billing/app")),
        "watch secret other/app": lambda ch: secrets_pb2_grpc.SecretsStub(ch).WatchSecret(
            secrets_pb2.WatchSecretRequest(path="other/app")),
        "register billing": lambda ch: discovery_pb2_grpc.DiscoveryStub(ch).Register(
            discovery_pb2.RegisterRequest(service="billing", port=8080, ttl_check=True)),
        "register web": lambda ch: discovery_pb2_grpc.DiscoveryStub(ch).Register(
            discovery_pb2.RegisterRequest(service="web", port=8080, ttl_check=True)),
    }  # fmt: skip


# identity → the requests it may make (everything else must be PERMISSION_DENIED).
ALLOWED = {
    BILLING: {
        "secret billing/app",
        "database creds",
        "config billing/a",
        "service web",
        "watch secret billing/app",
        "register billing",
    },
    "operator": {"list leases"},
    "stranger": set(),  # a valid certificate bound to no policy
}


@pytest.mark.parametrize("identity", sorted(ALLOWED))
async def test_matrix(tls_gateway: TlsGateway, identity: str) -> None:
    async with tls_gateway.channel(identity) as channel:
        for name, make in _requests().items():
            expected = OK if name in ALLOWED[identity] else DENIED
            assert await _code(make(channel)) == expected, f"{identity}: {name}"
        status = await secrets_pb2_grpc.SecretsStub(channel).ListLeases(
            secrets_pb2.ListLeasesRequest(role=DEMO_ROLE)
        ) if identity == "operator" else None  # fmt: skip
        if status is not None:
            assert all(lease.username for lease in status.leases)


async def test_config_list_is_filtered_per_key(tls_gateway: TlsGateway) -> None:
    async with tls_gateway.channel(BILLING) as channel:
        listed = await config_pb2_grpc.ConfigStub(channel).List(
            config_pb2.ListConfigRequest(prefix="billing/")
        )
    assert [e.key for e in listed.entries] == ["billing/a"]


async def test_flagd_sync_follows_config_policies(tls_gateway: TlsGateway) -> None:
    """flagd.sync.v1 is Config under another name: the selector is the prefix checked."""

    async def sync_first(channel: grpc.aio.Channel, selector: str) -> Any:
        stream = sync_pb2_grpc.FlagSyncServiceStub(channel).SyncFlags(
            sync_pb2.SyncFlagsRequest(), metadata=(("flagd-selector", selector),)
        )
        try:
            return await stream.read()
        finally:
            stream.cancel()

    def fetch(channel: grpc.aio.Channel, selector: str) -> Any:
        return sync_pb2_grpc.FlagSyncServiceStub(channel).FetchAllFlags(
            sync_pb2.FetchAllFlagsRequest(selector=selector)
        )

    async with tls_gateway.channel(BILLING) as channel:
        assert await _code(fetch(channel, "billing/")) == OK
        assert await _code(fetch(channel, "other/")) == DENIED
        assert await _code(sync_first(channel, "other/")) == DENIED
        first = await sync_first(channel, "billing/")
        assert json.loads(first.flag_configuration) == {"flags": {}}  # billing/a is no flag set
    async with tls_gateway.channel("stranger") as channel:
        assert await _code(fetch(channel, "billing/")) == DENIED
        assert await _code(sync_first(channel, "billing/")) == DENIED


async def test_bypass_attempts_are_refused(tls_gateway: TlsGateway) -> None:
    attempts = [
        "billing/../other/app", "billing//root", "billing/root/", "billing/%72oot",
        "BILLING/app", "billing/\uff52oot", "billing/*", "billing/+", "billing/ro*",
    ]  # fmt: skip
    async with tls_gateway.channel(BILLING) as channel:
        stub = secrets_pb2_grpc.SecretsStub(channel)
        config = config_pb2_grpc.ConfigStub(channel)
        for path in attempts:
            code = await _code(stub.GetSecret(secrets_pb2.GetSecretRequest(path=path)))
            assert code in (DENIED, grpc.StatusCode.INVALID_ARGUMENT), path
            key = path.replace("root", "private")
            code = await _code(config.Get(config_pb2.GetConfigRequest(key=key)))
            assert code in (DENIED, grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.NOT_FOUND), (
                key
            )
            assert code != OK
        for role in ("demo-*", "DEMO-readonly", "demo-readonly/../x", "\uff44emo-readonly"):
            code = await _code(stub.GetDatabaseCredentials(
                secrets_pb2.GetDatabaseCredentialsRequest(role=role)))  # fmt: skip
            assert code in (DENIED, grpc.StatusCode.INVALID_ARGUMENT), role
        for service in ("we*", "WEB", "web/..", "\uff57eb"):
            code = await _code(discovery_pb2_grpc.DiscoveryStub(channel).GetHealthyInstances(
                discovery_pb2.GetHealthyInstancesRequest(service=service)))  # fmt: skip
            assert code in (DENIED, grpc.StatusCode.INVALID_ARGUMENT), service


async def test_handshake_fails_without_a_good_certificate(
    tls_gateway: TlsGateway, tmp_path: Path
) -> None:
    other_ca = tmp_path / "other-ca"
    init_ca(other_ca)
    tls_gateway.client_certs["rogue"] = issue_client(other_ca, identity=BILLING, out_name="rogue")
    tls_gateway.client_certs["expired"] = issue_client(
        tls_gateway.tls_dir, identity=BILLING, out_name="expired",
        not_after=__import__("datetime").datetime(2020, 1, 1, tzinfo=__import__("datetime").UTC),
    )  # fmt: skip
    for who in (None, "rogue", "expired"):
        async with tls_gateway.channel(who) as channel:
            code = await _code(secrets_pb2_grpc.SecretsStub(channel).GetSecret(
                secrets_pb2.GetSecretRequest(path="billing/app"), timeout=10))  # fmt: skip
            assert code == grpc.StatusCode.UNAVAILABLE, who


async def test_tls_without_client_certs_needs_a_token(
    tmp_path: Path, demo_env: dict[str, Any], consul_agent: ConsulAgent, vault_server: Any,
    postgres: PostgresCluster,
) -> None:  # fmt: skip
    gw = await start_tls_gateway(
        tmp_path, demo_env, consul_agent, vault_server, postgres, require_client_cert=False
    )
    try:
        async with gw.channel(None) as channel:
            stub = secrets_pb2_grpc.SecretsStub(channel)
            code = await _code(stub.ListLeases(secrets_pb2.ListLeasesRequest()))
            assert code == grpc.StatusCode.UNAUTHENTICATED
            md = (("authorization", f"Bearer {demo_env['tokens']['operator']}"),)
            await stub.ListLeases(secrets_pb2.ListLeasesRequest(), metadata=md)
    finally:
        await gw.handle.gateway.stop()


async def test_audit_log_has_every_request_and_no_secret(tls_gateway: TlsGateway) -> None:
    async with tls_gateway.channel(BILLING) as channel:
        stub = secrets_pb2_grpc.SecretsStub(channel)
        secret = await stub.GetSecret(secrets_pb2.GetSecretRequest(path="billing/app"))
        cred = (await stub.GetDatabaseCredentials(
            secrets_pb2.GetDatabaseCredentialsRequest(role=DEMO_ROLE))).credential  # fmt: skip
        stream = stub.WatchDatabaseCredentials(
            secrets_pb2.WatchDatabaseCredentialsRequest(role=DEMO_ROLE)
        )
        issued = (await stream.read()).issued.credential
        stream.cancel()
        watch = stub.WatchSecret(secrets_pb2.WatchSecretRequest(path="billing/app"))
        assert (await watch.read()).version.data["password"] == secret.data["password"]
        watch.cancel()
        register = discovery_pb2_grpc.DiscoveryStub(channel).Register(
            discovery_pb2.RegisterRequest(service="billing", port=8080, ttl_check=True)
        )
        assert (await register.read()).registered.instance_id.startswith("billing-")
        register.cancel()
        await _code(stub.GetSecret(secrets_pb2.GetSecretRequest(path="billing/root")))

    # Records of calls that return no secret (the denial) are written just after the reply.
    def denial_written() -> bool:
        return '"decision":"deny"' in tls_gateway.audit_file.read_text()

    def streams_ended() -> bool:
        ended = {
            r["rpc"].rsplit("/", 1)[-1]
            for r in map(json.loads, tls_gateway.audit_file.read_text().splitlines())
            if r["event"] == "stream_end"
        }
        return {"WatchSecret", "Register"} <= ended

    await eventually(denial_written, what="the denied call's audit line")
    await eventually(streams_ended, what="the ends of the WatchSecret and Register streams")
    text = tls_gateway.audit_file.read_text()
    lines = [json.loads(line) for line in text.splitlines()]
    for value in (secret.data["password"], cred.password, issued.password):
        assert value not in text
    mine = [r for r in lines if r["identity"] == BILLING]
    rpcs = {(r["rpc"].rsplit("/", 1)[-1], r["decision"], r["code"]) for r in mine}
    assert ("GetSecret", "allow", "OK") in rpcs
    assert ("GetSecret", "deny", "PERMISSION_DENIED") in rpcs
    assert ("GetDatabaseCredentials", "allow", "OK") in rpcs
    assert ("WatchDatabaseCredentials", "allow", "OK") in rpcs
    for rpc in ("WatchSecret", "Register"):
        events = {r["event"] for r in mine if r["rpc"].endswith("/" + rpc)}
        assert {"stream_open", "stream_end"} <= events, rpc
    watched = [r["returned"] for r in mine if r["rpc"].endswith("/WatchSecret") and r["returned"]]
    assert watched, "the version a watch hands out is audited"
    assert watched[0]["data.password"].startswith("hmac-sha256:")
    hashed = [r["returned"] for r in mine if r["returned"]]
    assert any(v.get("password", "").startswith("hmac-sha256:") for v in hashed)
    assert all(r["auth_method"] == "mtls" for r in mine)


async def test_hot_reload_grants_narrows_and_keeps_old_on_invalid(
    tmp_path: Path, demo_env: dict[str, Any], consul_agent: ConsulAgent, vault_server: Any,
    postgres: PostgresCluster,
) -> None:  # fmt: skip
    gw = await start_tls_gateway(tmp_path, demo_env, consul_agent, vault_server, postgres)
    app = gw.policies_dir / "app.hcl"
    try:
        async with gw.channel(BILLING) as channel:
            config = config_pb2_grpc.ConfigStub(channel)
            secrets = secrets_pb2_grpc.SecretsStub(channel)
            # Granting: other/ becomes readable after the file changes.
            assert await _code(config.Get(config_pb2.GetConfigRequest(key="other/a"))) == DENIED
            app.write_text(app.read_text() + '\nconfig "other/" { capabilities = ["read"] }\n')

            async def granted() -> bool:
                code = await _code(config.Get(config_pb2.GetConfigRequest(key="other/a")))
                return code == OK

            await eventually(granted, what="a granting reload")
            # Narrowing: an open watch on billing/ ends with PERMISSION_DENIED.
            stream = config.Watch(config_pb2.WatchConfigRequest(prefix="billing/"))
            assert (await stream.read()).WhichOneof("event") == "snapshot"
            app.write_text('service "web" { capabilities = ["discover"] }\n')
            with pytest.raises(grpc.aio.AioRpcError) as err:
                while True:
                    await asyncio.wait_for(stream.read(), timeout=30)
            assert err.value.code() == DENIED
            assert "withdrawn" in (err.value.details() or "")
            # An invalid file keeps the previous policies in force.
            generation = gw.handle.gateway.policies.generation  # type: ignore[union-attr]
            app.write_text('service "web" { capabilities = ["fly"] }\n')
            assert not gw.handle.gateway.reload_policies()
            assert gw.handle.gateway.policies.generation == generation  # type: ignore[union-attr]
            still = discovery_pb2_grpc.DiscoveryStub(channel).GetHealthyInstances(
                discovery_pb2.GetHealthyInstancesRequest(service="web")
            )
            assert await _code(still) == OK
            assert (
                await _code(secrets.GetSecret(secrets_pb2.GetSecretRequest(path="billing/app")))
                == DENIED
            )
    finally:
        await gw.handle.gateway.stop()


async def test_rate_and_stream_limits(
    tmp_path: Path, demo_env: dict[str, Any], consul_agent: ConsulAgent, vault_server: Any,
    postgres: PostgresCluster,
) -> None:  # fmt: skip
    gw = await start_tls_gateway(
        tmp_path, demo_env, consul_agent, vault_server, postgres,
        limits={"requests_per_second": 0.5, "burst": 3, "max_streams_per_identity": 1},
    )  # fmt: skip
    try:
        async with gw.channel(BILLING) as channel:
            config = config_pb2_grpc.ConfigStub(channel)
            first = config.Watch(config_pb2.WatchConfigRequest(prefix="billing/"))
            await first.read()
            second = config.Watch(config_pb2.WatchConfigRequest(prefix="billing/"))
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await second.read()
            assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            first.cancel()
            last: grpc.aio.AioRpcError | None = None
            for _ in range(5):
                call = config.Get(config_pb2.GetConfigRequest(key="billing/a"))
                try:
                    await call
                except grpc.aio.AioRpcError as exc:
                    last = exc
                    break
            assert last is not None
            assert last.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            trailers = dict(last.trailing_metadata() or ())
            assert int(trailers["retry-after"]) >= 1
            status = status_pb2.Status.FromString(trailers["grpc-status-details-bin"])
            info = error_details_pb2.RetryInfo()
            assert status.details[0].Unpack(info)
            assert info.retry_delay.seconds >= 1
    finally:
        await gw.handle.gateway.stop()
