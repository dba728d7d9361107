"""Domain values to latchkey.v1 messages. Protobuf stays at the edge: only transport uses this.

Replies served over and over from one cached object (a KV secret, a held credential) are
serialized once per object (`PerObject`) and sent as bytes; only the freshness of a secret is
encoded per call. The interceptor's response serializer passes bytes through unchanged.
"""

from __future__ import annotations

import functools
import json
import weakref
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Generic, TypeVar

from google.protobuf import duration_pb2, struct_pb2, timestamp_pb2

from latchkey.v1 import common_pb2, config_pb2, discovery_pb2, secrets_pb2
from latchkey_server import models

K = TypeVar("K")
V = TypeVar("V")
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


class PerObject(Generic[K, V]):
    """`make(obj)` computed once per live object, dropped when the object is collected.

    Keyed by identity (hashing a big value per call would cost what converting it costs); the
    objects must be weak-referenceable and never mutated.
    """

    def __init__(self, make: Callable[[K], V]) -> None:
        self._make = make
        self._values: dict[int, V] = {}

    def __call__(self, obj: K) -> V:
        key = id(obj)
        value = self._values.get(key)
        if value is None:
            value = self._values[key] = self._make(obj)
            weakref.finalize(obj, self._values.pop, key, None)
        return value

    def __len__(self) -> int:
        return len(self._values)


def ts(value: datetime | None) -> timestamp_pb2.Timestamp | None:
    """A Timestamp (naive datetimes are taken as UTC, like `Timestamp.FromDatetime`)."""
    if value is None:
        return None
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    since = value - _EPOCH
    return timestamp_pb2.Timestamp(
        seconds=since.days * 86400 + since.seconds, nanos=since.microseconds * 1000
    )


def freshness(value: models.Freshness | None) -> common_pb2.Freshness | None:
    if value is None:
        return None
    age = value.age_seconds()
    whole = int(age)
    return common_pb2.Freshness(
        index=value.index,
        age=duration_pb2.Duration(seconds=whole, nanos=int((age - whole) * 1e9)),
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


def kv_secret(
    secret: models.KvSecret, fresh: models.Freshness | None = None
) -> secrets_pb2.GetSecretResponse:
    data = struct_pb2.Struct()
    data.update(secret.data)
    return secrets_pb2.GetSecretResponse(
        data=data,
        metadata=secrets_pb2.SecretMetadata(
            version=secret.version,
            created_time=ts(secret.created_time),
            custom_metadata=secret.custom_metadata,
        ),
        freshness=freshness(fresh),
    )


@dataclass(frozen=True, slots=True)
class EncodedSecret:
    """A secret's GetSecretResponse without freshness, serialized, and the values it returns
    (field name -> value as the audit log hashes it)."""

    body: bytes
    returned: Mapping[str, str]


def _encode_secret(secret: models.KvSecret) -> EncodedSecret:
    returned = {
        f"data.{name}": value if isinstance(value, str) else json.dumps(value)
        for name, value in secret.data.items()
    }
    return EncodedSecret(kv_secret(secret).SerializeToString(), returned)


encoded_secret: PerObject[models.KvSecret, EncodedSecret] = PerObject(_encode_secret)


def secret_reply(encoded: EncodedSecret, fresh: models.Freshness) -> bytes:
    """The serialized GetSecretResponse: the cached body, then this read's freshness (a message
    is the concatenation of its fields, and these two carry different ones)."""
    tail = secrets_pb2.GetSecretResponse(freshness=freshness(fresh))
    return encoded.body + tail.SerializeToString()


def secret_event(event: models.SecretEvent) -> secrets_pb2.SecretEvent:
    if isinstance(event, models.Heartbeat):
        return secrets_pb2.SecretEvent(heartbeat=heartbeat(event.freshness))
    return secrets_pb2.SecretEvent(version=kv_secret(event.secret, event.freshness))


def _convert_credential(value: models.Credential) -> secrets_pb2.DatabaseCredential:
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


credential: PerObject[models.Credential, secrets_pb2.DatabaseCredential] = PerObject(
    _convert_credential
)
"""The message of a credential, once per live Credential (a shared lease is streamed to many
watchers) and gone with it, so no password outlives the lease's objects. Callers copy the
result into their reply and never mutate it."""


def _encode_credential(value: models.Credential) -> bytes:
    reply = secrets_pb2.GetDatabaseCredentialsResponse(credential=credential(value))
    return reply.SerializeToString()


credential_reply: PerObject[models.Credential, bytes] = PerObject(_encode_credential)
"""The serialized GetDatabaseCredentialsResponse of a credential (it never changes)."""


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


def _convert_snapshot(event: models.ConfigSnapshot) -> config_pb2.ConfigEvent:
    return _config_event(event)


_config_snapshot: PerObject[models.ConfigSnapshot, config_pb2.ConfigEvent] = PerObject(
    _convert_snapshot
)
"""One conversion per snapshot object, kept exactly as long as the object lives: a big
prefix's snapshot is shared by every stream that opens while it is current."""


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


# ---------------------------------------------------------------- self-registration


def registration_event(event: models.RegistrationEvent) -> discovery_pb2.RegisterEvent:
    if isinstance(event, models.Heartbeat):
        return discovery_pb2.RegisterEvent(heartbeat=heartbeat(event.freshness))
    if isinstance(event, models.InstanceRegistered):
        return discovery_pb2.RegisterEvent(
            registered=discovery_pb2.InstanceRegistered(
                instance_id=event.instance_id,
                address=event.address,
                port=event.port,
                check_ids=list(event.check_ids),
            )
        )
    return discovery_pb2.RegisterEvent(
        health=discovery_pb2.InstanceHealth(
            status=_HEALTH[event.status],
            checks=[
                discovery_pb2.CheckState(
                    check_id=c.check_id, name=c.name, status=_HEALTH[c.status], output=c.output
                )
                for c in event.checks
            ],
            freshness=freshness(event.freshness),
        )
    )
