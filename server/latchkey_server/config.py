"""Gateway settings: one validated object, built once in the CLI and passed down.

Precedence (highest first): `LATCHKEY_*` environment variables (nested fields with `__`, e.g.
`LATCHKEY_VAULT__ADDR`), then the config file (YAML or TOML), then the defaults below.
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, model_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from latchkey_server.errors import InvalidArgument


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


VaultAuthMethod = Literal["token", "approle", "userpass", "jwt"]

# The settings each method needs; every group is "exactly one of these".
_VAULT_AUTH_NEEDS: dict[str, tuple[tuple[str, ...], ...]] = {
    "token": (("token", "token_file"),),
    "approle": (("role_id",), ("secret_id", "secret_id_file")),
    "userpass": (("username",), ("password_file",)),
    "jwt": (("role",), ("jwt_file",)),
}
_VAULT_AUTH_MOUNTS = {"approle": "approle", "userpass": "userpass", "jwt": "jwt"}


class VaultAuthSettings(_Section):
    """How the gateway logs in to Vault. Every method but `token` logs in again before its
    token dies; files are read at every login (so rotated files are picked up)."""

    method: VaultAuthMethod
    """token, approle, userpass or jwt."""
    token: SecretStr | None = Field(default=None, min_length=1)
    """token: the token (renewed while renewable, never revoked by the gateway)."""
    token_file: Path | None = None
    """token: a file holding the token (instead of `token`)."""
    role_id: str | None = Field(default=None, min_length=1)
    """approle: the role_id."""
    secret_id: SecretStr | None = Field(default=None, min_length=1)
    """approle: the secret_id."""
    secret_id_file: Path | None = None
    """approle: a file holding the secret_id (instead of `secret_id`)."""
    username: str | None = Field(default=None, min_length=1)
    """userpass: the user name."""
    password_file: Path | None = None
    """userpass: a file holding the password."""
    role: str | None = Field(default=None, min_length=1)
    """jwt: the role of Vault's JWT auth method to log in as."""
    jwt_file: Path | None = None
    """jwt: a file holding the JWT (e.g. a Kubernetes projected service-account token)."""
    mount: str | None = Field(default=None, min_length=1)
    """Path the auth method is mounted at (default: the method's name)."""

    @model_validator(mode="after")
    def _fields_of_the_method(self) -> VaultAuthSettings:
        needs = _VAULT_AUTH_NEEDS[self.method]
        own = {name for group in needs for name in group}
        if self.method in _VAULT_AUTH_MOUNTS:
            own.add("mount")
        wanted = " + ".join(" or ".join(f"vault.auth.{n}" for n in group) for group in needs)
        for name in type(self).model_fields:
            if name != "method" and name not in own and getattr(self, name) is not None:
                raise ValueError(
                    f"vault.auth.{name} does not apply to vault.auth.method {self.method} "
                    f"(it takes {wanted})"
                )
        for group in needs:
            given = [name for name in group if getattr(self, name) is not None]
            if not given:
                raise ValueError(f"vault.auth.method {self.method} needs {wanted}")
            if len(given) > 1:
                raise ValueError(
                    f"set only one of {' and '.join(f'vault.auth.{n}' for n in given)}"
                )
        return self

    @property
    def mount_path(self) -> str:
        """The auth mount in use (the method's name unless `mount` is set)."""
        return self.mount or _VAULT_AUTH_MOUNTS.get(self.method, self.method)


class VaultSettings(_Section):
    addr: str = "http://127.0.0.1:8200"
    """Vault address."""
    auth: VaultAuthSettings
    """How the gateway logs in (`vault.auth.method` and that method's settings)."""
    kv_mount: str = "secret"
    """Default KV v2 mount for GetSecret when the request names none."""
    database_mount: str = "database"
    """Mount of the database secrets engine."""
    kv_watch_interval: float = Field(default=15.0, ge=0.1, le=3600)
    """Seconds between two polls of a watched KV secret's version (Secrets.WatchSecret),
    jittered by up to 10 %; one poll per distinct secret, whatever the number of watchers."""
    pool_size: int = Field(default=8, ge=1, le=64)
    """Threads running hvac (a synchronous library) off the event loop."""
    timeout: float = Field(default=10.0, gt=0)
    """Per-request timeout in seconds."""


class ConsulSettings(_Section):
    addr: str = "127.0.0.1:8500"
    """Consul agent HTTP address (host:port or URL)."""
    token: SecretStr | None = None
    """ACL token sent as X-Consul-Token."""
    max_connections: int = Field(default=64, ge=1, le=190)
    """Hard cap on concurrent connections to the agent (Consul 1.8 drops the 201st per IP)."""
    wait: float = Field(default=55.0, ge=1, le=600)
    """Blocking-query wait in seconds (an abandoned query holds its slot this long)."""
    min_interval: float = Field(default=0.1, ge=0, le=10)
    """Least seconds between two re-reads of one watch; a change made meanwhile is delivered
    right after it (the last change of a burst always arrives)."""
    interval_dither: float = Field(default=0.005, ge=0, le=1)
    """Up to this many seconds added at random to each such pause."""
    requests_per_second: float = Field(default=500.0, ge=0)
    """The gateway's request budget for Consul: all requests together (watch re-reads and
    plain reads), shared fairly between watches; 0 disables it."""
    burst: int = Field(default=100, ge=1)
    """Requests the budget lets through back to back before pacing them."""
    read_linger: float = Field(default=10.0, ge=0)
    """Seconds a watch started by a one-shot read (Config.Get/List, GetHealthyInstances with
    no watch open) lives on after the last read, serving repeated reads from memory."""
    max_read_watches: int = Field(default=16, ge=0)
    """Most such read watches at once, per hub (config, discovery); beyond it a read is one
    plain request. 0: one-shot reads never start a watch."""


class LeaseSettings(_Section):
    renew_fraction: float = Field(default=2 / 3, gt=0, lt=1)
    """Renew a held lease when this fraction of its TTL has passed (with jitter)."""
    grace: float = Field(default=30.0, ge=0)
    """After a rotation, revoke the previous lease after this long unless acknowledged sooner."""
    unheld_grace: float = Field(default=5.0, ge=0)
    """Revoke a lease this long after its last holder let go."""


class ReplicaSettings(_Section):
    id: str | None = Field(default=None, pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$")
    """This gateway's replica id: stable across restarts, unique among live replicas (a second
    one with the same id refuses to start). Default: the host name."""
    session_ttl: float = Field(default=10.0, ge=1, le=86400)
    """TTL of the replica's Consul session, seconds; Consul invalidates it up to twice this
    after the replica stops renewing it. Below 10 s needs the Consul servers' session_ttl_min
    lowered."""
    reap_grace: float = Field(default=5.0, ge=0)
    """How long a replica whose session died has to come back before another replica's reaper
    revokes the leases it journaled."""
    register_service: bool = True
    """Register this replica in its Consul agent as an instance of `replica.service` (a TTL
    check passed at every session renewal; deregistered on a graceful stop)."""
    service: str = Field(default="latchkey", pattern=r"^[A-Za-z0-9][A-Za-z0-9-]{0,62}$")
    """Consul service name the replicas register as (`consul://AGENT/<service>` finds them)."""
    advertise_address: str = ""
    """Address clients dial, as registered; empty: the host of `listen`, or, when that is a
    wildcard (0.0.0.0, ::), none, so Consul hands out the agent's node address."""
    advertise_port: int = Field(default=0, ge=0, le=65535)
    """Port clients dial, as registered; 0: the port the gateway listens on."""
    service_tags: list[str] = Field(default_factory=list)
    """Tags of the registered instance."""
    deregister_after: float = Field(default=60.0, ge=60)
    """Seconds the instance's check may stay critical (a killed replica) before the agent
    removes it (`DeregisterCriticalServiceAfter`; Consul's minimum is 60)."""


class CacheSettings(_Section):
    secret_ttl: float = Field(default=30.0, ge=0)
    """How long a KV secret is served from cache."""
    negative_ttl: float = Field(default=2.0, ge=0)
    """How long a not-found answer is cached."""
    stale_limit: float = Field(default=300.0, ge=0)
    """How old cached data may be when served because an upstream is unreachable."""


class AuthSettings(_Section):
    tokens_file: Path | None = None
    """YAML file of hashed bearer tokens (see `latchkey-server token create`)."""
    policies_dir: Path | None = None
    """Folder of HCL policies and bindings.hcl; unset denies everything (deny by default)."""
    reload_interval: float = Field(default=2.0, gt=0)
    """Seconds between checks of the policy files and the tokens file for changes (SIGHUP
    reloads at once)."""


class TlsSettings(_Section):
    cert_file: Path | None = None
    """Server certificate (PEM). TLS is on unless `insecure` is set."""
    key_file: Path | None = None
    """Server private key (PEM)."""
    client_ca_file: Path | None = None
    """CA bundle that verifies client certificates (mTLS)."""
    require_client_cert: bool = True
    """With client_ca_file: every client must present a certificate it signed (mTLS).
    False: client certificates are not requested at all (TLS with bearer tokens only)."""
    reload_interval: float = Field(default=5.0, gt=0)
    """Seconds between checks of the three files for changes (SIGHUP reloads at once)."""


class AuditSettings(_Section):
    sink: str = "stdout"
    """Where audit lines go: "stdout", "stderr" or a file path."""
    hmac_key_file: Path | None = None
    """File holding the key for HMAC-SHA256 of returned secret values (random if unset)."""
    fail_closed: bool = True
    """Refuse secret-returning calls while the audit log cannot be written."""


class LimitSettings(_Section):
    requests_per_second: float = Field(default=200.0, ge=0)
    """Per-identity request rate (token bucket); 0 disables."""
    burst: int = Field(default=400, ge=1)
    """Per-identity burst size."""
    max_streams_per_identity: int = Field(default=2000, ge=1)
    """Concurrent streams one identity may hold open."""
    snapshot_bytes: int = Field(default=8 << 20, ge=1 << 16, le=16 << 20)
    """Largest message a stream may send (a snapshot of a prefix); a larger one ends the stream
    with RESOURCE_EXHAUSTED naming this limit. At most 16 MiB, gRPC's send limit."""
    stream_queue_bytes: int = Field(default=8 << 20, ge=1 << 16)
    """Bytes of changes one config stream may have waiting in the fan-out; beyond it they are
    dropped and replaced by one fresh snapshot (nothing is lost)."""
    identity_queue_bytes: int = Field(default=32 << 20, ge=1 << 16)
    """Bytes queued to one identity's clients at once, all its streams together; its other
    streams wait for room (up to `stall_timeout`)."""
    stall_timeout: float = Field(default=30.0, gt=0)
    """Seconds a stream may wait for its client to read (or for its identity's room) before it
    ends with RESOURCE_EXHAUSTED saying the client is not reading."""

    @model_validator(mode="after")
    def _snapshot_fits(self) -> LimitSettings:
        if self.snapshot_bytes > self.identity_queue_bytes:
            raise ValueError("snapshot_bytes must not exceed identity_queue_bytes")
        return self


class MetricsSettings(_Section):
    listen: str = "127.0.0.1:9464"
    """Prometheus /metrics listener host:port; empty disables it."""


class HealthSettings(_Section):
    probe_interval: float = Field(default=5.0, gt=0)
    """Seconds between upstream pings feeding the gRPC health service."""


class TracingSettings(_Section):
    enabled: bool = False
    """Export OpenTelemetry traces: a span per RPC, child spans per Vault/Consul request."""
    exporter: Literal["otlp", "file", "console"] = "otlp"
    """otlp (gRPC to `endpoint`), file (JSON lines to `file`) or console (stderr)."""
    endpoint: str = Field(default="http://127.0.0.1:4317", min_length=1)
    """OTLP/gRPC collector address."""
    file: Path | None = None
    """exporter file: where spans are appended, one JSON object per line."""
    sample_ratio: float = Field(default=1.0, ge=0, le=1)
    """Share of new traces sampled; a caller's sampling decision is followed."""
    service_name: str = Field(default="latchkey-gateway", min_length=1)
    """The `service.name` resource attribute."""

    @model_validator(mode="after")
    def _file_for_file(self) -> TracingSettings:
        if self.enabled and self.exporter == "file" and self.file is None:
            raise ValueError("tracing.exporter file needs tracing.file (where spans are written)")
        return self


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="LATCHKEY_", env_nested_delimiter="__", extra="forbid"
    )

    listen: str = "127.0.0.1:7400"
    """gRPC listen address host:port."""
    insecure: bool = False
    """Serve plaintext gRPC (loopback development only; a warning is logged)."""
    heartbeat_interval: float = Field(default=10.0, gt=0)
    """Seconds between heartbeats on every stream."""
    shutdown_grace: float = Field(default=5.0, ge=0)
    """Seconds in-flight RPCs get to finish on shutdown."""
    log_level: str = "INFO"
    log_format: Literal["auto", "json", "text"] = "auto"
    """Logs on stderr: JSON lines, plain text, or auto (text on a terminal, else JSON)."""
    vault: VaultSettings
    consul: ConsulSettings = Field(default_factory=ConsulSettings)
    leases: LeaseSettings = Field(default_factory=LeaseSettings)
    replica: ReplicaSettings = Field(default_factory=ReplicaSettings)
    cache: CacheSettings = Field(default_factory=CacheSettings)
    auth: AuthSettings = Field(default_factory=AuthSettings)
    tls: TlsSettings = Field(default_factory=TlsSettings)
    audit: AuditSettings = Field(default_factory=AuditSettings)
    limits: LimitSettings = Field(default_factory=LimitSettings)
    metrics: MetricsSettings = Field(default_factory=MetricsSettings)
    health: HealthSettings = Field(default_factory=HealthSettings)
    tracing: TracingSettings = Field(default_factory=TracingSettings)

    @model_validator(mode="after")
    def _tls_or_insecure(self) -> Settings:
        if not self.insecure and (self.tls.cert_file is None or self.tls.key_file is None):
            raise ValueError(
                "TLS is on by default: set tls.cert_file and tls.key_file "
                "(latchkey-server certs ...), or insecure: true for plaintext on loopback"
            )
        return self

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # The environment overrides the file (passed as init values).
        return (env_settings, init_settings)


def _read_file(path: Path) -> dict[str, Any]:
    try:
        text = path.read_text()
    except OSError as exc:
        raise InvalidArgument(f"config file {path}: {exc.strerror}") from exc
    try:
        data = tomllib.loads(text) if path.suffix == ".toml" else yaml.safe_load(text)
    except (tomllib.TOMLDecodeError, yaml.YAMLError) as exc:
        raise InvalidArgument(f"config file {path} is not valid {path.suffix[1:]}: {exc}") from exc
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise InvalidArgument(f"config file {path}: the top level must be a mapping")
    return data


def load_settings(path: Path | None) -> Settings:
    """Build settings from an optional file plus the environment; errors name the field."""
    data = _read_file(path) if path else {}
    try:
        return Settings(**data)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or '(top level)'}: {err['msg']}"
            for err in exc.errors(include_input=False)
        )
        raise InvalidArgument(f"invalid configuration: {problems}") from exc
