"""Figures 8 and 9: latchkey next to the peer a Vault user would deploy instead.

8. OpenBao Proxy (`bao proxy` with `cache {}` and AppRole auto-auth, bench/proxy.py) in front of
   the same OpenBao, every side driven by the same C load generator (h2load, bench/h2load.py):
   the gateway's GetDatabaseCredentials (gRPC over HTTP/2) against the proxy's cached
   `database/creds` read (HTTP/1.1), and GetSecret against the proxy's KV v2 read (which the
   proxy forwards: it caches leased secrets only). For scale, the same load on the bare
   grpc.aio echo (the floor) and on OpenBao itself. Each gateway run is checked against the
   gateway's own counters: h2load sees HTTP statuses, not gRPC ones.
9. The SDK's in-process reads of what it already holds (a watched credential, a bound config
   model, a picked instance) in nanoseconds, against one hop to the proxy (its cached read's
   p50 at concurrency 1).
"""

from __future__ import annotations

import time
from collections.abc import Callable

import pydantic

from bench import floor, h2load
from bench.h2load import H2Target
from bench.load import LoadResult
from bench.proxy import OpenBaoProxy, get_json
from bench.report import Figure, compared
from bench.scenarios import Context
from bench.scenarios.hop import READS, SECRET_PATH, response_size
from latchkey_server.devstack.seed import DEMO_CONFIG_PREFIX, DEMO_ROLE, DEMO_SERVICE

GROUP_PROXY = "8. vs OpenBao Proxy (h2load for every side)"
GROUP_SDK = "9. SDK in-process reads vs a proxy hop"
PROXY_TARGET = 1.0
SDK_TARGET = 0.01  # at most 1/100 of a proxy hop
CREDS_PATH = f"/v1/database/creds/{DEMO_ROLE}"
KV_PATH = f"/v1/secret/data/{SECRET_PATH}"
VAULT_REQUEST = (("x-vault-request", "true"),)


def run(ctx: Context) -> list[Figure]:
    stack = ctx.stack
    binary = h2load.ensure()
    proxy = OpenBaoProxy(stack.workdir / "openbao-proxy", stack.vault_addr, stack.root_token)
    try:
        proxy.start(KV_PATH)
        cached = _check_cached(proxy)
        figures, hop_ns = _proxy_figures(ctx, binary, proxy, cached)
    finally:
        proxy.stop()
    return figures + _sdk_figures(ctx, hop_ns)


def _check_cached(proxy: OpenBaoProxy) -> str:
    """Two reads of `database/creds` through the proxy return one lease: it serves from cache."""
    leases = []
    for _ in range(2):
        status, body = get_json(proxy.url + CREDS_PATH)
        if status != 200:
            raise RuntimeError(f"OpenBao Proxy answered {status} for {CREDS_PATH}")
        leases.append(body.get("lease_id"))
    if leases[0] != leases[1]:
        raise RuntimeError("OpenBao Proxy did not serve database/creds from its cache")
    return "proxy cache hit (one lease for every read)"


def _proxy_figures(
    ctx: Context, binary: str, proxy: OpenBaoProxy, cached: str
) -> tuple[list[Figure], float]:
    stack = ctx.stack
    levels = (1, 16) if ctx.quick else (1, 16, 64)
    vault_kv = H2Target.http(
        f"{stack.vault_addr}{KV_PATH}",
        (*VAULT_REQUEST, ("x-vault-token", stack.root_token)),
    )
    pairs = {
        "GetDatabaseCredentials": (H2Target.http(proxy.url + CREDS_PATH, VAULT_REQUEST), cached),
        "GetSecret": (
            H2Target.http(proxy.url + KV_PATH, VAULT_REQUEST),
            "the proxy forwards KV reads (it caches leased secrets only)",
        ),
    }
    figures: list[Figure] = []
    hop_ns = 0.0
    for read, (proxy_target, proxy_note) in pairs.items():
        method, payload = READS[read]
        size = response_size(ctx, method, payload)
        gateway = H2Target.grpc(stack.gateway_addr, method, payload, stack.metadata)
        echo = H2Target.grpc(stack.floor_addr, floor.ECHO, floor.echo_request(size, len(payload)))
        for concurrency in levels:

            def drive(target: H2Target, c: int = concurrency) -> LoadResult:
                return h2load.run(binary, target, c, duration=ctx.duration, warmup=ctx.warmup)

            before = stack.metric_sum("latchkey_rpc_requests_total", method=read, code="OK")
            gw = drive(gateway)
            served = stack.metric_sum("latchkey_rpc_requests_total", method=read, code="OK")
            peer = drive(proxy_target)
            bare = drive(echo)
            name = f"{read} c={concurrency}"
            note = f"{proxy_note}; gateway OK {served - before:.0f} for {gw.calls} measured"
            if served - before < gw.calls:
                note += " (MISSING: some calls were not OK)"
            figures += _compare(name, gw, "OpenBao Proxy", peer, note=note, target=True)
            figures.append(_throughput(f"{name} echo floor", bare, "OpenBao Proxy", peer))
            if read == "GetSecret":
                direct = drive(vault_kv)
                figures.append(_throughput(f"{name} OpenBao direct", direct, "OpenBao Proxy", peer))
            if read == "GetDatabaseCredentials" and concurrency == 1:
                hop_ns = peer.p50_ms * 1e6
    return figures, hop_ns


def _compare(
    name: str, gw: LoadResult, peer_name: str, peer: LoadResult, *, note: str, target: bool
) -> list[Figure]:
    ratio = gw.rps / peer.rps if peer.rps else 0.0
    errors = f"errors {gw.errors}/{peer.errors}" + (
        f" ({gw.first_error or peer.first_error})" if gw.errors or peer.errors else ""
    )
    return [
        compared(
            f"{name} throughput", gw.rps, "req/s", f"{peer_name} throughput", peer.rps,
            group=GROUP_PROXY, target=f">= {PROXY_TARGET}x" if target else None,
            met=(ratio >= PROXY_TARGET) if target else None, note=f"{note}; {errors}",
        ),
        compared(f"{name} p50", gw.p50_ms, "ms", f"{peer_name} p50", peer.p50_ms, group=GROUP_PROXY),  # noqa: E501
        compared(f"{name} p99", gw.p99_ms, "ms", f"{peer_name} p99", peer.p99_ms, group=GROUP_PROXY),  # noqa: E501
    ]  # fmt: skip


def _throughput(name: str, result: LoadResult, peer_name: str, peer: LoadResult) -> Figure:
    return compared(
        f"{name} throughput", result.rps, "req/s", f"{peer_name} throughput", peer.rps,
        group=GROUP_PROXY, note=f"p50 {result.p50_ms:.3f} ms; errors {result.errors}",
    )  # fmt: skip


# ---------------------------------------------------------------- 9. in-process reads


class DemoConfig(pydantic.BaseModel):
    """The demo keys under config/demo/ (devstack/seed.py)."""

    log_level: str
    max_connections: int
    feature_flags: dict[str, bool]


def _ns_per_call(read: Callable[[], object], calls: int) -> float:
    """Best of five timed loops of `calls` reads, in nanoseconds per read."""
    best = float("inf")
    for _ in range(5):
        started = time.perf_counter_ns()
        for _ in range(calls):
            read()
        best = min(best, (time.perf_counter_ns() - started) / calls)
    return best


def _sdk_figures(ctx: Context, hop_ns: float) -> list[Figure]:
    import latchkey

    stack = ctx.stack
    calls = 20_000 if ctx.quick else 200_000
    figures: list[Figure] = []
    with latchkey.Client(stack.gateway_addr, token=stack.token, insecure=True) as client:
        creds = client.database.watch(DEMO_ROLE)
        config = client.config.bind(DEMO_CONFIG_PREFIX, DemoConfig)
        _first_pick(lambda: client.services.pick(DEMO_SERVICE))
        reads: dict[str, Callable[[], object]] = {
            "held credential (RotatingCredentials.current)": lambda: creds.current,
            "bound config field (config.bind model)": lambda: config.max_connections,
            "picked instance (services.pick)": lambda: client.services.pick(DEMO_SERVICE),
        }
        for name, read in reads.items():
            ns = _ns_per_call(read, calls)
            figure = compared(
                f"SDK {name}", ns, "ns", "OpenBao Proxy cached read p50 (c=1)", hop_ns,
                group=GROUP_SDK, target=f"<= {SDK_TARGET}x",
                met=(ns <= SDK_TARGET * hop_ns) if hop_ns else None,
                note=f"{hop_ns / ns:,.0f}x faster than the hop" if ns else "",
            )  # fmt: skip
            figures.append(figure)
        creds.close()
    return figures


def _first_pick(pick: Callable[[], object], timeout: float = 30.0) -> None:
    """The first pick starts the watch; wait (bounded) until it has an instance set."""
    import latchkey

    deadline = time.monotonic() + timeout
    while True:
        try:
            pick()
            return
        except latchkey.NoHealthyInstances:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)  # polling the SDK's own state (no event to wait on)
