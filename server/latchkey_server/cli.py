"""`latchkey-server`: parses arguments and hands over; builds nothing itself."""

from __future__ import annotations

import asyncio
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
def serve(config_path: Path | None) -> None:
    """Run the gateway until SIGINT/SIGTERM, then shut down gracefully (revoking held leases).

    Example: latchkey-server serve --config /etc/latchkey/gateway.yaml
    """
    from latchkey_server.config import load_settings
    from latchkey_server.serving import configure_logging, serve_until_signalled

    try:
        settings = load_settings(config_path)
    except LatchkeyError as exc:
        raise click.UsageError(exc.message) from exc
    configure_logging(settings.log_level)
    try:
        asyncio.run(serve_until_signalled(settings))
    except LatchkeyError as exc:
        click.echo(f"latchkey-server: {exc.message}", err=True)
        sys.exit(1)


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
def dev(state_dir: Path) -> None:
    """Run the local development stack in the foreground (what `make dev` runs).

    Example: latchkey-server dev --state-dir .latchkey
    """
    from latchkey_server.devstack.run import run_dev

    run_dev(state_dir.resolve())


@main.command("vault-dev")
@click.option(
    "--listen",
    default="127.0.0.1:8200",
    show_default=True,
    envvar="LATCHKEY_VAULT_DEV_LISTEN",
    help="HOST:PORT to listen on; port 0 picks a free port (the real one is printed).",
)
@click.option(
    "--root-token",
    default="root",
    show_default=True,
    envvar="LATCHKEY_VAULT_DEV_ROOT_TOKEN",
    help="Id of the fixed root token (policies [root], never expires).",
)
def vault_dev(listen: str, root_token: str) -> None:
    """Run a Vault-HTTP-API-compatible DEVELOPMENT server (in-memory, unsealed).

    For development and tests only, never production: all state lives in memory and is lost
    on exit, there is no TLS, and the root token is fixed. hvac works against it unchanged;
    its database engine creates real PostgreSQL roles, and every outstanding lease is revoked
    (roles dropped) on SIGINT/SIGTERM.

    Prints `export VAULT_ADDR=...` and `export VAULT_TOKEN=...` once it accepts requests;
    logs one line per request to stderr.

    Example: latchkey-server vault-dev --listen 127.0.0.1:0
    """
    from latchkey_server.devvault.server import VaultDevConfig, run

    host, sep, port = listen.rpartition(":")
    if not sep or not host or not port.isdigit():
        raise click.BadParameter("expected HOST:PORT", param_hint="--listen")
    raise SystemExit(run(VaultDevConfig(host=host, port=int(port), root_token=root_token)))
