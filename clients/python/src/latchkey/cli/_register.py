"""`latchkey services register`: keep an instance registered in Consul while a command runs."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import Any

import click

import latchkey
from latchkey.cli._exec import run_supervised

WHO = "latchkey services register"


def _meta(items: Sequence[str]) -> dict[str, str]:
    meta = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise click.UsageError(f"--meta {item!r}: write it as KEY=VALUE")
        meta[key] = value
    return meta


@click.command("register", context_settings={"ignore_unknown_options": True})
@click.argument("service")
@click.option("--port", type=click.IntRange(1, 65535), required=True, help="The port it serves.")
@click.option("--id", "instance_id", default=None, help="Instance id (default: SERVICE-<random>).")
@click.option("--address", default=None, help="Address to dial (default: as the gateway sees us).")
@click.option("--tag", "tags", multiple=True, help="A tag (repeatable).")
@click.option("--meta", "meta", multiple=True, help="KEY=VALUE metadata (repeatable).")
@click.option("--http-check", default=None, help="URL Consul GETs (2xx: passing).")
@click.option("--tcp-check", default=None, help="host:port Consul connects to.")
@click.option("--grpc-check", default=None, help="host:port[/service] answering gRPC health.")
@click.option("--interval", default=None, help="How often Consul runs the check [10s].")
@click.option("--timeout", default=None, help="How long one run may take [5s].")
@click.option(
    "--deregister-after", default=None, help="Consul drops the instance critical this long [1m]."
)
@click.option("--ttl", is_flag=True, help="Also a check the gateway passes while CMD runs.")
@click.argument("command", nargs=-1, required=True, type=click.UNPROCESSED)
@click.pass_obj
def register_command(
    ctx: Any,
    service: str,
    port: int,
    instance_id: str | None,
    address: str | None,
    tags: Sequence[str],
    meta: Sequence[str],
    http_check: str | None,
    tcp_check: str | None,
    grpc_check: str | None,
    interval: str | None,
    timeout: str | None,
    deregister_after: str | None,
    ttl: bool,
    command: Sequence[str],
) -> None:
    """Register an instance of SERVICE in Consul, run CMD, deregister when CMD ends. Signals
    go to CMD; exits with CMD's code. With no check named, the instance's check is the
    registration itself (a TTL check the gateway passes).

    \b
    Example:
      latchkey services register myapp --port 3000 --tag api --tag v1 \\
          --http-check http://127.0.0.1:3000/health --interval 10s --timeout 5s -- ./server
    """
    with ctx.client() as client:
        registration = client.services.register(
            service, port=port, instance_id=instance_id, address=address, tags=tags,
            meta=_meta(meta), http_check=http_check, tcp_check=tcp_check,
            grpc_check=grpc_check, interval=interval, timeout=timeout,
            deregister_after=deregister_after, ttl=ttl,
        )  # fmt: skip
        with registration as reg:
            click.echo(f"{WHO}: {service} registered as {reg.instance_id}", err=True)

            def said(health: latchkey.RegistrationHealth) -> None:
                click.echo(f"{WHO}: {reg.instance_id} is {health.status}", err=True)

            reg.on_change(said)
            code = run_supervised(command, WHO)
    sys.exit(code)
