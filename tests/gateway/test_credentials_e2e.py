"""Brokered database credentials against OpenBao and a real password-auth PostgreSQL."""

from __future__ import annotations

import asyncio
import contextlib

import grpc
import hvac
import pytest

from latchkey.v1 import secrets_pb2
from latchkey_server.devstack.seed import DEMO_ROLE
from tests.fixtures.gateway import GatewayHandle, Stubs
from tests.gateway.helpers import can_login, eventually


async def test_credentials_log_in_and_revoke_makes_them_fail(
    gateway: GatewayHandle, stubs: Stubs
) -> None:
    reply = await stubs.secrets.GetDatabaseCredentials(
        secrets_pb2.GetDatabaseCredentialsRequest(role=DEMO_ROLE), metadata=gateway.metadata()
    )
    cred = reply.credential
    assert cred.username.startswith("v-approle-demo-rea")
    assert cred.lease_id.startswith(f"database/creds/{DEMO_ROLE}/")
    assert cred.max_ttl_deadline.ToDatetime() >= cred.lease_expires_at.ToDatetime()
    assert await can_login(gateway.postgres, cred.username, cred.password)

    listed = await stubs.secrets.ListLeases(
        secrets_pb2.ListLeasesRequest(role=DEMO_ROLE), metadata=gateway.metadata("operator")
    )
    mine = [lease for lease in listed.leases if lease.lease_id == cred.lease_id]
    assert len(mine) == 1
    assert mine[0].holder == "app"
    assert mine[0].username == cred.username
    assert cred.password not in str(listed)

    revoked = await stubs.secrets.RevokeLease(
        secrets_pb2.RevokeLeaseRequest(lease_id=cred.lease_id), metadata=gateway.metadata()
    )
    assert revoked.revoked
    assert not await can_login(gateway.postgres, cred.username, cred.password)


async def test_same_identity_shares_one_lease_other_identity_gets_its_own(
    gateway: GatewayHandle, stubs: Stubs
) -> None:
    req = secrets_pb2.GetDatabaseCredentialsRequest(role=DEMO_ROLE)
    first, second, other = await asyncio.gather(
        stubs.secrets.GetDatabaseCredentials(req, metadata=gateway.metadata("app")),
        stubs.secrets.GetDatabaseCredentials(req, metadata=gateway.metadata("app")),
        stubs.secrets.GetDatabaseCredentials(req, metadata=gateway.metadata("other")),
    )
    assert first.credential.lease_id == second.credential.lease_id
    assert other.credential.lease_id != first.credential.lease_id
    for reply, who in ((first, "app"), (other, "other")):
        await stubs.secrets.RevokeLease(
            secrets_pb2.RevokeLeaseRequest(lease_id=reply.credential.lease_id),
            metadata=gateway.metadata(who),
        )
    with contextlib.suppress(grpc.aio.AioRpcError):
        await stubs.secrets.RevokeLease(
            secrets_pb2.RevokeLeaseRequest(lease_id=second.credential.lease_id),
            metadata=gateway.metadata("app"),
        )
    assert not await can_login(
        gateway.postgres, first.credential.username, first.credential.password
    )


async def test_stream_end_releases_the_lease(gateway: GatewayHandle, stubs: Stubs) -> None:
    stream = stubs.secrets.WatchDatabaseCredentials(
        secrets_pb2.WatchDatabaseCredentialsRequest(role=DEMO_ROLE),
        metadata=gateway.metadata("other"),
    )
    first = await stream.read()
    assert first.WhichOneof("event") == "issued"
    cred = first.issued.credential
    assert await can_login(gateway.postgres, cred.username, cred.password)
    stream.cancel()

    async def gone() -> bool:
        return not await can_login(gateway.postgres, cred.username, cred.password)

    await eventually(gone, what="the released lease to be revoked")


async def test_kv_secret_through_the_gateway(gateway: GatewayHandle, stubs: Stubs) -> None:
    client = hvac.Client(url=gateway.vault_addr, token=gateway.vault_root_token)
    client.secrets.kv.v2.create_or_update_secret(
        path="e2e/app", secret={"user": "svc", "n": 3}, mount_point="secret"
    )
    reply = await stubs.secrets.GetSecret(
        secrets_pb2.GetSecretRequest(path="e2e/app"), metadata=gateway.metadata()
    )
    assert dict(reply.data) == {"user": "svc", "n": 3.0}
    assert reply.metadata.version >= 1
    assert not reply.freshness.stale
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await stubs.secrets.GetSecret(
            secrets_pb2.GetSecretRequest(path="e2e/none"), metadata=gateway.metadata()
        )
    assert err.value.code() == grpc.StatusCode.NOT_FOUND
