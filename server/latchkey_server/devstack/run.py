"""`latchkey-server dev`: the whole local stack in the foreground, torn down on Ctrl-C.

Starts a real Consul agent, PostgreSQL (LATCHKEY_DEMO_PG_DSN, else a throwaway cluster), the
real OpenBao server (`bao server -dev`) and the gateway; seeds the demo; writes
`.latchkey/dev.env`.

One run per checkout (a lock), every child recorded and tied to this process's life (the kernel
kills them if it dies), start-up abandoned at once on SIGINT/SIGTERM, and a stop that finishes
within bounded time, killing any component that does not stop on its own (see lifecycle.py).
"""

from __future__ import annotations

import os
import re
import secrets
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import click

from latchkey_server.access.certs import CertPaths, init_ca, issue_client, issue_server
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
from latchkey_server.devstack.lifecycle import DevLock, RunRecord, SignalPlan, StopRequested
from latchkey_server.devstack.openbao import OpenBaoServer
from latchkey_server.devstack.ports import free_ports, preferred_port, preferred_port_pair
from latchkey_server.devstack.postgres import PostgresCluster
from latchkey_server.devstack.process import ComponentError, ManagedProcess
from latchkey_server.devstack.seed import (
    DEMO_CONFIG_PREFIX,
    DEMO_DATABASE,
    DEMO_FLAGS_PREFIX,
    DEMO_ROLE,
    DEMO_SECRET_PATH,
    seed_consul,
    seed_postgres,
    seed_vault,
)
from latchkey_server.transport.probe import ProbeTLS, check_health

RUN_MARKER = "LATCHKEY_DEV_RUN"
"""Set in the environment of every process the run starts (tests find them by it)."""
_BIND_RACE = re.compile(r"already in use|failed to bind", re.IGNORECASE)
_START_ATTEMPTS = 3
_STOP_TIMEOUT = {"gateway": 20.0, "OpenBao": 10.0, "PostgreSQL": 10.0, "Consul": 10.0}


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


class _Component(Protocol):
    @property
    def pid(self) -> int | None: ...

    def start(self) -> None: ...

    def stop(self, timeout: float = ..., hurry: Callable[[], bool] | None = ...) -> None: ...

    def log_tail(self, lines: int = ...) -> str: ...


class _Gateway:
    """The gateway as a child process; ready when it printed its address and answers health
    over mTLS with this run's certificates (so another stack's server is never taken for it)."""

    def __init__(
        self, config: Path, log: Path, addr: str, tls: DevCertificates, metrics_port: int
    ) -> None:
        self.addr = addr
        self.metrics_port = metrics_port
        self._tls = tls
        self._process = ManagedProcess(
            "latchkey gateway", [*_server_cmd(), "serve", "--config", str(config)], log,
            die_with_parent=True,
        )  # fmt: skip

    @property
    def pid(self) -> int | None:
        return self._process.pid

    def start(self) -> None:
        self._process.start()
        self._process.wait_ready(self._ready, 60)

    def _ready(self) -> bool:
        if f"LATCHKEY_ADDR={self.addr}" not in self._process.log_tail(200):
            return False
        probe = ProbeTLS(cacert=self._tls.ca.cert, cert=self._tls.client.cert,
                         key=self._tls.client.key)  # fmt: skip
        return check_health(self.addr, tls=probe, timeout=1.0).serving

    def stop(self, timeout: float = 20.0, hurry: Callable[[], bool] | None = None) -> None:
        self._process.stop(timeout=timeout, hurry=hurry)

    def log_tail(self, lines: int = 40) -> str:
        return self._process.log_tail(lines)


@dataclass
class DevStack:
    """The components of one run, started in order and stopped in reverse."""

    state_dir: Path
    policies_dir: Path
    """The access policies the gateway applies (it reloads them when they change)."""
    record: RunRecord
    signals: SignalPlan
    started: list[tuple[str, _Component]] = field(default_factory=list)

    def start(self, name: str, make: Callable[[int], _Component]) -> _Component:
        """Start a component; when it lost a race for its port, retry on other ports."""
        for attempt in range(_START_ATTEMPTS):
            component = make(attempt)
            self.started.append((name, component))
            try:
                component.start()
            except ComponentError as exc:
                if attempt + 1 < _START_ATTEMPTS and _BIND_RACE.search(component.log_tail(20)):
                    click.echo(f"{name} lost its port to another process; retrying", err=True)
                    component.stop(timeout=5.0)
                    self.started.pop()
                    continue
                raise ComponentError(f"{name} did not start: {exc}") from exc
            finally:
                self.record.add_process(name, component.pid)
            return component
        raise AssertionError("unreachable")  # pragma: no cover

    def stop_all(self) -> None:
        """Stop in reverse order, each within its bound (at once when a signal says hurry)."""
        for name, component in reversed(self.started):
            click.echo(f"stopping {name} ...", err=True)
            try:
                component.stop(timeout=_STOP_TIMEOUT.get(name, 10.0),
                               hurry=lambda: self.signals.hurry)  # fmt: skip
            except Exception as exc:  # keep stopping the others whatever happens
                click.echo(f"stopping {name} failed: {exc}", err=True)
        self.started.clear()


def run_dev(state_dir: Path, policies_dir: Path) -> None:
    """Start everything, write dev.env, block until SIGINT/SIGTERM, stop in reverse order."""
    state_dir.mkdir(parents=True, exist_ok=True)
    lock = DevLock(state_dir / "dev.lock")
    try:
        lock.acquire()
    except ComponentError as exc:
        raise click.ClickException(str(exc)) from exc
    env_path = state_dir / "dev.env"
    env_path.unlink(missing_ok=True)  # whatever an earlier run left there points at nothing
    record = RunRecord(state_dir / "dev.run.json")
    record.clean_leftovers(lambda line: click.echo(line, err=True))
    os.environ.setdefault(RUN_MARKER, secrets.token_hex(8))
    signals = SignalPlan()
    stack = DevStack(state_dir, policies_dir, record, signals)
    failure: str | None = None
    with signals.installed():
        try:
            _bring_up(stack, env_path)
            while True:
                time.sleep(3600)  # until a signal handler raises StopRequested
        except StopRequested as stop:
            click.echo(f"{stop} received", err=True)
        except ComponentError as exc:
            failure = str(exc)
        finally:
            signals.stopping = True
            env_path.unlink(missing_ok=True)
            stack.stop_all()
            for folder in record.folders:
                shutil.rmtree(folder, ignore_errors=True)
            record.clear()
            lock.release()
            click.echo("stopped", err=True)
    if failure is not None:
        raise click.ClickException(failure)


def _bring_up(stack: DevStack, env_path: Path) -> None:
    state_dir = stack.state_dir
    logs = state_dir / "logs"
    nonce = os.environ[RUN_MARKER]

    def ports(preferred: int, attempt: int) -> int:
        return preferred_port(preferred) if attempt == 0 else free_ports(1)[0]

    click.echo("starting consul agent -dev ...", err=True)
    consul = stack.start(
        "Consul",
        lambda attempt: ConsulAgent(
            state_dir / "consul", http_port=ports(8500, attempt),
            node_name=f"latchkey-dev-{nonce}", die_with_parent=True,
        ),
    )  # fmt: skip
    assert isinstance(consul, ConsulAgent)
    external_pg = os.environ.get("LATCHKEY_DEMO_PG_DSN")
    admin_dsn = external_pg or ""
    if not external_pg:
        click.echo("starting PostgreSQL (password auth) ...", err=True)
        pg_dir = Path(tempfile.gettempdir()) / f"latchkey-dev-pg-{nonce}"
        stack.record.add_folder(pg_dir)
        postgres = stack.start(
            "PostgreSQL", lambda _: PostgresCluster(base_dir=pg_dir, die_with_parent=True)
        )
        assert isinstance(postgres, PostgresCluster)
        admin_dsn = postgres.dsn
    root_token = "dev-root-" + secrets.token_hex(8)
    click.echo("starting OpenBao (bao server -dev) ...", err=True)
    vault = stack.start(
        "OpenBao",
        lambda attempt: OpenBaoServer(
            state_dir / "openbao", root_token=root_token, die_with_parent=True,
            port=preferred_port_pair(8200) if attempt == 0 else 0,
        ),
    )  # fmt: skip
    assert isinstance(vault, OpenBaoServer)
    click.echo("seeding the demo ...", err=True)
    db = seed_postgres(admin_dsn)
    approle = seed_vault(vault.addr, root_token, db)
    seed_consul(consul.http_addr)
    tokens_file = state_dir / "tokens.yaml"
    tokens_file.unlink(missing_ok=True)  # a fresh dev token per run; the old one is revoked
    dev_token = issue_dev_token(tokens_file)
    tls = dev_certificates(state_dir / "tls")
    config_path = state_dir / "gateway.yaml"

    def gateway_for(attempt: int) -> _Gateway:
        port, metrics = ports(7400, attempt), ports(9464, attempt)
        write_gateway_config(
            config_path,
            GatewayConfig(
                listen=f"127.0.0.1:{port}",
                vault_addr=vault.addr,
                approle=approle,
                consul_addr=consul.http_addr,
                tokens_file=tokens_file,
                policies_dir=stack.policies_dir,
                tls=TlsFiles(tls.server.cert, tls.server.key, client_ca_file=tls.ca.cert),
                audit_sink=str(state_dir / "audit.log"),
                audit_key_file=write_audit_key(state_dir / "audit.key"),
                metrics_listen=f"127.0.0.1:{metrics}",
            ),
        )
        return _Gateway(config_path, logs / "gateway.log", f"127.0.0.1:{port}", tls, metrics)

    click.echo("starting the latchkey gateway ...", err=True)
    gateway = stack.start("gateway", gateway_for)
    assert isinstance(gateway, _Gateway)
    write_dev_env(
        env_path,
        {
            "LATCHKEY_ADDR": gateway.addr,
            "LATCHKEY_TOKEN": dev_token,
            "LATCHKEY_CACERT": str(tls.ca.cert),
            "LATCHKEY_CLIENT_CERT": str(tls.client.cert),
            "LATCHKEY_CLIENT_KEY": str(tls.client.key),
            "LATCHKEY_DEV_PID": str(os.getpid()),
            "VAULT_ADDR": vault.addr,
            "VAULT_TOKEN": root_token,
            "BAO_ADDR": vault.addr,
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
        f"ready: latchkey gateway on {gateway.addr} (Vault {vault.addr}, Consul {consul.url})\n"
        f"  1. source {env_path}   # LATCHKEY_*, VAULT_*/BAO_*, CONSUL_HTTP_ADDR, PG*, PATH\n"
        f"  2. latchkey status; latchkey db creds {DEMO_ROLE} --format json\n"
        f"  3. latchkey secrets get {DEMO_SECRET_PATH}; latchkey config watch "
        f"{DEMO_CONFIG_PREFIX}; latchkey services watch web\n"
        f"     latchkey flags eval {DEMO_FLAGS_PREFIX} new_ui --targeting-key user-42   "
        "# on for 10 % of users\n"
        f"  4. audit log {state_dir / 'audit.log'}, logs in {state_dir / 'logs'}, "
        f"metrics http://127.0.0.1:{gateway.metrics_port}/metrics, "
        f"policies {stack.policies_dir} (reloaded on change)\n"
        "  5. Ctrl-C stops everything and revokes the gateway's leases"
    )
    sys.stdout.flush()
