"""The lease broker's table: every lease, stream and rotation, and the only code that changes
them.

Private to `brokers/leases.py`. No Vault call, no clock and no timing decision is made here:
the broker and the per-lease tasks (`_lease_task.py`) decide, with the rules of
`_lease_rules.py`; the table records what they decided and tells the streams.
"""

from __future__ import annotations

import asyncio
import uuid
from collections import OrderedDict
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime

from latchkey_server.brokers._lease_rules import LeaseRules, LeaseTimes, shareable
from latchkey_server.errors import LatchkeyError, NotFound
from latchkey_server.models import (
    Credential,
    CredentialEvent,
    CredentialRenewed,
    CredentialRevoked,
    CredentialRotation,
    LeaseInfo,
)
from latchkey_server.upstreams.vault_port import RenewedLease

Key = tuple[str, str]
"""(identity, role): one shared lease per key while it is valid."""


def no_such_lease(lease_id: str) -> str:
    """The one message for a lease the caller may not act on (missing, or someone else's)."""
    return f"no lease {lease_id} held by the gateway for this caller"


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
    """Why the stream was ended, when it ends with an error (a drain, no credential left)."""

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
    watchers: set[str] = field(default_factory=set)
    """Every watch id that received this rotation."""


@dataclass(eq=False)
class Lease:
    """One Vault lease the gateway holds for an (identity, role)."""

    identity: str
    role: str
    mount: str
    lease_id: str
    username: str
    password: str = field(repr=False)
    times: LeaseTimes
    next_renew_at: datetime

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
    """The Vault renewal call in flight (shared by the callers that want one)."""
    renewal: asyncio.Task[None] | None = None
    """The background renewal in flight (it handles its own failures)."""
    rotating: asyncio.Task[None] | None = None
    """The rotation in flight (obtaining the successor, then moving the streams)."""
    renew_failures: int = 0
    rotate_failures: int = 0
    next_rotate_attempt: datetime | None = None
    last_error: LatchkeyError | None = None
    """Why the last rotation failed (what its streams are told if they end without one)."""
    revoke_failures: int = 0
    next_revoke_attempt: datetime | None = None

    poke: asyncio.Event = field(default_factory=asyncio.Event)
    task: asyncio.Task[None] | None = None

    @property
    def key(self) -> Key:
        return (self.identity, self.role)

    @property
    def holders(self) -> int:
        return len(self.streams) + self.unary

    @property
    def gone(self) -> bool:
        """No new hold may be taken on it (revoked, lost, rotated away, being revoked)."""
        return self.done or self.lost or self.retired or bool(self.revoking) or self.revoke_pending

    def credential(self) -> Credential:
        """The credential as it leaves the broker: built here and nowhere else, from the lease's
        current times (its expiry moves with renewals, its deadline with the owning token)."""
        return Credential(
            role=self.role,
            username=self.username,
            password=self.password,
            lease_id=self.lease_id,
            issued_at=self.times.issued_at,
            expires_at=self.times.expires_at,
            max_ttl_deadline=self.times.deadline,
            renewable=self.times.renewable,
        )

    def info(self, replica: str) -> LeaseInfo:
        return LeaseInfo(
            lease_id=self.lease_id,
            role=self.role,
            holder=self.identity,
            username=self.username,
            issued_at=self.times.issued_at,
            expires_at=self.times.expires_at,
            max_ttl_deadline=self.times.deadline,
            holders=self.holders,
            renewable=self.times.renewable,
            replica=replica,
        )

    def wake(self) -> None:
        self.poke.set()


class LeaseTable:
    """Leases by id, the shared lease per key, open streams and rotations in progress."""

    def __init__(self) -> None:
        self.leases: dict[str, Lease] = {}
        self.watches: dict[str, Watch] = {}
        self.rotations: dict[str, Rotation] = {}
        self._shared: dict[Key, Lease] = {}
        self._claims: dict[Key, int] = {}
        self._finished: OrderedDict[str, tuple[str, datetime]] = OrderedDict()

    # ------------------------------------------------------------ lookups

    def shared(self, key: Key, now: datetime, rules: LeaseRules) -> Lease | None:
        """The lease a new holder of `key` may share, if there is one."""
        lease = self._shared.get(key)
        if lease is None or lease.gone or not shareable(lease.times, now, rules):
            return None
        return lease

    def claimed(self, lease: Lease) -> bool:
        """A caller is obtaining a lease for this key and may be handed this one."""
        return bool(self._claims.get(lease.key)) and self._shared.get(lease.key) is lease

    def held(self, identity: str, lease_id: str, *, force: bool) -> Lease:
        """A lease the caller may act on (`force`: any lease, for operators)."""
        lease = self.leases.get(lease_id)
        gone = lease is None or lease.done or (lease.lost and not lease.streams)
        if gone or (lease is not None and lease.identity != identity and not force):
            # One answer whether the lease does not exist or belongs to someone else: the
            # caller learns nothing about other identities' leases.
            raise NotFound(no_such_lease(lease_id))
        assert lease is not None
        return lease

    def reattachable(self, identity: str, role: str, lease_id: str, now: datetime) -> Lease | None:
        lease = self.leases.get(lease_id)
        if lease is None or lease.key != (identity, role) or lease.gone:
            return None
        return lease if now < lease.times.expires_at else None

    def finished_rotation(self, rotation_id: str, identity: str) -> datetime | None:
        """When the previous lease of a completed rotation of `identity` was revoked."""
        finished = self._finished.get(rotation_id)
        return finished[1] if finished is not None and finished[0] == identity else None

    def live(self) -> list[Lease]:
        return [lease for lease in self.leases.values() if not lease.done and not lease.lost]

    # ------------------------------------------------------------ new leases and holds

    @contextmanager
    def claim(self, key: Key) -> Iterator[None]:
        """Mark a caller obtaining a lease for `key` (the shared one is then not revoked as
        unheld under it)."""
        self._claims[key] = self._claims.get(key, 0) + 1
        try:
            yield
        finally:
            left = self._claims[key] - 1
            if left:
                self._claims[key] = left
            else:
                del self._claims[key]

    def add(self, lease: Lease) -> None:
        self.leases[lease.lease_id] = lease
        self._shared[lease.key] = lease

    def open_watch(self, identity: str, role: str) -> Watch:
        watch = Watch(id=uuid.uuid4().hex, identity=identity, role=role)
        self.watches[watch.id] = watch
        return watch

    def attach(self, watch: Watch, lease: Lease) -> None:
        watch.lease = lease
        lease.streams.add(watch)
        lease.told.add(watch)
        lease.unheld_since = None
        lease.wake()

    def close_watch(self, watch: Watch, now: datetime) -> None:
        watch.closed = True
        self.watches.pop(watch.id, None)
        for rotation in watch.pending:  # a closed stream no longer uses the old credential
            rotation.awaiting.discard(watch.id)
            rotation.old.wake()
        watch.pending.clear()
        lease, watch.lease = watch.lease, None
        if lease is not None:
            lease.streams.discard(watch)
            lease.told.discard(watch)
            if not lease.holders:
                lease.unheld_since = now
            lease.wake()

    def hold_unary(self, lease: Lease, *, extra: bool = True) -> None:
        """A unary hold (`extra`: a new one) lasting until the lease's current end.

        The lease's task is woken only when the hold changes its schedule (the first unary
        hold, or a lease that was unheld): with holds already counted it wakes at the old
        `unary_until` anyway and finds the later one. Repeated reads stay off the task."""
        newly_held = lease.unary == 0 or lease.unheld_since is not None
        if extra:
            lease.unary += 1
        until = lease.times.end
        if lease.unary_until is None or until > lease.unary_until:
            lease.unary_until = until
        lease.unheld_since = None
        if newly_held:
            lease.wake()

    def drop_unary(self, lease: Lease) -> None:
        lease.unary = max(0, lease.unary - 1)

    def expire_unary(self, lease: Lease, now: datetime) -> None:
        """Unary holds end at the expiry they were given."""
        if lease.unary and lease.unary_until is not None and now >= lease.unary_until:
            lease.unary = 0
            if not lease.streams:
                lease.unheld_since = now

    def acknowledge(self, rotation: Rotation, watch_id: str) -> None:
        rotation.awaiting.discard(watch_id)
        watch = self.watches.get(watch_id)
        if watch is not None:
            watch.pending.discard(rotation)

    # ------------------------------------------------------------ Vault told us something

    def renewed(self, lease: Lease, times: LeaseTimes, next_renew_at: datetime) -> None:
        lease.times = times
        lease.renew_failures = 0
        lease.next_renew_at = next_renew_at
        for watch in lease.streams:
            watch.send(CredentialRenewed(watch.id, lease.lease_id, times.expires_at))
        lease.wake()

    def tell_revoked(self, lease: Lease, reason: str) -> None:
        if not lease.lost_notified:
            lease.lost_notified = True
            for watch in lease.told:
                watch.send(CredentialRevoked(watch.id, lease.lease_id, reason))

    def lose(self, lease: Lease, reason: str) -> None:
        """Vault no longer has the lease (expired, gone, revoked under us)."""
        lease.lost = True
        lease.unary = 0
        self._unshare(lease)
        self.tell_revoked(lease, reason)
        lease.wake()

    def revoked(self, lease: Lease, reason: str, now: datetime) -> None:
        """The gateway revoked the lease in Vault."""
        lease.revoked_at = now
        self.tell_revoked(lease, reason)
        if lease.streams:  # force-revoked while streamed: its task moves them to a new lease
            self.lose(lease, reason)
        else:
            self.finish(lease, now)

    def finish(self, lease: Lease, now: datetime) -> None:
        """Forget the lease (revoked, or lost with nobody left on it)."""
        lease.done = True
        if lease.revoked_at is None:
            lease.revoked_at = now
        self.leases.pop(lease.lease_id, None)
        self._unshare(lease)
        rotation = lease.rotation
        if rotation is not None:
            self.rotations.pop(rotation.id, None)
            self._finished[rotation.id] = (lease.identity, lease.revoked_at)
            while len(self._finished) > 4096:
                self._finished.popitem(last=False)
            for watch_id in rotation.awaiting:
                watch = self.watches.get(watch_id)
                if watch is not None:
                    watch.pending.discard(rotation)
        lease.wake()

    def rotate(self, old: Lease, new: Lease, revoke_at: datetime, *, immediate: bool) -> Rotation:
        """Move every stream of `old` to `new`; each gets a `CredentialRotation`.
        `immediate`: old is already gone, nobody needs to acknowledge."""
        old.retired = True
        self._unshare(old)
        rotation = Rotation(id=uuid.uuid4().hex, old=old, new=new, revoke_at=revoke_at)
        credential = new.credential()
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
                CredentialRotation(watch.id, credential, rotation.id, old.lease_id, revoke_at)
            )
        old.rotation = rotation
        self.rotations[rotation.id] = rotation
        new.unheld_since = None
        new.wake()
        return rotation

    def end_streams(self, lease: Lease, error: LatchkeyError, now: datetime) -> None:
        """The lease is gone and no replacement came in time: end its streams with `error`
        (they reconnect and ask again) rather than leave them open with no credential."""
        for watch in list(lease.streams):
            watch.end(error)
            self.close_watch(watch, now)

    def _unshare(self, lease: Lease) -> None:
        if self._shared.get(lease.key) is lease:
            del self._shared[lease.key]
