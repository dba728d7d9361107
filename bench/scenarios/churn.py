"""Propagation under churn (part of figure group 3, run by the propagation scenario).

With the gateway's shipped Consul protection (a 100 ms minimum interval between a watch's
re-reads, one request budget for Consul), keys change twice a second for 30 s (10 s QUICK):

- one prefix, 100 SDK subscribers: PUT -> callback latency p50/p99/max over every delivery;
- 100 prefixes churning at once, one subscriber each (200 changes/s in all).

Also per case: changes lost in the final state (subscribers whose last callback is not the
last value written; must be 0), intermediate changes not delivered on their own (coalesced into
a later one: allowed, never expected at this rate), and the gateway's requests to Consul per
second during the churn against its request budget.
"""

from __future__ import annotations

import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

from bench.report import Figure, compared, percentile
from bench.scenarios import Context
from bench.scenarios.propagation import GROUP, _put
from bench.subscribers import Subscribers, split

PERIOD = 0.5
TARGET_P99_MS = 250.0
BUDGET_RATE = "latchkey_consul_budget_rate"
BUDGET_REQUESTS = "latchkey_consul_budget_requests_total"
BUDGET_WAITS = "latchkey_consul_budget_waits_total"


def run(ctx: Context, subs: Subscribers) -> list[Figure]:
    duration = 10.0 if ctx.quick else 30.0
    return _case(ctx, subs, "c1", 100, 1, duration) + _case(ctx, subs, "c100", 100, 100, duration)


def _case(
    ctx: Context, subs: Subscribers, name: str, n_subs: int, n_prefixes: int, duration: float
) -> list[Figure]:
    stack = ctx.stack
    parent = f"bench/churn/{name}/"
    prefixes = [f"{parent}p{j}/" for j in range(n_prefixes)]
    for prefix in prefixes:
        _put(stack.consul_http, prefix + "k", "0")
    assigned = [prefixes[i % n_prefixes] for i in range(n_subs)]
    per_worker = split(assigned, subs.count)
    expected = [Counter(mine) for mine in per_worker]
    subs.call(
        "sdk_config", [{"prefixes": mine} for mine in per_worker],
        addr=stack.gateway_addr, token=stack.token,
    )  # fmt: skip
    rounds = int(duration / PERIOD)
    put_at: dict[int, float] = {}  # value -> when its PUT was sent
    writes: dict[int, str] = {}  # value -> prefix

    def write(value: int, prefix: str) -> None:
        put_at[value] = time.monotonic()
        _put(stack.consul_http, prefix + "k", str(value))

    requests_before = stack.metric_sum(BUDGET_REQUESTS)
    waits_before = stack.metric_sum(BUDGET_WAITS)
    started = time.monotonic()
    with ThreadPoolExecutor(max_workers=8) as pool:
        for n in range(1, rounds + 1):
            time.sleep(max(0.0, started + (n - 1) * PERIOD - time.monotonic()))
            batch = []
            for j, prefix in enumerate(prefixes):
                value = n * 1000 + j  # unique per (round, prefix)
                writes[value] = prefix
                batch.append(pool.submit(write, value, prefix))
            for done in batch:
                done.result()
    churned = time.monotonic() - started
    requests = stack.metric_sum(BUDGET_REQUESTS) - requests_before
    waits = stack.metric_sum(BUDGET_WAITS) - waits_before
    budget = stack.metric_sum(BUDGET_RATE)

    last = {prefix: rounds * 1000 + j for j, prefix in enumerate(prefixes)}
    lost = 0
    for prefix, value in last.items():  # the final state: every subscriber has the last value
        got = subs.call(
            "wait_round", [{"expected": e[prefix]} for e in expected], round_id=value, wait=10.0
        )
        lost += sum(max(0, e[prefix] - g["got"]) for e, g in zip(expected, got, strict=True))
    collected = subs.call("collect")
    subs.call("close")
    latencies: list[float] = []
    delivered: Counter[int] = Counter()
    for reply in collected:
        for value, times in reply["receipts"].items():
            v = int(value)
            if v in put_at:
                delivered[v] += len(times)
                latencies.extend(t - put_at[v] for t in times)
    per_value = {prefix: n_subs // n_prefixes for prefix in prefixes}
    coalesced = sum(max(0, per_value[p] - delivered[v]) for v, p in writes.items()) - lost
    label = f"{n_subs} subs / {n_prefixes} prefix{'es' if n_prefixes > 1 else ''}, 2 changes/s"
    ms = 1000.0
    p99 = percentile(latencies, 99) * ms
    note = (
        f"{len(writes)} changes in {churned:.1f} s, {len(latencies)} deliveries, "
        f"{coalesced} coalesced into a later change"
    )
    rate = requests / churned
    return [
        Figure(
            f"churn p50 ({label})", percentile(latencies, 50) * ms, "ms", group=GROUP, note=note
        ),
        Figure(
            f"churn p99 ({label})", p99, "ms", group=GROUP,
            # The bar is for one key changed twice a second; for 100 prefixes at once
            # the bar is the budget (below).
            target=f"<= {TARGET_P99_MS:g} ms" if n_prefixes == 1 else None,
            met=p99 <= TARGET_P99_MS if n_prefixes == 1 else None,
        ),
        Figure(f"churn max ({label})", max(latencies, default=0.0) * ms, "ms", group=GROUP),
        Figure(
            f"churn lost in the final state ({label})", float(lost), "subscribers", group=GROUP,
            target="0", met=lost == 0,
        ),
        compared(
            f"churn Consul requests/s ({label})", rate, "req/s", "request budget", budget,
            group=GROUP, target="<= budget", met=rate <= budget,
            note=f"{requests:.0f} requests, {waits:.0f} waited for a token",
        ),
    ]  # fmt: skip
