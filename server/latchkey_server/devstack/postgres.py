"""A dedicated PostgreSQL cluster with password (scram-sha-256) authentication."""

from __future__ import annotations

import glob
import os
import pwd
import secrets
import shutil
import signal
import subprocess
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import psycopg

from latchkey_server.devstack.ports import free_ports
from latchkey_server.devstack.process import ComponentError, ManagedProcess

HOW_TO_GET = (
    "Install PostgreSQL's server binaries (Debian: `apt-get install postgresql`; `make test` "
    "does this when run as root) or set LATCHKEY_PG_BIN to the folder holding initdb and postgres."
)
SERVER_OS_USER = "postgres"


def find_pg_bindir() -> Path:
    """Folder with `initdb` and `postgres`: LATCHKEY_PG_BIN, pg_config, Debian's layout, PATH."""
    candidates: list[str] = []
    if os.environ.get("LATCHKEY_PG_BIN"):
        candidates.append(os.environ["LATCHKEY_PG_BIN"])
    pg_config = shutil.which("pg_config")
    if pg_config:
        out = subprocess.run([pg_config, "--bindir"], capture_output=True, text=True, check=False)
        if out.returncode == 0:
            candidates.append(out.stdout.strip())
    debian = sorted(
        glob.glob("/usr/lib/postgresql/*/bin"), key=lambda p: int(Path(p).parent.name), reverse=True
    )
    candidates.extend(debian)
    initdb = shutil.which("initdb")
    if initdb:
        candidates.append(str(Path(os.path.realpath(initdb)).parent))
    for folder in candidates:
        path = Path(folder)
        if (path / "initdb").exists() and (path / "postgres").exists():
            return path
    raise ComponentError(f"PostgreSQL server binaries (initdb, postgres) not found. {HOW_TO_GET}")


@dataclass
class PostgresCluster:
    """A throwaway cluster in a temp dir, listening on 127.0.0.1:<free port>.

    PostgreSQL refuses to run as root, so when we are root the cluster is created and run as
    the `postgres` OS user. Host connections require scram-sha-256 passwords, so a wrong or
    dropped credential demonstrably fails to log in.
    """

    bindir: Path = field(default_factory=find_pg_bindir)
    port: int = 0
    superuser: str = "postgres"
    password: str = field(default_factory=lambda: secrets.token_urlsafe(18))
    datadir: Path | None = None
    base_dir: Path | None = None
    """Where the cluster lives (emptied first, removed on stop); None: a new temp folder."""
    die_with_parent: bool = False
    _base: Path | None = None
    _process: ManagedProcess | None = None

    def __post_init__(self) -> None:
        if not self.port:
            self.port = free_ports(1)[0]

    @property
    def dsn(self) -> str:
        """Admin DSN (superuser, password auth over TCP)."""
        return self.dsn_for(self.superuser, self.password)

    def dsn_for(self, user: str, password: str, dbname: str = "postgres") -> str:
        return f"postgresql://{user}:{password}@127.0.0.1:{self.port}/{dbname}"

    @property
    def log_path(self) -> Path:
        assert self._base is not None
        return self._base / "postgres.log"

    def _run_as(self) -> str | None:
        if os.geteuid() != 0:
            return None
        try:
            pwd.getpwnam(SERVER_OS_USER)
        except KeyError as exc:
            raise ComponentError(
                "running as root, and PostgreSQL refuses to run as root, but there is no "
                f"'{SERVER_OS_USER}' OS user to run it as. {HOW_TO_GET}"
            ) from exc
        return SERVER_OS_USER

    def start(self, timeout: float = 60.0) -> None:
        user = self._run_as()
        if self.base_dir is not None:
            shutil.rmtree(self.base_dir, ignore_errors=True)
            self.base_dir.mkdir(parents=True, mode=0o700)
            self._base = self.base_dir
        else:
            self._base = Path(tempfile.mkdtemp(prefix="latchkey-pg-"))
        self.datadir = self._base / "data"
        sockdir = self._base / "sock"
        sockdir.mkdir()
        pwfile = self._base / "pwfile"
        pwfile.write_text(self.password + "\n")
        pwfile.chmod(0o600)
        if user is not None:
            info = pwd.getpwnam(user)
            for path in (self._base, sockdir, pwfile):
                os.chown(path, info.pw_uid, info.pw_gid)
        prefix = ["runuser", "-u", user, "--"] if user else []
        init = subprocess.run(
            [
                *prefix, str(self.bindir / "initdb"), "-D", str(self.datadir),
                "-U", self.superuser, f"--pwfile={pwfile}", "--auth=scram-sha-256",
                "--encoding=UTF8", "--no-locale", "--no-sync",
            ],
            capture_output=True, text=True, check=False,
        )  # fmt: skip
        pwfile.unlink()
        if init.returncode != 0:
            raise ComponentError(f"initdb failed:\n{init.stdout}\n{init.stderr}")
        argv = [
            str(self.bindir / "postgres"), "-D", str(self.datadir), "-p", str(self.port),
            "-c", "listen_addresses=127.0.0.1", "-c", f"unix_socket_directories={sockdir}",
            "-c", "fsync=off", "-c", "synchronous_commit=off", "-c", "full_page_writes=off",
            "-c", "max_connections=200",
        ]  # fmt: skip
        self._process = ManagedProcess(
            "postgres", argv, self.log_path, user=user, die_with_parent=self.die_with_parent
        )
        self._process.start()
        self._process.wait_ready(self._accepts_login, timeout)

    def _accepts_login(self) -> bool:
        try:
            with psycopg.connect(self.dsn, connect_timeout=2):
                return True
        except psycopg.OperationalError:
            return False

    def can_login(self, user: str, password: str, dbname: str = "postgres") -> bool:
        """True when `user`/`password` can open a session right now."""
        try:
            with psycopg.connect(self.dsn_for(user, password, dbname), connect_timeout=5) as conn:
                conn.execute("SELECT 1")
                return True
        except psycopg.OperationalError:
            return False

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process else None

    def stop(self, timeout: float = 10.0, hurry: Callable[[], bool] | None = None) -> None:
        """Fast shutdown (SIGINT), then remove the data directory."""
        if self._process:
            self._process.stop(timeout=timeout, sig=signal.SIGINT, hurry=hurry)
        if self._base and self._base.exists():
            shutil.rmtree(self._base, ignore_errors=True)

    def log_tail(self, lines: int = 40) -> str:
        return self._process.log_tail(lines) if self._process else "(not started)"
