"""`latchkey-server bootstrap` (the compose stack's one-shot service) against real upstreams.

A fresh OpenBao dev server stands in for the compose stack's Vault; Consul and PostgreSQL are
the real session fixtures. The config it writes must start a gateway that serves TLS, passes
the shipped health probe and answers the dev token with the seeded secret.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import grpc

from latchkey.v1 import secrets_pb2, secrets_pb2_grpc
from latchkey_server.access.tokens import TokenStore
from latchkey_server.config import load_settings
from latchkey_server.devstack.consul import ConsulAgent
from latchkey_server.devstack.ports import free_ports
from latchkey_server.devstack.postgres import PostgresCluster
from latchkey_server.devstack.process import ManagedProcess
from latchkey_server.devstack.seed import DEMO_SECRET_PATH
from latchkey_server.transport.probe import ProbeTLS, check_health
from tests.fixtures.vault import VaultServer

ROOT = Path(__file__).resolve().parents[2]
SERVER = [sys.executable, "-m", "latchkey_server"]


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*SERVER, *args], capture_output=True, text=True, timeout=180, check=False
    )


def test_bootstrap_seeds_and_writes_a_config_the_gateway_serves(
    tmp_path: Path, openbao_process: VaultServer, consul_agent: ConsulAgent,
    postgres: PostgresCluster,
) -> None:  # fmt: skip
    port = free_ports(1)[0]
    state = tmp_path / "state"
    result = _run(
        "bootstrap", "--vault-addr", openbao_process.addr,
        "--vault-token", openbao_process.root_token,
        "--pg-dsn", postgres.dsn, "--consul-addr", consul_agent.http_addr,
        "--tokens-file", str(state / "tokens.yaml"), "--config-out", str(state / "gateway.yaml"),
        "--listen", f"127.0.0.1:{port}", "--policies-dir", str(ROOT / "policies"),
        "--tls-dir", str(state / "tls"), "--tls-name", "latchkey", "--deadline", "60",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    (token,) = re.findall(r"^LATCHKEY_TOKEN=(\S+)$", result.stdout, re.M)
    assert token not in result.stderr
    assert (state / "gateway.yaml").stat().st_mode & 0o077 == 0
    settings = load_settings(state / "gateway.yaml")
    assert settings.tls.cert_file is not None
    assert settings.auth.tokens_file is not None
    assert TokenStore.load(settings.auth.tokens_file).identify(token) == "dev"

    # Metrics on a free port (the written config keeps the compose default, 9464, which a
    # developer's own `make dev` may hold), overridden the way compose overrides it.
    gateway = ManagedProcess(
        "gateway", [*SERVER, "serve", "--config", str(state / "gateway.yaml")],
        tmp_path / "gateway.log", env={**os.environ, "LATCHKEY_METRICS__LISTEN": "127.0.0.1:0"},
    )  # fmt: skip
    addr = f"127.0.0.1:{port}"
    ca = state / "tls" / "ca.crt"
    try:
        gateway.start()
        gateway.wait_ready(lambda: check_health(addr, tls=ProbeTLS(ca)).serving, 60)
        probe = _run("healthcheck", "--addr", addr, "--cacert", str(ca))
        assert probe.returncode == 0, probe.stderr
        credentials = grpc.ssl_channel_credentials(root_certificates=ca.read_bytes())
        with grpc.secure_channel(addr, credentials) as channel:
            reply = secrets_pb2_grpc.SecretsStub(channel).GetSecret(
                secrets_pb2.GetSecretRequest(path=DEMO_SECRET_PATH),
                metadata=(("authorization", f"Bearer {token}"),),
                timeout=30,
            )
        assert reply.data["greeting"] == "hello from Vault"
    finally:
        gateway.stop(timeout=30)


def test_bootstrap_gives_up_at_the_deadline_naming_what_is_not_ready(tmp_path: Path) -> None:
    closed = free_ports(3)
    result = _run(
        "bootstrap", "--vault-addr", f"http://127.0.0.1:{closed[0]}", "--vault-token", "t",
        "--pg-dsn", f"postgresql://u:hunter2@127.0.0.1:{closed[1]}/x",
        "--consul-addr", f"127.0.0.1:{closed[2]}",
        "--tokens-file", str(tmp_path / "t.yaml"), "--config-out", str(tmp_path / "c.yaml"),
        "--deadline", "0.5",
    )  # fmt: skip
    assert result.returncode == 1
    for name in ("vault: unreachable", "consul: unreachable", "postgres: connection failed"):
        assert name in result.stderr
    assert "hunter2" not in result.stderr
    assert not (tmp_path / "c.yaml").exists()
