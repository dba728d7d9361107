"""A database credential in the forms people paste: shell `export` lines and a libpq URI.

Quoting is exact for any password: `shlex.quote` for POSIX shells, percent-encoding of every
reserved character for the URI (libpq decodes it).
"""

from __future__ import annotations

import re
import shlex
from urllib.parse import quote

import click

import latchkey

_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def check_prefix(prefix: str) -> None:
    """A prefix that makes shell variable names (`PG` → `PGUSER`, `DB_` → `DB_USER`)."""
    if not _NAME.match(prefix + "USER"):
        raise click.BadParameter(
            "must make shell variable names: letters, digits and `_`, not starting with a digit",
            param_hint="--prefix",
        )


def env_lines(creds: latchkey.DatabaseCredentials, prefix: str) -> str:
    """`export` lines for `eval "$(...)"`, after a comment naming the lease."""
    password = creds.password.get_secret_value()
    expires = f" (expires {creds.expires_at.isoformat()})" if creds.expires_at else ""
    return (
        f"# latchkey lease {creds.lease_id}{expires}\n"
        f"export {prefix}USER={shlex.quote(creds.username)}\n"
        f"export {prefix}PASSWORD={shlex.quote(password)}\n"
    )


def _host(host: str) -> str:
    return f"[{host}]" if ":" in host and not host.startswith("[") else quote(host, safe="")


def dsn(
    creds: latchkey.DatabaseCredentials,
    *,
    host: str | None,
    port: str | None,
    dbname: str | None,
) -> str:
    """`postgresql://USER:PASSWORD@HOST:PORT/DBNAME`; what is not given is left to libpq's
    defaults. A host that is a directory (a Unix socket) goes in the `host` parameter."""
    if port is not None and not port.isdigit():
        raise click.BadParameter(f"{port!r} is not a port number", param_hint="--port/PGPORT")
    user = quote(creds.username, safe="")
    password = quote(creds.password.get_secret_value(), safe="")
    path = quote(dbname or "", safe="")
    if host and host.startswith("/"):  # a Unix-socket directory: only as a parameter
        params = f"host={quote(host, safe='')}" + (f"&port={port}" if port else "")
        return f"postgresql://{user}:{password}@/{path}?{params}"
    address = (_host(host) if host else "") + (f":{port}" if port else "")
    return f"postgresql://{user}:{password}@{address}/{path}"
