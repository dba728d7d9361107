"""Plain domain values that flow between the rooms. No protobuf, no wire library types.

Times are timezone-aware UTC datetimes. Secret-bearing fields are excluded from `repr`.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

# ---------------------------------------------------------------- freshness


def utcnow() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True, slots=True)
class Freshness:
    """How fresh a value is: upstream index, last confirmation, and stale-if-error state."""

    index: int
    confirmed_at: datetime | None
    """When the upstream last confirmed this data (None: never)."""
    stale: bool = False
    """True when served from cache because the upstream is unreachable."""
    reachable: bool = True
    """Whether the upstream answered the most recent request."""
    refused: bool = False
    """The upstream answers but refuses the gateway (e.g. Vault restarted without the gateway's
    auth method): what the gateway holds from it may be gone."""

    def age_seconds(self, now: datetime | None = None) -> float:
        if self.confirmed_at is None:
            return 0.0
        return max(0.0, ((now or utcnow()) - self.confirmed_at).total_seconds())


@dataclass(frozen=True, slots=True)
class Heartbeat:
    """Sent on every stream at a fixed interval and whenever upstream reachability changes."""

    freshness: Freshness


# ---------------------------------------------------------------- KV v2 secrets


@dataclass(frozen=True, slots=True, weakref_slot=True)
class KvSecret:
    """A KV v2 secret as Vault returned it. The cache shares one object with every caller:
    never mutate it (the transport keeps its serialized reply per object)."""

    data: Mapping[str, Any] = field(repr=False)
    version: int
    created_time: datetime | None
    custom_metadata: Mapping[str, str]


@dataclass(frozen=True, slots=True)
class SecretVersion:
    """A version of a watched KV v2 secret (the first one a stream gets, or a new one)."""

    secret: KvSecret
    freshness: Freshness


SecretEvent = SecretVersion | Heartbeat


# ---------------------------------------------------------------- database credentials


@dataclass(frozen=True, slots=True, weakref_slot=True)
class Credential:
    """A database credential backed by one Vault lease. Immutable: the transport keeps its
    serialized reply per object."""

    role: str
    username: str
    password: str = field(repr=False)
    lease_id: str
    issued_at: datetime
    expires_at: datetime
    max_ttl_deadline: datetime
    renewable: bool


@dataclass(frozen=True, slots=True)
class CredentialIssued:
    watch_id: str
    credential: Credential


@dataclass(frozen=True, slots=True)
class CredentialRenewed:
    watch_id: str
    lease_id: str
    expires_at: datetime


@dataclass(frozen=True, slots=True)
class CredentialRotation:
    watch_id: str
    credential: Credential
    rotation_id: str
    previous_lease_id: str
    previous_revoke_at: datetime


@dataclass(frozen=True, slots=True)
class CredentialRevoked:
    watch_id: str
    lease_id: str
    reason: str


@dataclass(frozen=True, slots=True)
class CredentialHeartbeat:
    watch_id: str
    freshness: Freshness


CredentialEvent = (
    CredentialIssued
    | CredentialRenewed
    | CredentialRotation
    | CredentialRevoked
    | CredentialHeartbeat
)


@dataclass(frozen=True, slots=True)
class RenewResult:
    lease_id: str
    expires_at: datetime
    renewable: bool
    warnings: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class LeaseInfo:
    """Operator view of a lease. Never carries the password."""

    lease_id: str
    role: str
    holder: str
    username: str
    issued_at: datetime
    expires_at: datetime
    max_ttl_deadline: datetime
    holders: int
    renewable: bool
    replica: str = ""
    """The replica (gateway) holding the lease, as journaled in Consul."""


# ---------------------------------------------------------------- Consul KV


@dataclass(frozen=True, slots=True)
class ConfigEntry:
    key: str
    value: bytes = field(repr=False)
    create_index: int
    modify_index: int
    flags: int = 0


class ChangeType(enum.Enum):
    PUT = "put"
    DELETE = "delete"


@dataclass(frozen=True, slots=True)
class KeyChange:
    type: ChangeType
    key: str
    entry: ConfigEntry | None
    """The new entry for puts; None for deletes."""


@dataclass(frozen=True, slots=True, weakref_slot=True)
class ConfigSnapshot:
    """Every key under a prefix. One object is shared by the streams that receive it."""

    entries: tuple[ConfigEntry, ...]
    index: int
    freshness: Freshness
    epoch: str = ""
    """Indexes compare only within one epoch (a new one starts when Consul's index resets)."""
    reset: bool = False
    """This snapshot replaces state the client held (resume refused, backlog, new epoch)."""


@dataclass(frozen=True, slots=True)
class ConfigChange:
    changes: tuple[KeyChange, ...]
    index: int
    freshness: Freshness


ConfigEvent = ConfigSnapshot | ConfigChange | Heartbeat


# ---------------------------------------------------------------- Consul health


class HealthStatus(enum.Enum):
    PASSING = "passing"
    WARNING = "warning"
    CRITICAL = "critical"


@dataclass(frozen=True, slots=True)
class ServiceQuery:
    service: str
    tag: str = ""
    datacenter: str = ""
    include_warning: bool = False


@dataclass(frozen=True, slots=True)
class Instance:
    id: str
    node: str
    address: str
    port: int
    tags: tuple[str, ...]
    meta: dict[str, str]
    health: HealthStatus
    datacenter: str = ""


@dataclass(frozen=True, slots=True)
class InstanceSet:
    instances: tuple[Instance, ...]
    index: int
    freshness: Freshness
    epoch: str = ""
    """Indexes compare only within one epoch (a new one starts when Consul's index resets)."""
    reset: bool = False
    """Sent because a new epoch started (even if the instances did not change)."""


ServiceEvent = InstanceSet | Heartbeat


# ---------------------------------------------------------------- self-registration


class CheckKind(enum.Enum):
    HTTP = "http"
    TCP = "tcp"
    GRPC = "grpc"
    TTL = "ttl"


@dataclass(frozen=True, slots=True)
class CheckSpec:
    """One check of a registered instance, durations in seconds (validated by the transport)."""

    kind: CheckKind
    target: str
    """The URL (http), host:port (tcp, grpc); empty for the TTL check the gateway passes."""
    interval: float
    """How often Consul runs it; for the TTL check, its TTL."""
    timeout: float
    deregister_after: float
    """DeregisterCriticalServiceAfter: Consul removes the instance once this check has been
    critical this long (the backstop for a gateway lost without deregistering)."""
    name: str
    check_id: str = ""
    """Set by the broker (`<instance id>:<n>`, or `<instance id>:stream` for the TTL check)."""


@dataclass(frozen=True, slots=True)
class ServiceRegistration:
    """An instance to register with the agent for as long as its stream is open."""

    service: str
    instance_id: str
    address: str
    port: int
    tags: tuple[str, ...]
    meta: Mapping[str, str]
    checks: tuple[CheckSpec, ...]


@dataclass(frozen=True, slots=True)
class CheckStatus:
    """A check of a registered instance as Consul reports it."""

    check_id: str
    name: str
    status: HealthStatus
    output: str = ""


@dataclass(frozen=True, slots=True)
class InstanceRegistered:
    instance_id: str
    address: str
    port: int
    check_ids: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class InstanceHealth:
    status: HealthStatus
    """The worst status among the checks (PASSING with none)."""
    checks: tuple[CheckStatus, ...]
    freshness: Freshness


RegistrationEvent = InstanceRegistered | InstanceHealth | Heartbeat


# ---------------------------------------------------------------- identity


@dataclass(frozen=True, slots=True)
class Identity:
    """Who is calling, as established by the access room."""

    name: str
    method: str
    """"token" or "mtls"."""
    peer: str = ""
