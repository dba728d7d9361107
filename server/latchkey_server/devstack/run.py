"""`latchkey-server dev`: the whole local stack in the foreground, torn down on Ctrl-C.

Starts a real Consul agent, PostgreSQL (LATCHKEY_DEMO_PG_DSN, else a throwaway cluster), the
real OpenBao server (`bao server -dev`) and the gateway; seeds the demo; writes
`.latchkey/dev.env`.
"""

from __future__ import annotations

import os
import secrets
import signal
import sys
import threading
from dataclasses import dataclass
from pathlib import Path

import click

from latchkey_server.access.certs import CertPaths, init_ca, issue_client, issue_server
from latchkey_server.access.policies import DEFAULT_POLICY_DIR
from latchkey_server.devstack.consul import ConsulAgent
from latchkey_server.devstack.devenv import write_dev_env
from latchkey_server.devstack.gateway_config import (
    DEV_IDENTITY,
    GatewayConfig,
    TlsFiles,
    issue_dev_token,
    write_audit_key,
    write_gateway_config,
)
from latchkey_server.devstack.openbao import OpenBaoServer
from latchkey_server.devstack.ports import preferred_port, preferred_port_pair
from latchkey_server.devstack.postgres import PostgresCluster
from latchkey_server.devstack.process import ManagedProcess
from latchkey_server.devstack.seed import (
    DEMO_CONFIG_PREFIX,
    DEMO_DATABASE,
    DEMO_ROLE,
    DEMO_SECRET_PATH,
    seed_consul,
    seed_postgres,
    seed_vault,
)
from latchkey_server.transport.probe import ProbeTLS, check_health


def _server_cmd() -> list[str]:
    return [sys.executable, "-m", "latchkey_server"]


def _dev_path(bao: str, consul: str) -> list[Path]:
    """Folders `dev.env` puts first on PATH: the venv (latchkey, bao), then bao and consul."""
    venv_bin = Path(sys.executable).parent
    folders = [venv_bin]
    if not (venv_bin / "bao").exists():
        folders.append(Path(bao).parent)
    folders.append(Path(consul).parent)
    return folders


@dataclass(frozen=True)
class DevCertificates:
    ca: CertPaths
    server: CertPaths
    client: CertPaths


def dev_certificates(directory: Path) -> DevCertificates:
    """A dev CA (kept across runs), a server certificate and the dev identity's client cert."""
    ca_paths = CertPaths(cert=directory / "ca.crt", key=directory / "ca.key")
    ca = ca_paths if ca_paths.cert.exists() and ca_paths.key.exists() else init_ca(directory)
    return DevCertificates(
        ca=ca,
        server=issue_server(directory),
        client=issue_client(directory, identity=DEV_IDENTITY),
    )


def _grpc_serving(addr: str, tls: DevCertificates) -> bool:
    probe = ProbeTLS(cacert=tls.ca.cert, cert=tls.client.cert, key=tls.client.key)
    return check_health(addr, tls=probe, timeout=1.0).serving


def run_dev(state_dir: Path) -> None:
    """Start everything, write dev.env, block until SIGINT/SIGTERM, stop in reverse order."""
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    state_dir.mkdir(parents=True, exist_ok=True)
    logs = state_dir / "logs"
    consul = ConsulAgent(state_dir / "consul", http_port=preferred_port(8500))
    external_pg = os.environ.get("LATCHKEY_DEMO_PG_DSN")
    postgres = None if external_pg else PostgresCluster()
    vault = OpenBaoServer(
        state_dir / "openbao",
        port=preferred_port_pair(8200),
        root_token="dev-root-" + secrets.token_hex(8),
    )
    gateway_port = preferred_port(7400)
    metrics_port = preferred_port(9464)
    gateway_cfg = state_dir / "gateway.yaml"
    gateway = ManagedProcess(
        "latchkey gateway", [*_server_cmd(), "serve", "--config", str(gateway_cfg)],
        logs / "gateway.log",
    )  # fmt: skip
    try:
        click.echo("starting consul agent -dev ...", err=True)
        consul.start()
        if postgres is not None:
            click.echo("starting PostgreSQL (password auth) ...", err=True)
            postgres.start()
        admin_dsn = external_pg or (postgres.dsn if postgres else "")
        click.echo(f"starting OpenBao ({vault.binary} server -dev) ...", err=True)
        vault.start()
        vault_addr, root_token = vault.addr, vault.root_token
        click.echo("seeding the demo ...", err=True)
        db = seed_postgres(admin_dsn)
        approle = seed_vault(vault_addr, root_token, db)
        seed_consul(consul.http_addr)
        tokens_file = state_dir / "tokens.yaml"
        dev_token = issue_dev_token(tokens_file)
        tls = dev_certificates(state_dir / "tls")
        write_gateway_config(
            gateway_cfg,
            GatewayConfig(
                listen=f"127.0.0.1:{gateway_port}",
                vault_addr=vault_addr,
                approle=approle,
                consul_addr=consul.http_addr,
                tokens_file=tokens_file,
                policies_dir=DEFAULT_POLICY_DIR,
                tls=TlsFiles(tls.server.cert, tls.server.key, client_ca_file=tls.ca.cert),
                audit_sink=str(state_dir / "audit.log"),
                audit_key_file=write_audit_key(state_dir / "audit.key"),
                metrics_listen=f"127.0.0.1:{metrics_port}",
            ),
        )
        click.echo("starting the latchkey gateway ...", err=True)
        gateway.start()
        gateway_addr = f"127.0.0.1:{gateway_port}"
        gateway.wait_ready(lambda: _grpc_serving(gateway_addr, tls), 60)
        env_path = state_dir / "dev.env"
        write_dev_env(
            env_path,
            {
                "LATCHKEY_ADDR": gateway_addr,
                "LATCHKEY_TOKEN": dev_token,
                "LATCHKEY_CACERT": str(tls.ca.cert),
                "LATCHKEY_CLIENT_CERT": str(tls.client.cert),
                "LATCHKEY_CLIENT_KEY": str(tls.client.key),
                "VAULT_ADDR": vault_addr,
                "VAULT_TOKEN": root_token,
                "BAO_ADDR": vault_addr,
                "BAO_TOKEN": root_token,
                "CONSUL_HTTP_ADDR": consul.http_addr,
                "PGHOST": db.host,
                "PGPORT": str(db.port),
                "PGDATABASE": DEMO_DATABASE,
                "PGUSER": db.admin_user,
                "PGPASSWORD": db.admin_password,
                "LATCHKEY_DEMO_DB_ROLE": DEMO_ROLE,
                "LATCHKEY_DEMO_PG_DSN": db.admin_dsn,
            },
            path_prepend=_dev_path(vault.binary, consul.binary),
        )
        click.echo(
            f"ready: latchkey gateway on {gateway_addr} (Vault {vault_addr}, Consul {consul.url})\n"
            f"  1. source {env_path}   # LATCHKEY_*, VAULT_*/BAO_*, CONSUL_HTTP_ADDR, PG*, PATH\n"
            f"  2. latchkey status; latchkey db creds {DEMO_ROLE} --format json\n"
            f"  3. latchkey secrets get {DEMO_SECRET_PATH}; latchkey config watch "
            f"{DEMO_CONFIG_PREFIX}; latchkey services watch web\n"
            f"  4. audit log {state_dir / 'audit.log'}, logs in {logs}, "
            f"metrics http://127.0.0.1:{metrics_port}/metrics\n"
            "  5. Ctrl-C stops everything and revokes the gateway's leases"
        )
        sys.stdout.flush()
        stop.wait()
    finally:
        click.echo("stopping (revoking leases) ...", err=True)
        gateway.stop(timeout=30)
        vault.stop(timeout=30)
        if postgres is not None:
            postgres.stop()
        consul.stop()
        click.echo("stopped", err=True)
