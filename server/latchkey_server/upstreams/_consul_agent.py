"""The Consul agent's service API (`AgentServices` of `agent_port.py`).

A private sibling of `consul.py`, like `_consul_sessions.py`: every request goes through the
adapter's one request path (`ConsulAdapter._get`), so it takes its token of the request budget
and its connection from the same budget, with the same timeouts, reachability, metrics
(`op` labels `agent_*`, `health_checks`) and error table.

Consul 1.8.7 answers (shared/reference/consul-notes.md, and probed): registering an id that
exists replaces it (`replace-existing-checks` drops checks the new definition lacks); a check
definition with `DeregisterCriticalServiceAfter` below one minute is raised to one minute by
the agent's reaper; `PUT /v1/agent/check/pass/<id>` for a check the agent does not know is an
error naming the check ("Unknown check"), so is deregistering an unknown service id.
"""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import quote

from latchkey_server.errors import InvalidArgument
from latchkey_server.models import CheckKind, CheckSpec, CheckStatus, HealthStatus
from latchkey_server.models import ServiceRegistration as Registration
from latchkey_server.upstreams._consul_parse import (
    ConsulUnavailable,
    Reply,
    decode_list,
    go_duration,
)
from latchkey_server.upstreams.consul import ConsulAdapter
from latchkey_server.upstreams.consul_port import WatchSlots

_OK = (200,)
_KNOWN_OR_NOT = (200, 404, 500)


def _text(reply: Reply) -> str:
    return reply.body.decode(errors="replace").strip()[:200]


def _unknown(reply: Reply) -> bool:
    """The agent's answer for an id it does not know (404, or 500 in older agents)."""
    return reply.status == 404 or (reply.status == 500 and "nknown" in _text(reply))


def check_definition(check: CheckSpec) -> dict[str, Any]:
    """One entry of `Checks` in an agent service registration."""
    body: dict[str, Any] = {
        "CheckID": check.check_id,
        "Name": check.name,
        "DeregisterCriticalServiceAfter": go_duration(check.deregister_after),
    }
    if check.kind is CheckKind.TTL:
        body["TTL"] = go_duration(check.interval)
        body["Status"] = "passing"
        return body
    body["Interval"] = go_duration(check.interval)
    body["Timeout"] = go_duration(check.timeout)
    if check.kind is CheckKind.HTTP:
        body["HTTP"] = check.target
    elif check.kind is CheckKind.TCP:
        body["TCP"] = check.target
    else:
        body["GRPC"] = check.target
    return body


def registration_body(reg: Registration) -> dict[str, Any]:
    return {
        "ID": reg.instance_id,
        "Name": reg.service,
        "Address": reg.address,
        "Port": reg.port,
        "Tags": list(reg.tags),
        "Meta": dict(reg.meta),
        "Checks": [check_definition(c) for c in reg.checks],
    }


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
    """`AgentServices` over a `ConsulAdapter`."""

    def __init__(self, consul: ConsulAdapter) -> None:
        self._consul = consul

    @property
    def watch_slots(self) -> WatchSlots:
        return self._consul.watch_slots

    @property
    def reachable(self) -> bool:
        return self._consul.reachable

    async def register_service(self, registration: Registration) -> None:
        body = json.dumps(registration_body(registration)).encode()
        reply = await self._consul._get(
            "agent_register", registration.service, "/v1/agent/service/register",
            {"replace-existing-checks": "true"}, None, None, method="PUT", body=body,
            accept=(200, 400, 500),
        )  # fmt: skip
        if reply.status == 400 or (reply.status == 500 and "nvalid" in _text(reply)):
            raise InvalidArgument(f"Consul refused the registration: {_text(reply)}")
        if reply.status != 200:
            raise ConsulUnavailable(
                f"Consul could not register the instance: {_text(reply)}", http_status=500
            )

    async def deregister_service(self, instance_id: str) -> None:
        path = f"/v1/agent/service/deregister/{quote(instance_id, safe='')}"
        reply = await self._consul._get(
            "agent_deregister", instance_id, path, {}, None, None, method="PUT",
            accept=_KNOWN_OR_NOT,
        )  # fmt: skip
        if reply.status != 200 and not _unknown(reply):
            raise ConsulUnavailable(f"Consul could not deregister: {_text(reply)}")

    async def pass_ttl(self, check_id: str, note: str) -> bool:
        path = f"/v1/agent/check/pass/{quote(check_id, safe='')}"
        reply = await self._consul._get(
            "agent_check_pass", check_id, path, {"note": note}, None, None, method="PUT",
            accept=_KNOWN_OR_NOT,
        )  # fmt: skip
        if reply.status == 200:
            return True
        if _unknown(reply):
            return False
        raise ConsulUnavailable(f"Consul could not update the check: {_text(reply)}")

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
