"""Fixtures for SDK tests: clients on the shared gateway, and Consul/Vault seeding helpers."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import consul
import hvac
import pytest

import latchkey
from latchkey_server.devstack.consul import ConsulAgent
from latchkey_server.devstack.seed import READONLY_CREATION
from tests.fixtures.gateway import GatewayHandle


@dataclass
class Upstreams:
    """Direct access to Consul and Vault, to change what the gateway serves."""

    consul: consul.Consul
    vault: hvac.Client

    def put(self, key: str, value: str) -> None:
        self.consul.kv.put(key, value)

    def register(
        self, service: str, n: int, status: str = "passing", tags: tuple[str, ...] = ()
    ) -> str:
        service_id = f"{service}-{n}"
        self.consul.agent.service.register(
            service, service_id=service_id, address="127.0.0.1", port=9000 + n, tags=list(tags),
            check={"CheckID": f"{service_id}-ttl", "TTL": "87600h", "Status": status},
        )  # fmt: skip
        return service_id

    def set_health(self, service_id: str, status: str) -> None:
        check = f"{service_id}-ttl"
        if status == "passing":
            self.consul.agent.check.ttl_pass(check)
        else:
            self.consul.agent.check.ttl_fail(check)

    def short_role(self, ttl: str = "3s", max_ttl: str = "6s") -> str:
        """A database role with a short max TTL, so that the gateway rotates it quickly."""
        role = f"rot-{uuid.uuid4().hex[:8]}"
        self.vault.secrets.database.create_role(
            name=role, db_name="demo", creation_statements=READONLY_CREATION,
            default_ttl=ttl, max_ttl=max_ttl,
        )  # fmt: skip
        return role


@pytest.fixture(scope="session")
def upstreams(gateway: GatewayHandle, consul_agent: ConsulAgent) -> Upstreams:
    return Upstreams(
        consul=consul.Consul(host="127.0.0.1", port=consul_agent.http_port),
        vault=hvac.Client(url=gateway.vault_addr, token=gateway.vault_root_token),
    )


@pytest.fixture
def unique() -> str:
    return uuid.uuid4().hex[:8]


@pytest.fixture
async def client(gateway: GatewayHandle) -> AsyncIterator[latchkey.AsyncClient]:
    async with latchkey.AsyncClient(gateway.addr, token=gateway.tokens["app"]) as c:
        yield c


def sync_client(gateway: GatewayHandle, identity: str = "app", **kwargs: Any) -> latchkey.Client:
    return latchkey.Client(gateway.addr, token=gateway.tokens[identity], **kwargs)
