"""The lease broker's bookkeeping: one record per Vault lease, per open stream, per rotation.

Private to `brokers/leases.py`. Plain data plus small pure helpers; all decisions are taken by
the broker.
"""

from __future__ import annotations

import asyncio
import random
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta

from latchkey_server.errors import LatchkeyError
from latchkey_server.models import Credential, CredentialEvent
from latchkey_server.upstreams.vault_port import RenewedLease


def backoff(failures: int, base: float, cap: float) -> float:
    """Exponential backoff with jitter: between half and all of min(cap, base * 2**(n-1))."""
    top = min(cap, base * (2.0 ** max(0, failures - 1)))
    return top * random.uniform(0.5, 1.0)


def jittered(seconds: float, jitter: float) -> float:
    """`seconds` moved randomly by up to ±`jitter` (a fraction)."""
    return max(0.0, seconds * (1.0 + random.uniform(-jitter, jitter)))


def later(at: datetime, seconds: float) -> datetime:
    return at + timedelta(seconds=seconds)


@dataclass(eq=False)
class Watch:
    """One open WatchDatabaseCredentials stream: a hold on exactly one lease at a time."""

    id: str
    identity: str
    role: str
    queue: asyncio.Queue[CredentialEvent | None] = field(default_factory=asyncio.Queue)
    lease: Lease | None = None
    pending: set[Rotation] = field(default_factory=set)
    """Rotations this stream received and has not acknowledged yet."""
    closed: bool = False
    error: LatchkeyError | None = None
    """Why the stream was ended, when it ends with an error (a drain)."""

    def send(self, event: CredentialEvent) -> None:
        if not self.closed:
            self.queue.put_nowait(event)

    def end(self, error: LatchkeyError | None = None) -> None:
        if not self.closed:
            self.error = self.error or error
            self.queue.put_nowait(None)


@dataclass(eq=False)
class Rotation:
    """Streams moved from `old` to `new`; `old` is revoked once all acked or at `revoke_at`."""

    id: str
    old: Lease
    new: Lease
    revoke_at: datetime
    awaiting: set[str] = field(default_factory=set)
    """Watch ids that have not acknowledged yet."""
    acked: set[str] = field(default_factory=set)
    watchers: set[str] = field(default_factory=set)
    """Every watch id that received this rotation."""


@dataclass(eq=False)
class Lease:
    """One Vault lease the gateway holds for an (identity, role)."""

    identity: str
    role: str
    credential: Credential
    base_ttl: float
    """The TTL Vault granted at issue (the role's default TTL unless capped)."""
    role_deadline: datetime
    """Issue time + effective max TTL: Vault renews no further."""
    next_renew_at: datetime
    token_deadline: datetime | None = None
    """When the Vault token owning the lease dies (Vault then revokes it), if known."""

    streams: set[Watch] = field(default_factory=set)
    told: set[Watch] = field(default_factory=set)
    """Streams that were given this credential; they hear when it is revoked."""
    unary: int = 0
    """Open unary holds (GetDatabaseCredentials callers)."""
    unary_until: datetime | None = None
    unheld_since: datetime | None = None

    retired: bool = False
    """Its streams moved to a newer lease; never shared again."""
    rotation: Rotation | None = None
    """The rotation that moved this lease's streams away."""
    lost: bool = False
    """Vault no longer has it (expired, gone, or force-revoked)."""
    lost_notified: bool = False
    revoking: asyncio.Task[None] | None = None
    revoke_reason: str = ""
    revoke_pending: bool = False
    revoked_at: datetime | None = None
    done: bool = False

    renewing: asyncio.Task[RenewedLease] | None = None
    renew_failures: int = 0
    rotate_failures: int = 0
    next_rotate_attempt: datetime | None = None
    revoke_failures: int = 0
    next_revoke_attempt: datetime | None = None

    poke: asyncio.Event = field(default_factory=asyncio.Event)
    task: asyncio.Task[None] | None = None

    @property
    def lease_id(self) -> str:
        return self.credential.lease_id

    @property
    def key(self) -> tuple[str, str]:
        return (self.identity, self.role)

    @property
    def expires_at(self) -> datetime:
        return self.credential.expires_at

    @property
    def deadline(self) -> datetime:
        """The hard end: role max TTL or the owning token's end, whichever is first."""
        if self.token_deadline is not None and self.token_deadline < self.role_deadline:
            return self.token_deadline
        return self.role_deadline

    @property
    def holders(self) -> int:
        return len(self.streams) + self.unary

    def update(self, *, expires_at: datetime | None = None, renewable: bool | None = None) -> None:
        """Refresh the credential's expiry/renewable flag and its effective max-TTL deadline."""
        self.credential = replace(
            self.credential,
            expires_at=expires_at if expires_at is not None else self.credential.expires_at,
            renewable=renewable if renewable is not None else self.credential.renewable,
            max_ttl_deadline=self.deadline,
        )

    def wake(self) -> None:
        self.poke.set()
