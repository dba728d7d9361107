"""Startup, serving and graceful shutdown of the gateway. Reads no argv and no environment.

Shutdown order: health NOT_SERVING → stop accepting calls (in-flight calls get a grace period)
→ close the brokers (revoking every held lease) → close the upstream adapters.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from prometheus_client import start_http_server

from latchkey_server.access.audit import AuditLog, load_key
from latchkey_server.access.authn import Authenticator
from latchkey_server.access.authz import Authorizer, DenyAll
from latchkey_server.access.gate import AccessGate
from latchkey_server.access.policies import PolicyAuthorizer, PolicyStore
from latchkey_server.access.ratelimit import RateLimiter
from latchkey_server.access.streams import StreamGrants
from latchkey_server.access.tokens import TokenStore
from latchkey_server.brokers.config_hub import ConfigHub
from latchkey_server.brokers.discovery_hub import DiscoveryHub
from latchkey_server.brokers.leases import LeaseBroker
from latchkey_server.brokers.secret_cache import SecretCache
from latchkey_server.config import Settings
from latchkey_server.errors import InvalidArgument
from latchkey_server.models import utcnow
from latchkey_server.observability.collector import GatewayCollector
from latchkey_server.observability.health import Dependency, HealthMonitor
from latchkey_server.observability.telemetry import Telemetry
from latchkey_server.transport.flow import FlowLimits
from latchkey_server.transport.grpc_server import (
    CONFIG_SERVICE,
    DISCOVERY_SERVICE,
    SECRETS_SERVICE,
    GrpcServer,
    Sources,
    TlsMaterial,
)
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


def build_components(settings: Settings, telemetry: Telemetry) -> Components:
    vault = VaultAdapter.from_settings(settings.vault, telemetry=telemetry)
    consul = ConsulAdapter(
        ConsulAdapterSettings(
            address=settings.consul.addr,
            token=settings.consul.token.get_secret_value() if settings.consul.token else None,
            connection_budget=settings.consul.max_connections,
            default_wait=settings.consul.wait,
        ),
        telemetry=telemetry,
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
            telemetry=telemetry,
        ),
        secrets=SecretCache(
            vault,
            ttl=settings.cache.secret_ttl,
            negative_ttl=settings.cache.negative_ttl,
            stale_limit=settings.cache.stale_limit,
            telemetry=telemetry,
        ),
        config=ConfigHub(
            consul,
            heartbeat_interval=settings.heartbeat_interval,
            stale_limit=settings.cache.stale_limit,
            queue_bytes=settings.limits.stream_queue_bytes,
            watch_settings=watch,
        ),
        discovery=DiscoveryHub(
            consul,
            heartbeat_interval=settings.heartbeat_interval,
            stale_limit=settings.cache.stale_limit,
            watch_settings=watch,
        ),
    )


def _read(path: Path, what: str) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise InvalidArgument(f"{what} {path} cannot be read: {exc.strerror}") from exc


def load_tls(settings: Settings) -> TlsMaterial | None:
    """TLS material from the configured files (None when running --insecure)."""
    if settings.insecure:
        return None
    tls = settings.tls
    assert tls.cert_file is not None  # the settings validated both
    assert tls.key_file is not None
    return TlsMaterial(
        certificate_chain=_read(tls.cert_file, "tls.cert_file"),
        private_key=_read(tls.key_file, "tls.key_file"),
        client_ca=_read(tls.client_ca_file, "tls.client_ca_file") if tls.client_ca_file else None,
        require_client_cert=tls.require_client_cert,
    )


def _audit_key(settings: Settings) -> bytes | None:
    path = settings.audit.hmac_key_file
    return load_key(path) if path else None


class Gateway:
    """One gateway process: gRPC server, brokers, access control and upstream adapters."""

    def __init__(self, settings: Settings, *, authorizer: Authorizer | None = None) -> None:
        self.settings = settings
        self.started_at: datetime = utcnow()
        tokens = TokenStore.load(settings.auth.tokens_file) if settings.auth.tokens_file else None
        if tokens is None and settings.tls.client_ca_file is None:
            raise InvalidArgument(
                "no way to authenticate callers: set auth.tokens_file (latchkey-server token "
                "create) and/or tls.client_ca_file for client certificates"
            )
        self._authn = Authenticator(tokens)
        self._tls = load_tls(settings)
        self.policies: PolicyStore | None = None
        if authorizer is None:
            if settings.auth.policies_dir is not None:
                self.policies = PolicyStore(settings.auth.policies_dir)
                authorizer = PolicyAuthorizer(self.policies)
            else:
                log.warning("auth.policies_dir is not set: every request will be denied")
                authorizer = DenyAll()
        self.gate = AccessGate(
            authorizer, StreamGrants(max_per_identity=settings.limits.max_streams_per_identity)
        )
        self.audit = AuditLog(
            settings.audit.sink, _audit_key(settings), fail_closed=settings.audit.fail_closed
        )
        self._limiter = RateLimiter(settings.limits.requests_per_second, settings.limits.burst)
        self.telemetry = Telemetry()
        self.components = build_components(settings, self.telemetry)
        c = self.components
        self.telemetry.registry.register(
            GatewayCollector(
                upstreams=[c.vault, c.consul],
                consul=c.consul,
                leases=c.leases.list,
                streams_by_kind=self.gate.streams.by_kind,
                upstream_watches=lambda: {
                    "config": c.config.active_watches,
                    "discovery": c.discovery.active_watches,
                    "config_overflow": c.config.overflow_watches,
                    "discovery_overflow": c.discovery.overflow_watches,
                },
                audit_failures=lambda: self.audit.failures,
            )
        )
        self.metrics_port: int = 0
        self._metrics_server: Any = None
        self._health_monitor: HealthMonitor | None = None
        self._grpc: GrpcServer | None = None
        self._reload_task: asyncio.Task[None] | None = None
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
            self.gate,
            kv_mount=self.settings.vault.kv_mount,
            started_at=self.started_at,
            audit=self.audit,
            limiter=self._limiter,
            telemetry=self.telemetry,
            flow=FlowLimits(
                snapshot_bytes=self.settings.limits.snapshot_bytes,
                identity_bytes=self.settings.limits.identity_queue_bytes,
                stall_timeout=self.settings.limits.stall_timeout,
            ),
        )
        self.port = await self._grpc.start(self.settings.listen, self._tls)
        if self._tls is None:
            log.warning("serving PLAINTEXT gRPC (insecure); use TLS anywhere but loopback")
        if self.policies is not None:
            self._reload_task = asyncio.create_task(self._watch_policies())
        self._health_monitor = HealthMonitor(
            [
                Dependency(c.vault, [SECRETS_SERVICE]),
                Dependency(c.consul, [CONFIG_SERVICE, DISCOVERY_SERVICE]),
            ],
            self._grpc.set_serving,
            stale_limit=self.settings.cache.stale_limit,
            interval=self.settings.health.probe_interval,
        )
        await self._health_monitor.check_once()
        self._health_monitor.start()
        if self.settings.metrics.listen:
            self._start_metrics(self.settings.metrics.listen)
        host = self.settings.listen.rsplit(":", 1)[0]
        log.info("latchkey gateway listening on %s:%d", host, self.port)
        return self.port

    def reload_policies(self) -> bool:
        """Reload the policy files now (SIGHUP); end streams a narrowed policy no longer allows.

        An invalid file keeps the previous policies in force (the store logs why).
        """
        if self.policies is None or not self.policies.reload():
            return False
        ended = self.gate.recheck_streams()
        log.info(
            "policies reloaded (generation %d); %d open streams no longer allowed",
            self.policies.generation,
            ended,
        )
        return True

    async def _watch_policies(self) -> None:
        assert self.policies is not None
        while True:
            # Polling interval for file changes (SIGHUP reloads at once).
            await asyncio.sleep(self.settings.auth.reload_interval)
            if self.policies.changed():
                self.reload_policies()

    async def stop(self) -> None:
        """Graceful shutdown in the documented order. Safe to call twice."""
        if self._stopped.is_set():
            return
        self._stopped.set()
        if self._reload_task is not None:
            self._reload_task.cancel()
        if self._health_monitor is not None:
            await self._health_monitor.close()
        if self._grpc is not None:
            await self._grpc.stop(self.settings.shutdown_grace)
        c = self.components
        await c.config.close()
        await c.discovery.close()
        await c.leases.close()
        await c.consul.close()
        await c.vault.close()
        self.audit.close()
        if self._metrics_server is not None:
            self._metrics_server.shutdown()
            self._metrics_server.server_close()
        log.info("latchkey gateway stopped")

    def _start_metrics(self, listen: str) -> None:
        host, _, port = listen.rpartition(":")
        try:
            server, _thread = start_http_server(
                int(port), addr=host or "127.0.0.1", registry=self.telemetry.registry
            )
        except (OSError, ValueError) as exc:
            raise InvalidArgument(f"metrics.listen {listen!r}: {exc}") from exc
        self._metrics_server = server
        self.metrics_port = int(server.server_address[1])
        log.info("metrics on http://%s:%d/metrics", host or "127.0.0.1", self.metrics_port)

    async def wait_stopped(self) -> None:
        await self._stopped.wait()
