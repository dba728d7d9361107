"""A latchkey gateway in a process of its own (`latchkey-server serve`), as operators run it.

Fault tests need what an in-process gateway cannot give: its own RSS, real signals, a second
process binding the same address, and its stderr log.
"""

from __future__ import annotations

import os
import re
import signal
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from latchkey_server.devstack.ports import free_ports
from latchkey_server.devstack.process import ManagedProcess
from latchkey_server.transport.probe import check_health

SERVER = Path(sys.executable).with_name("latchkey-server")


def rss_mb(pid: int) -> float:
    """Resident set size of a process, in MiB (from /proc)."""
    text = Path(f"/proc/{pid}/status").read_text()
    match = re.search(r"^VmRSS:\s+(\d+) kB", text, re.M)
    assert match is not None, "no VmRSS in /proc status"
    return int(match.group(1)) / 1024


@dataclass
class GatewayProcess:
    """One `latchkey-server serve --config FILE` with its own audit log and stderr log."""

    workdir: Path
    config: dict[str, Any]
    tokens: dict[str, str]
    port: int = 0
    process: ManagedProcess | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        if not self.port:
            self.port = free_ports(1)[0]
        self.config = {**self.config, "listen": f"127.0.0.1:{self.port}"}
        self.config.setdefault("audit", {})["sink"] = str(self.audit_path)

    @property
    def addr(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def audit_path(self) -> Path:
        return self.workdir / "audit.log"

    @property
    def log_path(self) -> Path:
        return self.workdir / "gateway.log"

    @property
    def pid(self) -> int:
        assert self.process is not None
        assert self.process.pid is not None
        return self.process.pid

    def metadata(self, identity: str = "app") -> tuple[tuple[str, str], ...]:
        return (("authorization", f"Bearer {self.tokens[identity]}"),)

    def start(self, timeout: float = 60.0) -> None:
        self.launch()
        assert self.process is not None
        self.process.wait_ready(lambda: check_health(self.addr, timeout=1.0).serving, timeout)

    def launch(self) -> None:
        """Start the process without waiting for it to serve."""
        self.workdir.mkdir(parents=True, exist_ok=True)
        config_path = self.workdir / "gateway.yaml"
        config_path.write_text(yaml.safe_dump(self.config))
        env = {k: v for k, v in os.environ.items() if not k.startswith("LATCHKEY_")}
        self.process = ManagedProcess(
            "latchkey gateway",
            [str(SERVER), "serve", "--config", str(config_path)],
            self.log_path,
            env=env,
        )
        self.process.start()

    def signal(self, sig: int = signal.SIGTERM) -> None:
        os.kill(self.pid, sig)

    def wait_exit(self, timeout: float = 30.0) -> int:
        assert self.process is not None
        assert self.process._proc is not None
        return self.process._proc.wait(timeout=timeout)

    def stop(self) -> None:
        if self.process is not None:
            self.process.stop(timeout=30)

    def rss_mb(self) -> float:
        return rss_mb(self.pid)

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def log_tail(self, lines: int = 40) -> str:
        return "\n".join(self.log_text().splitlines()[-lines:])

    def audit_lines(self) -> list[dict[str, Any]]:
        import json

        if not self.audit_path.exists():
            return []
        return [json.loads(line) for line in self.audit_path.read_text().splitlines() if line]
