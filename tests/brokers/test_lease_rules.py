"""The lease broker's timing rules, as plain functions of a lease's times and `now` (no asyncio,
no clock, no randomness: jitter draws are arguments). The broker's behaviour built on them is
covered end to end in test_leases.py and test_leases_e2e.py."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from latchkey_server.brokers import _lease_rules as r
from latchkey_server.brokers._lease_rules import LeaseRules, LeaseTimes

T0 = datetime(2026, 1, 1, tzinfo=UTC)
RULES = LeaseRules(grace=30.0, retry_delay=0.5, retry_max_delay=10.0)


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def lease(ttl: float = 60.0, max_ttl: float | None = 300.0, renewable: bool = True) -> LeaseTimes:
    return r.issued(T0, ttl, renewable=renewable, max_ttl=max_ttl)


# ---------------------------------------------------------------- what Vault granted


def test_an_issued_lease_lives_from_the_request_not_from_the_answer() -> None:
    times = lease(ttl=60, max_ttl=300)
    assert times.expires_at == at(60)
    assert times.role_deadline == times.deadline == at(300)
    assert times.end == at(60)


def test_unknown_max_ttl_is_vaults_system_maximum() -> None:
    assert lease(max_ttl=None).deadline == at(768 * 3600)


def test_a_capped_issue_or_renewal_is_the_max_ttl() -> None:
    capped = r.issued(T0, 40, renewable=True, max_ttl=300, warnings=["TTL value is capped"])
    assert capped.deadline == at(40)
    times = lease(ttl=60, max_ttl=300)
    renewed = r.renewed(times, at(250), 50, wanted=None, renewable=True)
    assert renewed.expires_at == at(300)
    assert renewed.deadline == at(300), "granted 50 s of the 60 asked: Vault capped it"
    full = r.renewed(times, at(100), 60, wanted=None, renewable=True)
    assert full.expires_at == at(160)
    assert full.deadline == at(300)
    asked = r.renewed(times, at(100), 100, wanted=100, renewable=True)
    assert asked.deadline == at(300), "an increment granted in full is not capped"


@pytest.mark.parametrize(
    ("granted", "wanted", "warnings", "is_capped"),
    [
        (60, 60, (), False),
        (59.6, 60, (), False),  # Vault rounds to whole seconds
        (59, 60, (), True),
        (60, 60, ("TTL value is capped",), True),
        (60, 60, ("exceeded the effective max_ttl",), True),
    ],
)
def test_capped(granted: float, wanted: float, warnings: tuple[str, ...], is_capped: bool) -> None:
    assert r.capped(granted, wanted, warnings) is is_capped


def test_a_refused_renewal_ends_the_lease_at_its_expiry() -> None:
    times = r.refused_renewal(lease(ttl=60, max_ttl=300))
    assert not times.renewable
    assert times.deadline == at(60)


def test_the_owning_tokens_end_is_the_deadline_when_it_comes_first() -> None:
    times = lease(ttl=60, max_ttl=300)
    assert r.with_token_deadline(times, at(500)).deadline == at(300)
    soon = r.with_token_deadline(times, at(100))
    assert soon.deadline == at(100)
    assert r.with_token_deadline(soon, at(100)) is soon
    gone = r.with_token_deadline(times, at(-1))
    assert r.expired(gone, T0), "a token that already died took its leases with it"


# ---------------------------------------------------------------- when to act


@pytest.mark.parametrize(("spread", "expected"), [(0.0, 40.0), (1.0, 44.0), (-1.0, 36.0)])
def test_renewal_at_two_thirds_with_jitter(spread: float, expected: float) -> None:
    assert r.renew_at(T0, 60, RULES, spread) == at(expected)


def test_jitter_is_capped_at_half() -> None:
    wild = LeaseRules(jitter=3.0)
    assert r.renew_at(T0, 60, wild, -1.0) == at(20)


def test_the_default_rotation_window_leaves_time_to_switch() -> None:
    assert r.rotate_window(lease(ttl=3600, max_ttl=86400), RULES) == 1200, "a third of the TTL"
    assert r.rotate_window(lease(ttl=60, max_ttl=300), RULES) == 30, "at least 30 s"
    assert r.rotate_window(lease(ttl=3, max_ttl=6), RULES) == 3, "half the life when shorter"
    assert r.rotate_window(lease(ttl=1, max_ttl=2), LeaseRules(min_rotate_before=2)) == 1
    fixed = LeaseRules(rotate_before=50)
    assert r.rotate_window(lease(ttl=60, max_ttl=300), fixed) == 50
    assert r.rotate_at(lease(ttl=60, max_ttl=300), fixed) == at(250)
    assert r.rotate_window(lease(ttl=3, max_ttl=6), LeaseRules(rotate_before=5)) == 3


def test_a_lease_is_shared_until_it_is_about_to_rotate_or_expire() -> None:
    times = lease(ttl=60, max_ttl=300)
    assert r.shareable(times, at(10), RULES)
    assert not r.shareable(times, at(59.5), RULES), "within the expiry margin"
    assert not r.shareable(times, at(271), RULES), "inside the rotation window"


def test_the_previous_lease_is_revoked_after_the_grace_but_before_it_ends() -> None:
    times = lease(ttl=60, max_ttl=300)
    assert r.revoke_at(times, at(100), RULES) == at(130)
    assert r.revoke_at(times, at(290), RULES) == at(299), "a second before the max TTL"
    assert r.revoke_at(times, at(300), RULES) == at(300), "never in the past"
    short = lease(ttl=3, max_ttl=6)
    assert r.revoke_at(short, at(4), RULES) == at(5.7)
    ending = r.refused_renewal(times)
    assert r.revoke_at(ending, at(10), RULES) == at(40)
    assert r.revoke_at(ending, at(50), RULES) == at(59)


def test_the_overlap_needs_a_renewal_only_if_the_lease_ends_first() -> None:
    times = lease(ttl=60, max_ttl=300)
    assert r.needs_overlap_renewal(times, at(70))
    assert not r.needs_overlap_renewal(times, at(50))
    assert not r.needs_overlap_renewal(r.refused_renewal(times), at(70))


def test_an_unheld_lease_is_revoked_after_the_unheld_grace() -> None:
    assert r.unheld_revoke_at(at(10), LeaseRules(unheld_grace=5)) == at(15)


# ---------------------------------------------------------------- retrying


@pytest.mark.parametrize(
    ("failures", "draw", "expected"),
    [(1, 1.0, 0.5), (1, 0.5, 0.25), (2, 1.0, 1.0), (3, 1.0, 2.0), (10, 1.0, 10.0), (10, 0.0, 0.0)],
)
def test_backoff(failures: int, draw: float, expected: float) -> None:
    assert r.backoff(failures, RULES, draw) == expected


def test_a_failed_renewal_is_retried_at_least_three_times_before_expiry() -> None:
    times = lease(ttl=60, max_ttl=300)
    assert r.renew_retry_at(times, at(40), 1, RULES, 1.0) == at(40.5)
    assert r.renew_retry_at(times, at(40), 10, RULES, 1.0) == at(40 + 20 / 3)
    assert r.renew_retry_at(times, at(60), 10, RULES, 1.0) == at(60.05)
