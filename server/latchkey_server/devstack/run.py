"""`latchkey-server dev`: the local stack in the foreground, torn down on Ctrl-C."""

from __future__ import annotations

import signal
import threading
from pathlib import Path

import click

from latchkey_server.devstack.consul import ConsulAgent
from latchkey_server.devstack.devenv import write_dev_env
from latchkey_server.devstack.postgres import PostgresCluster


def run_dev(state_dir: Path) -> None:
    """Start Consul and PostgreSQL, write dev.env, block until SIGINT/SIGTERM, stop everything."""
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    consul = ConsulAgent(state_dir / "consul")
    postgres = PostgresCluster()
    try:
        click.echo("starting consul agent -dev ...", err=True)
        consul.start()
        click.echo("starting PostgreSQL (password auth) ...", err=True)
        postgres.start()
        env_path = state_dir / "dev.env"
        write_dev_env(
            env_path,
            {"CONSUL_HTTP_ADDR": consul.http_addr, "LATCHKEY_DEMO_PG_DSN": postgres.dsn},
        )
        click.echo(
            f"ready\n"
            f"  Consul      {consul.url}\n"
            f"  PostgreSQL  127.0.0.1:{postgres.port} (admin DSN in {env_path})\n"
            f"  source {env_path}  to use them from a shell; Ctrl-C stops everything."
        )
        stop.wait()
    finally:
        click.echo("stopping ...", err=True)
        postgres.stop()
        consul.stop()
