"""The seam between the brokers and Vault: a narrow Protocol and the plain values it returns.

Brokers depend on `VaultUpstream` only. The real adapter (`upstreams/vault.py`, the one module
that imports hvac) implements it; an in-memory fake implements it for the brokers' unit tests.

Every method raises domain errors (`latchkey_server.errors`) and nothing else:
`NotFound`, `PermissionDenied`, `InvalidArgument`, `FailedPrecondition`, `ResourceExhausted`,
`Unavailable` (with `retry_after`), or a bare `LatchkeyError` for anything unexpected.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Protocol, runtime_checkable

from latchkey_server.models import KvSecret

VAULT_SYSTEM_MAX_TTL = 768 * 3600.0
"""Vault's default system max lease TTL (768h), the cap when nothing smaller is configured."""


@dataclass(frozen=True, slots=True)
class IssuedLease:
    """A database credential just issued by Vault (`GET <mount>/creds/<role>`)."""

    lease_id: str
    username: str
    password: str = field(repr=False)
    lease_duration: float
    """Seconds the lease lives unless renewed."""
    renewable: bool
    warnings: tuple[str, ...] = ()
    token_accessor: str = ""
    """Accessor of the Vault token that created the lease (not a secret: it cannot log in)."""


@dataclass(frozen=True, slots=True)
class RenewedLease:
    """The answer to a lease renewal (`PUT sys/leases/renew`)."""

    lease_id: str
    lease_duration: float
    """Seconds from now until the lease expires."""
    renewable: bool
    warnings: tuple[str, ...] = ()


TokenDeadlineListener = Callable[[Sequence[str]], None]
"""Called with the ids of leases whose owning token's end changed (it reached its max TTL, or
died): read the new end with `token_deadline`. Called on the event loop."""

StateListener = Callable[[], None]
"""Called whenever `reachable` or `refused` changes. Called on the event loop."""


@runtime_checkable
class VaultUpstream(Protocol):
    """What the brokers need from Vault, and nothing more."""

    @property
    def reachable(self) -> bool:
        """Whether Vault answered the most recent request."""
        ...

    @property
    def refused(self) -> bool:
        """Whether Vault refuses the gateway: its token died and logging in again failed (e.g.
        Vault restarted empty). Leases issued before are gone until a login succeeds."""
        ...

    @property
    def last_contact(self) -> datetime | None:
        """When Vault last answered (None: never)."""
        ...

    async def read_kv(self, mount: str, path: str, version: int = 0) -> KvSecret:
        """Read a KV v2 secret (version 0: latest). NotFound when missing, deleted or destroyed."""
        ...

    async def kv_current_version(self, mount: str, path: str) -> int:
        """The current version of a KV v2 secret, from its metadata (no data is read).
        NotFound when the secret does not exist."""
        ...

    async def issue_credentials(self, mount: str, role: str) -> IssuedLease:
        """Issue a new database credential (not retried: every call creates a user)."""
        ...

    async def renew_lease(self, lease_id: str, increment: float | None = None) -> RenewedLease:
        """Renew a lease (None: the role's default TTL). NotFound when it is gone or expired,
        FailedPrecondition when Vault will not renew it (not renewable, past its max TTL)."""
        ...

    async def revoke_lease(self, lease_id: str) -> None:
        """Revoke a lease now. Revoking an unknown or already revoked lease succeeds."""
        ...

    async def lookup_lease(self, lease_id: str) -> None:
        """NotFound unless Vault knows the lease (it is neither expired nor revoked)."""
        ...

    def token_deadline(self, lease_id: str) -> datetime | None:
        """When Vault revokes the lease because the token that created it dies (the token
        reached its max TTL, or is already gone: then a moment in the past); None when that
        token is not known to die. The one way a token's end reaches the brokers."""
        ...

    async def role_max_ttl(self, mount: str, role: str) -> float | None:
        """Effective max TTL in seconds of leases of a database role (role, mount and system
        caps applied); None when it cannot be determined. Cached."""
        ...

    def add_token_deadline_listener(self, listener: TokenDeadlineListener) -> Callable[[], None]:
        """Subscribe to token-deadline notices; returns the function that unsubscribes."""
        ...

    def add_state_listener(self, listener: StateListener) -> Callable[[], None]:
        """Subscribe to changes of `reachable` and `refused`; returns the function that
        unsubscribes."""
        ...
