"""flagd.sync.v1.FlagSyncService: flag definitions for any stock flagd provider (in-process mode).

The selector is a Consul KV prefix (`flags/production/`), sent as the `flagd-selector` header
(or the deprecated request field). Every key under it is one flagd flag set; the stream carries
their merge (brokers/flag_sets.py) at once and again whenever it changes. Access is that of
`Config.Watch` / `Config.List` on the prefix (`config` kind: `watch` for SyncFlags, `read` for
FetchAllFlags; keys the caller may not read are left out), and the interceptor audits the
stream like any other.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import aclosing
from typing import Any

import grpc
from google.protobuf import struct_pb2
from openfeature.schemas.protobuf.flagd.sync.v1 import sync_pb2, sync_pb2_grpc

from latchkey_server import models
from latchkey_server.access.authz import ResourceKind
from latchkey_server.access.context import current_identity
from latchkey_server.access.gate import AccessGate
from latchkey_server.brokers.flag_sets import merge_flag_sets
from latchkey_server.errors import InvalidArgument
from latchkey_server.transport import validate
from latchkey_server.transport.config import ConfigSource

Context = grpc.aio.ServicerContext[Any, Any]

SELECTOR_HEADER = "flagd-selector"
NO_SELECTOR = (
    "selector is required: set the flagd provider's selector (FLAGD_SOURCE_SELECTOR, sent as "
    "the flagd-selector header) to the Consul KV prefix of your flag sets, e.g. flags/production/"
)


class FlagSyncServicer(sync_pb2_grpc.FlagSyncServiceServicer):
    def __init__(self, hub: ConfigSource, gate: AccessGate) -> None:
        self._hub = hub
        self._gate = gate

    async def SyncFlags(
        self, request: sync_pb2.SyncFlagsRequest, context: Context
    ) -> AsyncIterator[sync_pb2.SyncFlagsResponse]:
        prefix = _selector(request.selector, context)
        identity = current_identity()
        grant = self._gate.open_stream(identity, ResourceKind.CONFIG, prefix, "watch")
        values: dict[str, bytes] = {}
        sent: str | None = None
        try:
            async with aclosing(self._hub.watch(prefix)) as events:
                async for event in events:
                    grant.check()
                    if isinstance(event, models.Heartbeat):
                        continue
                    self._apply(identity, event, values)
                    document = merge_flag_sets(values).document
                    if document != sent:
                        sent = document
                        yield sync_pb2.SyncFlagsResponse(
                            flag_configuration=document, sync_context=_context(prefix, event)
                        )
        finally:
            grant.close()

    async def FetchAllFlags(
        self, request: sync_pb2.FetchAllFlagsRequest, context: Context
    ) -> sync_pb2.FetchAllFlagsResponse:
        prefix = _selector(request.selector, context)
        identity = current_identity()
        self._gate.authorize(identity, ResourceKind.CONFIG, prefix, "read")
        entries, _ = await self._hub.list(prefix)
        values = {e.key: e.value for e in entries if self._readable(identity, e.key)}
        return sync_pb2.FetchAllFlagsResponse(flag_configuration=merge_flag_sets(values).document)

    async def GetMetadata(
        self, request: sync_pb2.GetMetadataRequest, context: Context
    ) -> sync_pb2.GetMetadataResponse:
        # Deprecated in the protocol (SyncFlagsResponse.sync_context replaces it); providers
        # still ask once per connection.
        metadata = struct_pb2.Struct()
        metadata.update({"source": "latchkey"})
        return sync_pb2.GetMetadataResponse(metadata=metadata)

    def _readable(self, identity: models.Identity, key: str) -> bool:
        return self._gate.allows(identity, ResourceKind.CONFIG, key, "read")

    def _apply(
        self,
        identity: models.Identity,
        event: models.ConfigSnapshot | models.ConfigChange,
        values: dict[str, bytes],
    ) -> None:
        """Fold a snapshot or change into `values` (the keys the caller may read)."""
        if isinstance(event, models.ConfigSnapshot):
            values.clear()
            values.update(
                (e.key, e.value) for e in event.entries if self._readable(identity, e.key)
            )
            return
        for change in event.changes:
            if not self._readable(identity, change.key):
                continue
            if change.entry is None:
                values.pop(change.key, None)
            else:
                values[change.key] = change.entry.value


def _selector(field: str, context: Context) -> str:
    selector = field
    for key, value in context.invocation_metadata() or ():
        if key == SELECTOR_HEADER and isinstance(value, str):
            selector = value
            break
    if not selector:
        raise InvalidArgument(NO_SELECTOR)
    return validate.config_prefix(selector)


def _context(prefix: str, event: models.ConfigSnapshot | models.ConfigChange) -> struct_pb2.Struct:
    fresh = event.freshness
    context = struct_pb2.Struct()
    context.update({"source": "latchkey", "prefix": prefix, "index": event.index,
                    "stale": fresh.stale})  # fmt: skip
    return context
