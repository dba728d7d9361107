"""Fixtures for the fault suite: gateways in processes of their own, private Consul agents."""

from __future__ import annotations

import secrets
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from latchkey_server.devstack.consul import ConsulAgent
from latchkey_server.devstack.process import ComponentError
from tests.faults.process import GatewayProcess
from tests.fixtures.components import register_component, unregister_component
from tests.fixtures.gateway import TEST_REPLICA

GatewayFactory = Callable[..., GatewayProcess]


def _merge(base: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out


@pytest.fixture
def private_consul(tmp_path: Path) -> Iterator[ConsulAgent]:
    """A `consul agent -dev` of this test's own, to restart (it comes back empty)."""
    try:
        agent = ConsulAgent(tmp_path / "consul")
        agent.start()
    except ComponentError as exc:
        pytest.fail(f"Consul is required for this test: {exc}", pytrace=False)
    register_component("consul (private)", agent)
    yield agent
    unregister_component("consul (private)")
    agent.stop()


@pytest.fixture
def gateway_process(
    demo_env: dict[str, Any], consul_agent: ConsulAgent, vault_server: Any, tmp_path: Path
) -> Iterator[GatewayFactory]:
    """Start `latchkey-server serve` processes wired to the real Consul, OpenBao, PostgreSQL."""
    started: list[GatewayProcess] = []

    def start(
        name: str = "gw", *, consul: ConsulAgent | None = None, start: bool = True, **overrides: Any
    ) -> GatewayProcess:
        config: dict[str, Any] = {
            "insecure": True,
            "metrics": {"listen": ""},
            "health": {"probe_interval": 0.5},
            "heartbeat_interval": 0.5,
            "shutdown_grace": 2.0,
            "log_format": "json",
            "vault": {
                "addr": vault_server.addr,
                "auth": {
                    "method": "approle",
                    "role_id": demo_env["approle"].role_id,
                    "secret_id": demo_env["approle"].secret_id,
                },
                "kv_watch_interval": 0.5,
            },
            "consul": {"addr": (consul or consul_agent).http_addr, "wait": 20},
            "leases": {"grace": 3.0, "unheld_grace": 0.5},
            "replica": {"id": f"{name}-{secrets.token_hex(3)}", **TEST_REPLICA},
            "auth": {
                "tokens_file": str(demo_env["tokens_file"]),
                "policies_dir": str(demo_env["policies_dir"]),
            },
        }
        process = GatewayProcess(tmp_path / name, _merge(config, overrides), demo_env["tokens"])
        started.append(process)
        register_component(f"gateway {name}", process)
        if start:
            process.start()
        return process

    yield start
    for process in started:
        unregister_component(f"gateway {process.workdir.name}")
        process.stop()
