"""`latchkey-server`: parses arguments and hands over; builds nothing itself."""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

import click

from latchkey_server.errors import LatchkeyError


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def main() -> None:
    """latchkey gateway server and its development tools."""


@main.command()
@click.option(
    "--config",
    "config_path",
    type=click.Path(dir_okay=False, path_type=Path),
    envvar="LATCHKEY_CONFIG",
    help="YAML or TOML config file; LATCHKEY_* environment variables override it.",
)
@click.option(
    "--insecure",
    is_flag=True,
    default=False,
    help="Serve plaintext gRPC (loopback development only). Same as LATCHKEY_INSECURE=true.",
)
def serve(config_path: Path | None, insecure: bool) -> None:
    """Run the gateway until SIGINT/SIGTERM, then shut down gracefully (revoking held leases).

    TLS is on by default (tls.cert_file/tls.key_file); SIGHUP reloads the access policies.

    Example: latchkey-server serve --config /etc/latchkey/gateway.yaml
    """
    from latchkey_server.config import load_settings
    from latchkey_server.observability.logs import configure_logging
    from latchkey_server.server import Gateway

    if insecure:
        os.environ["LATCHKEY_INSECURE"] = "true"  # the flag's variable; flags win over the file
    try:
        settings = load_settings(config_path)
    except LatchkeyError as exc:
        raise click.UsageError(exc.message) from exc
    configure_logging(settings.log_level, settings.log_format)
    try:
        # One machine-readable line on stdout once the gateway accepts calls.
        asyncio.run(Gateway(settings).serve(announce=_announce))
    except LatchkeyError as exc:
        click.echo(f"latchkey-server: {exc.message}", err=True)
        sys.exit(1)


def _announce(addr: str) -> None:
    click.echo(f"LATCHKEY_ADDR={addr}")
    sys.stdout.flush()


@main.group()
def token() -> None:
    """Manage the gateway's bearer tokens file."""


@token.command("create")
@click.option("--identity", required=True, help="The identity the token authenticates as.")
@click.option(
    "--tokens-file",
    required=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="Tokens file to append the hashed token to (created 0600 if missing).",
)
def token_create(identity: str, tokens_file: Path) -> None:
    """Create a token for IDENTITY, store its hash, print the token once on stdout.

    Example: latchkey-server token create --identity billing --tokens-file tokens.yaml
    """
    from latchkey_server.access.tokens import append_token, generate_token

    value = generate_token()
    append_token(tokens_file, identity, value)
    click.echo(value)


@main.command()
@click.option(
    "--state-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path(".latchkey"),
    show_default=True,
    envvar="LATCHKEY_STATE_DIR",
    help="Where dev.env, logs and generated material are written.",
)
@click.option(
    "--policies-dir",
    type=click.Path(file_okay=False, exists=True, path_type=Path),
    default=None,
    envvar="LATCHKEY_POLICIES_DIR",
    help="Access policies the dev gateway applies (hot-reloaded on change). "
    "Default: ./policies when it exists, else the policies shipped with latchkey.",
)
@click.option(
    "--trace-file",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    envvar="LATCHKEY_DEV_TRACE_FILE",
    help="Trace the dev gateway (OpenTelemetry) into this file, one JSON span per line.",
)
def dev(state_dir: Path, policies_dir: Path | None, trace_file: Path | None) -> None:
    """Run the local development stack in the foreground (what `make dev` runs).

    Example: latchkey-server dev --state-dir .latchkey --trace-file .latchkey/traces.jsonl
    """
    if trace_file is not None:
        # The gateway runs as a child process with `serve --config`; the documented
        # LATCHKEY_TRACING__* overrides carry the setting to it.
        os.environ["LATCHKEY_TRACING__ENABLED"] = "true"
        os.environ["LATCHKEY_TRACING__EXPORTER"] = "file"
        os.environ["LATCHKEY_TRACING__FILE"] = str(trace_file.resolve())
    from latchkey_server.access.policies import DEFAULT_POLICY_DIR
    from latchkey_server.devstack.run import run_dev

    if policies_dir is None:
        local = Path("policies")
        policies_dir = local if (local / "bindings.hcl").exists() else DEFAULT_POLICY_DIR
    run_dev(state_dir.resolve(), policies_dir.resolve())


# --- certs: development CA and mTLS certificates (access/certs.py) ----------------------------

_TLS_DIR_OPTION = click.option(
    "--dir",
    "directory",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path(".latchkey/tls"),
    show_default=True,
    envvar="LATCHKEY_TLS_DIR",
    help="Directory holding ca.crt/ca.key and the certificates issued from them.",
)


def _echo_written(*paths: Path) -> None:
    """Print the paths a certs command wrote (certificate, then key), one per line."""
    for path in paths:
        click.echo(str(path))


@main.group()
def certs() -> None:
    """Create a development CA and the server and client certificates for mTLS.

    Keys are EC P-256, unencrypted PEM, written 0600; certificates are written 0644. Each
    command prints the paths it wrote (certificate, then key).

    \b
    Example:
      latchkey-server certs init
      latchkey-server certs issue server --name gateway.internal
      latchkey-server certs issue client --identity spiffe://example.org/billing
    """


@certs.command("init")
@_TLS_DIR_OPTION
@click.option("--common-name", default="latchkey dev CA", show_default=True, help="CA subject.")
@click.option(
    "--days", type=click.IntRange(min=1), default=365, show_default=True, help="Validity in days."
)
@click.option(
    "--force", is_flag=True, help="Replace an existing CA (its certificates stop verifying)."
)
def certs_init(directory: Path, common_name: str, days: int, force: bool) -> None:
    """Create a self-signed CA (ca.crt, ca.key); refuses to replace one unless --force.

    Example: latchkey-server certs init --dir .latchkey/tls
    """
    from latchkey_server.access.certs import init_ca

    try:
        paths = init_ca(directory, common_name=common_name, days=days, force=force)
    except LatchkeyError as exc:
        raise click.ClickException(exc.message) from exc
    _echo_written(paths.cert, paths.key)


@certs.group("issue")
def certs_issue() -> None:
    """Issue a certificate signed by the CA in --dir."""


@certs_issue.command("server")
@_TLS_DIR_OPTION
@click.option(
    "--name",
    "names",
    multiple=True,
    help="DNS name or IP address for the SANs (repeatable); localhost, 127.0.0.1 and ::1 "
    "are always included.",
)
@click.option(
    "--days", type=click.IntRange(min=1), default=90, show_default=True, help="Validity in days."
)
def certs_issue_server(directory: Path, names: tuple[str, ...], days: int) -> None:
    """Issue the gateway's server certificate (server.crt, server.key).

    Example: latchkey-server certs issue server --name gateway.internal --name 10.0.0.5
    """
    from latchkey_server.access.certs import DEFAULT_SERVER_NAMES, issue_server

    try:
        paths = issue_server(directory, names=names or DEFAULT_SERVER_NAMES, days=days)
    except LatchkeyError as exc:
        raise click.ClickException(exc.message) from exc
    _echo_written(paths.cert, paths.key)


@certs_issue.command("client")
@_TLS_DIR_OPTION
@click.option(
    "--identity",
    required=True,
    help="Identity to certify: a URI (spiffe://...) becomes a URI SAN, anything else the CN.",
)
@click.option(
    "--days", type=click.IntRange(min=1), default=90, show_default=True, help="Validity in days."
)
def certs_issue_client(directory: Path, identity: str, days: int) -> None:
    """Issue a client certificate (client-<identity>.crt/.key) for IDENTITY.

    Example: latchkey-server certs issue client --identity spiffe://example.org/billing
    """
    from latchkey_server.access.certs import issue_client

    try:
        paths = issue_client(directory, identity=identity, days=days)
    except LatchkeyError as exc:
        raise click.ClickException(exc.message) from exc
    _echo_written(paths.cert, paths.key)


# --- healthcheck and bootstrap: what the container image and the compose stack run -----------


@main.command()
@click.option(
    "--addr",
    default="127.0.0.1:7400",
    show_default=True,
    envvar="LATCHKEY_HEALTHCHECK_ADDR",
    help="The gateway's HOST:PORT.",
)
@click.option(
    "--service",
    default="",
    envvar="LATCHKEY_HEALTHCHECK_SERVICE",
    help="Service to check, e.g. latchkey.v1.Secrets (default: the whole server).",
)
@click.option(
    "--timeout",
    type=click.FloatRange(min=0, min_open=True),
    default=3.0,
    show_default=True,
    envvar="LATCHKEY_HEALTHCHECK_TIMEOUT",
    help="Seconds to wait for the answer.",
)
@click.option(
    "--cacert",
    type=click.Path(dir_okay=False, path_type=Path),
    envvar="LATCHKEY_HEALTHCHECK_CACERT",
    help="CA bundle verifying the gateway's certificate; turns on TLS.",
)
@click.option(
    "--cert",
    type=click.Path(dir_okay=False, path_type=Path),
    envvar="LATCHKEY_HEALTHCHECK_CERT",
    help="Client certificate for mTLS (with --key and --cacert).",
)
@click.option(
    "--key",
    type=click.Path(dir_okay=False, path_type=Path),
    envvar="LATCHKEY_HEALTHCHECK_KEY",
    help="Client private key for mTLS (with --cert and --cacert).",
)
@click.option(
    "--server-name",
    envvar="LATCHKEY_HEALTHCHECK_SERVER_NAME",
    help="Name to verify the gateway's certificate against (default: the host in --addr).",
)
@click.option(
    "--insecure",
    is_flag=True,
    envvar="LATCHKEY_HEALTHCHECK_INSECURE",
    help="Plaintext, no TLS (the default when --cacert is not given).",
)
def healthcheck(
    addr: str,
    service: str,
    timeout: float,
    cacert: Path | None,
    cert: Path | None,
    key: Path | None,
    server_name: str | None,
    insecure: bool,
) -> None:
    """Ask the gateway's grpc.health.v1.Health/Check; exit 0 if SERVING, 1 otherwise.

    The reason for a failure goes to stderr. For container and Kubernetes health checks.

    Example: latchkey-server healthcheck --addr 127.0.0.1:7400 --timeout 3
    """
    from latchkey_server.transport.probe import ProbeTLS, check_health

    if insecure and (cacert or cert or key):
        raise click.UsageError("--insecure cannot be combined with --cacert, --cert or --key")
    if (cert is None) != (key is None):
        raise click.UsageError("--cert and --key must be given together")
    if cert and not cacert:
        raise click.UsageError("--cert and --key need --cacert")
    tls = ProbeTLS(cacert, cert, key, server_name) if cacert else None
    result = check_health(addr, service=service, timeout=timeout, tls=tls)
    if not result.serving:
        click.echo(f"latchkey-server healthcheck: {result.message}", err=True)
        sys.exit(1)


@main.command()
@click.option(
    "--vault-addr",
    required=True,
    envvar="LATCHKEY_BOOTSTRAP_VAULT_ADDR",
    help="Vault URL, as this command and the gateway reach it.",
)
@click.option(
    "--vault-token",
    required=True,
    envvar="LATCHKEY_BOOTSTRAP_VAULT_TOKEN",
    help="A Vault token that may mount engines and write policies (dev root token).",
)
@click.option(
    "--pg-dsn",
    required=True,
    envvar="LATCHKEY_BOOTSTRAP_PG_DSN",
    help="Admin DSN of the demo PostgreSQL (Vault must reach the same host).",
)
@click.option(
    "--consul-addr",
    required=True,
    envvar="LATCHKEY_BOOTSTRAP_CONSUL_ADDR",
    help="Consul agent HTTP address, HOST:PORT.",
)
@click.option(
    "--tokens-file",
    required=True,
    envvar="LATCHKEY_BOOTSTRAP_TOKENS_FILE",
    type=click.Path(dir_okay=False, path_type=Path),
    help="The gateway's tokens file (replaced; holds one new dev token).",
)
@click.option(
    "--config-out",
    required=True,
    envvar="LATCHKEY_BOOTSTRAP_CONFIG_OUT",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Where to write the gateway's config (0600).",
)
@click.option(
    "--listen",
    default="0.0.0.0:7400",
    show_default=True,
    envvar="LATCHKEY_BOOTSTRAP_LISTEN",
    help="The gateway's listen address.",
)
@click.option("--deadline", type=click.FloatRange(min=0, min_open=True), default=120.0,
              show_default=True, envvar="LATCHKEY_BOOTSTRAP_DEADLINE",
              help="Seconds to wait for Vault, Consul and PostgreSQL to be ready.")  # fmt: skip
@click.option(
    "--policies-dir",
    type=click.Path(file_okay=False, path_type=Path),
    envvar="LATCHKEY_BOOTSTRAP_POLICIES_DIR",
    help="Policies folder as the gateway sees it (unset: the gateway denies everything).",
)
@click.option(
    "--tls-dir",
    type=click.Path(file_okay=False, path_type=Path),
    envvar="LATCHKEY_BOOTSTRAP_TLS_DIR",
    help="Keep a dev CA and the gateway's server certificate here and serve TLS "
    "(unset: plaintext).",
)
@click.option(
    "--tls-name",
    "tls_names",
    multiple=True,
    help="DNS name or IP for the server certificate (repeatable); localhost and 127.0.0.1 "
    "are always included.",
)
def bootstrap(
    vault_addr: str,
    vault_token: str,
    pg_dsn: str,
    consul_addr: str,
    tokens_file: Path,
    config_out: Path,
    listen: str,
    deadline: float,
    policies_dir: Path | None,
    tls_dir: Path | None,
    tls_names: tuple[str, ...],
) -> None:
    """Seed fresh Vault, Consul and PostgreSQL for the demo and write the gateway's config.

    Waits for the upstreams, seeds exactly what `make dev` seeds, creates a dev token (printed
    once on stdout as LATCHKEY_TOKEN=...) and writes the config `serve --config` reads. What the
    compose stack's one-shot `bootstrap` service runs.

    \b
    Example:
      latchkey-server bootstrap --vault-addr http://vault:8200 --vault-token root \\
        --pg-dsn postgresql://postgres:pw@postgres:5432/postgres --consul-addr consul:8500 \\
        --tokens-file /var/lib/latchkey/tokens.yaml --config-out /var/lib/latchkey/gateway.yaml \\
        --policies-dir /etc/latchkey/policies --tls-dir /var/lib/latchkey/tls --tls-name latchkey
    """
    from latchkey_server.devstack.bootstrap import BootstrapPlan, run_bootstrap
    from latchkey_server.devstack.process import ComponentError

    plan = BootstrapPlan(
        vault_addr=vault_addr, vault_token=vault_token, pg_dsn=pg_dsn, consul_addr=consul_addr,
        tokens_file=tokens_file, config_out=config_out, listen=listen, deadline=deadline,
        policies_dir=policies_dir, tls_dir=tls_dir, tls_names=tls_names,
    )  # fmt: skip
    try:
        token = run_bootstrap(plan)
    except ComponentError as exc:
        click.echo(f"latchkey-server bootstrap: {exc}", err=True)
        sys.exit(1)
    click.echo(f"LATCHKEY_TOKEN={token}")
