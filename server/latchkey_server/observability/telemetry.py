"""Counters and histograms the rooms increment. One instance per gateway (its own registry)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram

RPC_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)


class Telemetry:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry(auto_describe=True)
        r = self.registry
        self.rpc_requests = Counter(
            "latchkey_rpc_requests", "RPCs handled, by method and gRPC status code.",
            ["method", "code"], registry=r,
        )  # fmt: skip
        self.rpc_duration = Histogram(
            "latchkey_rpc_duration_seconds", "Latency of unary RPCs (streams: until they end).",
            ["method", "type"], buckets=RPC_BUCKETS, registry=r,
        )  # fmt: skip
        self.lease_renewals = Counter(
            "latchkey_lease_renewals", "Background lease renewals, by outcome (ok|error|refused).",
            ["outcome"], registry=r,
        )  # fmt: skip
        self.lease_rotations = Counter(
            "latchkey_lease_rotations", "Credential rotations, by outcome (ok|error).",
            ["outcome"], registry=r,
        )  # fmt: skip
        self.secret_cache = Counter(
            "latchkey_secret_cache_requests",
            "KV secret cache lookups, by result (hit|miss|negative|stale).",
            ["result"], registry=r,
        )  # fmt: skip
        self.tls_reloads = Counter(
            "latchkey_tls_reloads", "TLS certificate reloads, by result (ok|rejected).",
            ["result"], registry=r,
        )  # fmt: skip
        for result in ("ok", "rejected"):
            self.tls_reloads.labels(result)
        self.upstream_requests = Counter(
            "latchkey_upstream_requests", "Requests to upstreams, by upstream, operation, outcome.",
            ["upstream", "op", "outcome"], registry=r,
        )  # fmt: skip
