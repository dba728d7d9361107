"""The server's one backoff (latchkey_server.backoff): exponential, capped, full jitter."""

from __future__ import annotations

import pytest

from latchkey_server import backoff
from latchkey_server.backoff import Backoff


def test_the_ceiling_doubles_from_the_base_up_to_the_cap() -> None:
    ceilings = [backoff.ceiling(n, 0.1, 1.0) for n in range(7)]
    assert ceilings == pytest.approx([0.0, 0.1, 0.2, 0.4, 0.8, 1.0, 1.0])
    assert backoff.ceiling(10_000, 0.1, 1.0) == 1.0  # no overflow after a long outage


def test_full_jitter_spreads_a_delay_over_zero_to_the_ceiling() -> None:
    assert backoff.delay(3, 0.5, 10.0, 0.0) == 0.0
    assert backoff.delay(3, 0.5, 10.0, 0.5) == 1.0
    assert backoff.delay(3, 0.5, 10.0, 0.999) == pytest.approx(1.998)


def test_a_loop_counts_failures_draws_and_resets() -> None:
    draws = iter([0.5, 0.5, 1.0, 0.25])
    loop = Backoff(0.1, 0.3, draw=lambda: next(draws))
    assert [loop.next_delay() for _ in range(4)] == pytest.approx([0.05, 0.1, 0.3, 0.075])
    assert loop.failures == 4
    loop.reset()
    assert loop.failures == 0
    assert loop.ceiling() == 0.0
