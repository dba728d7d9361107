"""latchkey.v1.Config: Consul KV reads and watches."""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncGenerator, AsyncIterator
from contextlib import aclosing
from typing import Any, Protocol

import grpc

from latchkey.v1 import config_pb2, config_pb2_grpc
from latchkey_server import models
from latchkey_server.access.authz import ResourceKind
from latchkey_server.access.context import current_identity
from latchkey_server.access.gate import AccessGate
from latchkey_server.transport import convert, validate

Context = grpc.aio.ServicerContext[Any, Any]


class ConfigSource(Protocol):
    async def get(self, key: str) -> tuple[models.ConfigEntry, models.Freshness]: ...
    async def list(self, prefix: str) -> tuple[list[models.ConfigEntry], models.Freshness]: ...
    def watch(
        self, prefix: str, resume_index: int = 0, resume_epoch: str = ""
    ) -> AsyncGenerator[models.ConfigEvent, None]: ...


class ConfigServicer(config_pb2_grpc.ConfigServicer):
    def __init__(self, hub: ConfigSource, gate: AccessGate) -> None:
        self._hub = hub
        self._gate = gate

    def _readable(self, identity: models.Identity, key: str) -> bool:
        # Like Consul's ACL filtering of list reads: a caller sees only the keys it may read.
        return self._gate.allows(identity, ResourceKind.CONFIG, key, "read")

    async def Get(
        self, request: config_pb2.GetConfigRequest, context: Context
    ) -> config_pb2.GetConfigResponse:
        key = validate.config_key(request.key)
        self._gate.authorize(current_identity(), ResourceKind.CONFIG, key, "read")
        entry, fresh = await self._hub.get(key)
        return config_pb2.GetConfigResponse(
            entry=convert.config_entry(entry), freshness=convert.freshness(fresh)
        )

    async def List(
        self, request: config_pb2.ListConfigRequest, context: Context
    ) -> config_pb2.ListConfigResponse:
        prefix = validate.config_prefix(request.prefix)
        identity = current_identity()
        self._gate.authorize(identity, ResourceKind.CONFIG, prefix, "read")
        entries, fresh = await self._hub.list(prefix)
        visible = [convert.config_entry(e) for e in entries if self._readable(identity, e.key)]
        return config_pb2.ListConfigResponse(entries=visible, freshness=convert.freshness(fresh))

    async def Watch(
        self, request: config_pb2.WatchConfigRequest, context: Context
    ) -> AsyncIterator[config_pb2.ConfigEvent]:
        prefix = validate.config_prefix(request.prefix)
        identity = current_identity()
        grant = self._gate.open_stream(identity, ResourceKind.CONFIG, prefix, "watch")
        try:
            resume_epoch = validate.epoch(request.resume_epoch)
            watch = self._hub.watch(prefix, request.resume_index, resume_epoch)
            async with aclosing(watch) as events:
                async for event in events:
                    grant.check()
                    visible = self._filter(identity, event)
                    if visible is not None:
                        yield convert.config_event(visible)
        finally:
            grant.close()

    def _filter(
        self, identity: models.Identity, event: models.ConfigEvent
    ) -> models.ConfigEvent | None:
        """The event restricted to keys the caller may read (None when nothing is left)."""
        match event:
            case models.ConfigSnapshot():
                entries = tuple(e for e in event.entries if self._readable(identity, e.key))
                if len(entries) == len(event.entries):
                    return event  # the shared object: its conversion is shared too
                return dataclasses.replace(event, entries=entries)
            case models.ConfigChange():
                changes = tuple(c for c in event.changes if self._readable(identity, c.key))
                if len(changes) == len(event.changes):
                    return event
                return dataclasses.replace(event, changes=changes) if changes else None
            case _:
                return event
