"""The lease broker's engine: obtaining, renewing, rotating and revoking leases.

Private to `brokers/leases.py`, whose `LeaseBroker` adds the public API (holds, streams,
acknowledgements) on top. Each lease has one task (`_run`) that takes every time-based
decision for it; see the `leases` module docstring for the protocol.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections import OrderedDict
from collections.abc import Callable, Sequence
from datetime import datetime

from latchkey_server.brokers._lease_state import Lease, Rotation, Watch, backoff, jittered, later
from latchkey_server.brokers.singleflight import SingleFlight
from latchkey_server.errors import (
    FailedPrecondition,
    LatchkeyError,
    NotFound,
    PermissionDenied,
    Unavailable,
)
from latchkey_server.models import (
    Credential,
    CredentialRenewed,
    CredentialRevoked,
    CredentialRotation,
)
from latchkey_server.observability.telemetry import Telemetry
from latchkey_server.upstreams.vault_port import VAULT_SYSTEM_MAX_TTL, RenewedLease, VaultUpstream

log = logging.getLogger("latchkey.brokers.leases")

Key = tuple[str, str]


def _capped(granted: float, wanted: float, warnings: Sequence[str]) -> bool:
    """Vault gave less than asked (it truncates to whole seconds) or said it capped the TTL."""
    return granted + 0.5 < wanted or any("capped" in w or "max_ttl" in w for w in warnings)


class LeaseEngine:
    """Lease records and their tasks. `LeaseBroker` is the only subclass."""

    def __init__(
        self,
        vault: VaultUpstream,
        *,
        mount: str,
        renew_fraction: float,
        jitter: float,
        rotate_before: float | None,
        min_rotate_before: float,
        grace: float,
        unheld_grace: float,
        retry: tuple[float, float],
        clock: Callable[[], datetime],
        telemetry: Telemetry | None = None,
    ) -> None:
        self._vault = vault
        self._telemetry = telemetry or Telemetry()
        self._mount = mount
        self._renew_fraction = renew_fraction
        self._jitter = max(0.0, min(jitter, 0.5))
        self._rotate_before = rotate_before
        self._min_rotate_before = min_rotate_before
        self._grace = max(0.0, grace)
        self._unheld_grace = max(0.0, unheld_grace)
        self._retry = retry
        self._now = clock
        self._leases: dict[str, Lease] = {}
        self._shared: dict[Key, Lease] = {}
        self._claims: dict[Key, int] = {}
        self._watches: dict[str, Watch] = {}
        self._rotations: dict[str, Rotation] = {}
        self._finished: OrderedDict[str, tuple[str, datetime]] = OrderedDict()
        self._flight: SingleFlight[Key, Lease] = SingleFlight()
        self._closed = False

    # ------------------------------------------------------------ obtaining leases

    def _rotate_window(self, lease: Lease) -> float:
        lifetime = (lease.deadline - lease.credential.issued_at).total_seconds()
        wanted = self._rotate_before
        if wanted is None:
            wanted = max(self._min_rotate_before, lease.base_ttl / 3)
        return max(0.0, min(wanted, lifetime / 2))

    def _shareable(self, lease: Lease, now: datetime) -> bool:
        if lease.done or lease.lost or lease.retired or lease.revoking or lease.revoke_pending:
            return False
        if now >= later(lease.deadline, -self._rotate_window(lease)):
            return False
        return (lease.expires_at - now).total_seconds() > min(1.0, 0.1 * lease.base_ttl)

    async def _obtain(self, identity: str, role: str) -> Lease:
        key = (identity, role)
        lease = self._shared.get(key)
        if lease is not None and self._shareable(lease, self._now()):
            return lease
        self._claims[key] = self._claims.get(key, 0) + 1
        try:
            return await self._flight.do(key, lambda: self._issue(identity, role))
        finally:
            left = self._claims[key] - 1
            if left:
                self._claims[key] = left
            else:
                del self._claims[key]

    async def _issue(self, identity: str, role: str) -> Lease:
        started = self._now()
        issued = await self._vault.issue_credentials(self._mount, role)
        try:
            max_ttl = await self._vault.role_max_ttl(self._mount, role)
        except LatchkeyError as exc:
            log.info(
                "max TTL of role %r unknown (%s); learning it from renewals", role, exc.message
            )
            max_ttl = None
        expires = later(started, issued.lease_duration)
        role_deadline = later(started, max_ttl or VAULT_SYSTEM_MAX_TTL)
        if _capped(issued.lease_duration, issued.lease_duration, issued.warnings):
            role_deadline = min(role_deadline, expires)
        lease = Lease(
            identity=identity,
            role=role,
            credential=Credential(
                role=role,
                username=issued.username,
                password=issued.password,
                lease_id=issued.lease_id,
                issued_at=started,
                expires_at=expires,
                max_ttl_deadline=role_deadline,
                renewable=issued.renewable,
            ),
            base_ttl=issued.lease_duration,
            role_deadline=role_deadline,
            next_renew_at=self._renew_time(started, issued.lease_duration),
            token_deadline=issued.token_deadline,
            unheld_since=self._now(),
        )
        lease.update()
        if self._closed:
            with contextlib.suppress(LatchkeyError):
                await self._vault.revoke_lease(lease.lease_id)
            raise Unavailable("the gateway is shutting down", retry_after=1.0)
        self._leases[lease.lease_id] = lease
        self._shared[lease.key] = lease
        lease.task = asyncio.create_task(self._run(lease), name=f"lease {lease.lease_id}")
        log.info("issued lease %s (role %r, ttl %ss)", lease.lease_id, role, int(lease.base_ttl))
        return lease

    def _renew_time(self, start: datetime, ttl: float) -> datetime:
        return later(start, jittered(self._renew_fraction * ttl, self._jitter))

    # ------------------------------------------------------------ Vault calls

    async def _renew(self, lease: Lease, increment: float | None) -> RenewedLease:
        if increment is not None:
            return await self._do_renew(lease, increment)
        if lease.renewing is None or lease.renewing.done():
            lease.renewing = asyncio.create_task(self._do_renew(lease, None))
        task = lease.renewing
        return await asyncio.shield(task)

    async def _do_renew(self, lease: Lease, increment: float | None) -> RenewedLease:
        started = self._now()
        result = await self._vault.renew_lease(lease.lease_id, increment)
        if lease.done or lease.lost:
            return result
        expires = later(started, result.lease_duration)
        if result.token_deadline is not None and (
            lease.token_deadline is None or result.token_deadline < lease.token_deadline
        ):
            lease.token_deadline = result.token_deadline
        wanted = increment or lease.base_ttl
        if _capped(result.lease_duration, wanted, result.warnings) or not result.renewable:
            lease.role_deadline = min(lease.role_deadline, expires)
        lease.update(expires_at=expires, renewable=result.renewable)
        lease.renew_failures = 0
        self._telemetry.lease_renewals.labels(outcome="ok").inc()
        lease.next_renew_at = self._renew_time(started, result.lease_duration)
        for watch in lease.streams:
            watch.send(CredentialRenewed(watch.id, lease.lease_id, expires))
        lease.wake()
        return result

    async def _renew_quietly(self, lease: Lease) -> None:
        """The background renewal: failures become retries or rotation, never stream errors."""
        try:
            await self._renew(lease, None)
        except NotFound:
            self._lose(lease, "the lease no longer exists in Vault")
        except (FailedPrecondition, PermissionDenied) as exc:
            self._telemetry.lease_renewals.labels(outcome="refused").inc()
            log.warning("lease %s cannot be renewed: %s", lease.lease_id, exc.message)
            lease.role_deadline = min(lease.role_deadline, lease.expires_at)
            lease.update(renewable=False)
        except LatchkeyError as exc:
            self._telemetry.lease_renewals.labels(outcome="error").inc()
            lease.renew_failures += 1
            now = self._now()
            remaining = (lease.expires_at - now).total_seconds()
            delay = min(backoff(lease.renew_failures, *self._retry), max(0.05, remaining / 3))
            lease.next_renew_at = later(now, delay)
            log.info(
                "renewing lease %s failed (%s); retry in %.1fs", lease.lease_id, exc.message, delay
            )

    async def _revoke(self, lease: Lease, reason: str) -> None:
        """Revoke in Vault (single-flight per lease). Raises on failure; the task retries."""
        if lease.done:
            return
        if lease.revoking is None or lease.revoking.done():
            lease.revoke_reason = reason
            lease.revoking = asyncio.create_task(self._do_revoke(lease, reason))
        await asyncio.shield(lease.revoking)

    async def _do_revoke(self, lease: Lease, reason: str) -> None:
        lease.revoke_pending = False
        try:
            await self._vault.revoke_lease(lease.lease_id)
        except LatchkeyError:
            lease.revoke_pending = True
            lease.revoke_failures += 1
            lease.next_revoke_attempt = later(
                self._now(), backoff(lease.revoke_failures, *self._retry)
            )
            lease.wake()
            raise
        lease.revoked_at = self._now()
        log.info("revoked lease %s (%s)", lease.lease_id, reason)
        self._tell_revoked(lease, reason)
        if lease.streams:  # force-revoked while streamed: the task moves them to a new lease
            self._lose(lease, reason)
            lease.wake()
        else:
            self._finish(lease)

    # ------------------------------------------------------------ state changes

    def _tell_revoked(self, lease: Lease, reason: str) -> None:
        if not lease.lost_notified:
            lease.lost_notified = True
            for watch in lease.told:
                watch.send(CredentialRevoked(watch.id, lease.lease_id, reason))

    def _lose(self, lease: Lease, reason: str) -> None:
        """Vault no longer has the lease (expired, gone, revoked under us)."""
        if not lease.lost:
            log.info("lease %s is gone: %s", lease.lease_id, reason)
        lease.lost = True
        lease.unary = 0
        if self._shared.get(lease.key) is lease:
            del self._shared[lease.key]
        self._tell_revoked(lease, reason)
        lease.wake()

    def _finish(self, lease: Lease) -> None:
        lease.done = True
        self._leases.pop(lease.lease_id, None)
        if self._shared.get(lease.key) is lease:
            del self._shared[lease.key]
        rotation = lease.rotation
        if rotation is not None:
            self._rotations.pop(rotation.id, None)
            self._finished[rotation.id] = (lease.identity, lease.revoked_at or self._now())
            while len(self._finished) > 4096:
                self._finished.popitem(last=False)
            for watch_id in rotation.awaiting:
                watch = self._watches.get(watch_id)
                if watch is not None:
                    watch.pending.discard(rotation)
        lease.wake()

    async def _rotate(self, old: Lease, *, immediate: bool = False) -> None:
        """Move every stream of `old` to a fresh lease. `immediate`: old is already gone."""
        try:
            new = await self._obtain(old.identity, old.role)
        except LatchkeyError as exc:
            self._telemetry.lease_rotations.labels(outcome="error").inc()
            old.rotate_failures += 1
            delay = backoff(old.rotate_failures, *self._retry)
            old.next_rotate_attempt = later(self._now(), delay)
            log.warning(
                "rotating lease %s failed (%s); retry in %.1fs", old.lease_id, exc.message, delay
            )
            return
        if old.done or not old.streams or new is old:
            return
        now = self._now()
        old.retired = True
        if self._shared.get(old.key) is old:
            del self._shared[old.key]
        if immediate:
            revoke_at = now
        else:
            end = old.deadline if old.credential.renewable else old.expires_at
            safety = min(1.0, 0.1 * old.base_ttl)
            revoke_at = max(now, min(later(now, self._grace), later(end, -safety)))
        rotation = Rotation(id=uuid.uuid4().hex, old=old, new=new, revoke_at=revoke_at)
        for watch in list(old.streams):
            old.streams.discard(watch)
            watch.lease = new
            new.streams.add(watch)
            new.told.add(watch)
            rotation.watchers.add(watch.id)
            if not immediate:
                rotation.awaiting.add(watch.id)
                watch.pending.add(rotation)
            watch.send(
                CredentialRotation(watch.id, new.credential, rotation.id, old.lease_id, revoke_at)
            )
        old.rotation = rotation
        self._rotations[rotation.id] = rotation
        self._telemetry.lease_rotations.labels(outcome="ok").inc()
        new.unheld_since = None
        new.wake()
        log.info(
            "rotated %d stream(s) from lease %s to %s",
            len(rotation.watchers), old.lease_id, new.lease_id,
        )  # fmt: skip

    # ------------------------------------------------------------ the per-lease task

    async def _run(self, lease: Lease) -> None:
        while not lease.done and not self._closed:
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
        if lease.unary and lease.unary_until is not None and now >= lease.unary_until:
            lease.unary = 0
            if not lease.streams:
                lease.unheld_since = now
        if not lease.lost and now >= min(lease.expires_at, lease.deadline):
            self._lose(lease, "the lease expired")
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
        return min(lease.unary_until or lease.expires_at, lease.expires_at)

    async def _step_lost(self, lease: Lease, now: datetime) -> datetime | None:
        if lease.streams:
            if lease.next_rotate_attempt is not None and now < lease.next_rotate_attempt:
                return lease.next_rotate_attempt
            await self._rotate(lease, immediate=True)
            if lease.streams:
                return lease.next_rotate_attempt or later(now, 1.0)
        if lease.revoked_at is None:
            lease.revoked_at = now
        self._finish(lease)
        return None

    async def _step_revoke_pending(self, lease: Lease, now: datetime) -> datetime | None:
        if lease.next_revoke_attempt is not None and now < lease.next_revoke_attempt:
            return min(lease.next_revoke_attempt, lease.expires_at)
        with contextlib.suppress(LatchkeyError):
            await self._revoke(lease, lease.revoke_reason or "released")
        return None if lease.done else lease.next_revoke_attempt

    async def _step_retired(self, lease: Lease, now: datetime) -> datetime | None:
        rotation = lease.rotation
        waiting = rotation is not None and bool(rotation.awaiting) and now < rotation.revoke_at
        if not waiting and not lease.unary:
            with contextlib.suppress(LatchkeyError):
                await self._revoke(lease, "rotated")
            return None if lease.done else lease.next_revoke_attempt
        wakes = [lease.expires_at]
        if waiting and rotation is not None:
            wakes.append(rotation.revoke_at)
            # Keep the previous credential alive through the overlap the streams were promised.
            if lease.credential.renewable and lease.expires_at < rotation.revoke_at:
                if now >= lease.next_renew_at:
                    await self._renew_quietly(lease)
                wakes.append(lease.next_renew_at)
        if lease.unary and lease.unary_until is not None:
            wakes.append(lease.unary_until)
        return min(wakes)

    async def _step_unheld(self, lease: Lease, now: datetime) -> datetime | None:
        due = later(lease.unheld_since or now, self._unheld_grace)
        if self._claims.get(lease.key) and self._shared.get(lease.key) is lease:
            return max(due, later(now, 0.05))  # a caller is about to take a hold on it
        if now >= due:
            with contextlib.suppress(LatchkeyError):
                await self._revoke(lease, "released")
            return None if lease.done else lease.next_revoke_attempt
        return min(due, lease.expires_at)

    async def _step_streamed(self, lease: Lease, now: datetime) -> datetime | None:
        rotate_at = later(lease.deadline, -self._rotate_window(lease))
        if now >= rotate_at and (
            lease.next_rotate_attempt is None or now >= lease.next_rotate_attempt
        ):
            await self._rotate(lease)
            if lease.retired:
                return now
        if lease.credential.renewable and now >= lease.next_renew_at:
            await self._renew_quietly(lease)
        wakes = [lease.expires_at, lease.deadline, max(rotate_at, lease.next_rotate_attempt or now)]
        if lease.credential.renewable:
            wakes.append(lease.next_renew_at)
        if lease.unary and lease.unary_until is not None:
            wakes.append(lease.unary_until)
        return min(wakes)
