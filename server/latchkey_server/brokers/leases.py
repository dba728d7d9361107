"""The lease broker: dynamic database credentials, shared, renewed, rotated and revoked.

One Vault lease is shared per (identity, role) while it is valid, and reference-counted by its
holders: every open `watch` stream is a hold (released when the iterator is closed or
cancelled), every unary `acquire` is a hold that lasts until the lease's expiry at that moment
(`renew` extends it) or until `release`. Concurrent identical requests issue exactly one Vault
`creds` call. A lease nobody holds is revoked after `unheld_grace`.

Each lease has one task (`_run`) that takes every time-based decision for it: renewing while
streams hold it, rotating before its hard deadline (max TTL, or the end of the Vault token that
owns it), revoking the previous lease of a rotation once every stream acknowledged or at the
grace deadline, revoking it when unheld, and noticing when Vault lost it.

Rotation: a new credential is obtained before the old one can no longer be renewed; every
stream on the old lease gets a `CredentialRotation` (new credential, rotation id, previous lease
id, previous_revoke_at) and its hold moves to the new lease. Both credentials work during the
overlap. The old lease is revoked when all those streams called `ack`, or at previous_revoke_at,
whichever comes first, but not while unary holders still hold it; then the streams hear
`CredentialRevoked` for it.
"""

from __future__ import annotations

import asyncio
import builtins
import contextlib
import logging
import uuid
from collections.abc import AsyncGenerator, Callable, Sequence
from datetime import datetime

from latchkey_server.brokers._lease_engine import LeaseEngine
from latchkey_server.brokers._lease_state import Lease, Watch
from latchkey_server.errors import (
    InvalidArgument,
    LatchkeyError,
    NotFound,
    Unavailable,
)
from latchkey_server.models import (
    Credential,
    CredentialEvent,
    CredentialHeartbeat,
    CredentialIssued,
    Freshness,
    LeaseInfo,
    RenewResult,
    utcnow,
)
from latchkey_server.observability.telemetry import Telemetry
from latchkey_server.upstreams.vault_port import VaultUpstream

log = logging.getLogger("latchkey.brokers.leases")


def no_such_lease(lease_id: str) -> str:
    """The one message for a lease the caller may not act on (missing, or someone else's)."""
    return f"no lease {lease_id} held by the gateway for this caller"


class LeaseBroker(LeaseEngine):
    def __init__(
        self,
        vault: VaultUpstream,
        *,
        mount: str = "database",
        renew_fraction: float = 2 / 3,
        jitter: float = 0.1,
        rotate_before: float | None = None,
        grace: float = 30.0,
        unheld_grace: float = 5.0,
        heartbeat_interval: float = 10.0,
        min_rotate_before: float = 2.0,
        retry_delay: float = 0.5,
        retry_max_delay: float = 10.0,
        close_upstream: bool = False,
        clock: Callable[[], datetime] = utcnow,
        telemetry: Telemetry | None = None,
    ) -> None:
        """Args:
        vault: the Vault upstream.
        mount: mount of the database secrets engine.
        renew_fraction: renew a streamed lease when this fraction of its TTL has passed.
        jitter: random spread (fraction) applied to renewal times.
        rotate_before: seconds before a lease's hard deadline to rotate it; None: a third of
            the lease's TTL, at least `min_rotate_before` (never more than half its lifetime).
        grace: longest time the previous lease of a rotation outlives the rotation unacked.
        unheld_grace: revoke a lease this long after its last holder let go.
        heartbeat_interval: seconds between heartbeats on every stream.
        retry_delay, retry_max_delay: backoff bounds for failed renewals/rotations/revocations.
        close_upstream: `close()` also closes the upstream (when the broker owns it).
        clock: the time source (UTC datetimes).
        telemetry: where renewal and rotation counts go (metrics).
        """
        if not 0 < renew_fraction < 1:
            raise InvalidArgument("renew_fraction must be between 0 and 1")
        if heartbeat_interval <= 0:
            raise InvalidArgument("heartbeat_interval must be positive")
        super().__init__(
            vault,
            mount=mount,
            renew_fraction=renew_fraction,
            jitter=jitter,
            rotate_before=rotate_before,
            min_rotate_before=min_rotate_before,
            grace=grace,
            unheld_grace=unheld_grace,
            retry=(retry_delay, retry_max_delay),
            clock=clock,
            telemetry=telemetry,
        )
        self._heartbeat_interval = heartbeat_interval
        self._close_upstream = close_upstream
        self._unsubscribe: builtins.list[Callable[[], None]] = []
        self._started = False
        self._draining: LatchkeyError | None = None

    # ------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        self._ensure_started()

    def _ensure_started(self) -> None:
        if self._draining is not None:
            raise self._draining
        if self._closed:
            raise Unavailable("the gateway is shutting down", retry_after=1.0)
        if not self._started:
            self._started = True
            self._unsubscribe = [
                self._vault.add_token_deadline_listener(self._on_token_deadline),
                self._vault.add_reachability_listener(self._on_reachability),
            ]

    async def drain(self, error: LatchkeyError) -> None:
        """First step of a shutdown: end every credential stream with `error` (its holds are
        released; leases are revoked later, by `close`) and refuse new requests with it."""
        self._draining = error
        for watch in builtins.list(self._watches.values()):
            watch.end(error)

    async def close(self) -> None:
        """Graceful shutdown: stop the lease tasks, revoke every lease in Vault, end streams."""
        if self._closed:
            return
        self._closed = True
        for unsubscribe in self._unsubscribe:
            unsubscribe()
        await self._flight.cancel_all()
        leases = builtins.list(self._leases.values())
        tasks = [lease.task for lease in leases if lease.task is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        results = await asyncio.gather(
            *(self._revoke_on_close(lease) for lease in leases if not lease.done),
            return_exceptions=True,
        )
        failed = sum(1 for r in results if isinstance(r, BaseException))
        if failed:
            log.warning("shutdown: %d lease(s) could not be revoked; Vault expires them", failed)
        for watch in builtins.list(self._watches.values()):
            watch.end()
        if self._close_upstream:
            close = getattr(self._vault, "close", None)
            if close is not None:
                await close()

    async def _revoke_on_close(self, lease: Lease) -> None:
        try:
            if not lease.lost:
                await self._vault.revoke_lease(lease.lease_id)
        finally:
            lease.revoked_at = self._now()
            self._tell_revoked(lease, "the gateway is shutting down")
            self._finish(lease)

    def _check_open(self) -> None:
        self._ensure_started()

    # ------------------------------------------------------------ public API

    async def acquire(self, identity: str, role: str) -> Credential:
        """A credential for (identity, role), shared with the identity's other holders."""
        self._check_open()
        for _ in range(3):
            lease = await self._obtain(identity, role)
            self._hold_unary(lease)
            remaining = (lease.expires_at - self._now()).total_seconds()
            if not lease.credential.renewable or remaining >= (1 - self._renew_fraction) * (
                lease.base_ttl
            ):
                return lease.credential
            try:  # near its expiry: give the caller a full TTL
                await self._renew(lease, None)
            except NotFound:
                lease.unary = max(0, lease.unary - 1)
                self._lose(lease, "the lease no longer exists in Vault")
                continue
            except LatchkeyError as exc:
                log.info(
                    "renewing lease %s for a new holder failed: %s", lease.lease_id, exc.message
                )
            self._hold_unary(lease, extra=False)
            return lease.credential
        raise Unavailable(f"could not obtain a credential for role {role!r}", retry_after=1.0)

    async def watch(
        self, identity: str, role: str, lease_id: str = ""
    ) -> AsyncGenerator[CredentialEvent, None]:
        """The credential stream: `CredentialIssued` first, then renewals, rotations, revocations
        and heartbeats. Holding the iterator open is a hold on the lease; closing it
        (`aclose()`, or cancelling the task iterating it) releases the hold."""
        self._check_open()
        watch = Watch(id=uuid.uuid4().hex, identity=identity, role=role)
        self._watches[watch.id] = watch
        try:
            lease = self._reattachable(identity, role, lease_id) if lease_id else None
            if lease is None:
                lease = await self._obtain(identity, role)
            self._attach(watch, lease)
            yield CredentialIssued(watch.id, lease.credential)
            while True:
                try:
                    event = await asyncio.wait_for(watch.queue.get(), self._heartbeat_interval)
                except TimeoutError:
                    event = CredentialHeartbeat(watch.id, self._freshness())
                if event is None:
                    if watch.error is not None:
                        raise watch.error
                    return
                yield event
        finally:
            self._detach(watch)

    async def ack(self, identity: str, watch_id: str, rotation_id: str) -> datetime:
        """A stream switched to the rotated credential; returns when the previous lease was
        (or will now be) revoked."""
        rotation = self._rotations.get(rotation_id)
        if rotation is None:
            finished = self._finished.get(rotation_id)
            if finished is not None and finished[0] == identity:
                return finished[1]
            raise NotFound(f"rotation {rotation_id} is unknown or already complete")
        old = rotation.old
        if old.identity != identity or watch_id not in rotation.watchers:
            raise NotFound(f"rotation {rotation_id} is unknown or already complete")
        rotation.awaiting.discard(watch_id)
        rotation.acked.add(watch_id)
        watch = self._watches.get(watch_id)
        if watch is not None:
            watch.pending.discard(rotation)
        if old.done:
            return old.revoked_at or self._now()
        if rotation.awaiting:
            return rotation.revoke_at
        if old.unary:
            return old.unary_until or rotation.revoke_at
        with contextlib.suppress(LatchkeyError):  # retried by the lease's task
            await self._revoke(old, "rotated")
        return old.revoked_at or self._now()

    async def renew(
        self, identity: str, lease_id: str, increment: float | None, *, force: bool = False
    ) -> RenewResult:
        """Renew a lease the identity holds (`force`: any lease, for operators); extends the
        caller's unary hold to the new expiry."""
        self._check_open()
        lease = self._held(identity, lease_id, force=force)
        try:
            result = await self._renew(lease, increment)
        except NotFound:
            self._lose(lease, "the lease no longer exists in Vault")
            raise
        if not lease.holders:
            lease.unary = 1
        if lease.unary:
            self._hold_unary(lease, extra=False)
        return RenewResult(
            lease.lease_id, lease.expires_at, lease.credential.renewable, result.warnings
        )

    async def release(self, identity: str, lease_id: str, *, force: bool = False) -> bool:
        """Drop the caller's hold; revoke in Vault when nobody holds the lease any more. With
        `force` (operators), revoke at once whoever holds it. True when revoked in Vault."""
        self._check_open()
        lease = self._held(identity, lease_id, force=force)
        if force:
            lease.unary = 0
            await self._revoke(lease, "revoked by an operator")
            return True
        if lease.unary:
            lease.unary -= 1
        rotation = lease.rotation
        if lease.streams or lease.unary or (rotation is not None and rotation.awaiting):
            lease.wake()
            return False
        await self._revoke(lease, "released")
        return True

    def list(self, role: str = "") -> builtins.list[LeaseInfo]:
        """Every lease the gateway holds (operator view; never a password)."""
        return [
            LeaseInfo(
                lease_id=lease.lease_id,
                role=lease.role,
                holder=lease.identity,
                username=lease.credential.username,
                issued_at=lease.credential.issued_at,
                expires_at=lease.expires_at,
                max_ttl_deadline=lease.deadline,
                holders=lease.holders,
                renewable=lease.credential.renewable,
            )
            for lease in self._leases.values()
            if not lease.done and not lease.lost and (not role or lease.role == role)
        ]

    # ------------------------------------------------------------ holds

    def _held(self, identity: str, lease_id: str, *, force: bool) -> Lease:
        lease = self._leases.get(lease_id)
        gone = lease is None or lease.done or (lease.lost and not lease.streams)
        if gone or (lease is not None and lease.identity != identity and not force):
            # One answer whether the lease does not exist or belongs to someone else: the
            # caller learns nothing about other identities' leases.
            raise NotFound(no_such_lease(lease_id))
        assert lease is not None
        return lease

    def _hold_unary(self, lease: Lease, *, extra: bool = True) -> None:
        if extra:
            lease.unary += 1
        until = min(lease.expires_at, lease.deadline)
        if lease.unary_until is None or until > lease.unary_until:
            lease.unary_until = until
        lease.unheld_since = None
        lease.wake()

    def _attach(self, watch: Watch, lease: Lease) -> None:
        watch.lease = lease
        lease.streams.add(watch)
        lease.told.add(watch)
        lease.unheld_since = None
        lease.wake()

    def _detach(self, watch: Watch) -> None:
        watch.closed = True
        self._watches.pop(watch.id, None)
        for rotation in watch.pending:  # a closed stream no longer uses the old credential
            rotation.awaiting.discard(watch.id)
            rotation.old.wake()
        watch.pending.clear()
        lease, watch.lease = watch.lease, None
        if lease is not None:
            lease.streams.discard(watch)
            lease.told.discard(watch)
            if not lease.holders:
                lease.unheld_since = self._now()
            lease.wake()

    def _reattachable(self, identity: str, role: str, lease_id: str) -> Lease | None:
        lease = self._leases.get(lease_id)
        if lease is None or lease.identity != identity or lease.role != role:
            return None
        if lease.done or lease.lost or lease.retired or lease.revoking or lease.revoke_pending:
            return None
        return lease if self._now() < lease.expires_at else None

    # ------------------------------------------------------------ upstream notices

    def _on_token_deadline(self, lease_ids: Sequence[str], when: datetime) -> None:
        for lease_id in lease_ids:
            lease = self._leases.get(lease_id)
            if lease is None or lease.done:
                continue
            if lease.token_deadline is None or when < lease.token_deadline:
                lease.token_deadline = when
                lease.update()
                lease.wake()

    def _freshness(self) -> Freshness:
        reachable = self._vault.reachable
        return Freshness(
            index=0, confirmed_at=self._vault.last_contact, stale=not reachable, reachable=reachable
        )

    def _on_reachability(self, reachable: bool) -> None:
        freshness = self._freshness()
        for watch in builtins.list(self._watches.values()):
            if watch.lease is not None:
                watch.send(CredentialHeartbeat(watch.id, freshness))
