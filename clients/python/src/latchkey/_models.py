"""The values the SDK hands to applications: pydantic models and plain Python values."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr

__all__ = [
    "CheckState",
    "ConfigChange",
    "ConfigEntry",
    "ConfigEvent",
    "DatabaseCredentials",
    "Freshness",
    "GatewayStatus",
    "Instance",
    "LeaseInfo",
    "RegistrationHealth",
    "RenewedLease",
    "Secret",
    "ServiceEvent",
    "StreamStatus",
    "UpstreamStatus",
]


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True)


class Freshness(_Model):
    """How fresh a piece of data is."""

    index: int = 0
    """The upstream's index of the data (Consul index, KV version)."""
    age: float = 0.0
    """Seconds since the gateway last confirmed the data with the upstream."""
    stale: bool = False
    """True when served from the gateway's cache because the upstream is unreachable."""
    upstream: Literal["connected", "unreachable", "refused", "unknown"] = "unknown"
    """The upstream's state when the data was sent (`refused`: it answers but refuses the
    gateway's credentials, e.g. Vault restarted without them)."""
    last_contact: datetime | None = None
    """When the gateway last heard from the upstream."""


class Secret(_Model):
    """A KV v2 secret. `data` holds secret values: it is left out of `repr`."""

    data: dict[str, Any] = Field(repr=False)
    """The secret's key/value data as stored in Vault."""
    version: int
    """The KV version read."""
    created_time: datetime | None = None
    """When this version was written."""
    custom_metadata: dict[str, str] = Field(default_factory=dict)
    """Vault's custom metadata of the secret."""
    freshness: Freshness = Field(default_factory=Freshness)
    """How fresh the answer is."""


class DatabaseCredentials(_Model):
    """A database login brokered from Vault. The password never appears in `repr` or `str`."""

    username: str
    """Database user name."""
    password: SecretStr
    """The password; `.get_secret_value()` reveals it."""
    lease_id: str
    """The Vault lease id (the handle for renew / revoke)."""
    expires_at: datetime | None = None
    """When the lease expires unless renewed."""
    max_ttl_deadline: datetime | None = None
    """When the lease can no longer be renewed (the gateway rotates before this)."""
    renewable: bool = False
    """Whether Vault will renew the lease."""
    role: str = ""
    """The Vault database role."""
    issued_at: datetime | None = None
    """When the credential was issued."""


class RenewedLease(_Model):
    """The result of renewing a lease."""

    lease_id: str
    expires_at: datetime | None = None
    renewable: bool = False
    warnings: list[str] = Field(default_factory=list)


class LeaseInfo(_Model):
    """A lease a gateway replica holds (operator view; never a password)."""

    lease_id: str
    role: str
    holder: str
    """The identity the lease was issued for."""
    username: str
    expires_at: datetime | None = None
    max_ttl_deadline: datetime | None = None
    issued_at: datetime | None = None
    holders: int = 0
    """Open holds (streams and unary callers); 0 for another replica's lease."""
    renewable: bool = False
    replica: str = ""
    """The gateway replica whose journal holds the lease."""


class ConfigEntry(_Model):
    """One Consul KV entry."""

    key: str
    value: bytes
    create_index: int = 0
    modify_index: int = 0
    flags: int = 0

    @property
    def text(self) -> str:
        """The value decoded as UTF-8."""
        return self.value.decode("utf-8", errors="replace")


class ConfigChange(_Model):
    """A put or delete of one key."""

    type: Literal["put", "delete"]
    key: str
    entry: ConfigEntry | None = None
    """The new entry for puts."""


class ConfigEvent(_Model):
    """Delivered by `config.watch`: the full state of the prefix after a snapshot or change."""

    kind: Literal["snapshot", "change"]
    entries: dict[str, ConfigEntry]
    """Every key under the prefix after this event."""
    changes: list[ConfigChange] = Field(default_factory=list)
    """What changed (for a snapshot after a reconnect: what differs from before)."""
    index: int = 0
    freshness: Freshness = Field(default_factory=Freshness)
    reset: bool = False
    """A snapshot that replaced the state held before (a resume the gateway could not prove,
    or Consul's index reset): keys missing from it were deleted, and are in `changes`."""


class Instance(_Model):
    """A healthy (or, when asked for, warning) service instance."""

    id: str
    node: str
    address: str
    port: int
    tags: list[str] = Field(default_factory=list)
    meta: dict[str, str] = Field(default_factory=dict)
    health: Literal["passing", "warning", "critical", "unknown"] = "unknown"
    datacenter: str = ""


class ServiceEvent(_Model):
    """Delivered by `services.watch`: the complete live instance set."""

    service: str
    instances: list[Instance]
    index: int = 0
    freshness: Freshness = Field(default_factory=Freshness)


HealthState = Literal["passing", "warning", "critical", "unknown"]


class CheckState(_Model):
    """One check of a registered instance, as Consul reports it."""

    check_id: str
    name: str = ""
    status: HealthState = "unknown"
    output: str = ""
    """The check's last output (for HTTP checks, the response line and body)."""


class RegistrationHealth(_Model):
    """Delivered by a registration: the instance's checks whenever a status changes."""

    instance_id: str
    status: HealthState
    """The worst status among the checks."""
    checks: list[CheckState] = Field(default_factory=list)
    freshness: Freshness = Field(default_factory=Freshness)


class StreamStatus(_Model):
    """A change in a stream's health, delivered to watch callbacks between data events.

    `stale`: the gateway serves cached data because its upstream is unreachable; `fresh`: the
    upstream is back; `unreachable`: the gateway itself cannot be reached (the SDK keeps trying);
    `reconnected`: the stream is back and the data continues from where it left off.
    """

    kind: Literal["stale", "fresh", "unreachable", "reconnected"]
    detail: str = ""
    freshness: Freshness | None = None


class UpstreamStatus(_Model):
    """One upstream's reachability as the gateway sees it."""

    name: str
    state: Literal["connected", "unreachable", "refused", "unknown"]
    last_contact: datetime | None = None
    age_seconds: float = 0.0


class GatewayStatus(_Model):
    """`client.status()`: who the gateway thinks we are, and how fresh its upstreams are."""

    identity: str
    auth_method: str
    version: str
    upstreams: list[UpstreamStatus] = Field(default_factory=list)
    started_at: datetime | None = None
    address: str = ""
    """The gateway address that answered."""
