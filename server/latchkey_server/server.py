"""Startup, serving and graceful shutdown of the gateway. Reads no argv and no environment.

Shutdown order: health NOT_SERVING → stop accepting calls (in-flight calls get a grace period)
→ close the brokers (revoking every held lease) → close the upstream adapters.
"""

from __future__ import annotations

import asyncio
import logging
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
from latchkey_server.access.authz import AllowAuthenticated, Authorizer
from latchkey_server.access.tokens import TokenStore
from latchkey_server.brokers.config_hub import ConfigHub
from latchkey_server.brokers.discovery_hub import DiscoveryHub
from latchkey_server.brokers.leases import LeaseBroker
from latchkey_server.brokers.secret_cache import SecretCache
from latchkey_server.config import Settings
from latchkey_server.errors import InvalidArgument
from latchkey_server.models import utcnow
from latchkey_server.transport.config import ConfigServicer
from latchkey_server.transport.discovery import DiscoveryServicer
from latchkey_server.transport.gateway import GatewayServicer
from latchkey_server.transport.interceptor import GatewayInterceptor
from latchkey_server.transport.secrets import SecretsServicer
from latchkey_server.upstreams.consul import ConsulAdapter
from latchkey_server.upstreams.consul import ConsulSettings as ConsulAdapterSettings
from latchkey_server.upstreams.consul_watch import WatchSettings
from latchkey_server.upstreams.vault import VaultAdapter

log = logging.getLogger("latchkey.server")

SERVICE_NAMES = (
    secrets_pb2.DESCRIPTOR.services_by_name["Secrets"].full_name,
    config_pb2.DESCRIPTOR.services_by_name["Config"].full_name,
    discovery_pb2.DESCRIPTOR.services_by_name["Discovery"].full_name,
    gateway_pb2.DESCRIPTOR.services_by_name["Gateway"].full_name,
)

# gRPC server options: message size limits, keepalive, and enough pending-call room for a
# reconnect storm (the default max_pending_requests drops bursts of ~1,000 new calls).
GRPC_OPTIONS = (
    ("grpc.max_receive_message_length", 1 << 20),
    ("grpc.max_send_message_length", 16 << 20),
    ("grpc.keepalive_time_ms", 30_000),
    ("grpc.keepalive_timeout_ms", 10_000),
    ("grpc.http2.min_ping_interval_without_data_ms", 10_000),
    ("grpc.max_concurrent_streams", 100_000),
)


@dataclass
class Components:
    """Everything the gateway runs, built from settings (tests may inspect these)."""

    vault: VaultAdapter
    consul: ConsulAdapter
    leases: LeaseBroker
    secrets: SecretCache
    config: ConfigHub
    discovery: DiscoveryHub


def build_components(settings: Settings) -> Components:
    vault = VaultAdapter.from_settings(settings.vault)
    consul = ConsulAdapter(
        ConsulAdapterSettings(
            address=settings.consul.addr,
            token=settings.consul.token.get_secret_value() if settings.consul.token else None,
            connection_budget=settings.consul.max_connections,
            default_wait=settings.consul.wait,
        )
    )
    watch = WatchSettings(
        wait=settings.consul.wait,
        burst=settings.consul.rate_burst,
        refill_interval=settings.consul.rate_refill,
    )
    return Components(
        vault=vault,
        consul=consul,
        leases=LeaseBroker(
            vault,
            mount=settings.vault.database_mount,
            renew_fraction=settings.leases.renew_fraction,
            grace=settings.leases.grace,
            unheld_grace=settings.leases.unheld_grace,
            heartbeat_interval=settings.heartbeat_interval,
        ),
        secrets=SecretCache(
            vault,
            ttl=settings.cache.secret_ttl,
            negative_ttl=settings.cache.negative_ttl,
            stale_limit=settings.cache.stale_limit,
        ),
        config=ConfigHub(
            consul,
            heartbeat_interval=settings.heartbeat_interval,
            stale_limit=settings.cache.stale_limit,
            watch_settings=watch,
        ),
        discovery=DiscoveryHub(
            consul,
            heartbeat_interval=settings.heartbeat_interval,
            stale_limit=settings.cache.stale_limit,
            watch_settings=watch,
        ),
    )


class Gateway:
    """One gateway process: gRPC server, brokers and upstream adapters."""

    def __init__(self, settings: Settings, *, authorizer: Authorizer | None = None) -> None:
        self.settings = settings
        self.started_at: datetime = utcnow()
        self.components = build_components(settings)
        if settings.auth.tokens_file is None:
            raise InvalidArgument(
                "auth.tokens_file is required (see `latchkey-server token create`)"
            )
        self._authn = Authenticator(TokenStore.load(settings.auth.tokens_file))
        self._authz: Authorizer = authorizer or AllowAuthenticated()
        self._health = health.aio.HealthServicer()
        self._server: grpc.aio.Server | None = None
        self.port: int = 0
        self._stopped = asyncio.Event()

    async def start(self) -> int:
        """Start upstreams, brokers and the gRPC server; return the bound port."""
        c = self.components
        for broker in (c.leases, c.config, c.discovery):
            await broker.start()
        server = grpc.aio.server(
            interceptors=[GatewayInterceptor(self._authn)], options=GRPC_OPTIONS
        )
        secrets_pb2_grpc.add_SecretsServicer_to_server(
            SecretsServicer(
                c.secrets, c.leases, self._authz, kv_mount=self.settings.vault.kv_mount
            ),
            server,
        )
        config_pb2_grpc.add_ConfigServicer_to_server(ConfigServicer(c.config, self._authz), server)
        discovery_pb2_grpc.add_DiscoveryServicer_to_server(
            DiscoveryServicer(c.discovery, self._authz), server
        )
        gateway_pb2_grpc.add_GatewayServicer_to_server(
            GatewayServicer([c.vault, c.consul], self.started_at), server
        )
        health_pb2_grpc.add_HealthServicer_to_server(self._health, server)
        reflection.enable_server_reflection(
            (*SERVICE_NAMES, health.SERVICE_NAME, reflection.SERVICE_NAME), server
        )
        self.port = server.add_insecure_port(self.settings.listen)
        if self.port == 0:
            raise InvalidArgument(f"cannot listen on {self.settings.listen}")
        await server.start()
        self._server = server
        for name in ("", *SERVICE_NAMES):
            await self._health.set(name, health_pb2.HealthCheckResponse.SERVING)
        log.info(
            "latchkey gateway listening on %s",
            self.settings.listen.rsplit(":", 1)[0] + f":{self.port}",
        )
        return self.port

    async def stop(self) -> None:
        """Graceful shutdown in the documented order. Safe to call twice."""
        if self._stopped.is_set():
            return
        self._stopped.set()
        await self._health.enter_graceful_shutdown()
        if self._server is not None:
            await self._server.stop(self.settings.shutdown_grace)
        c = self.components
        await c.config.close()
        await c.discovery.close()
        await c.leases.close()
        await c.consul.close()
        await c.vault.close()
        log.info("latchkey gateway stopped")

    async def wait_stopped(self) -> None:
        await self._stopped.wait()
