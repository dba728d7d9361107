"""Building the grpc.aio server: servicers, the interceptor, health and reflection."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection
from openfeature.schemas.protobuf.flagd.sync.v1 import sync_pb2, sync_pb2_grpc

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
from latchkey_server.access.audit import AuditLog
from latchkey_server.access.authn import Authenticator
from latchkey_server.access.gate import AccessGate
from latchkey_server.access.ratelimit import RateLimiter
from latchkey_server.errors import InvalidArgument
from latchkey_server.observability.telemetry import Telemetry
from latchkey_server.observability.tracing import Tracing
from latchkey_server.transport.config import ConfigServicer, ConfigSource
from latchkey_server.transport.discovery import (
    DiscoveryServicer,
    DiscoverySource,
    RegistrationSource,
)
from latchkey_server.transport.flagsync import FlagSyncServicer
from latchkey_server.transport.flow import FlowLimits
from latchkey_server.transport.gateway import GatewayServicer, UpstreamHealth
from latchkey_server.transport.interceptor import GatewayInterceptor
from latchkey_server.transport.secrets import (
    LeaseSource,
    SecretSource,
    SecretsServicer,
    SecretWatchSource,
)
from latchkey_server.transport.tls import ServerTls, TlsFiles

SECRETS_SERVICE = secrets_pb2.DESCRIPTOR.services_by_name["Secrets"].full_name
CONFIG_SERVICE = config_pb2.DESCRIPTOR.services_by_name["Config"].full_name
DISCOVERY_SERVICE = discovery_pb2.DESCRIPTOR.services_by_name["Discovery"].full_name
GATEWAY_SERVICE = gateway_pb2.DESCRIPTOR.services_by_name["Gateway"].full_name
FLAG_SYNC_SERVICE = sync_pb2.DESCRIPTOR.services_by_name["FlagSyncService"].full_name
SERVICE_NAMES = (
    SECRETS_SERVICE, CONFIG_SERVICE, DISCOVERY_SERVICE, GATEWAY_SERVICE, FLAG_SYNC_SERVICE,
)  # fmt: skip

# Message size limits, keepalive, and room for a reconnect storm (the default
# max_pending_requests drops bursts of ~1,000 new calls). SO_REUSEPORT is off: a second gateway
# binding the same address must fail, not silently answer part of the connections.
GRPC_OPTIONS = (
    ("grpc.so_reuseport", 0),
    ("grpc.max_receive_message_length", 1 << 20),
    ("grpc.max_send_message_length", 16 << 20),
    ("grpc.keepalive_time_ms", 30_000),
    ("grpc.keepalive_timeout_ms", 10_000),
    ("grpc.http2.min_ping_interval_without_data_ms", 10_000),
    ("grpc.max_concurrent_streams", 100_000),
    ("grpc.server.max_pending_requests", 100_000),
    ("grpc.server.max_pending_requests_hard_limit", 200_000),
)


@dataclass(frozen=True)
class TlsMaterial:
    """PEM bytes for the server's TLS; with `client_ca`, clients must present certificates."""

    certificate_chain: bytes
    private_key: bytes = dataclasses.field(repr=False)
    client_ca: bytes | None = None
    require_client_cert: bool = True


@dataclass(frozen=True)
class GrpcConfig:
    """What the gRPC endpoint is built from."""

    listen: str
    """host:port to bind (port 0 picks a free one)."""
    tls: TlsMaterial | None = None
    """None serves plaintext."""
    kv_mount: str = "secret"
    """Default KV v2 mount for GetSecret when the request names none."""
    flow: FlowLimits = dataclasses.field(default_factory=FlowLimits)
    """Bounds on what streams may keep queued (transport/flow.py)."""
    stream_ttl: float = 30.0
    """TTL of the check a Discovery.Register stream keeps passing."""
    tls_files: TlsFiles | None = None
    """Where `tls` was read from: re-read on `reload_tls()` (certificate rotation)."""


@dataclass(frozen=True)
class Sources:
    """What the servicers read from (the brokers)."""

    secrets: SecretSource
    leases: LeaseSource
    config: ConfigSource
    discovery: DiscoverySource
    upstreams: Sequence[UpstreamHealth]
    secret_watches: SecretWatchSource | None = None
    registrations: RegistrationSource | None = None


class GrpcServer:
    """The gateway's gRPC endpoint, with health reporting for orderly shutdown."""

    def __init__(
        self,
        config: GrpcConfig,
        sources: Sources,
        authn: Authenticator,
        gate: AccessGate,
        *,
        started_at: datetime,
        audit: AuditLog | None = None,
        limiter: RateLimiter | None = None,
        telemetry: Telemetry | None = None,
        tracing: Tracing | None = None,
    ) -> None:
        self.config = config
        kv_mount = config.kv_mount
        self._health = health.aio.HealthServicer()
        interceptor = GatewayInterceptor(
            authn, audit=audit, limiter=limiter, telemetry=telemetry, flow=config.flow,
            tracing=tracing,
        )  # fmt: skip
        self._interceptor = interceptor
        self._tls_reloads = telemetry.tls_reloads if telemetry is not None else None
        self.tls: ServerTls | None = None
        """The dynamic TLS credentials once bound (None: plaintext)."""
        server = grpc.aio.server(interceptors=[interceptor], options=GRPC_OPTIONS)
        secrets_pb2_grpc.add_SecretsServicer_to_server(
            SecretsServicer(
                sources.secrets,
                sources.leases,
                gate,
                kv_mount=kv_mount,
                watches=sources.secret_watches,
            ),
            server,
        )
        config_pb2_grpc.add_ConfigServicer_to_server(ConfigServicer(sources.config, gate), server)
        sync_pb2_grpc.add_FlagSyncServiceServicer_to_server(
            FlagSyncServicer(sources.config, gate), server
        )
        discovery_pb2_grpc.add_DiscoveryServicer_to_server(
            DiscoveryServicer(
                sources.discovery, gate, sources.registrations, stream_ttl=config.stream_ttl
            ),
            server,
        )
        gateway_pb2_grpc.add_GatewayServicer_to_server(
            GatewayServicer(sources.upstreams, started_at, gate), server
        )
        health_pb2_grpc.add_HealthServicer_to_server(self._health, server)
        reflection.enable_server_reflection(
            (*SERVICE_NAMES, health.SERVICE_NAME, reflection.SERVICE_NAME), server
        )
        self._server = server

    async def start(self) -> int:
        """Bind the configured address with its TLS, start, report SERVING; return the port.

        Raises InvalidArgument when the address cannot be bound (in use, not local, bad form).
        """
        listen, tls = self.config.listen, self.config.tls
        try:
            port = self._bind(listen, tls)
        except RuntimeError as exc:  # grpc raises RuntimeError("Failed to bind to address ...")
            raise InvalidArgument(_bind_error(listen)) from exc
        if port == 0:
            raise InvalidArgument(_bind_error(listen))
        await self._server.start()
        for name in ("", *SERVICE_NAMES):
            await self._health.set(name, health_pb2.HealthCheckResponse.SERVING)
        return port

    def _bind(self, listen: str, tls: TlsMaterial | None) -> int:
        if tls is None:
            port = self._server.add_insecure_port(listen)
        else:
            self.tls = ServerTls(
                tls.certificate_chain,
                tls.private_key,
                tls.client_ca,
                require_client_cert=tls.require_client_cert,
                files=self.config.tls_files,
                reloads=self._tls_reloads,
            )
            port = self._server.add_secure_port(listen, self.tls.credentials())
        return port

    async def set_serving(self, service: str, serving: bool) -> None:
        status = health_pb2.HealthCheckResponse
        await self._health.set(service, status.SERVING if serving else status.NOT_SERVING)

    async def not_serving(self) -> None:
        """Report NOT_SERVING for every service (and ignore later changes): shutdown has begun."""
        await self._health.enter_graceful_shutdown()

    async def stop(self, grace: float) -> None:
        """Report NOT_SERVING, refuse new calls, give in-flight calls `grace` seconds."""
        await self._health.enter_graceful_shutdown()
        self._interceptor.stopping = True
        await self._server.stop(grace)


def _bind_error(listen: str) -> str:
    return (
        f"cannot listen on {listen}: the address is in use (another latchkey gateway or "
        "another program holds it) or is not a local address; choose another `listen`"
    )
