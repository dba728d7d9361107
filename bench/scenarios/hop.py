"""Figures 1 and 2: the cost of the hop through the gateway.

1. Cached GetSecret and GetDatabaseCredentials through the gateway versus the floor (a bare
   grpc.aio echo with the same request and response sizes), at concurrency 1, 16 and 64.
2. The same reads done the way an app would without latchkey (hvac against OpenBao,
   python-consul2 against Consul).
Every gateway measurement is followed at once by its peer's, from the same client processes.
"""

from __future__ import annotations

import grpc

from bench import floor, raw
from bench.load import LoadResult, Target
from bench.report import Figure, compared
from bench.scenarios import Context
from latchkey.v1 import config_pb2, discovery_pb2, secrets_pb2
from latchkey_server.devstack.seed import DEMO_CONFIG_PREFIX, DEMO_ROLE, DEMO_SERVICE

GROUP_HOP = "1. hop cost vs bare grpc.aio echo"
GROUP_DIRECT = "2. vs direct upstream use"
THROUGHPUT_TARGET = 0.8
P50_TARGET = 1.3

SECRET_PATH = "demo/app"
CONFIG_KEY = DEMO_CONFIG_PREFIX + "log_level"

READS: dict[str, tuple[str, bytes]] = {
    "GetSecret": (
        "/latchkey.v1.Secrets/GetSecret",
        secrets_pb2.GetSecretRequest(mount="secret", path=SECRET_PATH).SerializeToString(),
    ),
    "GetDatabaseCredentials": (
        "/latchkey.v1.Secrets/GetDatabaseCredentials",
        secrets_pb2.GetDatabaseCredentialsRequest(role=DEMO_ROLE).SerializeToString(),
    ),
    "Config.Get": (
        "/latchkey.v1.Config/Get",
        config_pb2.GetConfigRequest(key=CONFIG_KEY).SerializeToString(),
    ),
    "Discovery.GetHealthyInstances": (
        "/latchkey.v1.Discovery/GetHealthyInstances",
        discovery_pb2.GetHealthyInstancesRequest(service=DEMO_SERVICE).SerializeToString(),
    ),
}


def response_size(ctx: Context, method: str, payload: bytes) -> int:
    """The serialized size of the gateway's reply (this call also warms its cache)."""
    with grpc.insecure_channel(ctx.stack.gateway_addr) as channel:
        reply = raw.unary(channel, method)(payload, metadata=ctx.stack.metadata, timeout=30)
    return len(reply)


def _pair(
    name: str, gw: LoadResult, peer_name: str, peer: LoadResult, group: str, *,
    targets: bool, note: str = "",
) -> list[Figure]:  # fmt: skip
    errors = f"errors {gw.errors}/{peer.errors}" + (
        f" ({gw.first_error or peer.first_error})" if gw.errors or peer.errors else ""
    )
    tput_ratio = gw.rps / peer.rps if peer.rps else 0.0
    p50_ratio = gw.p50_ms / peer.p50_ms if peer.p50_ms else float("inf")
    return [
        compared(
            f"{name} throughput", gw.rps, "req/s", f"{peer_name} throughput", peer.rps, group=group,
            target=f">= {THROUGHPUT_TARGET}x" if targets else None,
            met=(tput_ratio >= THROUGHPUT_TARGET) if targets else None,
            note=f"{note} {errors}".strip(),
        ),
        compared(
            f"{name} p50", gw.p50_ms, "ms", f"{peer_name} p50", peer.p50_ms, group=group,
            target=f"<= {P50_TARGET}x" if targets else None,
            met=(p50_ratio <= P50_TARGET) if targets else None,
        ),
        compared(f"{name} p99", gw.p99_ms, "ms", f"{peer_name} p99", peer.p99_ms, group=group),
    ]  # fmt: skip


def run(ctx: Context) -> list[Figure]:
    stack = ctx.stack
    figures: list[Figure] = []
    gateway_at: dict[tuple[str, int], LoadResult] = {}
    for read in ("GetSecret", "GetDatabaseCredentials"):
        method, payload = READS[read]
        size = response_size(ctx, method, payload)
        gw_target = Target("grpc", stack.gateway_addr, method, payload, stack.metadata)
        floor_target = Target(
            "grpc", stack.floor_addr, floor.ECHO, floor.echo_request(size, len(payload))
        )
        for concurrency in (1, 16, 64):
            kwargs = {"duration": ctx.duration, "warmup": ctx.warmup, "channels_per_process": 2}
            gw = ctx.load.run(gw_target, concurrency, **kwargs)  # type: ignore[arg-type]
            bare = ctx.load.run(floor_target, concurrency, **kwargs)  # type: ignore[arg-type]
            gateway_at[(read, concurrency)] = gw
            figures += _pair(
                f"{read} c={concurrency}", gw, "echo", bare, GROUP_HOP, targets=True,
                note=f"reply {size} B",
            )  # fmt: skip
    figures += _direct(ctx, gateway_at)
    return figures


def _direct(ctx: Context, gateway_at: dict[tuple[str, int], LoadResult]) -> list[Figure]:
    stack = ctx.stack
    assert stack.consul is not None
    root = {"token": stack.root_token}
    peers: dict[str, tuple[str, Target]] = {
        "GetSecret": ("hvac kv read", Target("hvac_kv", stack.vault_addr, args={**root, "path": SECRET_PATH})),  # noqa: E501
        "Config.Get": ("consul kv.get", Target("consul_kv", stack.consul_http, args={"key": CONFIG_KEY})),  # noqa: E501
        "Discovery.GetHealthyInstances": (
            "consul health.service",
            Target("consul_health", stack.consul_http, args={"service": DEMO_SERVICE}),
        ),
        "GetDatabaseCredentials": (
            "hvac database creds",
            Target("hvac_creds", stack.vault_addr, args={**root, "role": DEMO_ROLE}),
        ),
    }  # fmt: skip
    figures: list[Figure] = []
    levels = (1,) if ctx.quick else (1, 16)
    for read, (peer_name, peer_target) in peers.items():
        method, payload = READS[read]
        gw_target = Target("grpc", stack.gateway_addr, method, payload, stack.metadata)
        for concurrency in levels:
            if read == "GetDatabaseCredentials" and concurrency > 1:
                continue  # every direct call creates a PostgreSQL role: keep it to one caller
            gw = gateway_at.get((read, concurrency)) or ctx.load.run(
                gw_target, concurrency, duration=ctx.duration, warmup=ctx.warmup
            )
            direct = ctx.load.run(
                peer_target, concurrency, duration=ctx.duration, warmup=ctx.warmup
            )
            note = (
                "direct: a new lease per call, as an app without latchkey"
                if read == "GetDatabaseCredentials"
                else ""
            )
            figures += _pair(
                f"{read} c={concurrency} vs direct", gw, peer_name, direct, GROUP_DIRECT,
                targets=False, note=note,
            )  # fmt: skip
    return figures
