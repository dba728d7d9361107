"""latchkey.v1.Secrets: KV v2 secrets and database credential leases.

GetSecret and GetDatabaseCredentials answer from objects the brokers hand out many times (the
cached secret, the held credential), so they reply with bytes serialized once per object
(convert.PerObject); the interceptor passes bytes through its response serializer.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, AsyncIterator
from contextlib import aclosing
from typing import Any, Protocol

import grpc
from google.protobuf import timestamp_pb2

from latchkey.v1 import secrets_pb2, secrets_pb2_grpc
from latchkey_server import models
from latchkey_server.access.authz import ResourceKind
from latchkey_server.access.context import current_identity
from latchkey_server.access.gate import AccessGate
from latchkey_server.access.request import note_returned, note_returned_all
from latchkey_server.errors import FailedPrecondition
from latchkey_server.transport import convert, validate

Context = grpc.aio.ServicerContext[Any, Any]


class SecretSource(Protocol):
    async def get(
        self, mount: str, path: str, version: int = 0
    ) -> tuple[models.KvSecret, models.Freshness]: ...


class SecretWatchSource(Protocol):
    def watch(self, mount: str, path: str) -> AsyncGenerator[models.SecretEvent, None]: ...


class LeaseSource(Protocol):
    async def acquire(self, identity: str, role: str) -> models.Credential: ...
    def watch(
        self, identity: str, role: str, lease_id: str = ""
    ) -> AsyncGenerator[models.CredentialEvent, None]: ...
    async def ack(self, identity: str, watch_id: str, rotation_id: str) -> Any: ...
    async def renew(
        self, identity: str, lease_id: str, increment: float | None
    ) -> models.RenewResult: ...
    async def release(self, identity: str, lease_id: str, *, force: bool = False) -> bool: ...
    async def list_all(self, role: str = "") -> list[models.LeaseInfo]: ...


def _lease_role(lease_id: str) -> str:
    """`database/creds/<role>/<id>` → `<role>` (for authorization); '' when not of that shape."""
    parts = lease_id.split("/")
    return parts[-2] if len(parts) >= 4 and parts[-3] == "creds" else ""


class SecretsServicer(secrets_pb2_grpc.SecretsServicer):
    def __init__(
        self,
        secrets: SecretSource,
        leases: LeaseSource,
        gate: AccessGate,
        *,
        kv_mount: str = "secret",
        watches: SecretWatchSource | None = None,
    ) -> None:
        self._secrets = secrets
        self._watches = watches
        self._leases = leases
        self._gate = gate
        self._kv_mount = kv_mount

    async def GetSecret(  # type: ignore[override]  # a serialized GetSecretResponse
        self, request: secrets_pb2.GetSecretRequest, context: Context
    ) -> bytes:
        mount = validate.mount(request.mount, self._kv_mount)
        path = validate.secret_path(request.path)
        identity = current_identity()
        self._gate.authorize(identity, ResourceKind.SECRET, f"{mount}/data/{path}", "read")
        secret, fresh = await self._secrets.get(mount, path, request.version)
        encoded = convert.encoded_secret(secret)
        note_returned_all(encoded.returned)
        return convert.secret_reply(encoded, fresh)

    async def WatchSecret(
        self, request: secrets_pb2.WatchSecretRequest, context: Context
    ) -> AsyncIterator[secrets_pb2.SecretEvent]:
        mount = validate.mount(request.mount, self._kv_mount)
        path = validate.secret_path(request.path)
        identity = current_identity()
        resource = f"{mount}/data/{path}"
        grant = self._gate.open_stream(identity, ResourceKind.SECRET, resource, "read")
        if self._watches is None:
            grant.close()
            raise FailedPrecondition("this gateway does not serve secret watches")
        try:
            async with aclosing(self._watches.watch(mount, path)) as events:
                async for event in events:
                    grant.check()
                    if isinstance(event, models.SecretVersion):
                        note_returned_all(convert.encoded_secret(event.secret).returned)
                    yield convert.secret_event(event)
        finally:
            grant.close()

    async def GetDatabaseCredentials(  # type: ignore[override]  # a serialized response
        self, request: secrets_pb2.GetDatabaseCredentialsRequest, context: Context
    ) -> bytes:
        role = validate.name("role", request.role)
        identity = current_identity()
        self._gate.authorize(identity, ResourceKind.DATABASE, role, "read")
        cred = await self._leases.acquire(identity.name, role)
        note_returned("password", cred.password)
        return convert.credential_reply(cred)

    async def WatchDatabaseCredentials(
        self, request: secrets_pb2.WatchDatabaseCredentialsRequest, context: Context
    ) -> AsyncIterator[secrets_pb2.CredentialEvent]:
        role = validate.name("role", request.role)
        lease_id = validate.lease_id(request.lease_id) if request.lease_id else ""
        identity = current_identity()
        grant = self._gate.open_stream(identity, ResourceKind.DATABASE, role, "watch")
        try:
            async with aclosing(self._leases.watch(identity.name, role, lease_id)) as events:
                async for event in events:
                    grant.check()
                    if isinstance(event, models.CredentialIssued | models.CredentialRotation):
                        note_returned("password", event.credential.password)
                    yield convert.credential_event(event)
        finally:
            grant.close()

    async def AckRotation(
        self, request: secrets_pb2.AckRotationRequest, context: Context
    ) -> secrets_pb2.AckRotationResponse:
        watch_id = validate.opaque_id("watch_id", request.watch_id)
        rotation_id = validate.opaque_id("rotation_id", request.rotation_id)
        identity = current_identity()
        revoked_at = await self._leases.ack(identity.name, watch_id, rotation_id)
        out = secrets_pb2.AckRotationResponse()
        stamp = convert.ts(revoked_at)
        if isinstance(stamp, timestamp_pb2.Timestamp):
            out.previous_revoked_at.CopyFrom(stamp)
        return out

    async def RenewLease(
        self, request: secrets_pb2.RenewLeaseRequest, context: Context
    ) -> secrets_pb2.RenewLeaseResponse:
        # Out-of-range durations are refused before anything else (no conversion, no lookup).
        increment = (
            validate.duration_seconds(
                "increment", request.increment.seconds, request.increment.nanos
            )
            if request.HasField("increment")
            else None
        )
        lease_id = validate.lease_id(request.lease_id)
        identity = current_identity()
        self._gate.authorize(identity, ResourceKind.DATABASE, _lease_role(lease_id), "renew")
        result = await self._leases.renew(identity.name, lease_id, increment)
        return secrets_pb2.RenewLeaseResponse(
            lease_id=result.lease_id,
            lease_expires_at=convert.ts(result.expires_at),
            renewable=result.renewable,
            warnings=list(result.warnings),
        )

    async def RevokeLease(
        self, request: secrets_pb2.RevokeLeaseRequest, context: Context
    ) -> secrets_pb2.RevokeLeaseResponse:
        lease_id = validate.lease_id(request.lease_id)
        identity = current_identity()
        role = _lease_role(lease_id)
        self._gate.authorize(identity, ResourceKind.DATABASE, role, "revoke")
        if request.force:
            self._gate.authorize(identity, ResourceKind.DATABASE, role, "revoke_any")
        revoked = await self._leases.release(identity.name, lease_id, force=request.force)
        return secrets_pb2.RevokeLeaseResponse(revoked=revoked)

    async def ListLeases(
        self, request: secrets_pb2.ListLeasesRequest, context: Context
    ) -> secrets_pb2.ListLeasesResponse:
        role = validate.optional_name("role", request.role)
        identity = current_identity()
        self._gate.authorize(identity, ResourceKind.DATABASE, role or "*", "list_leases")
        leases = await self._leases.list_all(role)
        return secrets_pb2.ListLeasesResponse(leases=[convert.lease_info(x) for x in leases])
