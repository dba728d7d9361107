"""The lease broker's timing rules: pure functions of a lease's times and `now`.

Expiries travel in one clock and one form: every instant is an aware UTC datetime on the
broker's clock, every span a number of seconds. Vault's answers (relative TTLs) are turned into
instants here, once, against the moment the request was sent (`started`), so a lease is never
believed to live longer than Vault granted.

Nothing here awaits, keeps state or draws random numbers: a rule that jitters takes the draw
as an argument (`spread` in [-1, 1], `draw` in [0, 1]), so every rule is a plain function that
tests can call with any snapshot and any `now`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta

from latchkey_server.backoff import delay as backoff_delay
from latchkey_server.upstreams.vault_port import VAULT_SYSTEM_MAX_TTL


@dataclass(frozen=True, slots=True)
class LeaseRules:
    """The broker's timing settings."""

    renew_fraction: float = 2 / 3
    """Renew a streamed lease when this fraction of the TTL Vault granted has passed."""
    jitter: float = 0.1
    """Random spread (fraction, at most 0.5) applied to renewal times."""
    rotate_before: float | None = None
    """Seconds before a lease's hard deadline to rotate it; None: see `rotate_window`."""
    min_rotate_before: float = 2.0
    grace: float = 30.0
    """Longest time the previous lease of a rotation outlives the rotation unacknowledged."""
    unheld_grace: float = 5.0
    """Revoke a lease this long after its last holder let go."""
    retry_delay: float = 0.5
    """First backoff delay of failed renewals, rotations and revocations."""
    retry_max_delay: float = 10.0
    """Longest backoff delay."""


@dataclass(frozen=True, slots=True)
class LeaseTimes:
    """A snapshot of one lease's clock."""

    issued_at: datetime
    """When the gateway asked Vault for the credential (Vault's own issue time is later)."""
    ttl: float
    """The TTL Vault granted at issue (the role's default TTL unless capped)."""
    expires_at: datetime
    """When the lease ends unless renewed."""
    role_deadline: datetime
    """Issue time + the effective max TTL: Vault renews no further (lowered when a renewal is
    capped or refused)."""
    renewable: bool
    token_deadline: datetime | None = None
    """When the Vault token that created the lease dies (Vault revokes the lease then)."""

    @property
    def deadline(self) -> datetime:
        """The hard end: the role's max TTL or the owning token's end, whichever is first."""
        if self.token_deadline is not None and self.token_deadline < self.role_deadline:
            return self.token_deadline
        return self.role_deadline

    @property
    def end(self) -> datetime:
        """When the credential stops working if nothing more is done: its expiry, or the
        deadline when that comes first."""
        return min(self.expires_at, self.deadline)


MIN_OVERLAP = 30.0
"""The shortest default rotation window (seconds before the deadline), lifetime permitting."""


def later(at: datetime, seconds: float) -> datetime:
    return at + timedelta(seconds=seconds)


def seconds_between(start: datetime, end: datetime) -> float:
    return (end - start).total_seconds()


# ---------------------------------------------------------------- what Vault granted


def capped(granted: float, wanted: float, warnings: Sequence[str]) -> bool:
    """Vault granted less than asked (it truncates to whole seconds) or said it capped the TTL."""
    return granted + 0.5 < wanted or any("capped" in w or "max_ttl" in w for w in warnings)


def issued(
    started: datetime,
    granted: float,
    *,
    renewable: bool,
    max_ttl: float | None,
    warnings: Sequence[str] = (),
    token_deadline: datetime | None = None,
) -> LeaseTimes:
    """The times of a lease Vault just issued (`max_ttl`: the role's effective max TTL, None
    when unknown: Vault's system maximum until a capped renewal says otherwise)."""
    expires = later(started, granted)
    role_deadline = later(started, max_ttl or VAULT_SYSTEM_MAX_TTL)
    if capped(granted, granted, warnings):
        role_deadline = min(role_deadline, expires)
    return LeaseTimes(
        issued_at=started,
        ttl=granted,
        expires_at=expires,
        role_deadline=role_deadline,
        renewable=renewable,
        token_deadline=token_deadline,
    )


def renewed(
    times: LeaseTimes,
    started: datetime,
    granted: float,
    *,
    wanted: float | None,
    renewable: bool,
    warnings: Sequence[str] = (),
) -> LeaseTimes:
    """The times after a renewal sent at `started` granted `granted` seconds (`wanted`: the
    increment asked for, None: the lease's own TTL). A capped or final renewal is the max TTL."""
    expires = later(started, granted)
    role_deadline = times.role_deadline
    if capped(granted, wanted or times.ttl, warnings) or not renewable:
        role_deadline = min(role_deadline, expires)
    return replace(times, expires_at=expires, role_deadline=role_deadline, renewable=renewable)


def refused_renewal(times: LeaseTimes) -> LeaseTimes:
    """Vault will not renew the lease any more: it ends at its current expiry."""
    return replace(times, renewable=False, role_deadline=min(times.role_deadline, times.expires_at))


def with_token_deadline(times: LeaseTimes, when: datetime | None) -> LeaseTimes:
    """The owning token dies at `when` (None: not known to die)."""
    return times if when == times.token_deadline else replace(times, token_deadline=when)


# ---------------------------------------------------------------- when to act


def renew_at(started: datetime, granted: float, rules: LeaseRules, spread: float) -> datetime:
    """When to renew a lease granted `granted` seconds at `started` (`spread` in [-1, 1])."""
    jitter = max(0.0, min(rules.jitter, 0.5))
    return later(started, max(0.0, rules.renew_fraction * granted * (1.0 + jitter * spread)))


def rotate_window(times: LeaseTimes, rules: LeaseRules) -> float:
    """Seconds before the deadline at which a streamed lease is rotated: `rotate_before`; by
    default a third of the lease's TTL, at least `min_rotate_before` and at least
    `MIN_OVERLAP` (30 s). Never more than half the lease's lifetime, so a short-lived lease (a
    6 s max TTL) rotates at half-life: its streams get the most time a lifetime allows to
    receive and switch to the new credential, even from a Vault that takes seconds to answer
    (busy revoking a burst of expired leases), before Vault revokes the old one at its max TTL.
    """
    lifetime = seconds_between(times.issued_at, times.deadline)
    wanted = rules.rotate_before
    if wanted is None:
        wanted = max(rules.min_rotate_before, times.ttl / 3, MIN_OVERLAP)
    return max(0.0, min(wanted, lifetime / 2))


def rotate_at(times: LeaseTimes, rules: LeaseRules) -> datetime:
    return later(times.deadline, -rotate_window(times, rules))


def revoke_margin(times: LeaseTimes) -> float:
    """How long before a credential's end the gateway revokes it itself (Vault revokes at the
    end exactly, sometimes a little early: never promise a client the last moment)."""
    return min(1.0, 0.1 * times.ttl)


def shareable(times: LeaseTimes, now: datetime, rules: LeaseRules) -> bool:
    """Whether a new holder may be given this lease (it is not about to rotate or expire)."""
    if now >= rotate_at(times, rules):
        return False
    return seconds_between(now, times.expires_at) > revoke_margin(times)


def revoke_at(times: LeaseTimes, now: datetime, rules: LeaseRules) -> datetime:
    """When the previous lease of a rotation made at `now` is revoked unless every stream
    acknowledged sooner: after the grace, and before the credential ends."""
    end = times.deadline if times.renewable else times.expires_at
    return max(now, min(later(now, rules.grace), later(end, -revoke_margin(times))))


def expired(times: LeaseTimes, now: datetime) -> bool:
    return now >= times.end


def needs_overlap_renewal(times: LeaseTimes, until: datetime) -> bool:
    """A rotated lease must be renewed to keep working through the promised overlap."""
    return times.renewable and times.expires_at < until


def unheld_revoke_at(unheld_since: datetime, rules: LeaseRules) -> datetime:
    return later(unheld_since, rules.unheld_grace)


# ---------------------------------------------------------------- retrying


def backoff(failures: int, rules: LeaseRules, draw: float) -> float:
    """The server's one backoff (`latchkey_server.backoff`) with the lease retry settings."""
    return backoff_delay(failures, rules.retry_delay, rules.retry_max_delay, draw)


def renew_retry_at(
    times: LeaseTimes, now: datetime, failures: int, rules: LeaseRules, draw: float
) -> datetime:
    """When to retry a renewal that failed for the `failures`-th time: backoff, but at least
    three tries before the lease expires."""
    remaining = seconds_between(now, times.expires_at)
    return later(now, min(backoff(failures, rules, draw), max(0.05, remaining / 3)))
