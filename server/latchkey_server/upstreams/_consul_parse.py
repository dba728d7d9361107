"""Consul HTTP response shapes turned into domain values (no I/O here).

Split from consul.py to keep the adapter readable; consul.py re-exports the public names.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from latchkey_server.errors import InvalidArgument, Unavailable
from latchkey_server.models import ConfigEntry, HealthStatus, Instance
from latchkey_server.upstreams.consul_port import CheckState, Saturated

_SEVERITY = {HealthStatus.PASSING: 0, HealthStatus.WARNING: 1, HealthStatus.CRITICAL: 2}


class ConsulUnavailable(Unavailable):
    """Consul could not be reached or refused to answer (transport error, 5xx, 401/403, 429)."""

    def __init__(
        self, message: str, *, retry_after: float | None = 1.0, http_status: int | None = None
    ) -> None:
        super().__init__(message, retry_after=retry_after)
        self.http_status = http_status


class ConsulSaturated(ConsulUnavailable, Saturated):
    """No connection of the budget's read reserve came free in time. Consul was not asked:
    this is the gateway being busy, not Consul being unreachable."""


def go_duration(seconds: float) -> str:
    """A Go duration string for `wait` (milliseconds, at least 1 ms)."""
    return f"{max(1, round(seconds * 1000))}ms"


def read_timeout_for(wait: float, margin: float) -> float:
    """Client read timeout of a blocking query: the server may add up to wait/16 of jitter."""
    return wait + wait / 16 + margin


def classify_checks(checks: list[Any]) -> HealthStatus:
    """The worst status among an instance's checks (node checks included); unknown = critical."""
    worst = HealthStatus.PASSING
    for check in checks:
        raw = check.get("Status") if isinstance(check, dict) else None
        try:
            status = HealthStatus(raw)
        except ValueError:
            status = HealthStatus.CRITICAL
        if _SEVERITY[status] > _SEVERITY[worst]:
            worst = status
    return worst


@dataclass(frozen=True, slots=True)
class Reply:
    status: int
    index: int
    known_leader: bool
    last_contact_ms: int
    body: bytes


def int_header(headers: Mapping[str, str], name: str, default: int = 0) -> int:
    raw = headers.get(name)
    if raw is None:
        return default
    try:
        return int(raw)
    except ValueError:
        return default


def check_key(what: str, key: str) -> None:
    if key.startswith("/"):
        raise InvalidArgument(f"Consul {what} must not start with '/'")


def decode_json(reply: Reply) -> Any:
    try:
        return json.loads(reply.body)
    except ValueError as exc:
        raise ConsulUnavailable("Consul sent a response that is not JSON") from exc


def decode_list(reply: Reply, what: str) -> list[Any]:
    data = decode_json(reply)
    if not isinstance(data, list):
        raise ConsulUnavailable(f"Consul sent an unexpected {what} shape")
    return data


def entry(raw: Any) -> ConfigEntry:
    value_b64 = raw.get("Value")
    try:
        value = base64.b64decode(value_b64, validate=True) if value_b64 else b""
    except (binascii.Error, TypeError) as exc:
        raise ConsulUnavailable("Consul sent a KV value that is not base64") from exc
    return ConfigEntry(
        key=str(raw["Key"]),
        value=value,
        create_index=int(raw.get("CreateIndex") or 0),
        modify_index=int(raw.get("ModifyIndex") or 0),
        flags=int(raw.get("Flags") or 0),
    )


def key_version(raw: Any) -> tuple[str, int]:
    """(key, ModifyIndex) of a KV item; the value is never decoded (nor kept)."""
    if not isinstance(raw, dict) or "Key" not in raw:
        raise ConsulUnavailable("Consul sent an unexpected KV item shape")
    return str(raw["Key"]), int(raw.get("ModifyIndex") or 0)


def instance(raw: Any) -> Instance:
    node = raw.get("Node") or {}
    svc = raw.get("Service") or {}
    meta = svc.get("Meta") or {}
    return Instance(
        id=str(svc.get("ID") or ""),
        node=str(node.get("Node") or ""),
        address=str(svc.get("Address") or node.get("Address") or ""),
        port=int(svc.get("Port") or 0),
        tags=tuple(str(t) for t in (svc.get("Tags") or ())),
        meta={str(k): str(v) for k, v in meta.items()},
        health=classify_checks(list(raw.get("Checks") or ())),
        datacenter=str(node.get("Datacenter") or ""),
    )


def check_state(raw: Any) -> CheckState:
    if not isinstance(raw, dict):
        raise ConsulUnavailable("Consul sent an unexpected health check shape")
    return CheckState(
        service_name=str(raw.get("ServiceName") or ""),
        node=str(raw.get("Node") or ""),
        check_id=str(raw.get("CheckID") or ""),
        status=str(raw.get("Status") or ""),
        service_id=str(raw.get("ServiceID") or ""),
        modify_index=int(raw.get("ModifyIndex") or 0),
    )
