"""`latchkey-server bootstrap`: seed fresh Vault, Consul and PostgreSQL servers for a demo.

What the compose stack's one-shot `bootstrap` service runs. It waits (up to a deadline) until
each upstream answers, seeds them with exactly what `make dev` seeds (`devstack/seed.py`),
issues a dev token into a fresh tokens file and writes the gateway's config
(`devstack/gateway_config.py`). Running it again re-seeds, replaces the tokens file with a new
dev token and rewrites the config.
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import click
import psycopg

from latchkey_server.access.certs import DEFAULT_SERVER_NAMES, CertPaths, init_ca, issue_server
from latchkey_server.devstack.gateway_config import (
    GatewayConfig,
    TlsFiles,
    issue_dev_token,
    write_gateway_config,
)
from latchkey_server.devstack.process import ComponentError
from latchkey_server.devstack.seed import seed_consul, seed_postgres, seed_vault

ReadinessCheck = Callable[[], str | None]
"""Returns None when the upstream is ready, else why it is not (safe to print)."""


@dataclass(frozen=True)
class BootstrapPlan:
    vault_addr: str
    """Vault's URL, as both this command and the gateway reach it."""
    vault_token: str
    """A Vault token allowed to mount engines and write policies (the dev root token)."""
    pg_dsn: str
    """Admin DSN of the PostgreSQL that gets the `demo` database (Vault reaches the same host)."""
    consul_addr: str
    """Consul agent HTTP address, host:port."""
    tokens_file: Path
    """Where the gateway's hashed tokens go (replaced)."""
    config_out: Path
    """Where the gateway's config goes (written 0600)."""
    listen: str = "0.0.0.0:7400"
    """The gateway's listen address, written into its config."""
    deadline: float = 120.0
    """Seconds to wait for all three upstreams together."""
    policies_dir: Path | None = None
    """Policies folder as the gateway sees it (None: the gateway denies everything)."""
    tls_dir: Path | None = None
    """Where to keep a dev CA and the gateway's server certificate; None serves plaintext."""
    tls_names: tuple[str, ...] = ()
    """DNS names or IPs for the server certificate, besides localhost and 127.0.0.1."""


def server_tls(directory: Path, names: Sequence[str]) -> TlsFiles:
    """A dev CA (kept across runs) and a fresh server certificate for `names` (TLS, no mTLS)."""
    ca = CertPaths(cert=directory / "ca.crt", key=directory / "ca.key")
    if not (ca.cert.exists() and ca.key.exists()):
        init_ca(directory)
    server = issue_server(directory, names=tuple(dict.fromkeys((*DEFAULT_SERVER_NAMES, *names))))
    return TlsFiles(cert_file=server.cert, key_file=server.key)


def _http_get(url: str) -> tuple[int, bytes]:
    if not url.startswith(("http://", "https://")):
        raise ValueError(f"not an http(s) URL: {url}")
    try:
        with urllib.request.urlopen(url, timeout=2) as resp:  # noqa: S310 (scheme checked above)
            return int(resp.status), resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, b""


def vault_check(addr: str) -> ReadinessCheck:
    """Ready when sys/health says initialized, unsealed and active (HTTP 200)."""

    def check() -> str | None:
        try:
            status, _ = _http_get(f"{addr.rstrip('/')}/v1/sys/health")
        except (OSError, ValueError) as exc:
            return f"unreachable ({exc})"
        return None if status == 200 else f"sys/health answered HTTP {status}"

    return check


def consul_check(http_addr: str) -> ReadinessCheck:
    """Ready when the agent answers and the cluster has elected a leader (KV writes work)."""

    def check() -> str | None:
        try:
            status, body = _http_get(f"http://{http_addr}/v1/status/leader")
            leader = json.loads(body) if status == 200 else None
        except (OSError, ValueError) as exc:
            return f"unreachable ({exc})"
        if status != 200:
            return f"status/leader answered HTTP {status}"
        return None if leader else "no leader elected yet"

    return check


def postgres_check(dsn: str) -> ReadinessCheck:
    """Ready when the admin DSN logs in and runs a query."""

    def check() -> str | None:
        try:
            with psycopg.connect(dsn, connect_timeout=2, autocommit=True) as conn:
                conn.execute("SELECT 1")
        except psycopg.Error as exc:
            lines = str(exc).strip().splitlines()
            return lines[0] if lines else type(exc).__name__
        return None

    return check


def wait_until_ready(
    checks: Mapping[str, ReadinessCheck],
    deadline: float,
    *,
    clock: Callable[[], float] = time.monotonic,
    pause: Callable[[float], None] = time.sleep,
) -> None:
    """Poll every check until all pass; past `deadline` seconds raise naming what is not ready."""
    end = clock() + deadline
    pending = dict(checks)
    reasons: dict[str, str] = {}
    delay = 0.1
    while True:
        for name, check in list(pending.items()):
            reason = check()
            if reason is None:
                del pending[name]
                click.echo(f"{name} is ready", err=True)
            else:
                reasons[name] = reason
        if not pending:
            return
        if clock() >= end:
            waiting = "; ".join(f"{name}: {reasons[name]}" for name in pending)
            raise ComponentError(f"not ready within {deadline:g}s: {waiting}")
        # Polling interval of a readiness probe (backs off to 2 s), not a synchronisation.
        pause(delay)
        delay = min(delay * 2, 2.0)


def run_bootstrap(plan: BootstrapPlan) -> str:
    """Wait for the upstreams, seed them, write tokens and config; return the dev token."""
    wait_until_ready(
        {
            "vault": vault_check(plan.vault_addr),
            "consul": consul_check(plan.consul_addr),
            "postgres": postgres_check(plan.pg_dsn),
        },
        plan.deadline,
    )
    click.echo("seeding PostgreSQL, Vault and Consul ...", err=True)
    db = seed_postgres(plan.pg_dsn)
    approle = seed_vault(plan.vault_addr, plan.vault_token, db)
    seed_consul(plan.consul_addr)
    token = issue_dev_token(plan.tokens_file)
    write_gateway_config(
        plan.config_out,
        GatewayConfig(
            listen=plan.listen,
            vault_addr=plan.vault_addr,
            approle=approle,
            consul_addr=plan.consul_addr,
            tokens_file=plan.tokens_file,
            policies_dir=plan.policies_dir,
            tls=server_tls(plan.tls_dir, plan.tls_names) if plan.tls_dir else None,
        ),
    )
    click.echo(f"wrote {plan.config_out} and {plan.tokens_file}", err=True)
    return token
