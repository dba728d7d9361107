"""`latchkey` commands. Uses only the public SDK, exactly as an application would."""

from __future__ import annotations

import logging
import os
import sys
import threading
import traceback
from collections.abc import Callable
from typing import Any, TypeVar

import click

import latchkey
from latchkey.cli import _creds
from latchkey.cli import _output as out
from latchkey.cli._exit import Exit, epilog, for_error
from latchkey.cli._paths import secret_location, with_mount_hint

F = TypeVar("F", bound=Callable[..., Any])

NO_ADDRESS = (
    "no gateway address: pass --addr or set LATCHKEY_ADDR (e.g. 127.0.0.1:7400; for the stack "
    "`make dev` runs: source .latchkey/dev.env)"
)


class Ctx:
    def __init__(self, debug: bool, **options: Any) -> None:
        self.debug = debug
        self.options = options

    def client(self) -> latchkey.Client:
        if not (self.options.get("addr") or "").strip():
            raise latchkey.ConfigurationError(NO_ADDRESS)
        return latchkey.Client(**self.options)


def read_options(fn: F) -> F:
    fn = click.option(
        "--field", "field", default=None, help="Print only this field's bare value (for scripts)."
    )(fn)
    return out.format_option("table", "json", default="table")(fn)


def watch_options(fn: F) -> F:
    fn = click.option("--count", type=int, default=None, help="Exit after this many data events.")(
        fn
    )
    return out.format_option(
        "table", "json", default="json", help="json: one JSON object per line, flushed per event."
    )(fn)


class LatchkeyGroup(click.Group):
    """Turns SDK errors into one line on stderr and a documented exit code (`_exit.TABLE`);
    Ctrl-C exits 130 without a traceback."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except latchkey.LatchkeyError as exc:
            if isinstance(ctx.obj, Ctx) and ctx.obj.debug:
                traceback.print_exception(exc)
            click.echo(f"error: {type(exc).__name__}: {exc.message}", err=True)
            ctx.exit(for_error(exc))
        except KeyboardInterrupt:
            click.echo("interrupted", err=True)
            ctx.exit(Exit.INTERRUPTED)


@click.group(cls=LatchkeyGroup, epilog=epilog())
@click.option(
    "--addr",
    envvar="LATCHKEY_ADDR",
    default=None,
    help="Gateway address(es), comma-separated, or consul://AGENT/latchkey [LATCHKEY_ADDR].",
)
@click.option("--token", default=None, help="Bearer token [LATCHKEY_TOKEN].")
@click.option("--cacert", default=None, help="CA certificate (PEM) [LATCHKEY_CACERT].")
@click.option("--client-cert", default=None, help="Client certificate [LATCHKEY_CLIENT_CERT].")
@click.option("--client-key", default=None, help="Client key [LATCHKEY_CLIENT_KEY].")
@click.option("--insecure", is_flag=True, help="Plaintext gRPC even with a CA configured.")
@click.option(
    "--retry-deadline",
    type=float,
    default=5.0,
    show_default=True,
    help="Seconds to keep retrying an unavailable gateway.",
)
@click.option(
    "--debug",
    is_flag=True,
    help="Show gRPC core's log lines, the SDK's debug log and tracebacks of errors.",
)
@click.version_option(latchkey.__version__, prog_name="latchkey")
@click.pass_context
def cli(ctx: click.Context, /, debug: bool, **options: Any) -> None:
    """Operate a latchkey gateway: secrets, database leases, config, services.

    \b
    Example:
      source .latchkey/dev.env      # after `make dev`; or set LATCHKEY_ADDR, LATCHKEY_TOKEN, ...
      latchkey status
    """
    if debug:
        logging.basicConfig(level=logging.DEBUG, format="%(levelname)s %(name)s: %(message)s")
    ctx.obj = Ctx(debug, **options)


pass_ctx = click.make_pass_decorator(Ctx)


# ------------------------------------------------------------------ secrets


@cli.group()
def secrets() -> None:
    """KV v2 secrets."""


@secrets.command("get")
@click.argument("path")
@click.option("--mount", default="secret", show_default=True, help="KV v2 mount.")
@click.option("--version", type=int, default=None, help="Version to read (default: latest).")
@click.option("--reveal", is_flag=True, help="Print secret values (hidden unless asked for).")
@read_options
@pass_ctx
def secrets_get(
    ctx: Ctx, path: str, mount: str, version: int | None, reveal: bool, fmt: str, field: str | None
) -> None:
    """Read a secret. Values are shown only with --reveal or --field.

    PATH is relative to the mount (`myapp/database`), or written as Vault's CLI
    (`secret/myapp/database`) or API (`secret/data/myapp/database`) write it, with the mount
    first.

    \b
    Example:
      latchkey secrets get demo/app --field api_key
    """
    mount, path = secret_location(path, mount)
    with ctx.client() as client, with_mount_hint(path, mount):
        secret = client.secrets.get(path, mount=mount, version=version)
    if field is not None:
        out.emit(secret.data, fmt, field, [])
        return
    data = secret.data if reveal else {k: out.REDACTED for k in secret.data}
    if fmt == "json":
        doc = {"path": path, "mount": mount, "version": secret.version, "data": data}
        doc["created_time"] = secret.created_time
        out.emit(doc, fmt, None, [])
    else:
        rows = [{"key": k, "value": v} for k, v in sorted(data.items())]
        click.echo(f"{mount}/{path} (version {secret.version})")
        out.emit(rows, fmt, None, ["key", "value"])


@secrets.command("watch")
@click.argument("path")
@click.option("--mount", default="secret", show_default=True, help="KV v2 mount.")
@click.option("--reveal", is_flag=True, help="Print secret values (hidden unless asked for).")
@watch_options
@pass_ctx
def secrets_watch(
    ctx: Ctx, path: str, mount: str, reveal: bool, fmt: str, count: int | None
) -> None:
    """Follow a secret: its current version, then each new one, one line per event. Values are
    shown only with --reveal.

    \b
    Example:
      latchkey secrets watch demo/app --count 2
    """
    mount, path = secret_location(path, mount)
    follower = Follower(fmt, count)

    def on_version(secret: latchkey.Secret) -> None:
        data = secret.data if reveal else {k: out.REDACTED for k in secret.data}
        follower.emit(
            {
                "event": "version",
                "path": f"{mount}/{path}",
                "version": secret.version,
                "data": data,
                "stale": secret.freshness.stale,
            }
        )

    with (
        ctx.client() as client,
        with_mount_hint(path, mount),
        client.secrets.watch(path, mount=mount) as watched,
    ):
        watched.on_status(lambda status: follower.emit(_status_doc(status)))
        watched.on_change(on_version)  # before the current one: a version may come meanwhile
        on_version(watched.current)
        follower.wait()


# ------------------------------------------------------------------ database


def _creds_doc(creds: latchkey.DatabaseCredentials, reveal: bool) -> dict[str, Any]:
    doc = creds.model_dump(exclude={"password"})
    doc["password"] = creds.password.get_secret_value() if reveal else out.REDACTED
    return doc


@cli.group()
def db() -> None:
    """Dynamic database credentials."""


@db.command("creds")
@click.argument("role")
@click.option("--reveal", is_flag=True, help="Print the password (hidden unless asked for).")
@out.format_option(
    "table", "json", "env", "dsn", default="table",
    help="env: shell `export` lines; dsn: a libpq URI (both include the password).",
)  # fmt: skip
@click.option("--field", default=None, help="Print only this field's bare value (for scripts).")
@click.option(
    "--prefix",
    default="PG",
    show_default=True,
    help="--format env: variable names are PREFIX + USER / PASSWORD.",
)
@click.option("--host", envvar="PGHOST", default=None, help="--format dsn: host [PGHOST].")
@click.option("--port", envvar="PGPORT", default=None, help="--format dsn: port [PGPORT].")
@click.option(
    "--dbname", envvar="PGDATABASE", default=None, help="--format dsn: database [PGDATABASE]."
)
@pass_ctx
def db_creds(
    ctx: Ctx,
    role: str,
    reveal: bool,
    fmt: str,
    field: str | None,
    prefix: str,
    host: str | None,
    port: str | None,
    dbname: str | None,
) -> None:
    """Get a credential for ROLE (a lease the gateway renews while held).

    `--format env` prints `export PGUSER=... PGPASSWORD=...` lines for `eval`; `--format dsn`
    a `postgresql://` URI for --host/--port/--dbname, which default to PGHOST, PGPORT and
    PGDATABASE (`.latchkey/dev.env` sets them to the demo database). Both quote the password
    for the shell or the URI.

    \b
    Example:
      latchkey db creds demo-readonly --field username
      eval "$(latchkey db creds demo-readonly --format env)" && psql -c 'select 1'
      psql "$(latchkey db creds demo-readonly --format dsn)"
    """
    if fmt in ("env", "dsn") and field is not None:
        raise click.UsageError(f"--field cannot be combined with --format {fmt}")
    if fmt == "env":
        _creds.check_prefix(prefix)
    with ctx.client() as client:
        creds = client.database.credentials(role)
    if fmt == "env":
        click.echo(_creds.env_lines(creds, prefix), nl=False)
        return
    if fmt == "dsn":
        click.echo(_creds.dsn(creds, host=host, port=port, dbname=dbname))
        return
    doc = _creds_doc(creds, reveal or field == "password")
    out.emit(doc, fmt, field, ["username", "password", "lease_id", "expires_at"])


@cli.group()
def leases() -> None:
    """Leases the gateway's replicas hold."""


LEASE_COLUMNS = ["lease_id", "role", "holder", "username", "expires_at", "holders", "replica"]


@leases.command("list")
@click.option("--role", default=None, help="Only leases of this role.")
@read_options
@pass_ctx
def leases_list(ctx: Ctx, role: str | None, fmt: str, field: str | None) -> None:
    """List every replica's leases, as journaled in Consul (never passwords).

    \b
    Example:
      latchkey leases list --role demo-readonly --format json
    """
    with ctx.client() as client:
        items = client.leases.list(role=role)
    out.emit([x.model_dump() for x in items], fmt, field, LEASE_COLUMNS)


@leases.command("renew")
@click.argument("lease_id")
@click.option("--increment", type=float, default=None, help="Seconds to extend by.")
@read_options
@pass_ctx
def leases_renew(
    ctx: Ctx, lease_id: str, increment: float | None, fmt: str, field: str | None
) -> None:
    """Renew a lease.

    \b
    Example:
      latchkey leases renew database/creds/demo-readonly/abc123
    """
    with ctx.client() as client:
        renewed = client.leases.renew(lease_id, increment)
    out.emit(renewed.model_dump(), fmt, field, ["lease_id", "expires_at", "renewable"])


@leases.command("revoke")
@click.argument("lease_id")
@click.option(
    "--force",
    is_flag=True,
    help="Revoke in Vault now, whoever holds it, any replica or none (operators).",
)
@pass_ctx
def leases_revoke(ctx: Ctx, lease_id: str, force: bool) -> None:
    """Release (or with --force revoke) a lease.

    \b
    Example:
      latchkey leases revoke --force database/creds/demo-readonly/abc123
    """
    with ctx.client() as client:
        revoked = client.leases.revoke(lease_id, force=force)
    click.echo("revoked" if revoked else "released (other holders keep it alive)")


# ------------------------------------------------------------------ config


@cli.group()
def config() -> None:
    """Live configuration (Consul KV)."""


def _entry_doc(entry: latchkey.ConfigEntry) -> dict[str, Any]:
    return {"key": entry.key, "value": entry.text, "modify_index": entry.modify_index}


@config.command("get")
@click.argument("key")
@read_options
@pass_ctx
def config_get(ctx: Ctx, key: str, fmt: str, field: str | None) -> None:
    """Read one key.

    \b
    Example:
      latchkey config get config/demo/log_level --field value
    """
    with ctx.client() as client:
        entry = client.config.get(key)
    out.emit(_entry_doc(entry), fmt, field, ["key", "value", "modify_index"])


@config.command("list")
@click.argument("prefix")
@read_options
@pass_ctx
def config_list(ctx: Ctx, prefix: str, fmt: str, field: str | None) -> None:
    """Every key under PREFIX.

    \b
    Example:
      latchkey config list config/demo/
    """
    with ctx.client() as client:
        entries = client.config.list(prefix)
    out.emit([_entry_doc(e) for e in entries], fmt, field, ["key", "value", "modify_index"])


@config.command("get-merged")
@click.argument("prefixes", nargs=-1, required=True)
@out.format_option("json", "yaml", default="json")
@pass_ctx
def config_get_merged(ctx: Ctx, prefixes: tuple[str, ...], fmt: str) -> None:
    """The keys under PREFIX... as one nested document, later prefixes winning key by key
    (what `client.config.bind(Model, PREFIX...)` validates).

    \b
    Example:
      latchkey config get-merged config/myapp/ config/myapp/env/production/ --format yaml
    """
    with ctx.client() as client:
        doc = client.config.merged(*prefixes)
    out.emit_document(doc, fmt)


class Follower:
    """Prints a watch's events as the SDK delivers them (from its thread), so that a stream
    that cannot start shows why at once (`unreachable` with the reason) while it retries; the
    command returns after `count` data events (Ctrl-C: exit code 130)."""

    STATUS = ("stale", "fresh", "unreachable", "reconnected")

    def __init__(self, fmt: str, count: int | None) -> None:
        self._fmt = fmt
        self._count = count
        self._seen = 0
        self._lock = threading.Lock()
        self._done = threading.Event()
        self.broken_pipe = False

    def emit(self, doc: dict[str, Any]) -> None:
        with self._lock:
            if self._done.is_set():
                return
            try:
                out.emit_line(doc, self._fmt)
            except BrokenPipeError:  # the reader went away (`| head -1`)
                self.broken_pipe = True
                self._done.set()
                return
            if doc.get("event") not in self.STATUS:
                self._seen += 1
                if self._count is not None and self._seen >= self._count:
                    self._done.set()

    def wait(self) -> None:
        self._done.wait()
        if self.broken_pipe:  # nothing more can be written; keep Python's exit quiet too
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())


def _status_doc(status: latchkey.StreamStatus) -> dict[str, Any]:
    return {"event": status.kind, "detail": status.detail}


@config.command("watch")
@click.argument("prefix")
@watch_options
@pass_ctx
def config_watch(ctx: Ctx, prefix: str, fmt: str, count: int | None) -> None:
    """Follow PREFIX: the snapshot, then each change, one line per event.

    \b
    Example:
      latchkey config watch config/demo/ | jq .
    """
    follower = Follower(fmt, count)

    def on_event(event: latchkey.ConfigEvent | latchkey.StreamStatus) -> None:
        if isinstance(event, latchkey.StreamStatus):
            follower.emit(_status_doc(event))
            return
        follower.emit(
            {
                "event": event.kind,
                "index": event.index,
                "values": {k: e.text for k, e in event.entries.items()},
                "changes": [
                    {"type": c.type, "key": c.key, "value": c.entry.text if c.entry else None}
                    for c in event.changes
                ],
                "stale": event.freshness.stale,
            }
        )

    with ctx.client() as client, client.config.watch(prefix, on_event):
        follower.wait()


# ------------------------------------------------------------------ services


@cli.group()
def services() -> None:
    """Healthy service instances, and registering your own (Consul)."""


INSTANCE_COLUMNS = ["id", "address", "port", "health", "tags", "node"]


@services.command("list")
@click.argument("name")
@click.option("--tag", default=None, help="Only instances with this tag.")
@read_options
@pass_ctx
def services_list(ctx: Ctx, name: str, tag: str | None, fmt: str, field: str | None) -> None:
    """Healthy instances of NAME.

    \b
    Example:
      latchkey services list web --tag v1
    """
    with ctx.client() as client:
        instances = client.services.healthy(name, tag=tag)
    if not instances:
        click.echo(
            f"0 healthy instances of {name!r}: Consul knows instances of it, but none passes "
            "its health checks",
            err=True,
        )
    out.emit([i.model_dump() for i in instances], fmt, field, INSTANCE_COLUMNS)


@services.command("watch")
@click.argument("name")
@watch_options
@pass_ctx
def services_watch(ctx: Ctx, name: str, fmt: str, count: int | None) -> None:
    """Follow NAME's healthy instances: the full set on every change, one line per event.

    \b
    Example:
      latchkey services watch web --count 1
    """
    follower = Follower(fmt, count)

    def on_event(event: latchkey.ServiceEvent | latchkey.StreamStatus) -> None:
        if isinstance(event, latchkey.StreamStatus):
            follower.emit(_status_doc(event))
            return
        follower.emit(
            {
                "event": "instances",
                "service": name,
                "index": event.index,
                "instances": [f"{i.address}:{i.port}" for i in event.instances],
                "ids": [i.id for i in event.instances],
                "stale": event.freshness.stale,
            }
        )

    with ctx.client() as client, client.services.watch(name, on_event):
        follower.wait()


# ------------------------------------------------------------------ status


@cli.command()
@read_options
@pass_ctx
def status(ctx: Ctx, fmt: str, field: str | None) -> None:
    """Gateway health, upstream freshness, and who the gateway thinks you are.

    \b
    Example:
      latchkey status --field identity
    """
    with ctx.client() as client:
        st = client.status()
    if fmt == "json" or field is not None:
        out.emit(st.model_dump(), fmt, field, [])
        return
    click.echo(f"gateway   {st.address} (version {st.version}, serving)")
    click.echo(f"identity  {st.identity} (via {st.auth_method})")
    rows = [u.model_dump() for u in st.upstreams]
    click.echo(out.table(rows, ["name", "state", "age_seconds", "last_contact"]))


def _register_exec() -> None:
    from latchkey.cli._exec import exec_command
    from latchkey.cli._flags import flags
    from latchkey.cli._register import register_command

    cli.add_command(exec_command)
    cli.add_command(flags)
    services.add_command(register_command)


_register_exec()


def run(args: list[str] | None = None) -> None:
    """Run the CLI (exit codes: see `latchkey --help`)."""
    cli.main(args=args, prog_name="latchkey")
