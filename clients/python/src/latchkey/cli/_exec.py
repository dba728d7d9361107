"""`latchkey exec`: run a command with secrets, credentials and config in its environment.

Environment names (override the prefix with `SOURCE=PREFIX`, e.g. `--db-role demo-readonly=DB`):

- `--secret demo/app`       → `DEMO_APP_<KEY>` for each key of the secret
- `--db-role demo-readonly` → `DEMO_READONLY_USERNAME`, `_PASSWORD`, `_LEASE_ID`
- `--config config/demo/`   → `<KEY>` for each key under the prefix (path relative to it);
                              with a prefix: `<PREFIX>_<KEY>`

Names are upper-cased and every character other than A-Z, 0-9 becomes `_`. The same values are
written, as `NAME=value` lines, to the file named by `LATCHKEY_ENV_FILE` in the child's
environment, rewritten on every change before the child is restarted or signalled (a signalled
child cannot see a new environment, so it re-reads that file).
"""

from __future__ import annotations

import os
import queue
import re
import shlex
import signal
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import click

import latchkey


def env_name(*parts: str) -> str:
    joined = "_".join(p for p in parts if p)
    return re.sub(r"[^A-Z0-9]", "_", joined.upper()).strip("_")


def split_source(spec: str) -> tuple[str, str | None]:
    source, sep, prefix = spec.partition("=")
    return source, (prefix if sep else None)


class Environment:
    """The values the child sees, rebuilt from the live sources."""

    def __init__(self) -> None:
        self.secrets: dict[str, str] = {}
        self.db: dict[str, latchkey.RotatingCredentials] = {}
        self.db_prefix: dict[str, str] = {}
        self.config: dict[str, dict[str, str]] = {}

    def values(self) -> dict[str, str]:
        env = dict(self.secrets)
        for role, creds in self.db.items():
            current = creds.current
            prefix = self.db_prefix[role]
            env[env_name(prefix, "USERNAME")] = current.username
            env[env_name(prefix, "PASSWORD")] = current.password.get_secret_value()
            env[env_name(prefix, "LEASE_ID")] = current.lease_id
        for values in self.config.values():
            env.update(values)
        return env


def _config_values(prefix: str, env_prefix: str, event: latchkey.ConfigEvent) -> dict[str, str]:
    base = prefix if prefix.endswith("/") or not prefix else prefix + "/"
    return {
        env_name(env_prefix, key.removeprefix(base)): entry.text
        for key, entry in event.entries.items()
    }


def _write_env_file(path: Path, values: dict[str, str]) -> None:
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        for name, value in sorted(values.items()):
            f.write(f"{name}={shlex.quote(value)}\n")
    tmp.replace(path)


FORWARDED = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGUSR1, signal.SIGUSR2)


@click.command(
    "exec",
    context_settings={"ignore_unknown_options": True},
    epilog="Environment names: see `latchkey.cli._exec` docs; override with SOURCE=PREFIX.",
)
@click.option("--secret", "secrets", multiple=True, help="KV secret PATH[=PREFIX] (mount secret).")
@click.option("--db-role", "roles", multiple=True, help="Database ROLE[=PREFIX] (rotation-aware).")
@click.option("--config", "prefixes", multiple=True, help="Config PREFIX[=ENVPREFIX] (live).")
@click.option(
    "--on-change",
    default="restart",
    show_default=True,
    help="On a change or rotation: `restart` CMD, or `signal:NAME` (e.g. signal:HUP).",
)
@click.argument("command", nargs=-1, required=True, type=click.UNPROCESSED)
@click.pass_obj
def exec_command(
    ctx: Any,
    secrets: Sequence[str],
    roles: Sequence[str],
    prefixes: Sequence[str],
    on_change: str,
    command: Sequence[str],
) -> None:
    """Run CMD with secrets, database credentials and config in its environment; restart or
    signal it when config changes or credentials rotate. Forwards signals; exits with CMD's code.

    \b
    Example:
      latchkey exec --db-role demo-readonly=PG --config config/demo/=APP \\
          --on-change signal:HUP -- ./server
    """
    mode, _, signame = on_change.partition(":")
    if mode not in ("restart", "signal") or (mode == "signal" and not signame):
        raise click.UsageError("--on-change must be `restart` or `signal:NAME` (e.g. signal:HUP)")
    change_signal = signal.SIGHUP
    if mode == "signal":
        name = signame.upper()
        name = name if name.startswith("SIG") else "SIG" + name
        if not hasattr(signal, name):
            raise click.UsageError(f"unknown signal {signame!r}")
        change_signal = signal.Signals[name]
    changes: queue.Queue[str] = queue.Queue()
    env = Environment()
    with ctx.client() as client:
        for spec in secrets:
            path, prefix = split_source(spec)
            secret = client.secrets.get(path)
            for key, value in secret.data.items():
                text = value if isinstance(value, str) else str(value)
                env.secrets[env_name(prefix if prefix is not None else path, key)] = text
        for spec in roles:
            role, prefix = split_source(spec)
            creds = client.database.watch(role)
            creds.on_rotate(lambda _c, r=role: changes.put(f"rotation of {r}"))
            env.db[role] = creds
            env.db_prefix[role] = prefix if prefix is not None else role
        for spec in prefixes:
            cfg_prefix, prefix = split_source(spec)
            started: list[bool] = []

            def on_config(
                event: latchkey.ConfigEvent | latchkey.StreamStatus,
                p: str = cfg_prefix,
                e: str = prefix or "",
                started: list[bool] = started,
            ) -> None:
                if isinstance(event, latchkey.ConfigEvent):
                    env.config[p] = _config_values(p, e, event)
                    if started:  # the first snapshot is the starting environment
                        changes.put(f"config under {p}")

            client.config.watch(cfg_prefix, on_config)
            started.append(True)
        code = _supervise(command, env, changes, mode, change_signal)
        for creds in env.db.values():
            creds.close()
    sys.exit(code)


def _supervise(
    command: Sequence[str],
    env: Environment,
    changes: queue.Queue[str],
    mode: str,
    change_signal: signal.Signals,
) -> int:
    workdir = Path(tempfile.mkdtemp(prefix="latchkey-exec-"))
    env_file = workdir / "env"

    def spawn() -> subprocess.Popen[bytes]:
        values = env.values()
        _write_env_file(env_file, values)
        child_env = {**os.environ, **values, "LATCHKEY_ENV_FILE": str(env_file)}
        return subprocess.Popen(list(command), env=child_env)

    child = spawn()
    previous = {sig: signal.getsignal(sig) for sig in FORWARDED}

    def forward(signum: int, _frame: object) -> None:
        child.send_signal(signum)

    for sig in FORWARDED:
        signal.signal(sig, forward)
    try:
        while True:
            code = child.poll()
            if code is not None:
                return code
            try:
                reason = changes.get(timeout=0.2)
            except queue.Empty:
                continue
            click.echo(f"latchkey exec: {reason} changed", err=True)
            if mode == "restart":
                child.terminate()
                try:
                    child.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    child.kill()
                    child.wait()
                child = spawn()
            else:
                _write_env_file(env_file, env.values())
                child.send_signal(change_signal)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        if child.poll() is None:
            child.terminate()
            child.wait()
        env_file.unlink(missing_ok=True)
        workdir.rmdir()
