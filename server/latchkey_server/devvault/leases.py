"""The lease table: registration, lookup, renewal, revocation, the expiry reaper and the cascade."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from latchkey_server.devvault import ids
from latchkey_server.devvault.clock import Clock, rfc3339_nano
from latchkey_server.devvault.errors import BadRequest
from latchkey_server.devvault.logical import Backend, RenewResult

log = logging.getLogger(__name__)

REVOKE_ATTEMPTS_BEFORE_IRREVOCABLE = 6


@dataclass
class Lease:
    id: str
    path: str  # the request path that created it, e.g. database/creds/ro
    mount_path: str  # e.g. database/
    mount_type: str
    issue_time: float
    expire_time: float
    renewable: bool
    internal: dict[str, Any]
    client_token: str
    last_renewal: float | None = None
    revoke_attempts: int = 0
    next_attempt: float = 0.0
    pending_revoke: bool = False
    lock: asyncio.Lock = field(default_factory=asyncio.Lock, repr=False)

    def lookup_data(self, now: float) -> dict[str, Any]:
        return {
            "id": self.id,
            "issue_time": rfc3339_nano(self.issue_time),
            "expire_time": rfc3339_nano(self.expire_time),
            "last_renewal": None if self.last_renewal is None else rfc3339_nano(self.last_renewal),
            "renewable": self.renewable,
            "ttl": max(0, int(self.expire_time - now)),
        }


BackendResolver = Callable[[str], Backend | None]


class LeaseManager:
    def __init__(self, clock: Clock, resolve: BackendResolver) -> None:
        self._clock = clock
        self._resolve = resolve
        self._leases: dict[str, Lease] = {}

    def __len__(self) -> int:
        return len(self._leases)

    def register(
        self,
        *,
        path: str,
        mount_path: str,
        mount_type: str,
        ttl: int,
        renewable: bool,
        internal: dict[str, Any],
        client_token: str,
    ) -> Lease:
        now = self._clock.now()
        lease = Lease(
            id=f"{path.rstrip('/')}/{ids.base62(24)}",
            path=path,
            mount_path=mount_path,
            mount_type=mount_type,
            issue_time=now,
            expire_time=now + ttl,
            renewable=renewable,
            internal=internal,
            client_token=client_token,
        )
        self._leases[lease.id] = lease
        return lease

    def get(self, lease_id: str) -> Lease | None:
        return self._leases.get(lease_id)

    def list_prefix(self, prefix: str) -> list[str]:
        """Immediate children (lease-id suffixes and sub-folders) under ``prefix``."""
        keys: set[str] = set()
        for lease_id in self._leases:
            if lease_id.startswith(prefix):
                rest = lease_id[len(prefix) :]
                head, sep, _ = rest.partition("/")
                keys.add(head + sep)
        return sorted(keys)

    async def renew(self, lease_id: str, increment: int) -> tuple[Lease, RenewResult]:
        lease = self._leases.get(lease_id)
        if lease is None:
            raise BadRequest("lease not found")
        async with lease.lock:
            if lease_id not in self._leases:
                raise BadRequest("lease not found")
            now = self._clock.now()
            if lease.pending_revoke or lease.revoke_attempts > 0:
                raise BadRequest("lease is expired and has failed previous revocation attempts")
            if lease.expire_time <= now:
                raise BadRequest("lease expired")
            if not lease.renewable:
                raise BadRequest("lease is not renewable")
            backend = self._resolve(lease.mount_path)
            if backend is None:
                raise BadRequest("lease not found")
            try:
                result = await backend.renew_secret(lease, increment, now)
            except BadRequest as exc:
                detail = exc.errors[0] if exc.errors else "renewal failed"
                raise BadRequest(
                    f"failed to renew entry: resp: (*logical.Response)(nil) err: {detail}"
                ) from None
            lease.last_renewal = now
            lease.expire_time = now + result.ttl
            return lease, result

    async def revoke(self, lease_id: str, *, force: bool = False) -> None:
        """Revoke one lease; unknown ids succeed. Backend failure keeps the lease (unless force)."""
        lease = self._leases.get(lease_id)
        if lease is None:
            return
        async with lease.lock:
            if lease_id not in self._leases:
                return
            backend = self._resolve(lease.mount_path)
            try:
                if backend is not None:
                    await backend.revoke_secret(lease)
            except Exception as exc:
                if not force:
                    lease.revoke_attempts += 1
                    lease.pending_revoke = True
                    lease.next_attempt = self._clock.now() + min(2**lease.revoke_attempts, 60)
                    raise BadRequest(
                        "failed to revoke entry: resp: (*logical.Response)(nil) err: "
                        f"{_safe_detail(exc)}"
                    ) from None
                log.warning("forced revocation of %s ignored a backend error", lease.id)
            self._leases.pop(lease_id, None)

    async def revoke_prefix(self, prefix: str, *, force: bool = False) -> None:
        for lease_id in sorted(lid for lid in self._leases if lid.startswith(prefix)):
            await self.revoke(lease_id, force=force)

    async def revoke_by_token(self, token_id: str) -> None:
        """The cascade: revoke every lease the token created (the reaper retries failures)."""
        for lease in [le for le in self._leases.values() if le.client_token == token_id]:
            try:
                await self.revoke(lease.id)
            except BadRequest:
                log.warning("lease %s of a revoked token could not be revoked yet", lease.id)

    async def revoke_all(self) -> None:
        for lease_id in list(self._leases):
            try:
                await self.revoke(lease_id)
            except BadRequest:
                log.warning("lease %s could not be revoked at shutdown", lease_id)

    async def reap(self) -> None:
        """Revoke expired leases (and retry failed revocations) whose time has come."""
        now = self._clock.now()
        due = [
            le
            for le in self._leases.values()
            if (le.expire_time <= now or le.pending_revoke) and le.next_attempt <= now
        ]
        for lease in due:
            try:
                await self.revoke(lease.id)
            except BadRequest:
                log.warning(
                    "revoking expired lease %s failed (attempt %d)", lease.id, lease.revoke_attempts
                )


def _safe_detail(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    return text.splitlines()[0] if text else "error"


class Reaper:
    """Runs a coroutine factory every ``interval`` seconds until stopped."""

    def __init__(self, interval: float, tick: Callable[[], Any]) -> None:
        self._interval = interval
        self._tick = tick
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def _run(self) -> None:
        while True:
            try:
                await self._tick()
            except Exception:
                log.exception("expiry reaper tick failed")
            await asyncio.sleep(self._interval)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
