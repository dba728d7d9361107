"""Consul agent service registration (`AgentServices` of `agent_port.py`).

A private sibling of `consul.py`, like `_consul_sessions.py`: every request goes through the
adapter's one request path (`ConsulAdapter._get`: request budget, read reserve, timeouts,
reachability, metrics; `op` labels `agent_*`).

Consul 1.8.7 answers (shared/reference/consul-notes.md §6-7, and probed): register with
`?replace-existing-checks` is idempotent; passing an unknown check is a 500 `CheckID "x" does
not have associated TTL`; deregistering an unknown id is a 200.
"""

from __future__ import annotations

import json
from urllib.parse import quote

from latchkey_server.upstreams._consul_parse import ConsulUnavailable, go_duration
from latchkey_server.upstreams.agent_port import ServiceDefinition
from latchkey_server.upstreams.consul import ConsulAdapter

_OK = (200,)
_OK_OR_SERVER_ERROR = (200, 500)


class ConsulAgentServices:
    """`AgentServices` over a `ConsulAdapter`."""

    def __init__(self, consul: ConsulAdapter) -> None:
        self._consul = consul

    async def register(self, service: ServiceDefinition) -> None:
        body = {
            "ID": service.id,
            "Name": service.name,
            "Tags": list(service.tags),
            "Address": service.address,
            "Port": service.port,
            "Meta": dict(service.meta),
            "Check": {
                "CheckID": service.ttl_check_id,
                "Name": f"{service.name} {service.id} alive",
                "TTL": go_duration(service.check_ttl),
                "Status": "passing",
                "DeregisterCriticalServiceAfter": go_duration(service.deregister_after),
            },
        }
        await self._consul._get(
            "agent_register", service.name, "/v1/agent/service/register",
            {"replace-existing-checks": ""}, None, None, method="PUT",
            body=json.dumps(body).encode(), accept=_OK,
        )  # fmt: skip

    async def pass_check(self, check_id: str, note: str = "") -> bool:
        path = f"/v1/agent/check/pass/{quote(check_id, safe='')}"
        params = {"note": note} if note else {}
        reply = await self._consul._get(
            "agent_check_pass", check_id, path, params, None, None, method="PUT",
            accept=_OK_OR_SERVER_ERROR,
        )  # fmt: skip
        if reply.status == 500:
            text = reply.body.decode(errors="replace").strip()[:200]
            if "does not have associated TTL" in text or "Unknown check" in text:
                return False
            raise ConsulUnavailable(f"Consul failed a check update: {text}", http_status=500)
        return True

    async def deregister(self, service_id: str) -> None:
        path = f"/v1/agent/service/deregister/{quote(service_id, safe='')}"
        await self._consul._get(
            "agent_deregister", service_id, path, {}, None, None, method="PUT", accept=_OK
        )
