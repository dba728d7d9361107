"""Gauges read from the live components at scrape time (no bookkeeping on the hot path)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from datetime import datetime
from typing import Protocol

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from latchkey_server.models import LeaseInfo, utcnow


class _Upstream(Protocol):
    @property
    def name(self) -> str: ...
    @property
    def reachable(self) -> bool: ...
    @property
    def last_contact(self) -> datetime | None: ...


class _Budget(Protocol):
    @property
    def rate(self) -> float: ...
    @property
    def burst(self) -> float: ...
    @property
    def tokens(self) -> float: ...
    @property
    def waiting(self) -> int: ...
    @property
    def granted(self) -> int: ...
    @property
    def waited(self) -> int: ...
    @property
    def wait_seconds(self) -> float: ...


class _ConsulPool(Protocol):
    @property
    def connection_budget(self) -> int: ...
    def budget(self) -> _Budget: ...
    @property
    def connections_open(self) -> int: ...
    @property
    def requests_in_flight(self) -> int: ...


class GatewayCollector(Collector):
    def __init__(
        self,
        *,
        upstreams: Sequence[_Upstream],
        consul: _ConsulPool,
        leases: Callable[[], list[LeaseInfo]],
        streams_by_kind: Callable[[], Counter[str]],
        upstream_watches: Callable[[], dict[str, int]],
        audit_failures: Callable[[], int],
    ) -> None:
        self._upstreams = upstreams
        self._consul = consul
        self._leases = leases
        self._streams = streams_by_kind
        self._watches = upstream_watches
        self._audit_failures = audit_failures

    def collect(self) -> Iterator[Metric]:
        now = utcnow()
        streams = GaugeMetricFamily(
            "latchkey_active_streams", "Open client streams, by kind.", labels=["kind"]
        )
        counts = self._streams()
        for kind in ("database", "config", "service", "secret"):
            streams.add_metric([kind], counts.get(kind, 0))
        yield streams

        leases = self._leases()
        yield GaugeMetricFamily("latchkey_active_leases", "Vault leases held.", value=len(leases))
        to_max = GaugeMetricFamily(
            "latchkey_lease_seconds_to_max_ttl",
            "Seconds until the held lease nearest its max TTL can no longer be renewed "
            "(absent when no lease is held).",
        )
        if leases:
            nearest = min(lease.max_ttl_deadline for lease in leases)
            to_max.add_metric([], (nearest - now).total_seconds())
        yield to_max

        reachable = GaugeMetricFamily(
            "latchkey_upstream_up", "1 if the upstream answered the last request.",
            labels=["upstream"],
        )  # fmt: skip
        age = GaugeMetricFamily(
            "latchkey_upstream_last_contact_age_seconds",
            "Seconds since the upstream last answered (freshness).",
            labels=["upstream"],
        )
        for upstream in self._upstreams:
            reachable.add_metric([upstream.name], 1.0 if upstream.reachable else 0.0)
            contact = upstream.last_contact
            if contact is not None:
                age.add_metric([upstream.name], (now - contact).total_seconds())
        yield reachable
        yield age

        yield GaugeMetricFamily(
            "latchkey_consul_connections_in_use", "Connections to the Consul agent in use.",
            value=self._consul.connections_open,
        )  # fmt: skip
        yield GaugeMetricFamily(
            "latchkey_consul_requests_in_flight", "Requests to Consul in flight.",
            value=self._consul.requests_in_flight,
        )  # fmt: skip
        yield GaugeMetricFamily(
            "latchkey_consul_connection_budget", "The hard cap on connections to Consul.",
            value=self._consul.connection_budget,
        )  # fmt: skip
        yield from _budget_metrics(self._consul.budget())
        watches = GaugeMetricFamily(
            "latchkey_upstream_watches",
            "Upstream watches, by kind; *_overflow ones share one blocking query per kind, "
            "*_read ones were started by one-shot reads (both are counted in their kind too).",
            labels=["kind"],
        )
        for kind, value in self._watches().items():
            watches.add_metric([kind], value)
        yield watches
        yield CounterMetricFamily(
            "latchkey_audit_failures", "Audit log writes that failed.",
            value=self._audit_failures(),
        )  # fmt: skip


def _budget_metrics(budget: _Budget) -> Iterator[Metric]:
    """The Consul request budget: one token bucket for every request to the agent."""
    yield GaugeMetricFamily(
        "latchkey_consul_budget_rate",
        "Requests per second the Consul request budget allows (0: no budget).",
        value=budget.rate,
    )
    yield GaugeMetricFamily(
        "latchkey_consul_budget_burst", "Requests the budget lets through back to back.",
        value=budget.burst,
    )  # fmt: skip
    yield GaugeMetricFamily(
        "latchkey_consul_budget_tokens", "Tokens of the Consul request budget available now.",
        value=budget.tokens,
    )  # fmt: skip
    yield GaugeMetricFamily(
        "latchkey_consul_budget_waiting", "Requests to Consul queued for a budget token now.",
        value=budget.waiting,
    )  # fmt: skip
    yield CounterMetricFamily(
        "latchkey_consul_budget_requests", "Requests to Consul that took a budget token.",
        value=budget.granted,
    )  # fmt: skip
    yield CounterMetricFamily(
        "latchkey_consul_budget_waits", "Requests to Consul that queued for their token.",
        value=budget.waited,
    )  # fmt: skip
    yield CounterMetricFamily(
        "latchkey_consul_budget_wait_seconds",
        "Seconds requests to Consul spent queued for budget tokens, all together.",
        value=budget.wait_seconds,
    )
