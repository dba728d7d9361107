"""latchkey.v1.Config: Consul KV reads and watches."""

from __future__ import annotations

from collections.abc import AsyncGenerator, AsyncIterator
from contextlib import aclosing
from typing import Any, Protocol

import grpc

from latchkey.v1 import config_pb2, config_pb2_grpc
from latchkey_server import models
from latchkey_server.access.authz import Authorizer, ResourceKind
from latchkey_server.access.context import current_identity
from latchkey_server.transport import convert, validate

Context = grpc.aio.ServicerContext[Any, Any]


class ConfigSource(Protocol):
    async def get(self, key: str) -> tuple[models.ConfigEntry, models.Freshness]: ...
    async def list(self, prefix: str) -> tuple[list[models.ConfigEntry], models.Freshness]: ...
    def watch(
        self, prefix: str, resume_index: int = 0
    ) -> AsyncGenerator[models.ConfigEvent, None]: ...


class ConfigServicer(config_pb2_grpc.ConfigServicer):
    def __init__(self, hub: ConfigSource, authz: Authorizer) -> None:
        self._hub = hub
        self._authz = authz

    async def Get(
        self, request: config_pb2.GetConfigRequest, context: Context
    ) -> config_pb2.GetConfigResponse:
        key = validate.config_key(request.key)
        self._authz.authorize(current_identity(), ResourceKind.CONFIG, key, "read")
        entry, fresh = await self._hub.get(key)
        return config_pb2.GetConfigResponse(
            entry=convert.config_entry(entry), freshness=convert.freshness(fresh)
        )

    async def List(
        self, request: config_pb2.ListConfigRequest, context: Context
    ) -> config_pb2.ListConfigResponse:
        prefix = validate.config_prefix(request.prefix)
        self._authz.authorize(current_identity(), ResourceKind.CONFIG, prefix, "read")
        entries, fresh = await self._hub.list(prefix)
        return config_pb2.ListConfigResponse(
            entries=[convert.config_entry(e) for e in entries], freshness=convert.freshness(fresh)
        )

    async def Watch(
        self, request: config_pb2.WatchConfigRequest, context: Context
    ) -> AsyncIterator[config_pb2.ConfigEvent]:
        prefix = validate.config_prefix(request.prefix)
        self._authz.authorize(current_identity(), ResourceKind.CONFIG, prefix, "watch")
        async with aclosing(self._hub.watch(prefix, request.resume_index)) as events:
            async for event in events:
                yield convert.config_event(event)
