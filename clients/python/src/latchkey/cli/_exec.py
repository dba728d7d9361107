"""`latchkey exec`: run a command with secrets, credentials and config in its environment.

The values reach the command through its environment only; nothing is written to disk unless
`--env-file` asks for a file (needed by `--on-change signal:NAME`: a signalled command cannot
see a new environment, so it re-reads that file). The file lives in a private (0700) folder,
in memory where the system offers one (`$XDG_RUNTIME_DIR`, `/dev/shm`), and is removed however
`exec` ends short of SIGKILL.

Exit codes follow the shell's: the command's own, 128+N when signal N ended it, 127 when it is
not found and 126 when it cannot be run (see `latchkey --help`).
"""

from __future__ import annotations

import os
import queue
import re
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import click

import latchkey
from latchkey.cli._exit import Exit
from latchkey.cli._paths import secret_location

NAMING = """\b
Environment names (override the prefix with SOURCE=PREFIX, e.g. --db-role demo-readonly=DB):
  --secret demo/app        DEMO_APP_<KEY> for each key of the secret
  --db-role demo-readonly  DEMO_READONLY_USERNAME, _PASSWORD, _LEASE_ID
  --config config/demo/    <KEY> for each key under the prefix (path relative to it);
                           with a prefix: <PREFIX>_<KEY>
Names are upper-cased; every character other than A-Z and 0-9 becomes `_`.
\b
With --env-file the same values are also written, as NAME=value lines (values quoted for
sh), to a private file named by LATCHKEY_ENV_FILE in the command's environment, rewritten on
every change before the command is restarted or signalled, and removed when exec ends.
\b
Exit codes: the command's own; 128+N when signal N ended it; 127 when the command is not
found, 126 when it cannot be run.
"""


def env_name(*parts: str) -> str:
    joined = "_".join(p for p in parts if p)
    return re.sub(r"[^A-Z0-9]", "_", joined.upper()).strip("_")


def split_source(spec: str) -> tuple[str, str | None]:
    source, sep, prefix = spec.partition("=")
    return source, (prefix if sep else None)


class Environment:
    """The values the child sees, rebuilt from the live sources."""

    def __init__(self) -> None:
        self.secrets: dict[str, dict[str, str]] = {}
        """Per --secret spec, the values its current version gives."""
        self.db: dict[str, latchkey.RotatingCredentials] = {}
        self.db_prefix: dict[str, str] = {}
        self.config: dict[str, dict[str, str]] = {}

    def values(self) -> dict[str, str]:
        env: dict[str, str] = {}
        for secret_values in self.secrets.values():
            env.update(secret_values)
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


def _secret_values(env_prefix: str, secret: latchkey.Secret) -> dict[str, str]:
    return {
        env_name(env_prefix, key): value if isinstance(value, str) else str(value)
        for key, value in secret.data.items()
    }


class CannotRun(Exception):
    """The command could not be started; `code` is what a shell would exit with."""

    def __init__(self, message: str, code: Exit) -> None:
        super().__init__(message)
        self.message = message
        self.code = code


def resolve_command(name: str, path: str | None) -> str:
    """The file a shell would run for `name` (searching `path` when it has no `/`)."""
    if "/" not in name:
        found = shutil.which(name, path=path)
        if found is not None:
            return found
        if shutil.which(name, mode=os.F_OK, path=path) is None:
            raise CannotRun(f"{name}: command not found (not in PATH)", Exit.COMMAND_NOT_FOUND)
        raise CannotRun(f"{name}: permission denied (not executable)", Exit.NOT_EXECUTABLE)
    target = Path(name)
    if not target.exists():
        raise CannotRun(f"{name}: no such file", Exit.COMMAND_NOT_FOUND)
    if target.is_dir():
        raise CannotRun(f"{name}: is a directory", Exit.NOT_EXECUTABLE)
    if not os.access(target, os.X_OK):
        raise CannotRun(
            f"{name}: permission denied (not executable; chmod +x {shlex.quote(name)})",
            Exit.NOT_EXECUTABLE,
        )
    return name


def _private_dir() -> Path:
    """A 0700 folder for the env file, in memory where the system has one."""
    for base in (os.environ.get("XDG_RUNTIME_DIR"), "/dev/shm"):  # noqa: S108 - a tmpfs, 0700 inside
        if base and os.path.isdir(base) and os.access(base, os.W_OK | os.X_OK):
            return Path(tempfile.mkdtemp(prefix="latchkey-exec-", dir=base))
    return Path(tempfile.mkdtemp(prefix="latchkey-exec-"))


class EnvFile:
    """The optional LATCHKEY_ENV_FILE: written atomically, readable by the owner only."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.path = folder / "env"

    def write(self, values: dict[str, str]) -> None:
        tmp = self.path.with_suffix(".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            for name, value in sorted(values.items()):
                f.write(f"{name}={shlex.quote(value)}\n")
        tmp.replace(self.path)

    def remove(self) -> None:
        shutil.rmtree(self.folder, ignore_errors=True)


@contextmanager
def env_file(wanted: bool) -> Iterator[EnvFile | None]:
    if not wanted:
        yield None
        return
    file = EnvFile(_private_dir())
    try:
        yield file
    finally:
        file.remove()


FORWARDED = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGUSR1, signal.SIGUSR2)


def _change_signal(on_change: str) -> tuple[str, signal.Signals]:
    mode, _, signame = on_change.partition(":")
    if mode not in ("restart", "signal") or (mode == "signal" and not signame):
        raise click.UsageError("--on-change must be `restart` or `signal:NAME` (e.g. signal:HUP)")
    if mode == "restart":
        return mode, signal.SIGHUP
    name = signame.upper()
    name = name if name.startswith("SIG") else "SIG" + name
    if not hasattr(signal, name):
        raise click.UsageError(f"unknown signal {signame!r}")
    return mode, signal.Signals[name]


@click.command("exec", context_settings={"ignore_unknown_options": True}, epilog=NAMING)
@click.option("--secret", "secrets", multiple=True, help="KV secret PATH[=PREFIX] (live).")
@click.option("--db-role", "roles", multiple=True, help="Database ROLE[=PREFIX] (rotation-aware).")
@click.option("--config", "prefixes", multiple=True, help="Config PREFIX[=ENVPREFIX] (live).")
@click.option(
    "--on-change",
    default="restart",
    show_default=True,
    help="On a new secret version, config change or rotation: `restart` CMD, or "
    "`signal:NAME` (e.g. signal:HUP; needs --env-file).",
)
@click.option(
    "--env-file",
    "want_env_file",
    is_flag=True,
    help="Also write the values to a private file named by LATCHKEY_ENV_FILE (off: secrets "
    "never touch the disk).",
)
@click.argument("command", nargs=-1, required=True, type=click.UNPROCESSED)
@click.pass_obj
def exec_command(
    ctx: Any,
    secrets: Sequence[str],
    roles: Sequence[str],
    prefixes: Sequence[str],
    on_change: str,
    want_env_file: bool,
    command: Sequence[str],
) -> None:
    """Run CMD with secrets, database credentials and config in its environment; restart or
    signal it when a secret or config changes or credentials rotate. Forwards signals; exits
    with CMD's code.

    \b
    Example:
      latchkey exec --db-role demo-readonly=PG --config config/demo/=APP \\
          --on-change signal:HUP --env-file -- ./server
    """
    mode, change_signal = _change_signal(on_change)
    if mode == "signal" and not want_env_file:
        raise click.UsageError(
            f"--on-change {on_change} needs --env-file: a signalled command cannot see a new "
            "environment, so it re-reads the values from the file LATCHKEY_ENV_FILE names"
        )
    try:
        program = resolve_command(command[0], os.environ.get("PATH"))
    except CannotRun as exc:
        click.echo(f"latchkey exec: {exc.message}", err=True)
        sys.exit(exc.code)
    changes: queue.Queue[str] = queue.Queue()
    env = Environment()
    with ctx.client() as client:
        for spec in secrets:
            source, prefix = split_source(spec)
            mount, path = secret_location(source, "secret")
            watched = client.secrets.watch(path, mount=mount)
            secret_prefix = prefix if prefix is not None else path
            env.secrets[spec] = _secret_values(secret_prefix, watched.current)

            def on_secret(
                new: latchkey.Secret, spec: str = spec, p: str = secret_prefix, where: str = source
            ) -> None:
                env.secrets[spec] = _secret_values(p, new)
                changes.put(f"secret {where} (version {new.version})")

            watched.on_change(on_secret)
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
        try:
            with env_file(want_env_file) as file:
                code = _supervise(program, command, env, file, changes, mode, change_signal)
        except CannotRun as exc:
            click.echo(f"latchkey exec: {exc.message}", err=True)
            code = exc.code
        finally:
            for creds in env.db.values():
                creds.close()
    sys.exit(code)


def run_supervised(command: Sequence[str], who: str) -> int:
    """Run COMMAND as `exec` does (signals forwarded), with the environment as it is; its exit
    code (127/126 when it cannot be run, the reason on stderr after `who:`)."""
    try:
        program = resolve_command(command[0], os.environ.get("PATH"))
        no_changes: queue.Queue[str] = queue.Queue()
        return _supervise(
            program, command, Environment(), None, no_changes, "restart", signal.SIGHUP
        )
    except CannotRun as exc:
        click.echo(f"{who}: {exc.message}", err=True)
        return exc.code


def _spawn(
    program: str, command: Sequence[str], env: Environment, file: EnvFile | None
) -> subprocess.Popen[bytes]:
    values = env.values()
    child_env = {**os.environ, **values}
    if file is not None:
        file.write(values)
        child_env["LATCHKEY_ENV_FILE"] = str(file.path)
    try:
        return subprocess.Popen(list(command), executable=program, env=child_env)
    except FileNotFoundError as exc:
        raise CannotRun(f"{command[0]}: {exc.strerror}", Exit.COMMAND_NOT_FOUND) from exc
    except PermissionError as exc:
        raise CannotRun(f"{command[0]}: {exc.strerror}", Exit.NOT_EXECUTABLE) from exc
    except OSError as exc:  # e.g. ENOEXEC: not a program and no #! line
        raise CannotRun(f"{command[0]}: {exc.strerror}", Exit.NOT_EXECUTABLE) from exc


def _exit_code(returncode: int) -> int:
    """The child's code as a shell reports it: 128+N when signal N ended it."""
    return 128 - returncode if returncode < 0 else returncode


def _supervise(
    program: str,
    command: Sequence[str],
    env: Environment,
    file: EnvFile | None,
    changes: queue.Queue[str],
    mode: str,
    change_signal: signal.Signals,
) -> int:
    child = _spawn(program, command, env, file)
    previous = {sig: signal.getsignal(sig) for sig in FORWARDED}

    def forward(signum: int, _frame: object) -> None:
        child.send_signal(signum)

    for sig in FORWARDED:
        signal.signal(sig, forward)
    try:
        while True:
            code = child.poll()
            if code is not None:
                return _exit_code(code)
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
                child = _spawn(program, command, env, file)
            else:
                assert file is not None  # signal mode requires --env-file
                file.write(env.values())
                child.send_signal(change_signal)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        if child.poll() is None:
            child.terminate()
            child.wait()
