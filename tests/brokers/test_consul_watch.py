"""The blocking-query loop's rules, driven by a scripted fetch (no Consul, no real waiting)."""

from __future__ import annotations

import asyncio
import itertools
from typing import Any

import pytest

from latchkey_server.backoff import Backoff
from latchkey_server.brokers.consul_watch import ConsulWatch, WatchSettings, next_index
from latchkey_server.errors import LatchkeyError, Unavailable
from latchkey_server.upstreams.consul_port import Saturated

FAST = WatchSettings(wait=55.0, min_interval=0.0, dither=0.0, backoff_base=0.001)


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
        self.responses: list[tuple[int, str, bool]] = []
        self.reachability: list[bool] = []

    def on_response(self, index: int, payload: str, reset: bool) -> None:
        self.responses.append((index, payload, reset))

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
    assert [r[2] for r in owner.responses] == [False, False, True, False, False]


async def test_index_below_one_is_treated_as_one() -> None:
    fetch, owner = await run_script([(0, "a")])
    assert [c[0] for c in fetch.calls] == [None, 1]
    assert owner.responses[0][0] == 1


async def test_every_answer_goes_to_the_owner_which_compares() -> None:
    # The loop keeps no copy: "returned" vs "changed" is decided once, by the owner.
    _, owner = await run_script([(10, "a"), (11, "a"), (12, "b"), (13, "b")])
    assert [(r[0], r[1]) for r in owner.responses] == [(10, "a"), (11, "a"), (12, "b"), (13, "b")]


async def test_errors_back_off_with_jitter_and_report_reachability_once() -> None:
    delays: list[float] = []

    async def record_sleep(delay: float) -> None:
        delays.append(delay)

    backoff = Backoff(0.5, 2.0, draw=lambda: 1.0)  # the jitter's upper bound, no sleeping
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
    assert [r[1] for r in owner.responses] == ["a", "a", "b"]
    assert backoff.failures == 0


async def test_unexpected_exceptions_do_not_kill_the_loop() -> None:
    async def no_sleep(delay: float) -> None:
        return None

    _, owner = await run_script([KeyError("bug"), (3, "a")], sleep=no_sleep)
    assert owner.reachability == [False, True]
    assert owner.responses == [(3, "a", False)]


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    async def sleep(self, delay: float) -> None:
        self.sleeps.append(delay)
        self.now += delay


async def test_requests_of_one_watch_start_at_least_the_minimum_interval_apart() -> None:
    clock = FakeClock()
    settings = WatchSettings(wait=55.0, min_interval=0.1, dither=0.005)
    # Each answer arrives 0.03 s after its request (a key churning faster than the interval).
    script: list[Any] = [(n, str(n)) for n in range(1, 6)]
    fetch = ScriptedFetch(script)
    starts: list[float] = []

    async def timed(index: int | None, wait: float | None) -> tuple[int, str]:
        starts.append(clock.now)
        if fetch.script:
            clock.now += 0.03
        return await fetch(index, wait)

    owner = Recorder()
    watch: ConsulWatch[str] = ConsulWatch(
        "paced", timed, owner, settings, sleep=clock.sleep, clock=clock, rng=lambda lo, hi: hi
    )
    watch.start()
    try:
        async with asyncio.timeout(10):
            await fetch.parked.wait()
    finally:
        await watch.stop()
    gaps = [b - a for a, b in itertools.pairwise(starts)]
    assert len(gaps) == 5
    # The first blocking query follows the plain read at once (it parks unless something
    # changed); every request after a blocking query waits for the rest of 0.1 s + dither.
    assert gaps[0] == pytest.approx(0.03)
    assert all(gap >= 0.1 for gap in gaps[1:])  # the floor, on the fake clock
    assert clock.sleeps == [pytest.approx(0.075)] * 4
    # Nothing is dropped: every answer reached the owner, the last one included.
    assert [r[1] for r in owner.responses] == ["1", "2", "3", "4", "5"]


async def test_a_quiet_watch_never_waits() -> None:
    clock = FakeClock()
    settings = WatchSettings(wait=55.0, min_interval=0.1, dither=0.005)
    fetch = ScriptedFetch([(1, "a"), (2, "b")])

    async def slow(index: int | None, wait: float | None) -> tuple[int, str]:
        if fetch.script:
            clock.now += 30.0  # a blocking query that returned after a long wait
        return await fetch(index, wait)

    watch: ConsulWatch[str] = ConsulWatch(
        "quiet", slow, Recorder(), settings, sleep=clock.sleep, clock=clock
    )
    watch.start()
    try:
        async with asyncio.timeout(10):
            await fetch.parked.wait()
    finally:
        await watch.stop()
    assert clock.sleeps == []
    assert watch.requests == 3


async def test_saturation_is_retried_without_touching_reachability() -> None:
    async def no_sleep(delay: float) -> None:
        return None

    busy = Saturated("the gateway's Consul connection budget is saturated", retry_after=1.0)
    fetch, owner = await run_script([busy, busy, (3, "a")], sleep=no_sleep)
    assert owner.reachability == [True]  # never reported down: Consul was not even asked
    assert [c[0] for c in fetch.calls] == [None, None, None, 3]
    assert owner.responses == [(3, "a", False)]
