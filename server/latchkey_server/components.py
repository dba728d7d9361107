"""`build(settings)`: every component of a gateway, each from its own frozen config.

The only place that reads the settings object apart from `server.py`'s lifecycle: it turns each
section into the frozen config of the component it concerns (`ConsulConfig`, `VaultConfig`,
`WatchSettings`, `FlowLimits`, `GrpcConfig`) and builds the component from it. It is also where
files are read (tokens, policies, TLS material, the audit key, the audit sink), so that
`Gateway.__init__` does no I/O and a bad file fails `Gateway.start()` with a clear message.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from latchkey_server.access.audit import AuditLog, load_key
from latchkey_server.access.authn import Authenticator
from latchkey_server.access.authz import Authorizer, DenyAll
from latchkey_server.access.gate import AccessGate
from latchkey_server.access.policies import PolicyAuthorizer, PolicyStore
from latchkey_server.access.ratelimit import RateLimiter
from latchkey_server.access.streams import StreamGrants
from latchkey_server.access.tokens import TokenFile
from latchkey_server.brokers.app_registrations import RegistrationBroker
from latchkey_server.brokers.config_hub import ConfigHub
from latchkey_server.brokers.consul_watch import WatchSettings
from latchkey_server.brokers.discovery_hub import DiscoveryHub
from latchkey_server.brokers.leases import LeaseBroker
from latchkey_server.brokers.registration import Registration, RegistrationConfig
from latchkey_server.brokers.replica import Replica, ReplicaConfig, default_replica_id
from latchkey_server.brokers.secret_cache import SecretCache
from latchkey_server.brokers.secret_watch import SecretWatchHub
from latchkey_server.config import Settings
from latchkey_server.errors import InvalidArgument
from latchkey_server.models import utcnow
from latchkey_server.observability.collector import GatewayCollector
from latchkey_server.observability.telemetry import Telemetry
from latchkey_server.observability.tracing import Tracing, TracingConfig
from latchkey_server.transport.flow import FlowLimits
from latchkey_server.transport.grpc_server import GrpcConfig, GrpcServer, Sources, TlsMaterial
from latchkey_server.transport.tls import TlsFiles
from latchkey_server.upstreams._consul_agent import ConsulAgentServices
from latchkey_server.upstreams._consul_sessions import ConsulSessions
from latchkey_server.upstreams.consul import ConsulAdapter, ConsulConfig
from latchkey_server.upstreams.vault import VaultAdapter

log = logging.getLogger("latchkey.server")


@dataclass
class Components:
    """Everything one gateway runs (tests may inspect these)."""

    telemetry: Telemetry
    audit: AuditLog
    gate: AccessGate
    policies: PolicyStore | None
    tokens: TokenFile | None
    vault: VaultAdapter
    consul: ConsulAdapter
    replica: Replica
    leases: LeaseBroker
    secrets: SecretCache
    secret_watches: SecretWatchHub
    registrations: RegistrationBroker
    config: ConfigHub
    discovery: DiscoveryHub
    grpc: GrpcServer
    tracing: Tracing = field(default_factory=Tracing)
    started_at: datetime = field(default_factory=utcnow)

    @property
    def brokers(
        self,
    ) -> tuple[LeaseBroker, ConfigHub, DiscoveryHub, SecretWatchHub, RegistrationBroker]:
        return (
            self.leases,
            self.config,
            self.discovery,
            self.secret_watches,
            self.registrations,
        )


def _read(path: Path, what: str) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise InvalidArgument(f"{what} {path} cannot be read: {exc.strerror}") from exc


def tls_material(settings: Settings) -> TlsMaterial | None:
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


def consul_config(settings: Settings) -> ConsulConfig:
    consul = settings.consul
    return ConsulConfig(
        address=consul.addr,
        token=consul.token.get_secret_value() if consul.token else None,
        connection_budget=consul.max_connections,
        default_wait=consul.wait,
        requests_per_second=consul.requests_per_second,
        burst=consul.burst,
    )


def replica_config(settings: Settings) -> ReplicaConfig:
    replica = settings.replica
    return ReplicaConfig(
        id=replica.id or default_replica_id(),
        session_ttl=replica.session_ttl,
        reap_grace=replica.reap_grace,
        address=settings.listen,
    )


def registration(
    settings: Settings, consul: ConsulAdapter, config: ReplicaConfig
) -> Registration | None:
    replica = settings.replica
    if not replica.register_service:
        return None
    return Registration(
        RegistrationConfig(
            service=replica.service,
            address=replica.advertise_address,
            port=replica.advertise_port,
            tags=tuple(replica.service_tags),
            deregister_after=replica.deregister_after,
            tls=not settings.insecure,
        ),
        ConsulAgentServices(consul),
        config.id,
        check_ttl=config.session_ttl,
    )


def watch_settings(settings: Settings) -> WatchSettings:
    consul = settings.consul
    return WatchSettings(
        wait=consul.wait, min_interval=consul.min_interval, dither=consul.interval_dither
    )


def flow_limits(settings: Settings) -> FlowLimits:
    limits = settings.limits
    return FlowLimits(
        snapshot_bytes=limits.snapshot_bytes,
        identity_bytes=limits.identity_queue_bytes,
        stall_timeout=limits.stall_timeout,
    )


def grpc_config(settings: Settings) -> GrpcConfig:
    return GrpcConfig(
        listen=settings.listen,
        tls=tls_material(settings),
        kv_mount=settings.vault.kv_mount,
        flow=flow_limits(settings),
        stream_ttl=3 * settings.heartbeat_interval,
        tls_files=tls_files(settings),
    )


def tls_files(settings: Settings) -> TlsFiles | None:
    tls = settings.tls
    if settings.insecure or tls.cert_file is None or tls.key_file is None:
        return None
    return TlsFiles(cert=tls.cert_file, key=tls.key_file, client_ca=tls.client_ca_file)


def tracing_config(settings: Settings) -> TracingConfig:
    t = settings.tracing
    return TracingConfig(
        enabled=t.enabled,
        exporter=t.exporter,
        endpoint=t.endpoint,
        file=t.file,
        sample_ratio=t.sample_ratio,
        service_name=t.service_name,
    )


def _authenticator(settings: Settings) -> tuple[Authenticator, TokenFile | None]:
    tokens = TokenFile(settings.auth.tokens_file) if settings.auth.tokens_file else None
    if tokens is None and settings.tls.client_ca_file is None:
        raise InvalidArgument(
            "no way to authenticate callers: set auth.tokens_file (latchkey-server token "
            "create) and/or tls.client_ca_file for client certificates"
        )
    return Authenticator(tokens), tokens


def build(settings: Settings, *, authorizer: Authorizer | None = None) -> Components:
    """Build every component (reading the files the settings name); start nothing."""
    authn, tokens = _authenticator(settings)
    policies: PolicyStore | None = None
    if authorizer is None:
        if settings.auth.policies_dir is not None:
            policies = PolicyStore(settings.auth.policies_dir)
            authorizer = PolicyAuthorizer(policies)
        else:
            log.warning("auth.policies_dir is not set: every request will be denied")
            authorizer = DenyAll()
    gate = AccessGate(
        authorizer, StreamGrants(max_per_identity=settings.limits.max_streams_per_identity)
    )
    key = load_key(settings.audit.hmac_key_file) if settings.audit.hmac_key_file else None
    audit = AuditLog(settings.audit.sink, key, fail_closed=settings.audit.fail_closed)
    telemetry = Telemetry()
    vault = VaultAdapter.from_settings(settings.vault, telemetry=telemetry)
    consul = ConsulAdapter(consul_config(settings), telemetry=telemetry)
    watch = watch_settings(settings)
    replica_settings = replica_config(settings)
    replica = Replica(
        replica_settings, ConsulSessions(consul), vault,
        registration=registration(settings, consul, replica_settings),
    )  # fmt: skip
    leases = LeaseBroker(
        vault,
        mount=settings.vault.database_mount,
        renew_fraction=settings.leases.renew_fraction,
        grace=settings.leases.grace,
        unheld_grace=settings.leases.unheld_grace,
        heartbeat_interval=settings.heartbeat_interval,
        telemetry=telemetry,
        journal=replica,
    )
    secrets = SecretCache(
        vault,
        ttl=settings.cache.secret_ttl,
        negative_ttl=settings.cache.negative_ttl,
        stale_limit=settings.cache.stale_limit,
        telemetry=telemetry,
    )
    secret_watches = SecretWatchHub(
        vault,
        secrets,
        interval=settings.vault.kv_watch_interval,
        heartbeat_interval=settings.heartbeat_interval,
    )
    agent = ConsulAgentServices(consul)
    registrations = RegistrationBroker(
        agent,
        agent,
        heartbeat_interval=settings.heartbeat_interval,
        watch_settings=watch,
    )
    config = ConfigHub(
        consul,
        heartbeat_interval=settings.heartbeat_interval,
        stale_limit=settings.cache.stale_limit,
        queue_bytes=settings.limits.stream_queue_bytes,
        read_linger=settings.consul.read_linger,
        max_read_watches=settings.consul.max_read_watches,
        watch_settings=watch,
    )
    discovery = DiscoveryHub(
        consul,
        heartbeat_interval=settings.heartbeat_interval,
        stale_limit=settings.cache.stale_limit,
        read_linger=settings.consul.read_linger,
        max_read_watches=settings.consul.max_read_watches,
        watch_settings=watch,
    )
    started_at = utcnow()
    tracing = Tracing(tracing_config(settings))
    grpc = GrpcServer(
        grpc_config(settings),
        Sources(
            secrets=secrets,
            leases=leases,
            config=config,
            discovery=discovery,
            upstreams=[vault, consul],
            secret_watches=secret_watches,
            registrations=registrations,
        ),
        authn,
        gate,
        started_at=started_at,
        audit=audit,
        limiter=RateLimiter(settings.limits.requests_per_second, settings.limits.burst),
        telemetry=telemetry,
        tracing=tracing,
    )
    telemetry.registry.register(
        GatewayCollector(
            upstreams=[vault, consul],
            consul=consul,
            leases=leases.list,
            streams_by_kind=gate.streams.by_kind,
            upstream_watches=lambda: {
                "config": config.active_watches,
                "discovery": discovery.active_watches,
                "config_overflow": config.overflow_watches,
                "discovery_overflow": discovery.overflow_watches,
                "config_read": config.read_watches,
                "discovery_read": discovery.read_watches,
                "secret": secret_watches.active_polls,
                "registration": registrations.active,
            },
            audit_failures=lambda: audit.failures,
        )
    )
    return Components(
        telemetry=telemetry,
        audit=audit,
        gate=gate,
        policies=policies,
        tokens=tokens,
        vault=vault,
        consul=consul,
        replica=replica,
        leases=leases,
        secrets=secrets,
        secret_watches=secret_watches,
        registrations=registrations,
        config=config,
        discovery=discovery,
        grpc=grpc,
        tracing=tracing,
        started_at=started_at,
    )
