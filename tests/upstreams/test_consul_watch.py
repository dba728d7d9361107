"""The blocking-query loop's rules, driven by a scripted fetch (no Consul, no real waiting)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from latchkey_server.errors import LatchkeyError, Unavailable
from latchkey_server.upstreams.consul_watch import (
    Backoff,
    ConsulWatch,
    Saturated,
    TokenBucket,
    WatchSettings,
    next_index,
)

FAST = WatchSettings(wait=55.0, burst=100, refill_interval=0.001, backoff_base=0.001)


class ScriptedFetch:
    """Returns scripted (index, payload) pairs or raises scripted errors, then parks forever."""

    def __init__(self, script: list[Any]) -> None:
        self.script = list(script)
        self.calls: list[tuple[int | None, float | None]] = []
        self.parked = asyncio.Event()

    async def __call__(self, index: int | None, wait: float | None) -> tuple[int, str]:
        self.calls.append((index, wait))
        if not self.script:
            self.parked.set()
            await asyncio.Event().wait()
        item = self.script.pop(0)
        if isinstance(item, BaseException):
            raise item
        return item  # type: ignore[no-any-return]


class Recorder:
    def __init__(self) -> None:
        self.responses: list[tuple[int, str, bool, bool]] = []
        self.reachability: list[bool] = []

    def on_response(self, index: int, payload: str, changed: bool, reset: bool) -> None:
        self.responses.append((index, payload, changed, reset))

    def on_reachability(self, reachable: bool, error: LatchkeyError | None) -> None:
        self.reachability.append(reachable)


async def run_script(script: list[Any], **kwargs: Any) -> tuple[ScriptedFetch, Recorder]:
    fetch, owner = ScriptedFetch(script), Recorder()
    watch: ConsulWatch[str] = ConsulWatch(
        "test", fetch, owner, kwargs.pop("settings", FAST), **kwargs
    )
    watch.start()
    try:
        async with asyncio.timeout(10):
            await fetch.parked.wait()
    finally:
        await watch.stop()
    return fetch, owner


def test_next_index_rules() -> None:
    assert next_index(0, 10) == (10, False)
    assert next_index(10, 12) == (12, False)
    assert next_index(12, 12) == (12, False)
    assert next_index(12, 5) == (0, True)  # backwards: start again from 0
    assert next_index(0, 0) == (1, False)  # below 1: use 1
    assert next_index(5, 0) == (0, True)  # 0 (as 1) is still backwards from 5


async def test_first_call_has_no_index_then_blocks_on_the_int_index() -> None:
    fetch, owner = await run_script([(10, "a"), (12, "b")])
    assert fetch.calls == [(None, None), (10, 55.0), (12, 55.0)]
    assert [r[0] for r in owner.responses] == [10, 12]


async def test_backwards_index_resets_to_a_full_read() -> None:
    fetch, owner = await run_script([(10, "a"), (12, "b"), (5, "c"), (5, "c"), (6, "d")])
    assert [c[0] for c in fetch.calls] == [None, 10, 12, None, 5, 6]
    assert [r[3] for r in owner.responses] == [False, False, True, False, False]


async def test_index_below_one_is_treated_as_one() -> None:
    fetch, owner = await run_script([(0, "a")])
    assert [c[0] for c in fetch.calls] == [None, 1]
    assert owner.responses[0][0] == 1


async def test_returned_is_not_changed() -> None:
    _, owner = await run_script([(10, "a"), (11, "a"), (12, "b"), (13, "b")])
    assert [r[2] for r in owner.responses] == [True, False, True, False]


async def test_errors_back_off_with_jitter_and_report_reachability_once() -> None:
    delays: list[float] = []

    async def record_sleep(delay: float) -> None:
        delays.append(delay)

    backoff = Backoff(0.5, 2.0, rng=lambda lo, hi: hi)  # the jitter's upper bound, no sleeping
    down = Unavailable("down", retry_after=1.0)
    fetch, owner = await run_script(
        [(10, "a"), down, down, down, down, (10, "a"), (11, "b")],
        backoff=backoff,
        sleep=record_sleep,
    )
    assert delays == [0.5, 1.0, 2.0, 2.0]  # doubles, capped
    assert owner.reachability == [True, False, True]
    # After an error the next request is a plain read (a restarted agent may have a lower index).
    assert [c[0] for c in fetch.calls] == [None, 10, None, None, None, None, 10, 11]
    assert [(r[1], r[2]) for r in owner.responses] == [("a", True), ("a", False), ("b", True)]
    assert backoff.failures == 0


async def test_unexpected_exceptions_do_not_kill_the_loop() -> None:
    async def no_sleep(delay: float) -> None:
        return None

    _, owner = await run_script([KeyError("bug"), (3, "a")], sleep=no_sleep)
    assert owner.reachability == [False, True]
    assert owner.responses == [(3, "a", True, False)]


def test_full_jitter_backoff_bounds() -> None:
    seen: list[tuple[float, float]] = []

    def rng(lo: float, hi: float) -> float:
        seen.append((lo, hi))
        return (lo + hi) / 2

    backoff = Backoff(0.1, 1.0, rng=rng)
    delays = [backoff.next_delay() for _ in range(6)]
    assert seen == [(0.0, 0.1), (0.0, 0.2), (0.0, 0.4), (0.0, 0.8), (0.0, 1.0), (0.0, 1.0)]
    assert delays == pytest.approx([0.05, 0.1, 0.2, 0.4, 0.5, 0.5])
    backoff.reset()
    assert backoff.ceiling() == 0.0


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    async def sleep(self, delay: float) -> None:
        self.sleeps.append(delay)
        self.now += delay


async def test_token_bucket_allows_a_burst_then_refills() -> None:
    clock = FakeClock()
    bucket = TokenBucket(2, 15.0, clock=clock, sleep=clock.sleep)
    await bucket.take()
    await bucket.take()
    assert clock.sleeps == []  # the happy path never sleeps
    await bucket.take()
    assert clock.sleeps == [pytest.approx(15.0)]
    clock.now += 7.5
    assert bucket.try_take() == pytest.approx(7.5)
    clock.now += 30.0  # long idle: refills to the capacity, not beyond
    assert bucket.try_take() == 0.0
    assert bucket.try_take() == 0.0
    assert bucket.try_take() > 0.0


async def test_watch_under_churn_is_rate_limited_by_its_bucket() -> None:
    clock = FakeClock()
    limiter = TokenBucket(2, 15.0, clock=clock, sleep=clock.sleep)
    await run_script([(1, "a"), (2, "b"), (3, "c"), (4, "d")], limiter=limiter)
    # Five requests (four answers and the parked one): two from the burst, three refills.
    assert clock.sleeps == [pytest.approx(15.0)] * 3


async def test_saturation_is_retried_without_touching_reachability() -> None:
    async def no_sleep(delay: float) -> None:
        return None

    busy = Saturated("the gateway's Consul connection budget is saturated", retry_after=1.0)
    fetch, owner = await run_script([busy, busy, (3, "a")], sleep=no_sleep)
    assert owner.reachability == [True]  # never reported down: Consul was not even asked
    assert [c[0] for c in fetch.calls] == [None, None, None, 3]
    assert owner.responses == [(3, "a", True, False)]
