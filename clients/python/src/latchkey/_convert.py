"""The one place protobuf messages become SDK models (and requests are built)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, Literal

from google.protobuf import json_format
from google.protobuf.message import Message

from latchkey import _models as m
from latchkey.v1 import (
    common_pb2,
    config_pb2,
    discovery_pb2,
    gateway_pb2,
    secrets_pb2,
)

_UPSTREAM: dict[int, Literal["connected", "unreachable", "refused", "unknown"]] = {
    common_pb2.UPSTREAM_STATE_CONNECTED: "connected",
    common_pb2.UPSTREAM_STATE_UNREACHABLE: "unreachable",
    common_pb2.UPSTREAM_STATE_REFUSED: "refused",
}
_HEALTH: dict[int, Literal["passing", "warning", "critical", "unknown"]] = {
    discovery_pb2.HEALTH_STATUS_PASSING: "passing",
    discovery_pb2.HEALTH_STATUS_WARNING: "warning",
    discovery_pb2.HEALTH_STATUS_CRITICAL: "critical",
}


def _ts(msg: Message, name: str) -> datetime | None:
    if not msg.HasField(name):
        return None
    stamp = getattr(msg, name)
    value: datetime = stamp.ToDatetime(tzinfo=UTC)
    return value


def freshness(msg: Message, name: str = "freshness") -> m.Freshness:
    if not msg.HasField(name):
        return m.Freshness()
    f: common_pb2.Freshness = getattr(msg, name)
    return m.Freshness(
        index=f.index,
        age=f.age.ToTimedelta().total_seconds(),
        stale=f.stale,
        upstream=_UPSTREAM.get(f.upstream, "unknown"),
        last_contact=_ts(f, "last_contact"),
    )


# ---------------------------------------------------------------- secrets


def secret_request(path: str, mount: str, version: int | None) -> secrets_pb2.GetSecretRequest:
    return secrets_pb2.GetSecretRequest(mount=mount, path=path, version=version or 0)


def watch_secret_request(path: str, mount: str) -> secrets_pb2.WatchSecretRequest:
    return secrets_pb2.WatchSecretRequest(mount=mount, path=path)


def secret(resp: secrets_pb2.GetSecretResponse) -> m.Secret:
    data: dict[str, Any] = json_format.MessageToDict(resp.data)
    md = resp.metadata
    return m.Secret(
        data=data,
        version=md.version,
        created_time=_ts(md, "created_time"),
        custom_metadata=dict(md.custom_metadata),
        freshness=freshness(resp),
    )


def credentials(c: secrets_pb2.DatabaseCredential) -> m.DatabaseCredentials:
    return m.DatabaseCredentials(
        username=c.username,
        password=c.password,  # type: ignore[arg-type]  # pydantic coerces str to SecretStr
        lease_id=c.lease_id,
        expires_at=_ts(c, "lease_expires_at"),
        max_ttl_deadline=_ts(c, "max_ttl_deadline"),
        renewable=c.renewable,
        role=c.role,
        issued_at=_ts(c, "issued_at"),
    )


def renewed(resp: secrets_pb2.RenewLeaseResponse) -> m.RenewedLease:
    return m.RenewedLease(
        lease_id=resp.lease_id,
        expires_at=_ts(resp, "lease_expires_at"),
        renewable=resp.renewable,
        warnings=list(resp.warnings),
    )


def lease_info(x: secrets_pb2.LeaseInfo) -> m.LeaseInfo:
    return m.LeaseInfo(
        lease_id=x.lease_id,
        role=x.role,
        holder=x.holder,
        username=x.username,
        expires_at=_ts(x, "lease_expires_at"),
        max_ttl_deadline=_ts(x, "max_ttl_deadline"),
        issued_at=_ts(x, "issued_at"),
        holders=x.holders,
        renewable=x.renewable,
        replica=x.replica,
    )


def renew_request(lease_id: str, increment: float | None) -> secrets_pb2.RenewLeaseRequest:
    req = secrets_pb2.RenewLeaseRequest(lease_id=lease_id)
    if increment is not None:
        req.increment.FromSeconds(int(increment))
    return req


# ---------------------------------------------------------------- config


def config_entry(e: config_pb2.ConfigEntry) -> m.ConfigEntry:
    return m.ConfigEntry(
        key=e.key,
        value=e.value,
        create_index=e.create_index,
        modify_index=e.modify_index,
        flags=e.flags,
    )


def key_change(c: config_pb2.KeyChange) -> m.ConfigChange:
    kind: Literal["put", "delete"] = "delete" if c.type == config_pb2.CHANGE_TYPE_DELETE else "put"
    entry = config_entry(c.entry) if c.HasField("entry") else None
    return m.ConfigChange(type=kind, key=c.key, entry=entry)


# ---------------------------------------------------------------- discovery


def instance(i: discovery_pb2.Instance) -> m.Instance:
    return m.Instance(
        id=i.id,
        node=i.node,
        address=i.address,
        port=i.port,
        tags=list(i.tags),
        meta=dict(i.meta),
        health=_HEALTH.get(i.health, "unknown"),
        datacenter=i.datacenter,
    )


# ---------------------------------------------------------------- gateway


def status(resp: gateway_pb2.StatusResponse, address: str) -> m.GatewayStatus:
    return m.GatewayStatus(
        identity=resp.identity,
        auth_method=resp.auth_method,
        version=resp.version,
        upstreams=[
            m.UpstreamStatus(
                name=u.name,
                state=_UPSTREAM.get(u.state, "unknown"),
                last_contact=_ts(u, "last_contact"),
                age_seconds=u.age_seconds,
            )
            for u in resp.upstreams
        ],
        started_at=_ts(resp, "started_at"),
        address=address,
    )


def ack_request(watch_id: str, rotation_id: str) -> secrets_pb2.AckRotationRequest:
    return secrets_pb2.AckRotationRequest(watch_id=watch_id, rotation_id=rotation_id)


def watch_credentials_request(
    role: str, lease_id: str
) -> secrets_pb2.WatchDatabaseCredentialsRequest:
    return secrets_pb2.WatchDatabaseCredentialsRequest(role=role, lease_id=lease_id)


def watch_config_request(
    prefix: str, resume_index: int, resume_epoch: str = ""
) -> config_pb2.WatchConfigRequest:
    return config_pb2.WatchConfigRequest(
        prefix=prefix, resume_index=resume_index, resume_epoch=resume_epoch
    )


def watch_service_request(service: str, tag: str | None) -> discovery_pb2.WatchServiceRequest:
    return discovery_pb2.WatchServiceRequest(service=service, tag=tag or "")


def register_request(
    service: str,
    *,
    instance_id: str,
    port: int,
    address: str | None,
    tags: Sequence[str],
    meta: Mapping[str, str],
    checks: Sequence[discovery_pb2.ServiceCheck],
    ttl: bool,
) -> discovery_pb2.RegisterRequest:
    return discovery_pb2.RegisterRequest(
        service=service, id=instance_id, address=address or "", port=port, tags=list(tags),
        meta=dict(meta), checks=list(checks), ttl_check=ttl,
    )  # fmt: skip


def service_checks(
    *,
    http: str | None,
    tcp: str | None,
    grpc: str | None,
    interval: str | None,
    timeout: str | None,
    deregister_after: str | None,
) -> list[discovery_pb2.ServiceCheck]:
    """The checks a `services.register` call names (one per target given)."""
    timing = {
        "interval": interval or "",
        "timeout": timeout or "",
        "deregister_critical_after": deregister_after or "",
    }
    out = []
    for kind, target in (("http", http), ("tcp", tcp), ("grpc", grpc)):
        if target:
            out.append(discovery_pb2.ServiceCheck(**{kind: target}, **timing))
    return out


def registration_health(
    instance_id: str, msg: discovery_pb2.InstanceHealth
) -> m.RegistrationHealth:
    return m.RegistrationHealth(
        instance_id=instance_id,
        status=_HEALTH.get(msg.status, "unknown"),
        checks=[
            m.CheckState(
                check_id=c.check_id,
                name=c.name,
                status=_HEALTH.get(c.status, "unknown"),
                output=c.output,
            )
            for c in msg.checks
        ],
        freshness=freshness(msg),
    )


def healthy_request(service: str, tag: str | None) -> discovery_pb2.GetHealthyInstancesRequest:
    return discovery_pb2.GetHealthyInstancesRequest(service=service, tag=tag or "")


def credentials_request(role: str) -> secrets_pb2.GetDatabaseCredentialsRequest:
    return secrets_pb2.GetDatabaseCredentialsRequest(role=role)


def list_leases_request(role: str | None) -> secrets_pb2.ListLeasesRequest:
    return secrets_pb2.ListLeasesRequest(role=role or "")


def revoke_request(lease_id: str, force: bool) -> secrets_pb2.RevokeLeaseRequest:
    return secrets_pb2.RevokeLeaseRequest(lease_id=lease_id, force=force)


def config_get_request(key: str) -> config_pb2.GetConfigRequest:
    return config_pb2.GetConfigRequest(key=key)


def config_list_request(prefix: str) -> config_pb2.ListConfigRequest:
    return config_pb2.ListConfigRequest(prefix=prefix)


def status_request() -> gateway_pb2.StatusRequest:
    return gateway_pb2.StatusRequest()
