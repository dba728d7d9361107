"""latchkey.v1.Gateway: the caller's identity and upstream freshness, for `latchkey status`."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any, Protocol

import grpc

from latchkey.v1 import gateway_pb2, gateway_pb2_grpc
from latchkey_server import __version__
from latchkey_server.access.authz import ResourceKind
from latchkey_server.access.context import current_identity
from latchkey_server.access.gate import AccessGate
from latchkey_server.models import Freshness, utcnow
from latchkey_server.transport import convert

Context = grpc.aio.ServicerContext[Any, Any]

STATUS_RESOURCE = "status"
"""The resource Gateway.Status is authorized on: `gateway "status"` (or `gateway "*"`)."""


class UpstreamHealth(Protocol):
    @property
    def name(self) -> str: ...
    @property
    def reachable(self) -> bool: ...
    @property
    def last_contact(self) -> datetime | None: ...


class GatewayServicer(gateway_pb2_grpc.GatewayServicer):
    def __init__(
        self, upstreams: Sequence[UpstreamHealth], started_at: datetime, gate: AccessGate
    ) -> None:
        self._upstreams = upstreams
        self._started_at = started_at
        self._gate = gate

    async def Status(
        self, request: gateway_pb2.StatusRequest, context: Context
    ) -> gateway_pb2.StatusResponse:
        identity = current_identity()
        self._gate.authorize(identity, ResourceKind.GATEWAY, STATUS_RESOURCE, "status")
        now = utcnow()
        out = gateway_pb2.StatusResponse(
            identity=identity.name,
            auth_method=identity.method,
            version=__version__,
            started_at=convert.ts(self._started_at),
        )
        for upstream in self._upstreams:
            contact = upstream.last_contact
            out.upstreams.append(
                gateway_pb2.UpstreamStatus(
                    name=upstream.name,
                    state=convert.upstream_state(
                        Freshness(
                            index=0,
                            confirmed_at=contact,
                            reachable=upstream.reachable,
                            refused=getattr(upstream, "refused", False),  # Vault only
                        )
                    ),
                    last_contact=convert.ts(contact),
                    age_seconds=(now - contact).total_seconds() if contact else 0.0,
                )
            )
        return out
