"""One task per lease: its renew / rotate / revoke loop, and the Vault calls made on a lease.

Private to `brokers/leases.py`. Each lease's task (`_run`) takes every time-based decision for
that lease, using the rules of `_lease_rules.py` on the lease's times and `now`: renewing while
streams hold it, rotating before its hard deadline, revoking the previous lease of a rotation
once every stream acknowledged or at the promised moment, revoking it when unheld, noticing
when Vault lost it, and ending its streams when it is gone and no replacement can be had.

A background renewal or rotation runs as a call of its own (`_start`) that wakes the task when
it ends: a Vault that takes seconds to answer one call (busy revoking a burst of expired leases,
say) never holds back the lease's other decisions, above all the rotation that must beat the
lease's max TTL.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import Awaitable, Callable
from datetime import datetime

from latchkey_server.brokers import _lease_rules as rules
from latchkey_server.brokers._lease_rules import LeaseRules, later
from latchkey_server.brokers._lease_table import Lease, LeaseTable
from latchkey_server.brokers.journal import LeaseJournal
from latchkey_server.errors import (
    FailedPrecondition,
    LatchkeyError,
    NotFound,
    PermissionDenied,
    Unavailable,
)
from latchkey_server.observability.telemetry import Telemetry
from latchkey_server.upstreams.vault_port import RenewedLease, VaultUpstream

log = logging.getLogger("latchkey.brokers.leases")

Obtain = Callable[[str, str], Awaitable[Lease]]
"""How a rotation gets a new lease for (identity, role): the broker's `_obtain`."""


class LeaseTasks:
    """Starts, runs and stops the per-lease tasks; makes the Vault calls on a lease."""

    def __init__(
        self,
        table: LeaseTable,
        vault: VaultUpstream,
        lease_rules: LeaseRules,
        *,
        journal: LeaseJournal,
        obtain: Obtain,
        clock: Callable[[], datetime],
        telemetry: Telemetry,
        draw: Callable[[], float] = random.random,
    ) -> None:
        self._table = table
        self._vault = vault
        self._rules = lease_rules
        self._journal = journal
        self._obtain = obtain
        self._now = clock
        self._telemetry = telemetry
        self._draw = draw
        self.closed = False

    def start(self, lease: Lease) -> None:
        lease.task = asyncio.create_task(self._run(lease), name=f"lease {lease.lease_id}")

    async def stop(self, leases: list[Lease]) -> None:
        self.closed = True
        tasks = [
            task
            for lease in leases
            for task in (lease.task, lease.renewal, lease.rotating)
            if task is not None
        ]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def renew_at(self, started: datetime, granted: float) -> datetime:
        return rules.renew_at(started, granted, self._rules, 2 * self._draw() - 1)

    def _backoff(self, failures: int) -> float:
        return rules.backoff(failures, self._rules, self._draw())

    # ------------------------------------------------------------ Vault calls on a lease

    async def renew(self, lease: Lease, increment: float | None) -> RenewedLease:
        """Renew in Vault (background renewals of one lease share one call)."""
        if increment is not None:
            return await self._renew(lease, increment)
        if lease.renewing is None or lease.renewing.done():
            lease.renewing = asyncio.create_task(self._renew(lease, None))
        return await asyncio.shield(lease.renewing)

    async def _renew(self, lease: Lease, increment: float | None) -> RenewedLease:
        started = self._now()
        result = await self._vault.renew_lease(lease.lease_id, increment)
        if lease.done or lease.lost:
            return result
        times = rules.renewed(
            lease.times, started, result.lease_duration, wanted=increment,
            renewable=result.renewable, warnings=result.warnings,
        )  # fmt: skip
        self._table.renewed(lease, times, self.renew_at(started, result.lease_duration))
        self._telemetry.lease_renewals.labels(outcome="ok").inc()
        return result

    async def renew_quietly(self, lease: Lease) -> None:
        """The background renewal: failures become retries or rotation, never stream errors."""
        try:
            await self.renew(lease, None)
        except NotFound as exc:
            self.lose(lease, exc.message)
        except (FailedPrecondition, PermissionDenied) as exc:
            self._telemetry.lease_renewals.labels(outcome="refused").inc()
            log.warning("lease %s cannot be renewed: %s", lease.lease_id, exc.message)
            lease.times = rules.refused_renewal(lease.times)
        except LatchkeyError as exc:
            self._telemetry.lease_renewals.labels(outcome="error").inc()
            lease.renew_failures += 1
            now = self._now()
            lease.next_renew_at = rules.renew_retry_at(
                lease.times, now, lease.renew_failures, self._rules, self._draw()
            )
            log.info(
                "renewing lease %s failed (%s); retry at %s",
                lease.lease_id, exc.message, lease.next_renew_at,
            )  # fmt: skip

    def _start(self, lease: Lease, call: Awaitable[None]) -> asyncio.Task[None]:
        """Run a renewal or rotation of `lease` beside its task; wake the task when it ends."""

        async def run() -> None:
            try:
                await call
            finally:
                lease.wake()

        return asyncio.create_task(run(), name=f"lease {lease.lease_id} call")

    def _renew_in_background(self, lease: Lease) -> None:
        if lease.renewal is None or lease.renewal.done():
            lease.renewal = self._start(lease, self.renew_quietly(lease))

    async def revoke(self, lease: Lease, reason: str) -> None:
        """Revoke in Vault (one call per lease at a time). Raises on failure; the task retries."""
        if lease.done:
            return
        if lease.revoking is None or lease.revoking.done():
            lease.revoke_reason = reason
            lease.revoking = asyncio.create_task(self._revoke(lease, reason))
        await asyncio.shield(lease.revoking)

    async def _revoke(self, lease: Lease, reason: str) -> None:
        lease.revoke_pending = False
        try:
            await self._vault.revoke_lease(lease.lease_id)
        except LatchkeyError:
            lease.revoke_pending = True
            lease.revoke_failures += 1
            lease.next_revoke_attempt = later(self._now(), self._backoff(lease.revoke_failures))
            lease.wake()
            raise
        log.info("revoked lease %s (%s)", lease.lease_id, reason)
        self._journal.forget(lease.lease_id)
        self._table.revoked(lease, reason, self._now())

    def lose(self, lease: Lease, reason: str) -> None:
        """Vault no longer has the lease: its streams hear it, its journal record goes."""
        if not lease.lost:
            log.info("lease %s is gone: %s", lease.lease_id, reason)
            self._journal.forget(lease.lease_id)
        self._table.lose(lease, reason)

    async def rotate(self, old: Lease, *, immediate: bool = False) -> None:
        """Move every stream of `old` to a fresh lease. `immediate`: old is already gone."""
        try:
            new = await self._obtain(old.identity, old.role)
            if new.lost or new.done:  # it died on the way (Vault took longer than its TTL)
                raise Unavailable(
                    f"the new lease {new.lease_id} was gone before it could be used", retry_after=1
                )
        except LatchkeyError as exc:
            self._telemetry.lease_rotations.labels(outcome="error").inc()
            old.rotate_failures += 1
            old.last_error = exc
            delay = self._backoff(old.rotate_failures)
            old.next_rotate_attempt = later(self._now(), delay)
            log.warning(
                "rotating lease %s failed (%s); retry in %.1fs", old.lease_id, exc.message, delay
            )
            return
        if old.done or not old.streams or new is old:
            return
        now = self._now()
        revoke_at = now if immediate else rules.revoke_at(old.times, now, self._rules)
        rotation = self._table.rotate(old, new, revoke_at, immediate=immediate)
        self._telemetry.lease_rotations.labels(outcome="ok").inc()
        log.info(
            "rotated %d stream(s) from lease %s to %s",
            len(rotation.watchers), old.lease_id, new.lease_id,
        )  # fmt: skip

    # ------------------------------------------------------------ the per-lease task

    async def _run(self, lease: Lease) -> None:
        while not lease.done and not self.closed:
            lease.poke.clear()
            try:
                wake = await self._step(lease)
            except asyncio.CancelledError:
                raise
            except LatchkeyError as exc:
                log.info("lease %s: %s", lease.lease_id, exc.message)
                wake = later(self._now(), 1.0)
            except Exception:
                log.exception("lease %s: unexpected error", lease.lease_id)
                wake = later(self._now(), 1.0)
            if lease.done:
                return
            timeout = None if wake is None else max(0.01, (wake - self._now()).total_seconds())
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(lease.poke.wait(), timeout)

    async def _step(self, lease: Lease) -> datetime | None:
        """Take whatever action is due now; return when to look again (None: when poked)."""
        now = self._now()
        # The one route by which the owning token's end reaches the lease.
        lease.times = rules.with_token_deadline(
            lease.times, self._vault.token_deadline(lease.lease_id)
        )
        self._table.expire_unary(lease, now)
        if not lease.lost and rules.expired(lease.times, now):
            self.lose(lease, _why_ended(lease, now))
        if lease.lost:
            return await self._step_lost(lease, now)
        if lease.revoke_pending:
            return await self._step_revoke_pending(lease, now)
        if lease.retired:
            return await self._step_retired(lease, now)
        if not lease.holders:
            return await self._step_unheld(lease, now)
        if lease.streams:
            return await self._step_streamed(lease, now)
        return min(lease.unary_until or lease.times.expires_at, lease.times.expires_at)

    async def _step_lost(self, lease: Lease, now: datetime) -> datetime | None:
        """Gone from Vault: move its streams to a new lease as soon as one can be had. The
        streams stay while the old credential may still work (its expiry); past that, with
        still no replacement, they end with the reason (and reconnect to ask again)."""
        if lease.streams:
            if lease.rotating is not None and not lease.rotating.done():
                return None  # a rotation started before the loss is under way; it wakes us
            due = lease.next_rotate_attempt
            if due is None or now >= due:
                await self.rotate(lease, immediate=True)
            if lease.streams and self._now() >= lease.times.expires_at:
                self._table.end_streams(lease, self._no_credential(lease), self._now())
            if lease.streams:
                wakes = [lease.next_rotate_attempt or later(now, 1.0)]
                if lease.times.expires_at > now:
                    wakes.append(lease.times.expires_at)
                return min(wakes)
        self._table.finish(lease, now)
        return None

    def _no_credential(self, lease: Lease) -> Unavailable:
        cause = lease.last_error.message if lease.last_error else "no answer yet"
        return Unavailable(
            f"the credential for role {lease.role!r} is gone from Vault and no new one could "
            f"be obtained ({cause}); retry",
            retry_after=max(1.0, self._rules.retry_delay),
        )

    async def _step_revoke_pending(self, lease: Lease, now: datetime) -> datetime | None:
        if lease.next_revoke_attempt is not None and now < lease.next_revoke_attempt:
            return min(lease.next_revoke_attempt, lease.times.expires_at)
        with contextlib.suppress(LatchkeyError):
            await self.revoke(lease, lease.revoke_reason or "released")
        return None if lease.done else lease.next_revoke_attempt

    async def _step_retired(self, lease: Lease, now: datetime) -> datetime | None:
        rotation = lease.rotation
        waiting = rotation is not None and bool(rotation.awaiting) and now < rotation.revoke_at
        if not waiting and not lease.unary:
            with contextlib.suppress(LatchkeyError):
                await self.revoke(lease, "rotated")
            return None if lease.done else lease.next_revoke_attempt
        wakes = [lease.times.expires_at]
        if waiting and rotation is not None:
            wakes.append(rotation.revoke_at)
            # Keep the previous credential alive through the overlap the streams were promised.
            if rules.needs_overlap_renewal(lease.times, rotation.revoke_at):
                if now >= lease.next_renew_at:
                    self._renew_in_background(lease)
                elif lease.renewal is None or lease.renewal.done():
                    wakes.append(lease.next_renew_at)
        if lease.unary and lease.unary_until is not None:
            wakes.append(lease.unary_until)
        return min(wakes)

    async def _step_unheld(self, lease: Lease, now: datetime) -> datetime | None:
        due = rules.unheld_revoke_at(lease.unheld_since or now, self._rules)
        if self._table.claimed(lease):
            return max(due, later(now, 0.05))  # a caller is about to take a hold on it
        if now >= due:
            with contextlib.suppress(LatchkeyError):
                await self.revoke(lease, "released")
            return None if lease.done else lease.next_revoke_attempt
        return min(due, lease.times.expires_at)

    async def _step_streamed(self, lease: Lease, now: datetime) -> datetime | None:
        times = lease.times
        rotate_at = rules.rotate_at(times, self._rules)
        wakes = [times.expires_at, times.deadline]
        rotating = lease.rotating is not None and not lease.rotating.done()
        if not rotating:
            retry_at = lease.next_rotate_attempt
            if now >= rotate_at and (retry_at is None or now >= retry_at):
                lease.rotating = self._start(lease, self.rotate(lease))
            else:
                wakes.append(max(rotate_at, retry_at or now))
        if times.renewable:
            renewing = lease.renewal is not None and not lease.renewal.done()
            if not renewing and now >= lease.next_renew_at:
                self._renew_in_background(lease)
            elif not renewing:
                wakes.append(lease.next_renew_at)
        if lease.unary and lease.unary_until is not None:
            wakes.append(lease.unary_until)
        return min(wakes)


def _why_ended(lease: Lease, now: datetime) -> str:
    token = lease.times.token_deadline
    if token is not None and token <= now and token < lease.times.expires_at:
        return (
            "the Vault token that created the lease is gone (Vault revoked the lease or lost "
            "it); a new credential follows"
        )
    return "the lease expired"
