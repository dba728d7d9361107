"""Domain values to latchkey.v1 messages. Protobuf stays at the edge: only transport uses this."""

from __future__ import annotations

import functools
import weakref
from datetime import datetime, timedelta

from google.protobuf import duration_pb2, struct_pb2, timestamp_pb2

from latchkey.v1 import common_pb2, config_pb2, discovery_pb2, secrets_pb2
from latchkey_server import models


def ts(value: datetime | None) -> timestamp_pb2.Timestamp | None:
    if value is None:
        return None
    out = timestamp_pb2.Timestamp()
    out.FromDatetime(value)
    return out


def freshness(value: models.Freshness | None) -> common_pb2.Freshness | None:
    if value is None:
        return None
    age = duration_pb2.Duration()
    age.FromTimedelta(timedelta(seconds=value.age_seconds()))
    return common_pb2.Freshness(
        index=value.index,
        age=age,
        stale=value.stale,
        upstream=upstream_state(value),
        last_contact=ts(value.confirmed_at),
    )


def upstream_state(value: models.Freshness) -> common_pb2.UpstreamState.ValueType:
    if not value.reachable:
        return common_pb2.UPSTREAM_STATE_UNREACHABLE
    if value.refused:
        return common_pb2.UPSTREAM_STATE_REFUSED
    return common_pb2.UPSTREAM_STATE_CONNECTED


def heartbeat(value: models.Freshness) -> common_pb2.Heartbeat:
    return common_pb2.Heartbeat(freshness=freshness(value), sent_at=ts(models.utcnow()))


# ---------------------------------------------------------------- secrets


def kv_secret(secret: models.KvSecret) -> secrets_pb2.GetSecretResponse:
    data = struct_pb2.Struct()
    data.update(secret.data)
    return secrets_pb2.GetSecretResponse(
        data=data,
        metadata=secrets_pb2.SecretMetadata(
            version=secret.version,
            created_time=ts(secret.created_time),
            custom_metadata=secret.custom_metadata,
        ),
        freshness=freshness(secret.freshness),
    )


@functools.lru_cache(maxsize=1024)
def credential(value: models.Credential) -> secrets_pb2.DatabaseCredential:
    """Memoised (a Credential never changes; a shared lease is returned many times).

    Callers copy the result into their reply and never mutate it.
    """
    return secrets_pb2.DatabaseCredential(
        username=value.username,
        password=value.password,
        lease_id=value.lease_id,
        lease_expires_at=ts(value.expires_at),
        max_ttl_deadline=ts(value.max_ttl_deadline),
        renewable=value.renewable,
        role=value.role,
        issued_at=ts(value.issued_at),
    )


def credential_event(event: models.CredentialEvent) -> secrets_pb2.CredentialEvent:
    out = secrets_pb2.CredentialEvent(watch_id=event.watch_id)
    match event:
        case models.CredentialIssued():
            out.issued.credential.CopyFrom(credential(event.credential))
        case models.CredentialRenewed():
            out.renewed.lease_id = event.lease_id
            out.renewed.lease_expires_at.FromDatetime(event.expires_at)
        case models.CredentialRotation():
            out.rotation.credential.CopyFrom(credential(event.credential))
            out.rotation.rotation_id = event.rotation_id
            out.rotation.previous_lease_id = event.previous_lease_id
            out.rotation.previous_revoke_at.FromDatetime(event.previous_revoke_at)
        case models.CredentialRevoked():
            out.revoked.lease_id = event.lease_id
            out.revoked.reason = event.reason
        case models.CredentialHeartbeat():
            out.heartbeat.CopyFrom(heartbeat(event.freshness))
    return out


def lease_info(value: models.LeaseInfo) -> secrets_pb2.LeaseInfo:
    return secrets_pb2.LeaseInfo(
        lease_id=value.lease_id,
        role=value.role,
        holder=value.holder,
        username=value.username,
        lease_expires_at=ts(value.expires_at),
        max_ttl_deadline=ts(value.max_ttl_deadline),
        issued_at=ts(value.issued_at),
        holders=value.holders,
        renewable=value.renewable,
        replica=value.replica,
    )


# ---------------------------------------------------------------- config


def config_entry(value: models.ConfigEntry) -> config_pb2.ConfigEntry:
    return config_pb2.ConfigEntry(
        key=value.key,
        value=value.value,
        create_index=value.create_index,
        modify_index=value.modify_index,
        flags=value.flags,
    )


def config_event(event: models.ConfigEvent) -> config_pb2.ConfigEvent:
    if isinstance(event, models.ConfigChange):
        return _config_change(event)
    if isinstance(event, models.ConfigSnapshot):
        return _config_snapshot(event)
    return _config_event(event)


_snapshots: dict[int, config_pb2.ConfigEvent] = {}


def _config_snapshot(event: models.ConfigSnapshot) -> config_pb2.ConfigEvent:
    """One conversion per snapshot object, kept exactly as long as the object lives.

    A big prefix's snapshot is shared by every stream that opens while it is current; keyed
    by identity (hashing megabytes of entries per stream would cost as much as converting).
    """
    key = id(event)
    converted = _snapshots.get(key)
    if converted is None:
        converted = _snapshots[key] = _config_event(event)
        weakref.finalize(event, _snapshots.pop, key, None)
    return converted


@functools.lru_cache(maxsize=64)
def _config_change(event: models.ConfigChange) -> config_pb2.ConfigEvent:
    """One conversion per change, however many subscribers receive it (fan-out hot path).

    Heartbeats are never memoised: their age and send time must be current.
    """
    return _config_event(event)


def _config_event(event: models.ConfigEvent) -> config_pb2.ConfigEvent:
    match event:
        case models.ConfigSnapshot():
            return config_pb2.ConfigEvent(
                snapshot=config_pb2.ConfigSnapshot(
                    entries=[config_entry(e) for e in event.entries],
                    index=event.index,
                    freshness=freshness(event.freshness),
                    reset=event.reset,
                    epoch=event.epoch,
                )
            )
        case models.ConfigChange():
            return config_pb2.ConfigEvent(
                change=config_pb2.ConfigChange(
                    changes=[_key_change(c) for c in event.changes],
                    index=event.index,
                    freshness=freshness(event.freshness),
                )
            )
        case models.Heartbeat():
            return config_pb2.ConfigEvent(heartbeat=heartbeat(event.freshness))


def _key_change(change: models.KeyChange) -> config_pb2.KeyChange:
    kind = (
        config_pb2.CHANGE_TYPE_PUT
        if change.type is models.ChangeType.PUT
        else config_pb2.CHANGE_TYPE_DELETE
    )
    entry = config_entry(change.entry) if change.entry is not None else None
    return config_pb2.KeyChange(type=kind, key=change.key, entry=entry)


# ---------------------------------------------------------------- discovery

_HEALTH = {
    models.HealthStatus.PASSING: discovery_pb2.HEALTH_STATUS_PASSING,
    models.HealthStatus.WARNING: discovery_pb2.HEALTH_STATUS_WARNING,
    models.HealthStatus.CRITICAL: discovery_pb2.HEALTH_STATUS_CRITICAL,
}


def instance(value: models.Instance) -> discovery_pb2.Instance:
    return discovery_pb2.Instance(
        id=value.id,
        node=value.node,
        address=value.address,
        port=value.port,
        tags=list(value.tags),
        meta=value.meta,
        health=_HEALTH[value.health],
        datacenter=value.datacenter,
    )


def instance_set(value: models.InstanceSet) -> discovery_pb2.InstanceSet:
    return discovery_pb2.InstanceSet(
        instances=[instance(i) for i in value.instances],
        index=value.index,
        freshness=freshness(value.freshness),
        epoch=value.epoch,
        reset=value.reset,
    )


def service_event(event: models.ServiceEvent) -> discovery_pb2.ServiceEvent:
    if isinstance(event, models.Heartbeat):
        return discovery_pb2.ServiceEvent(heartbeat=heartbeat(event.freshness))
    return discovery_pb2.ServiceEvent(instances=instance_set(event))
