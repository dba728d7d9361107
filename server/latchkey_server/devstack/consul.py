"""A real `consul agent -dev` on free loopback ports."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from latchkey_server.devstack.ports import free_ports
from latchkey_server.devstack.process import ComponentError, ManagedProcess

REPO_ROOT = Path(__file__).resolve().parents[3]
PROVISION_SCRIPT = REPO_ROOT / "scripts" / "provision-consul.sh"
SESSION_TTL_MIN = "1s"
"""The shortest session TTL the agent allows (Consul's default is 10s)."""
HOW_TO_GET = (
    "Run `make test` or `bash scripts/provision-consul.sh` (fetches Debian's consul 1.8.7 into "
    ".cache/consul), put a consul binary on PATH, or set LATCHKEY_CONSUL_BIN."
)


def find_consul() -> str:
    """Locate the consul binary: LATCHKEY_CONSUL_BIN, PATH, then the provisioned cache."""
    explicit = os.environ.get("LATCHKEY_CONSUL_BIN")
    if explicit:
        if not os.access(explicit, os.X_OK):
            raise ComponentError(f"LATCHKEY_CONSUL_BIN={explicit} is not executable. {HOW_TO_GET}")
        return explicit
    on_path = shutil.which("consul")
    if on_path:
        return on_path
    cached = REPO_ROOT / ".cache" / "consul" / "root" / "usr" / "bin" / "consul"
    if cached.exists():
        return str(cached)
    if PROVISION_SCRIPT.exists():
        result = subprocess.run(
            ["bash", str(PROVISION_SCRIPT)], capture_output=True, text=True, check=False
        )
        if result.returncode == 0 and result.stdout.strip():
            return result.stdout.strip().splitlines()[-1]
        raise ComponentError(f"consul could not be provisioned:\n{result.stderr}\n{HOW_TO_GET}")
    raise ComponentError(f"no consul binary found. {HOW_TO_GET}")


@dataclass
class ConsulAgent:
    """`consul agent -dev` bound to 127.0.0.1 with DNS and gRPC disabled.

    With `persistent=True` it is instead a single-node server (`-server -bootstrap-expect=1`)
    keeping its data in `workdir/data`, so KV and indexes survive a kill and restart.
    """

    workdir: Path
    binary: str = field(default_factory=find_consul)
    persistent: bool = False
    http_port: int = 0
    serf_lan_port: int = 0
    serf_wan_port: int = 0
    server_port: int = 0
    node_name: str = "latchkey-dev"
    """The agent's node name; readiness checks that the agent answering is the one started."""
    die_with_parent: bool = False
    _process: ManagedProcess | None = None

    def __post_init__(self) -> None:
        if not self.http_port:
            self.http_port = free_ports(1)[0]
        if not self.serf_lan_port:
            self.serf_lan_port, self.serf_wan_port, self.server_port = free_ports(3)

    @property
    def http_addr(self) -> str:
        """`host:port`, the form CONSUL_HTTP_ADDR takes."""
        return f"127.0.0.1:{self.http_port}"

    @property
    def url(self) -> str:
        return f"http://{self.http_addr}"

    @property
    def log_path(self) -> Path:
        return self.workdir / "consul.log"

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process else None

    def start(self, timeout: float = 60.0) -> None:
        """Start the agent (again, on the same ports, after a stop) and wait for a leader."""
        self.workdir.mkdir(parents=True, exist_ok=True)
        if self.persistent:
            data_dir = self.workdir / "data"
            data_dir.mkdir(parents=True, exist_ok=True)
            mode = [
                "-server", "-bootstrap-expect=1", f"-data-dir={data_dir}",
                "-hcl", "performance { raft_multiplier = 1 }",
            ]  # fmt: skip
        else:
            mode = ["-dev"]
        argv = [
            self.binary, "agent", *mode, "-bind", "127.0.0.1", "-client", "127.0.0.1",
            "-node", self.node_name,
            f"-http-port={self.http_port}", "-dns-port=-1", "-grpc-port=-1",
            f"-serf-lan-port={self.serf_lan_port}", f"-serf-wan-port={self.serf_wan_port}",
            f"-server-port={self.server_port}", "-log-level=info",
            # Gateway replicas of tests and benchmarks use sessions shorter than Consul's 10 s.
            "-hcl", f'session_ttl_min = "{SESSION_TTL_MIN}"',
        ]  # fmt: skip
        env = {k: v for k, v in os.environ.items() if not k.startswith("CONSUL_")}
        self._process = ManagedProcess(
            "consul agent", argv, self.log_path, env=env, die_with_parent=self.die_with_parent
        )
        self._process.start()
        self._process.wait_ready(self._ready, timeout)

    def _get(self, path: str) -> object:
        with urllib.request.urlopen(f"{self.url}{path}", timeout=1) as resp:  # noqa: S310
            return json.loads(resp.read())

    def _ready(self) -> bool:
        """Our agent (by node name) answers and the cluster has a leader."""
        try:
            agent = self._get("/v1/agent/self")
            leader = self._get("/v1/status/leader")
        except (OSError, urllib.error.URLError, ValueError):
            return False
        config = agent.get("Config", {}) if isinstance(agent, dict) else {}
        return bool(leader) and config.get("NodeName") == self.node_name

    def stop(self, timeout: float = 10.0, hurry: Callable[[], bool] | None = None) -> None:
        if self._process:
            self._process.stop(timeout=timeout, hurry=hurry)

    def kill(self) -> None:
        """Kill -9 the agent (a crash, for outage tests)."""
        if self._process:
            self._process.kill()

    def restart(self, timeout: float = 60.0) -> None:
        """Stop the agent (if running) and start it again on the same ports.

        A `-dev` agent comes back empty (its indexes start over); a persistent one keeps its data.
        """
        self.stop()
        self.start(timeout)

    def log_tail(self, lines: int = 40) -> str:
        return self._process.log_tail(lines) if self._process else "(not started)"
