"""The lease broker: dynamic database credentials, shared, renewed, rotated and revoked.

One Vault lease is shared per (identity, role) while it is valid, and reference-counted by its
holders: every open `watch` stream is a hold (released when the iterator is closed or
cancelled), every unary `acquire` is a hold that lasts until the lease's expiry at that moment
(`renew` extends it) or until `release`. Concurrent identical requests issue exactly one Vault
`creds` call. A lease nobody holds is revoked after `unheld_grace`.

Reading order: `acquire` / `watch` → `_obtain` (share a valid lease, or issue one, once per key
at a time) → `_issue` (Vault issues it, the journal records it, then the table takes it and its
task starts). From then on the lease's own task (`_lease_task.py`) renews, rotates and revokes
it by the timing rules of `_lease_rules.py` (pure functions of the lease's times and `now`);
the table (`_lease_table.py`) holds every lease, stream and rotation and is the only code that
changes them.

Rotation: a new credential is obtained before the old one can no longer be renewed; every
stream on the old lease gets a `CredentialRotation` (new credential, rotation id, previous lease
id, previous_revoke_at) and its hold moves to the new lease. Both credentials work during the
overlap. The old lease is revoked when all those streams called `ack`, or at previous_revoke_at,
whichever comes first, but not while unary holders still hold it; then the streams hear
`CredentialRevoked` for it. A lease Vault lost (expired, its token gone) is replaced the same
way as soon as Vault issues another; until then its streams are told the truth (revoked, and
heartbeats with the upstream's state), and they end with UNAVAILABLE if the old credential
expires before a new one comes.

The journal (`journal.py`) records every lease in Consul before its credential leaves the
gateway, so that a gateway that dies leaves nothing behind for long.
"""

from __future__ import annotations

import asyncio
import builtins
import contextlib
import logging
from collections.abc import AsyncGenerator, Callable, Sequence
from datetime import datetime

from latchkey_server.brokers import _lease_rules as rules
from latchkey_server.brokers._lease_rules import LeaseRules, LeaseTimes
from latchkey_server.brokers._lease_table import Key, Lease, LeaseTable, no_such_lease
from latchkey_server.brokers._lease_task import LeaseTasks
from latchkey_server.brokers.journal import JournalRecord, LeaseJournal, NoJournal
from latchkey_server.brokers.singleflight import SingleFlight
from latchkey_server.errors import InvalidArgument, LatchkeyError, NotFound, Unavailable
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
from latchkey_server.upstreams.vault_port import IssuedLease, VaultUpstream

log = logging.getLogger("latchkey.brokers.leases")

__all__ = ["LeaseBroker", "no_such_lease"]


class LeaseBroker:
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
        journal: LeaseJournal | None = None,
    ) -> None:
        """Args:
        vault: the Vault upstream.
        mount: mount of the database secrets engine.
        renew_fraction: renew a streamed lease when this fraction of its TTL has passed.
        jitter: random spread (fraction) applied to renewal times.
        rotate_before: seconds before a lease's hard deadline to rotate it; None: the default
            window of `_lease_rules.rotate_window`.
        grace: longest time the previous lease of a rotation outlives the rotation unacked.
        unheld_grace: revoke a lease this long after its last holder let go.
        heartbeat_interval: seconds between heartbeats on every stream.
        retry_delay, retry_max_delay: backoff bounds for failed renewals/rotations/revocations.
        close_upstream: `close()` also closes the upstream (when the broker owns it).
        clock: the time source (UTC datetimes).
        telemetry: where renewal and rotation counts go (metrics).
        journal: where leases are recorded before their credentials leave (None: nowhere).
        """
        if not 0 < renew_fraction < 1:
            raise InvalidArgument("renew_fraction must be between 0 and 1")
        if heartbeat_interval <= 0:
            raise InvalidArgument("heartbeat_interval must be positive")
        self._vault = vault
        self._mount = mount
        self._now = clock
        self._rules = LeaseRules(
            renew_fraction=renew_fraction,
            jitter=jitter,
            rotate_before=rotate_before,
            min_rotate_before=min_rotate_before,
            grace=max(0.0, grace),
            unheld_grace=max(0.0, unheld_grace),
            retry_delay=retry_delay,
            retry_max_delay=retry_max_delay,
        )
        self._journal: LeaseJournal = journal or NoJournal()
        self._table = LeaseTable()
        self._tasks = LeaseTasks(
            self._table, vault, self._rules, journal=self._journal, obtain=self._obtain,
            clock=clock, telemetry=telemetry or Telemetry(),
        )  # fmt: skip
        self._flight: SingleFlight[Key, Lease] = SingleFlight()
        self._heartbeat_interval = heartbeat_interval
        self._close_upstream = close_upstream
        self._unsubscribe: builtins.list[Callable[[], None]] = []
        self._started = False
        self._closed = False
        self._draining: LatchkeyError | None = None

    # ------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        self._check_open()

    def _check_open(self) -> None:
        if self._draining is not None:
            raise self._draining
        if self._closed:
            raise Unavailable("the gateway is shutting down", retry_after=1.0)
        if not self._started:
            self._started = True
            self._unsubscribe = [
                self._vault.add_token_deadline_listener(self._on_token_deadline),
                self._vault.add_state_listener(self._on_state),
            ]

    async def drain(self, error: LatchkeyError) -> None:
        """First step of a shutdown: end every credential stream with `error` (its holds are
        released; leases are revoked later, by `close`) and refuse new requests with it."""
        self._draining = error
        for watch in builtins.list(self._table.watches.values()):
            watch.end(error)

    async def close(self) -> None:
        """Graceful shutdown: stop the lease tasks, revoke every lease in Vault, end streams."""
        if self._closed:
            return
        self._closed = True
        for unsubscribe in self._unsubscribe:
            unsubscribe()
        await self._flight.cancel_all()
        leases = builtins.list(self._table.leases.values())
        await self._tasks.stop(leases)
        results = await asyncio.gather(
            *(self._revoke_on_close(lease) for lease in leases if not lease.done),
            return_exceptions=True,
        )
        failed = sum(1 for r in results if isinstance(r, BaseException))
        if failed:
            log.warning(
                "shutdown: %d lease(s) could not be revoked; they stay in the journal for the "
                "next start (or another replica) to revoke, else Vault expires them", failed
            )  # fmt: skip
        for watch in builtins.list(self._table.watches.values()):
            watch.end()
        if self._close_upstream:
            close = getattr(self._vault, "close", None)
            if close is not None:
                await close()

    async def _revoke_on_close(self, lease: Lease) -> None:
        try:
            if not lease.lost:
                await self._vault.revoke_lease(lease.lease_id)
            self._journal.forget(lease.lease_id)
        finally:
            lease.revoked_at = self._now()
            self._table.tell_revoked(lease, "the gateway is shutting down")
            self._table.finish(lease, self._now())

    # ------------------------------------------------------------ public API

    async def acquire(self, identity: str, role: str) -> Credential:
        """A credential for (identity, role), shared with the identity's other holders."""
        self._check_open()
        for _ in range(3):
            lease = await self._obtain(identity, role)
            self._table.hold_unary(lease)
            remaining = rules.seconds_between(self._now(), lease.times.expires_at)
            if not lease.times.renewable or remaining >= (1 - self._rules.renew_fraction) * (
                lease.times.ttl
            ):
                return lease.credential()
            try:  # near its expiry: give the caller a full TTL
                await self._tasks.renew(lease, None)
            except NotFound as exc:
                self._table.drop_unary(lease)
                self._tasks.lose(lease, exc.message)
                continue
            except LatchkeyError as exc:
                log.info(
                    "renewing lease %s for a new holder failed: %s", lease.lease_id, exc.message
                )
            self._table.hold_unary(lease, extra=False)
            return lease.credential()
        raise Unavailable(f"could not obtain a credential for role {role!r}", retry_after=1.0)

    async def watch(
        self, identity: str, role: str, lease_id: str = ""
    ) -> AsyncGenerator[CredentialEvent, None]:
        """The credential stream: `CredentialIssued` first, then renewals, rotations, revocations
        and heartbeats. Holding the iterator open is a hold on the lease; closing it
        (`aclose()`, or cancelling the task iterating it) releases the hold."""
        self._check_open()
        watch = self._table.open_watch(identity, role)
        try:
            lease = None
            if lease_id:
                lease = self._table.reattachable(identity, role, lease_id, self._now())
            if lease is None:
                lease = await self._obtain(identity, role)
            self._table.attach(watch, lease)
            yield CredentialIssued(watch.id, lease.credential())
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
            self._table.close_watch(watch, self._now())

    async def ack(self, identity: str, watch_id: str, rotation_id: str) -> datetime:
        """A stream switched to the rotated credential; returns when the previous lease was
        (or will now be) revoked."""
        rotation = self._table.rotations.get(rotation_id)
        if rotation is None:
            finished = self._table.finished_rotation(rotation_id, identity)
            if finished is not None:
                return finished
            raise NotFound(f"rotation {rotation_id} is unknown or already complete")
        old = rotation.old
        if old.identity != identity or watch_id not in rotation.watchers:
            raise NotFound(f"rotation {rotation_id} is unknown or already complete")
        self._table.acknowledge(rotation, watch_id)
        if old.done:
            return old.revoked_at or self._now()
        if rotation.awaiting:
            return rotation.revoke_at
        if old.unary:
            return old.unary_until or rotation.revoke_at
        with contextlib.suppress(LatchkeyError):  # retried by the lease's task
            await self._tasks.revoke(old, "rotated")
        return old.revoked_at or self._now()

    async def renew(
        self, identity: str, lease_id: str, increment: float | None, *, force: bool = False
    ) -> RenewResult:
        """Renew a lease the identity holds (`force`: any lease, for operators); extends the
        caller's unary hold to the new expiry."""
        self._check_open()
        lease = self._table.held(identity, lease_id, force=force)
        try:
            result = await self._tasks.renew(lease, increment)
        except NotFound as exc:
            self._tasks.lose(lease, exc.message)
            raise
        if not lease.holders:
            lease.unary = 1
        if lease.unary:
            self._table.hold_unary(lease, extra=False)
        return RenewResult(
            lease.lease_id, lease.times.expires_at, lease.times.renewable, result.warnings
        )

    async def release(self, identity: str, lease_id: str, *, force: bool = False) -> bool:
        """Drop the caller's hold; revoke in Vault when nobody holds the lease any more. With
        `force` (operators), revoke at once whoever holds it, even a lease this gateway does
        not hold (another replica's, or one nobody journaled) if Vault knows it. True when
        revoked in Vault."""
        self._check_open()
        try:
            lease = self._table.held(identity, lease_id, force=force)
        except NotFound:
            if not force:
                raise
            return await self._revoke_unheld(lease_id)
        if force:
            lease.unary = 0
            await self._tasks.revoke(lease, "revoked by an operator")
            return True
        self._table.drop_unary(lease)
        rotation = lease.rotation
        if lease.streams or lease.unary or (rotation is not None and rotation.awaiting):
            lease.wake()
            return False
        await self._tasks.revoke(lease, "released")
        return True

    async def _revoke_unheld(self, lease_id: str) -> bool:
        """An operator's forced revocation of a lease this gateway does not hold."""
        await self._vault.lookup_lease(lease_id)  # NotFound when Vault does not know it
        await self._vault.revoke_lease(lease_id)
        log.info("revoked lease %s for an operator (not held by this gateway)", lease_id)
        with contextlib.suppress(LatchkeyError):  # a record left behind is revoked again later
            await self._journal.forget_everywhere(lease_id)
        return True

    def list(self, role: str = "") -> builtins.list[LeaseInfo]:
        """Every lease this gateway holds (never a password)."""
        replica = self._journal.replica_id
        return [
            lease.info(replica) for lease in self._table.live() if not role or lease.role == role
        ]

    async def list_all(self, role: str = "") -> builtins.list[LeaseInfo]:
        """Every journaled lease of every replica, this gateway's own with their live state
        (operator view; never a password). Unavailable when Consul cannot be read."""
        own = self.list(role)
        seen = {info.lease_id for info in own}
        others = [
            _info(rec)
            for rec in await self._journal.records()
            if rec.lease_id not in seen and (not role or rec.role == role)
        ]
        return own + sorted(others, key=lambda info: (info.replica, info.lease_id))

    # ------------------------------------------------------------ obtaining leases

    async def _obtain(self, identity: str, role: str) -> Lease:
        """The shared lease of (identity, role) if a new holder may take it, else a new one
        (one Vault call however many callers ask at once)."""
        key = (identity, role)
        lease = self._table.shared(key, self._now(), self._rules)
        if lease is not None:
            return lease
        with self._table.claim(key):
            return await self._flight.do(key, lambda: self._issue(identity, role))

    async def _issue(self, identity: str, role: str) -> Lease:
        """Vault issues the credential; the journal records it; the table takes it and its task
        starts. Nothing is handed out that the journal does not know of."""
        started = self._now()
        issued = await self._vault.issue_credentials(self._mount, role)
        try:
            max_ttl = await self._vault.role_max_ttl(self._mount, role)
        except LatchkeyError as exc:
            log.info(
                "max TTL of role %r unknown (%s); learning it from renewals", role, exc.message
            )
            max_ttl = None
        times, renew_from, granted = await self._times(issued, started, max_ttl)
        lease = Lease(
            identity=identity,
            role=role,
            mount=self._mount,
            lease_id=issued.lease_id,
            username=issued.username,
            password=issued.password,
            times=times,
            next_renew_at=self._tasks.renew_at(renew_from, granted),
            unheld_since=self._now(),
        )
        try:
            if self._closed:
                raise Unavailable("the gateway is shutting down", retry_after=1.0)
            await self._journal.record(self._record(lease, issued.token_accessor))
            if self._closed:
                self._journal.forget(lease.lease_id)
                raise Unavailable("the gateway is shutting down", retry_after=1.0)
        except LatchkeyError:
            with contextlib.suppress(LatchkeyError):
                await self._vault.revoke_lease(lease.lease_id)
            raise
        self._table.add(lease)
        self._tasks.start(lease)
        log.info("issued lease %s (role %r, ttl %ss)", lease.lease_id, role, int(times.ttl))
        return lease

    async def _times(
        self, issued: IssuedLease, started: datetime, max_ttl: float | None
    ) -> tuple[LeaseTimes, datetime, float]:
        """The new lease's times, and the renewal they were last confirmed by (when, granted)."""
        times = rules.issued(
            started, issued.lease_duration, renewable=issued.renewable, max_ttl=max_ttl,
            warnings=issued.warnings, token_deadline=self._vault.token_deadline(issued.lease_id),
        )  # fmt: skip
        if not rules.expired(times, self._now()) or not times.renewable:
            return times, started, issued.lease_duration
        # Vault answered later than the TTL it granted (it was busy): counted from when Vault
        # issued it, the lease may well be alive. A renewal tells, from now.
        renewed_at = self._now()
        try:
            again = await self._vault.renew_lease(issued.lease_id)
        except LatchkeyError:
            return times, started, issued.lease_duration  # it is lost, and will be replaced
        times = rules.renewed(
            times, renewed_at, again.lease_duration, wanted=None, renewable=again.renewable,
            warnings=again.warnings,
        )  # fmt: skip
        return times, renewed_at, again.lease_duration

    @staticmethod
    def _record(lease: Lease, token_accessor: str) -> JournalRecord:
        return JournalRecord(
            lease_id=lease.lease_id, mount=lease.mount, role=lease.role, holder=lease.identity,
            username=lease.username, token_accessor=token_accessor,
            issued_at=lease.times.issued_at, expires_at=lease.times.expires_at,
            max_ttl_deadline=lease.times.deadline,
        )  # fmt: skip

    # ------------------------------------------------------------ upstream notices

    def _on_token_deadline(self, lease_ids: Sequence[str]) -> None:
        """The owning token's end of these leases changed: their tasks read it again."""
        for lease_id in lease_ids:
            lease = self._table.leases.get(lease_id)
            if lease is not None:
                lease.wake()

    def _freshness(self) -> Freshness:
        reachable, refused = self._vault.reachable, self._vault.refused
        return Freshness(
            index=0,
            confirmed_at=self._vault.last_contact,
            stale=refused or not reachable,
            reachable=reachable,
            refused=refused,
        )

    def _on_state(self) -> None:
        """Vault became (un)reachable, or refused or accepted the gateway: every stream hears it
        at once; when Vault serves again, leases waiting for a replacement try again now."""
        freshness = self._freshness()
        for watch in builtins.list(self._table.watches.values()):
            if watch.lease is not None:
                watch.send(CredentialHeartbeat(watch.id, freshness))
        if not freshness.stale:
            for lease in self._table.leases.values():
                if lease.next_rotate_attempt is not None:
                    lease.next_rotate_attempt = None
                    lease.wake()


def _info(rec: JournalRecord) -> LeaseInfo:
    """What the journal tells of a lease held elsewhere (its holds are not known here)."""
    return LeaseInfo(
        lease_id=rec.lease_id,
        role=rec.role,
        holder=rec.holder,
        username=rec.username,
        issued_at=rec.issued_at,
        expires_at=rec.expires_at,
        max_ttl_deadline=rec.max_ttl_deadline,
        holders=0,
        renewable=False,
        replica=rec.replica,
    )
