"""The one request budget for Consul: the token bucket, fair turns between targets, and the
adapter spending it on every request against the real agent."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator

import pytest

from latchkey_server.devstack.consul import ConsulAgent
from latchkey_server.errors import Unavailable
from latchkey_server.tokenbucket import TokenBucket
from latchkey_server.upstreams._consul_budget import RequestBudget
from latchkey_server.upstreams.consul import ConsulAdapter, ConsulConfig, ConsulSaturated


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_token_bucket_allows_a_burst_then_refills() -> None:
    clock = FakeClock()
    bucket = TokenBucket(rate=2.0, burst=3, clock=clock)
    assert [bucket.try_take() for _ in range(3)] == [0.0, 0.0, 0.0]
    assert bucket.try_take() == pytest.approx(0.5)  # nothing taken: one token every 0.5 s
    clock.now += 0.25
    assert bucket.try_take() == pytest.approx(0.25)
    clock.now += 0.25
    assert bucket.try_take() == 0.0
    clock.now += 60.0  # a long idle refills to the burst, not beyond
    assert bucket.tokens == pytest.approx(3.0)
    with pytest.raises(ValueError, match="rate > 0"):
        TokenBucket(rate=0.0, burst=1)


async def test_waiting_flows_are_served_round_robin() -> None:
    budget = RequestBudget(rate=100.0, burst=1)
    order: list[str] = []

    async def request(flow: str, label: str) -> None:
        await budget.acquire(flow)
        order.append(label)

    await request("hot", "hot-0")  # the burst: no wait
    hot = [asyncio.create_task(request("hot", f"hot-{n}")) for n in range(1, 9)]
    await asyncio.sleep(0)  # the hot requests are queued first ...
    cold = [asyncio.create_task(request(f"cold-{n}", f"cold-{n}")) for n in range(3)]
    await asyncio.wait_for(asyncio.gather(*hot, *cold), 10)
    # ... yet each waiting flow gets one turn per round: the cold ones right after one hot
    # request, not after all eight.
    assert order[:7] == ["hot-0", "hot-1", "cold-0", "cold-1", "cold-2", "hot-2", "hot-3"]
    stats = budget.stats()
    assert (stats.granted, stats.waited, stats.waiting) == (12, 11, 0)
    assert stats.wait_seconds > 0


async def test_a_request_that_gives_up_costs_no_token() -> None:
    budget = RequestBudget(rate=20.0, burst=1)
    await budget.acquire("a")
    gone = asyncio.create_task(budget.acquire("a"))
    await asyncio.sleep(0)
    assert budget.waiting == 1
    gone.cancel()
    await asyncio.wait_for(budget.acquire("b"), 10)  # the next token goes to the live waiter
    assert budget.stats().granted == 2


async def test_no_budget_never_waits() -> None:
    budget = RequestBudget(rate=0.0, burst=1)
    for _ in range(1000):
        await budget.acquire("x")
    assert (budget.stats().granted, budget.stats().waited) == (1000, 0)


# ---------------------------------------------------------------- the adapter, real agent


@pytest.fixture
async def slow_adapter(consul_agent: ConsulAgent) -> AsyncIterator[ConsulAdapter]:
    """A budget of 20 requests/s with no burst, so that requests queue for tokens."""
    config = ConsulConfig(address=consul_agent.http_addr, requests_per_second=20.0, burst=1)
    async with ConsulAdapter(config) as a:
        yield a


async def test_one_hot_prefix_cannot_starve_another(slow_adapter: ConsulAdapter) -> None:
    run = uuid.uuid4().hex
    hot, cold = f"t/budget/{run}/hot/", f"t/budget/{run}/cold/"
    done: list[str] = []

    async def read(prefix: str, label: str) -> None:
        await slow_adapter.kv_list(prefix)
        done.append(label)

    hot_reads = [asyncio.create_task(read(hot, "hot")) for _ in range(10)]
    await asyncio.sleep(0)
    cold_read = asyncio.create_task(read(cold, "cold"))
    await asyncio.wait_for(asyncio.gather(*hot_reads, cold_read), 30)
    assert done.index("cold") <= 3  # served in the first round of waiting flows, not last
    budget = slow_adapter.budget()
    assert budget.granted == 11
    assert budget.waited == 10
    assert budget.wait_seconds > 0
    assert slow_adapter.requests_started["kv_list"] == 11


async def test_a_plain_read_that_waits_too_long_for_a_token_is_saturated(
    consul_agent: ConsulAgent,
) -> None:
    config = ConsulConfig(
        address=consul_agent.http_addr, requests_per_second=0.1, burst=1, pool_timeout=0.2
    )
    async with ConsulAdapter(config) as a:
        await a.kv_list("t/budget/")
        with pytest.raises(ConsulSaturated) as info:
            await a.kv_list("t/budget/")
        assert isinstance(info.value, Unavailable)
        assert "request budget" in info.value.message
        assert a.reachable  # Consul was never asked: nothing about its reachability
        assert a.requests_started["kv_list"] == 1
        assert a.budget().waiting == 0
