"""Building the grpc.aio server: servicers, the interceptor, health and reflection."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from latchkey.v1 import (
    config_pb2,
    config_pb2_grpc,
    discovery_pb2,
    discovery_pb2_grpc,
    gateway_pb2,
    gateway_pb2_grpc,
    secrets_pb2,
    secrets_pb2_grpc,
)
from latchkey_server.access.authn import Authenticator
from latchkey_server.access.authz import Authorizer
from latchkey_server.transport.config import ConfigServicer, ConfigSource
from latchkey_server.transport.discovery import DiscoveryServicer, DiscoverySource
from latchkey_server.transport.gateway import GatewayServicer, UpstreamHealth
from latchkey_server.transport.interceptor import GatewayInterceptor
from latchkey_server.transport.secrets import LeaseSource, SecretSource, SecretsServicer

SERVICE_NAMES = (
    secrets_pb2.DESCRIPTOR.services_by_name["Secrets"].full_name,
    config_pb2.DESCRIPTOR.services_by_name["Config"].full_name,
    discovery_pb2.DESCRIPTOR.services_by_name["Discovery"].full_name,
    gateway_pb2.DESCRIPTOR.services_by_name["Gateway"].full_name,
)

# Message size limits, keepalive, and room for a reconnect storm (the default
# max_pending_requests drops bursts of ~1,000 new calls).
GRPC_OPTIONS = (
    ("grpc.max_receive_message_length", 1 << 20),
    ("grpc.max_send_message_length", 16 << 20),
    ("grpc.keepalive_time_ms", 30_000),
    ("grpc.keepalive_timeout_ms", 10_000),
    ("grpc.http2.min_ping_interval_without_data_ms", 10_000),
    ("grpc.max_concurrent_streams", 100_000),
)


@dataclass(frozen=True)
class Sources:
    """What the servicers read from (the brokers)."""

    secrets: SecretSource
    leases: LeaseSource
    config: ConfigSource
    discovery: DiscoverySource
    upstreams: Sequence[UpstreamHealth]


class GrpcServer:
    """The gateway's gRPC endpoint, with health reporting for orderly shutdown."""

    def __init__(
        self,
        sources: Sources,
        authn: Authenticator,
        authz: Authorizer,
        *,
        kv_mount: str,
        started_at: datetime,
    ) -> None:
        self._health = health.aio.HealthServicer()
        server = grpc.aio.server(interceptors=[GatewayInterceptor(authn)], options=GRPC_OPTIONS)
        secrets_pb2_grpc.add_SecretsServicer_to_server(
            SecretsServicer(sources.secrets, sources.leases, authz, kv_mount=kv_mount), server
        )
        config_pb2_grpc.add_ConfigServicer_to_server(ConfigServicer(sources.config, authz), server)
        discovery_pb2_grpc.add_DiscoveryServicer_to_server(
            DiscoveryServicer(sources.discovery, authz), server
        )
        gateway_pb2_grpc.add_GatewayServicer_to_server(
            GatewayServicer(sources.upstreams, started_at), server
        )
        health_pb2_grpc.add_HealthServicer_to_server(self._health, server)
        reflection.enable_server_reflection(
            (*SERVICE_NAMES, health.SERVICE_NAME, reflection.SERVICE_NAME), server
        )
        self._server = server

    async def start(self, listen: str) -> int:
        """Bind `listen` (host:port, port 0 picks one), start, report SERVING; return the port."""
        port = self._server.add_insecure_port(listen)
        if port == 0:
            raise OSError(f"cannot listen on {listen}")
        await self._server.start()
        for name in ("", *SERVICE_NAMES):
            await self._health.set(name, health_pb2.HealthCheckResponse.SERVING)
        return port

    async def stop(self, grace: float) -> None:
        """Report NOT_SERVING, refuse new calls, give in-flight calls `grace` seconds."""
        await self._health.enter_graceful_shutdown()
        await self._server.stop(grace)
