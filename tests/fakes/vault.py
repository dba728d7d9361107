"""An in-memory `VaultUpstream` for broker unit tests.

It keeps Vault's lease rules (TTL, max TTL capping with a warning, expiry, revoke) on the real
clock, counts calls, and offers failure hooks: go unreachable, gate credential issue, fail the
next call of an operation, lose a lease, announce a token deadline.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from latchkey_server.errors import (
    FailedPrecondition,
    LatchkeyError,
    NotFound,
    PermissionDenied,
    Unavailable,
)
from latchkey_server.models import KvSecret
from latchkey_server.upstreams.vault_port import (
    IssuedLease,
    RenewedLease,
    StateListener,
    TokenDeadlineListener,
    VaultUpstream,
)


@dataclass
class FakeLease:
    lease_id: str
    role: str
    username: str
    password: str = field(repr=False)
    issued: float
    expires: float
    max_deadline: float
    revoked: bool = False


@dataclass
class FakeRole:
    default_ttl: float
    max_ttl: float
    renewable: bool = True


class FakeVault:
    def __init__(self, *, default_ttl: float = 30.0, max_ttl: float = 300.0) -> None:
        self.roles: dict[str, FakeRole] = {"app": FakeRole(default_ttl, max_ttl)}
        self.leases: dict[str, FakeLease] = {}
        self.kv: dict[tuple[str, str], list[dict[str, object]]] = {}
        self.issue_calls = 0
        self.renew_calls: list[str] = []
        self.revoke_calls: list[str] = []
        self.kv_reads = 0
        self.issue_gate: asyncio.Event | None = None
        self.read_gate: asyncio.Event | None = None
        self.failures: dict[str, LatchkeyError] = {}
        self._reachable = True
        self._last_contact: datetime | None = None
        self._ids = itertools.count(1)
        self._deadline_listeners: list[TokenDeadlineListener] = []
        self._state_listeners: list[StateListener] = []
        self._refused = False
        self.token_deadlines: dict[str, datetime] = {}
        self.revoked_event: dict[str, asyncio.Event] = {}

    # ------------------------------------------------------------ test hooks

    def set_reachable(self, reachable: bool) -> None:
        if reachable != self._reachable:
            self._reachable = reachable
            for listener in list(self._state_listeners):
                listener()

    def set_refused(self, refused: bool) -> None:
        """Vault answers but refuses the gateway (as after an empty restart): issuing fails."""
        if refused != self._refused:
            self._refused = refused
            for listener in list(self._state_listeners):
                listener()

    def fail_next(self, op: str, error: LatchkeyError) -> None:
        """Make the next call of `op` (issue, renew, revoke, read_kv) raise `error`."""
        self.failures[op] = error

    def valid(self, lease_id: str) -> bool:
        """Would the credential of this lease log in right now?"""
        lease = self.leases.get(lease_id)
        return lease is not None and not lease.revoked and time.time() < lease.expires

    def lose(self, lease_id: str) -> None:
        """Vault forgets the lease (as when its token is revoked)."""
        self.leases[lease_id].revoked = True

    def announce_token_deadline(self, lease_ids: Sequence[str], when: datetime) -> None:
        for lease_id in lease_ids:
            self.token_deadlines[lease_id] = when
        for listener in list(self._deadline_listeners):
            listener(lease_ids)

    async def wait_revoked(self, lease_id: str, within: float = 15.0) -> None:
        event = self.revoked_event.setdefault(lease_id, asyncio.Event())
        async with asyncio.timeout(within):
            await event.wait()

    def put_kv(self, mount: str, path: str, data: dict[str, object]) -> None:
        self.kv.setdefault((mount, path), []).append(data)

    def _check(self, op: str) -> None:
        if not self._reachable:
            raise Unavailable("Vault cannot be reached", retry_after=0.1)
        if self._refused:
            raise PermissionDenied("Vault refused to let the gateway log in")
        error = self.failures.pop(op, None)
        if error is not None:
            raise error
        self._last_contact = datetime.now(UTC)

    # ------------------------------------------------------------ VaultUpstream

    @property
    def reachable(self) -> bool:
        return self._reachable

    @property
    def refused(self) -> bool:
        return self._refused

    @property
    def last_contact(self) -> datetime | None:
        return self._last_contact

    async def read_kv(self, mount: str, path: str, version: int = 0) -> KvSecret:
        self.kv_reads += 1
        if self.read_gate is not None:
            await self.read_gate.wait()
        self._check("read_kv")
        versions = self.kv.get((mount, path))
        if not versions or version > len(versions):
            raise NotFound(f"secret {mount}/{path} not found")
        number = version or len(versions)
        return KvSecret(dict(versions[number - 1]), number, None, {})

    async def kv_current_version(self, mount: str, path: str) -> int:
        self._check("kv_metadata")
        versions = self.kv.get((mount, path))
        if not versions:
            raise NotFound(f"secret {mount}/{path} not found")
        return len(versions)

    async def issue_credentials(self, mount: str, role: str) -> IssuedLease:
        self.issue_calls += 1
        await asyncio.sleep(0)
        if self.issue_gate is not None:
            await self.issue_gate.wait()
        self._check("issue")
        spec = self.roles.get(role)
        if spec is None:
            raise NotFound(f"database role {role!r} not found")
        now, n = time.time(), next(self._ids)
        ttl = min(spec.default_ttl, spec.max_ttl)
        lease = FakeLease(
            lease_id=f"{mount}/creds/{role}/lease{n}",
            role=role,
            username=f"v-{role}-{n}",
            password=f"pw-{n}",
            issued=now,
            expires=now + ttl,
            max_deadline=now + spec.max_ttl,
        )
        self.leases[lease.lease_id] = lease
        return IssuedLease(lease.lease_id, lease.username, lease.password, ttl, spec.renewable)

    async def renew_lease(self, lease_id: str, increment: float | None = None) -> RenewedLease:
        self.renew_calls.append(lease_id)
        await asyncio.sleep(0)
        self._check("renew")
        lease = self.leases.get(lease_id)
        now = time.time()
        if lease is None or lease.revoked or now >= lease.expires:
            raise NotFound(f"lease {lease_id} not found")
        spec = self.roles[lease.role]
        if not spec.renewable:
            raise FailedPrecondition("lease is not renewable")
        ttl = increment or spec.default_ttl
        remaining = lease.max_deadline - now
        if remaining <= 0:
            raise FailedPrecondition("past the max TTL, cannot renew")
        warnings: tuple[str, ...] = ()
        if ttl > remaining:
            ttl, warnings = remaining, ("TTL exceeded the effective max_ttl; TTL value is capped",)
        lease.expires = now + ttl
        return RenewedLease(lease_id, ttl, True, warnings)

    async def revoke_lease(self, lease_id: str) -> None:
        self.revoke_calls.append(lease_id)
        await asyncio.sleep(0)
        self._check("revoke")
        lease = self.leases.get(lease_id)
        if lease is not None:
            lease.revoked = True
        self.revoked_event.setdefault(lease_id, asyncio.Event()).set()

    async def lookup_lease(self, lease_id: str) -> None:
        self._check("lookup")
        if not self.valid(lease_id):
            raise NotFound(f"Vault knows no lease {lease_id}")

    def token_deadline(self, lease_id: str) -> datetime | None:
        return self.token_deadlines.get(lease_id)

    async def role_max_ttl(self, mount: str, role: str) -> float | None:
        self._check("role_max_ttl")
        spec = self.roles.get(role)
        return spec.max_ttl if spec else None

    def add_token_deadline_listener(self, listener: TokenDeadlineListener) -> Callable[[], None]:
        self._deadline_listeners.append(listener)
        return lambda: self._remove(self._deadline_listeners, listener)

    def add_state_listener(self, listener: StateListener) -> Callable[[], None]:
        self._state_listeners.append(listener)
        return lambda: self._remove(self._state_listeners, listener)

    @staticmethod
    def _remove(items: list[Any], item: object) -> None:
        with contextlib.suppress(ValueError):
            items.remove(item)


def _conforms(vault: FakeVault) -> VaultUpstream:
    return vault  # mypy checks that the fake implements the Protocol
