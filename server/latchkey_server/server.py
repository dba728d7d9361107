"""Startup, serving and graceful shutdown of the gateway. Reads no argv and no environment.

Shutdown order: health NOT_SERVING → stop accepting calls (in-flight calls get a grace period)
→ close the brokers (revoking every held lease) → close the upstream adapters.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from datetime import datetime

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
from latchkey_server.transport.grpc_server import GrpcServer, Sources
from latchkey_server.upstreams.consul import ConsulAdapter
from latchkey_server.upstreams.consul import ConsulSettings as ConsulAdapterSettings
from latchkey_server.upstreams.consul_watch import WatchSettings
from latchkey_server.upstreams.vault import VaultAdapter

log = logging.getLogger("latchkey.server")


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
        if settings.auth.tokens_file is None:
            raise InvalidArgument(
                "auth.tokens_file is required (see `latchkey-server token create`)"
            )
        self._authn = Authenticator(TokenStore.load(settings.auth.tokens_file))
        self.components = build_components(settings)
        self._authz: Authorizer = authorizer or AllowAuthenticated()
        self._grpc: GrpcServer | None = None
        self.port: int = 0
        self._stopped = asyncio.Event()

    async def start(self) -> int:
        """Start brokers, then the gRPC server; return the bound port."""
        c = self.components
        for broker in (c.leases, c.config, c.discovery):
            await broker.start()
        self._grpc = GrpcServer(
            Sources(
                secrets=c.secrets,
                leases=c.leases,
                config=c.config,
                discovery=c.discovery,
                upstreams=[c.vault, c.consul],
            ),
            self._authn,
            self._authz,
            kv_mount=self.settings.vault.kv_mount,
            started_at=self.started_at,
        )
        try:
            self.port = await self._grpc.start(self.settings.listen)
        except OSError as exc:
            raise InvalidArgument(str(exc)) from exc
        host = self.settings.listen.rsplit(":", 1)[0]
        log.info("latchkey gateway listening on %s:%d", host, self.port)
        return self.port

    async def stop(self) -> None:
        """Graceful shutdown in the documented order. Safe to call twice."""
        if self._stopped.is_set():
            return
        self._stopped.set()
        if self._grpc is not None:
            await self._grpc.stop(self.settings.shutdown_grace)
        c = self.components
        await c.config.close()
        await c.discovery.close()
        await c.leases.close()
        await c.consul.close()
        await c.vault.close()
        log.info("latchkey gateway stopped")

    async def wait_stopped(self) -> None:
        await self._stopped.wait()
