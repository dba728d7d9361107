"""Consul agent service registration (`AgentServices` and `InstanceChecks` of `agent_port.py`).

A private sibling of `consul.py`, like `_consul_sessions.py`: every request goes through the
adapter's one request path (`ConsulAdapter._get`: request budget, read reserve, timeouts,
reachability, metrics; `op` labels `agent_*`).

Consul 1.8.7 answers (shared/reference/consul-notes.md §6-7, and probed): register with
`?replace-existing-checks` is idempotent; passing an unknown check is a 500 `CheckID "x" does
not have associated TTL`; deregistering an unknown id is a 200. An instance's checks are read
from `/v1/health/checks/<service>` filtered to its id (`?filter=ServiceID == "..."`, blocking).
"""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import quote

from latchkey_server.models import CheckKind, CheckSpec, CheckStatus, HealthStatus
from latchkey_server.upstreams._consul_parse import ConsulUnavailable, decode_list, go_duration
from latchkey_server.upstreams.agent_port import ServiceDefinition
from latchkey_server.upstreams.consul import ConsulAdapter
from latchkey_server.upstreams.consul_port import WatchSlots

_OK = (200,)
_OK_OR_SERVER_ERROR = (200, 500)


def check_definition(check: CheckSpec) -> dict[str, Any]:
    """A check Consul runs (HTTP, TCP, gRPC), as an entry of a registration's `Checks`."""
    body: dict[str, Any] = {
        "CheckID": check.check_id,
        "Name": check.name,
        "Interval": go_duration(check.interval),
        "Timeout": go_duration(check.timeout),
        "DeregisterCriticalServiceAfter": go_duration(check.deregister_after),
    }
    key = {CheckKind.HTTP: "HTTP", CheckKind.TCP: "TCP", CheckKind.GRPC: "GRPC"}[check.kind]
    body[key] = check.target
    return body


def _check_status(raw: Any) -> CheckStatus:
    if not isinstance(raw, dict):
        raise ConsulUnavailable("Consul sent an unexpected health check shape")
    try:
        status = HealthStatus(raw.get("Status"))
    except ValueError:
        status = HealthStatus.CRITICAL
    return CheckStatus(
        check_id=str(raw.get("CheckID") or ""),
        name=str(raw.get("Name") or ""),
        status=status,
        output=str(raw.get("Output") or "")[:512],
    )


class ConsulAgentServices:
    """`AgentServices` and `InstanceChecks` over a `ConsulAdapter`."""

    def __init__(self, consul: ConsulAdapter) -> None:
        self._consul = consul

    @property
    def watch_slots(self) -> WatchSlots:
        return self._consul.watch_slots

    @property
    def reachable(self) -> bool:
        return self._consul.reachable

    async def register(self, service: ServiceDefinition) -> None:
        body: dict[str, Any] = {
            "ID": service.id,
            "Name": service.name,
            "Tags": list(service.tags),
            "Address": service.address,
            "Port": service.port,
            "Meta": dict(service.meta),
            "Checks": [check_definition(c) for c in service.checks],
        }
        if service.ttl_check:
            ttl = {
                "CheckID": service.ttl_check_id,
                "Name": f"{service.name} {service.id} alive",
                "TTL": go_duration(service.check_ttl),
                "Status": "passing",
                "DeregisterCriticalServiceAfter": go_duration(service.deregister_after),
            }
            body["Checks"] = [*body["Checks"], ttl]
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

    async def service_checks(
        self, service: str, instance_id: str, index: int | None = None, wait: float | None = None
    ) -> tuple[int, list[CheckStatus]]:
        path = f"/v1/health/checks/{quote(service, safe='')}"
        params = {"filter": f'ServiceID == "{instance_id}"'}
        reply = await self._consul._get(
            "health_checks", instance_id, path, params, index, wait, accept=_OK
        )
        checks = sorted(
            (_check_status(item) for item in decode_list(reply, "health checks")),
            key=lambda c: c.check_id,
        )
        return reply.index, checks
