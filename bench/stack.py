"""The real stack for a bench run: Consul agent, PostgreSQL, OpenBao, the gateway and the
floor server, each its own process, all on loopback.

The gateway runs as a subprocess (`latchkey-server serve --config ...`) so the load generator
and the server never share a CPU-bound interpreter; its counters come from its Prometheus
endpoint and its memory from /proc/<pid>/status.
"""

from __future__ import annotations

import os
import re
import secrets
import sys
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import yaml
from grpc_health.v1 import health_pb2, health_pb2_grpc

from bench import floor, raw
from latchkey_server.access.tokens import append_token, generate_token
from latchkey_server.devstack.consul import ConsulAgent
from latchkey_server.devstack.openbao import OpenBaoServer
from latchkey_server.devstack.ports import free_ports
from latchkey_server.devstack.postgres import PostgresCluster
from latchkey_server.devstack.process import ManagedProcess
from latchkey_server.devstack.seed import (
    DEMO_DATABASE,
    READONLY_CREATION,
    DemoDatabase,
    seed_consul,
    seed_postgres,
    seed_vault,
)

REPO = Path(__file__).resolve().parents[1]
IDENTITY = "bench"
ROTATING_ROLE = "bench-rotating"
_METRIC_LINE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})?\s+(\S+)")


def gateway_overrides(quick: bool) -> dict[str, Any]:
    """The gateway settings the bench uses (reported in bench.json)."""
    return {
        "log_level": "WARNING",
        "limits": {"requests_per_second": 0, "max_streams_per_identity": 1_000_000},
        "leases": {"grace": 10.0},
        "replica": {"id": "bench", "session_ttl": 3.0, "reap_grace": 2.0},
    }


def child_env() -> dict[str, str]:
    """The environment for bench subprocesses: the repo root importable (for `bench`)."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH", "")]))
    return env


def _grpc_serving(addr: str) -> bool:
    try:
        with grpc.insecure_channel(addr) as channel:
            reply = health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(service=""), timeout=1
            )
            return bool(reply.status == health_pb2.HealthCheckResponse.SERVING)
    except grpc.RpcError:
        return False


@dataclass
class Stack:
    """Handles and addresses of every running component."""

    workdir: Path
    quick: bool
    consul: ConsulAgent | None = None
    postgres: PostgresCluster | None = None
    vault: OpenBaoServer | None = None
    gateway: ManagedProcess | None = None
    floor: ManagedProcess | None = None
    vault_addr: str = ""
    root_token: str = field(default_factory=lambda: "bench-root-" + secrets.token_hex(6))
    gateway_addr: str = ""
    metrics_url: str = ""
    floor_addr: str = ""
    token: str = ""
    db: DemoDatabase | None = None
    settings: dict[str, Any] = field(default_factory=dict)

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> None:
        logs = self.workdir / "logs"
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.consul = ConsulAgent(self.workdir / "consul")
        self.consul.start()
        self.postgres = PostgresCluster()
        self.postgres.start()
        gateway_port, metrics_port, floor_port = free_ports(3)
        self.vault = OpenBaoServer(self.workdir / "openbao", root_token=self.root_token)
        self.vault.start()
        self.vault_addr = self.vault.addr
        self.db = seed_postgres(self.postgres.dsn)
        approle = seed_vault(self.vault_addr, self.root_token, self.db)
        self._seed_rotating_role()
        seed_consul(self.consul.http_addr)
        self.floor_addr = f"127.0.0.1:{floor_port}"
        self.floor = ManagedProcess(
            "floor", [sys.executable, "-m", "bench.floor", "--port", str(floor_port)],
            logs / "floor.log", env=child_env(),
        )  # fmt: skip
        self.floor.start()
        self.gateway_addr = f"127.0.0.1:{gateway_port}"
        self.metrics_url = f"http://127.0.0.1:{metrics_port}/metrics"
        config_path = self._write_gateway_config(approle, gateway_port, metrics_port)
        self.gateway = ManagedProcess(
            "latchkey gateway",
            [sys.executable, "-m", "latchkey_server", "serve", "--config", str(config_path)],
            logs / "gateway.log",
        )  # fmt: skip
        self.gateway.start()
        self.gateway.wait_ready(lambda: _grpc_serving(self.gateway_addr), 60)
        self.floor.wait_ready(lambda: _grpc_serving_floor(self.floor_addr), 30)

    def _seed_rotating_role(self) -> None:
        """A role with a short max TTL so the rotation soak sees rotations in seconds."""
        import hvac

        client = hvac.Client(url=self.vault_addr, token=self.root_token)
        client.secrets.database.create_role(
            name=ROTATING_ROLE, db_name=DEMO_DATABASE, creation_statements=READONLY_CREATION,
            default_ttl="3s", max_ttl="6s",
        )  # fmt: skip

    def _write_gateway_config(self, approle: Any, port: int, metrics_port: int) -> Path:
        auth = self.workdir / "auth"
        policies = auth / "policies"
        policies.mkdir(parents=True, exist_ok=True)
        (policies / "dev.hcl").write_text((REPO / "policies" / "dev.hcl").read_text())
        (policies / "bindings.hcl").write_text(f'binding "{IDENTITY}" {{ policies = ["dev"] }}\n')
        tokens_file = auth / "tokens.yaml"
        tokens_file.unlink(missing_ok=True)
        self.token = generate_token()
        append_token(tokens_file, IDENTITY, self.token)
        assert self.consul is not None
        config: dict[str, Any] = {
            "listen": f"127.0.0.1:{port}",
            "insecure": True,
            "metrics": {"listen": f"127.0.0.1:{metrics_port}"},
            "vault": {
                "addr": self.vault_addr,
                "auth": {
                    "method": "approle",
                    "role_id": approle.role_id,
                    "secret_id": approle.secret_id,
                },
            },
            "consul": {"addr": self.consul.http_addr},
            "auth": {"tokens_file": str(tokens_file), "policies_dir": str(policies)},
            "audit": {"sink": str(self.workdir / "audit.log")},
        }
        overrides = gateway_overrides(self.quick)
        for key, value in overrides.items():
            if isinstance(value, dict):
                config.setdefault(key, {}).update(value)
            else:
                config[key] = value
        self.settings = overrides
        path = self.workdir / "gateway.yaml"
        path.write_text(yaml.safe_dump(config, sort_keys=False))
        path.chmod(0o600)
        return path

    def stop(self) -> None:
        for component in (self.gateway, self.floor):
            if component is not None:
                component.stop(timeout=30)
        if self.vault is not None:
            self.vault.stop(timeout=30)
        if self.postgres is not None:
            self.postgres.stop()
        if self.consul is not None:
            self.consul.stop()

    # ------------------------------------------------------------------ probes

    @property
    def metadata(self) -> tuple[tuple[str, str], ...]:
        return (("authorization", f"Bearer {self.token}"),)

    @property
    def gateway_pid(self) -> int:
        assert self.gateway is not None
        assert self.gateway.pid is not None
        return self.gateway.pid

    @property
    def floor_pid(self) -> int:
        assert self.floor is not None
        assert self.floor.pid is not None
        return self.floor.pid

    @property
    def consul_http(self) -> str:
        assert self.consul is not None
        return self.consul.http_addr

    def metrics(self) -> dict[str, float]:
        """The gateway's Prometheus metrics: `name{labels}` -> value (labels as printed)."""
        with urllib.request.urlopen(self.metrics_url, timeout=5) as resp:  # noqa: S310
            text = resp.read().decode()
        out: dict[str, float] = {}
        for line in text.splitlines():
            if not line or line.startswith("#"):
                continue
            match = _METRIC_LINE.match(line)
            if match:
                try:
                    out[match.group(1) + (match.group(2) or "")] = float(match.group(3))
                except ValueError:
                    continue
        return out

    def metric_sum(self, name: str, **labels: str) -> float:
        """Sum of a metric over the series whose labels include `labels`."""
        total = 0.0
        for key, value in self.metrics().items():
            base, _, rest = key.partition("{")
            if base != name:
                continue
            if all(f'{k}="{v}"' in rest for k, v in labels.items()):
                total += value
        return total


def _grpc_serving_floor(addr: str) -> bool:
    try:
        with grpc.insecure_channel(addr) as channel:
            raw.unary(channel, floor.COUNT)(b"", timeout=1)
            return True
    except grpc.RpcError:
        return False


def wait_until(predicate: Any, timeout: float, interval: float = 0.1) -> bool:
    """Poll `predicate` until true or `timeout` seconds pass (bounded)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return bool(predicate())
