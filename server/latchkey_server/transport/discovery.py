"""latchkey.v1.Discovery: healthy instances from Consul health."""

from __future__ import annotations

from collections.abc import AsyncGenerator, AsyncIterator
from contextlib import aclosing
from typing import Any, Protocol

import grpc

from latchkey.v1 import discovery_pb2, discovery_pb2_grpc
from latchkey_server import models
from latchkey_server.access.authz import ResourceKind
from latchkey_server.access.context import current_identity
from latchkey_server.access.gate import AccessGate
from latchkey_server.errors import FailedPrecondition
from latchkey_server.transport import convert, validate
from latchkey_server.transport.registration import registration

Context = grpc.aio.ServicerContext[Any, Any]


class DiscoverySource(Protocol):
    async def healthy(self, query: models.ServiceQuery) -> models.InstanceSet: ...
    def watch(self, query: models.ServiceQuery) -> AsyncGenerator[models.ServiceEvent, None]: ...


class RegistrationSource(Protocol):
    def hold(
        self, registration: models.ServiceRegistration
    ) -> AsyncGenerator[models.RegistrationEvent, None]: ...


def _query(
    request: discovery_pb2.GetHealthyInstancesRequest | discovery_pb2.WatchServiceRequest,
) -> models.ServiceQuery:
    return models.ServiceQuery(
        service=validate.name("service", request.service),
        tag=validate.tag(request.tag),
        datacenter=validate.optional_name("datacenter", request.datacenter),
        include_warning=request.include_warning,
    )


class DiscoveryServicer(discovery_pb2_grpc.DiscoveryServicer):
    def __init__(
        self,
        hub: DiscoverySource,
        gate: AccessGate,
        registrations: RegistrationSource | None = None,
        *,
        stream_ttl: float = 30.0,
    ) -> None:
        self._hub = hub
        self._gate = gate
        self._registrations = registrations
        self._stream_ttl = stream_ttl

    async def GetHealthyInstances(
        self, request: discovery_pb2.GetHealthyInstancesRequest, context: Context
    ) -> discovery_pb2.GetHealthyInstancesResponse:
        query = _query(request)
        self._gate.authorize(current_identity(), ResourceKind.SERVICE, query.service, "discover")
        found = await self._hub.healthy(query)
        return discovery_pb2.GetHealthyInstancesResponse(
            instances=[convert.instance(i) for i in found.instances],
            index=found.index,
            freshness=convert.freshness(found.freshness),
        )

    async def Watch(
        self, request: discovery_pb2.WatchServiceRequest, context: Context
    ) -> AsyncIterator[discovery_pb2.ServiceEvent]:
        query = _query(request)
        identity = current_identity()
        grant = self._gate.open_stream(identity, ResourceKind.SERVICE, query.service, "discover")
        try:
            async with aclosing(self._hub.watch(query)) as events:
                async for event in events:
                    grant.check()
                    yield convert.service_event(event)
        finally:
            grant.close()

    async def Register(
        self, request: discovery_pb2.RegisterRequest, context: Context
    ) -> AsyncIterator[discovery_pb2.RegisterEvent]:
        wanted = registration(request, context.peer() or "", stream_ttl=self._stream_ttl)
        identity = current_identity()
        grant = self._gate.open_stream(identity, ResourceKind.SERVICE, wanted.service, "register")
        try:
            if self._registrations is None:
                raise FailedPrecondition("this gateway does not register services")
            async with aclosing(self._registrations.hold(wanted)) as events:
                async for event in events:
                    grant.check()
                    yield convert.registration_event(event)
        finally:
            grant.close()
