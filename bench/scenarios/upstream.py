"""Figures 4 and 7: what the gateway asks of Consul.

4. 1,000 subscribers (QUICK: 100) to config prefixes plus as many to services, over 1, 10 and
   100 distinct prefixes and services: peak concurrent Consul connections and upstream requests
   per minute under a steady change rate, versus per-app watchers (one blocking query per
   subscriber, modelled: they would need more connections than Consul's 200 per client IP).
7. 1,000 distinct services (QUICK: 100) watched by 10,000 subscribers (QUICK: 1,000): peak
   connections against the budget, and how many streams got their first event.
"""

from __future__ import annotations

import threading
import time
import urllib.request

from bench.report import Figure, compared
from bench.scenarios import Context
from bench.stack import Stack
from bench.subscribers import Subscribers, split
from latchkey.v1 import config_pb2, discovery_pb2

GROUP_AMP = "4. upstream amplification"
GROUP_SCALE = "7. scale"
CONFIG_WATCH = "/latchkey.v1.Config/Watch"
SERVICE_WATCH = "/latchkey.v1.Discovery/Watch"
CHANGES_PER_SECOND = 5.0
CONSUL_WAIT = 55.0


class Sampler(threading.Thread):
    """Scrapes the gateway's Consul gauges every 0.25 s; keeps the peaks."""

    def __init__(self, stack: Stack) -> None:
        super().__init__(daemon=True)
        self.stack = stack
        self.stop_at = time.monotonic() + 900
        self.peak_connections = 0.0
        self.peak_in_flight = 0.0
        self.budget = 0.0

    def run(self) -> None:
        while time.monotonic() < self.stop_at:
            try:
                m = self.stack.metrics()
            except OSError:
                time.sleep(0.25)
                continue
            self.peak_connections = max(
                self.peak_connections, m.get("latchkey_consul_connections_in_use", 0)
            )
            self.peak_in_flight = max(
                self.peak_in_flight, m.get("latchkey_consul_requests_in_flight", 0)
            )
            self.budget = m.get("latchkey_consul_connection_budget", self.budget)
            time.sleep(0.25)

    def finish(self) -> None:
        self.stop_at = 0
        self.join(timeout=5)


def _consul(stack: Stack, method: str, path: str, body: bytes | None = None) -> None:
    req = urllib.request.Request(f"http://{stack.consul_http}{path}", data=body, method=method)
    with urllib.request.urlopen(req, timeout=10) as resp:  # noqa: S310 (loopback)
        resp.read()


def register_services(stack: Stack, count: int) -> list[str]:
    """`count` services with one passing instance each (agent registration, TTL check)."""
    import json

    names = [f"bench-svc-{j}" for j in range(count)]
    for j, name in enumerate(names):
        body = {
            "Name": name, "ID": f"{name}-1", "Address": "127.0.0.1", "Port": 20000 + j,
            "Check": {"CheckID": f"{name}-ttl", "TTL": "87600h", "Status": "passing"},
        }  # fmt: skip
        _consul(stack, "PUT", "/v1/agent/service/register", json.dumps(body).encode())
    return names


def settle_watches(stack: Stack, timeout: float) -> None:
    """Wait (bounded) until the previous case's upstream watches have stopped."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not stack.metric_sum("latchkey_upstream_watches"):
            return
        time.sleep(0.25)


def consul_requests(stack: Stack) -> float:
    return stack.metric_sum("latchkey_upstream_requests_total", upstream="consul")


def _open(
    subs: Subscribers, stack: Stack, method: str, requests: list[bytes], timeout: float
) -> tuple[int, int, str]:
    replies = subs.call(
        "raw", [{"requests": mine} for mine in split(requests, subs.count)],
        addr=stack.gateway_addr, method=method, metadata=stack.metadata, channels=4,
        ready_timeout=timeout, timeout=timeout + 60,
    )  # fmt: skip
    return (
        sum(r["ready"] for r in replies),
        sum(r["errors"] for r in replies),
        next((r["first_error"] for r in replies if r["first_error"]), ""),
    )


def run(ctx: Context) -> list[Figure]:
    stack = ctx.stack
    n_subs = 100 if ctx.quick else 1000
    scale_services, scale_subs = (100, 1000) if ctx.quick else (1000, 10000)
    services = register_services(stack, scale_services)
    figures: list[Figure] = []
    subs = Subscribers(2)
    try:
        for distinct in (1, 10, 100):
            figures += _amplification(ctx, subs, n_subs, distinct, services)
        figures += _scale(ctx, subs, scale_subs, services)
    finally:
        subs.close()
    return figures


def _amplification(
    ctx: Context, subs: Subscribers, n_subs: int, distinct: int, services: list[str]
) -> list[Figure]:
    stack = ctx.stack
    prefixes = [f"bench/amp/d{distinct}/p{j}/" for j in range(distinct)]
    for prefix in prefixes:
        _consul(stack, "PUT", f"/v1/kv/{prefix}k", b"0")
    settle_watches(stack, 4.0 if ctx.quick else 15.0)
    sampler = Sampler(stack)
    sampler.start()
    cfg = [
        config_pb2.WatchConfigRequest(prefix=prefixes[i % distinct]).SerializeToString()
        for i in range(n_subs)
    ]
    svc = [
        discovery_pb2.WatchServiceRequest(service=services[i % distinct]).SerializeToString()
        for i in range(n_subs)
    ]
    ready_cfg, err_cfg, first_err = _open(subs, stack, CONFIG_WATCH, cfg, 60)
    ready_svc, err_svc, first_err2 = _open(subs, stack, SERVICE_WATCH, svc, 60)
    window = 5.0 if ctx.quick else 20.0
    before = consul_requests(stack)
    t0 = time.monotonic()
    changes = 0
    while time.monotonic() - t0 < window:
        _consul(stack, "PUT", f"/v1/kv/{prefixes[changes % distinct]}k", str(changes + 1).encode())
        changes += 1
        time.sleep(max(0.0, t0 + changes / CHANGES_PER_SECOND - time.monotonic()))
    elapsed = time.monotonic() - t0
    per_minute = (consul_requests(stack) - before) * 60.0 / elapsed
    sampler.finish()
    subs.call("close")
    watchers = 2 * n_subs
    changes_per_minute = changes * 60.0 / elapsed
    # Per-app watchers: every subscriber of a changed prefix re-reads, and every watcher's
    # blocking query returns at least once per `wait`.
    model_rpm = changes_per_minute * (n_subs / distinct) + watchers * 60.0 / CONSUL_WAIT
    budget = sampler.budget or 64
    label = f"{n_subs}+{n_subs} subs / {distinct} prefixes+{distinct} services"
    note = (
        f"streams ready {ready_cfg + ready_svc}/{watchers} (errors {err_cfg + err_svc} {first_err or first_err2}); "  # noqa: E501
        f"{changes_per_minute:.0f} KV changes/min; peak requests in flight {sampler.peak_in_flight:.0f}"  # noqa: E501
    )
    return [
        compared(
            f"consul connections, peak ({label})", sampler.peak_connections, "conns",
            "per-app watchers", float(watchers), group=GROUP_AMP, target=f"<= budget ({budget:.0f})",  # noqa: E501
            met=sampler.peak_connections <= budget, note=note,
        ),
        compared(
            f"consul requests/min ({label})", per_minute, "req/min",
            "per-app watchers (model)", model_rpm, group=GROUP_AMP,
        ),
    ]  # fmt: skip


def _scale(ctx: Context, subs: Subscribers, n_subs: int, services: list[str]) -> list[Figure]:
    stack = ctx.stack
    settle_watches(stack, 4.0 if ctx.quick else 15.0)
    sampler = Sampler(stack)
    sampler.start()
    requests = [
        discovery_pb2.WatchServiceRequest(service=services[i % len(services)]).SerializeToString()
        for i in range(n_subs)
    ]
    t0 = time.monotonic()
    ready, errors, first_error = _open(
        subs, stack, SERVICE_WATCH, requests, 30 if ctx.quick else 90
    )
    open_seconds = time.monotonic() - t0
    time.sleep(2.0 if ctx.quick else 5.0)
    sampler.finish()
    subs.call("close")
    budget = sampler.budget or 64
    label = f"{n_subs} subs / {len(services)} services"
    return [
        compared(
            f"consul connections, peak ({label})", sampler.peak_connections, "conns",
            "connection budget", budget, group=GROUP_SCALE, target="<= budget",
            met=sampler.peak_connections <= budget,
            note=f"peak requests in flight {sampler.peak_in_flight:.0f}",
        ),
        compared(
            f"streams with a first event ({label})", float(ready), "streams", "streams opened",
            float(n_subs), group=GROUP_SCALE, target="all", met=ready == n_subs,
            note=f"in {open_seconds:.1f}s; errors {errors} {first_error}".strip(),
        ),
    ]  # fmt: skip
