"""Live configuration from Consul KV (async source of truth)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from pydantic import BaseModel

from latchkey import _convert
from latchkey._async._transport import AsyncStream, AsyncTransport
from latchkey._async._watch import AsyncWatch
from latchkey._models import ConfigEntry, ConfigEvent, StreamStatus
from latchkey._settings import Endpoint
from latchkey._streams import ConfigView, ModelBinder
from latchkey.v1 import config_pb2

M = TypeVar("M", bound=BaseModel)
ConfigCallback = Callable[[ConfigEvent | StreamStatus], None]


class AsyncConfig:
    """`client.config`: read, list, watch and bind Consul KV keys."""

    def __init__(self, transport: AsyncTransport) -> None:
        self._transport = transport
        self._watches: list[AsyncWatch] = []

    async def get(self, key: str) -> ConfigEntry:
        """One key. Raises `NotFound` when it does not exist."""
        response = await self._transport.unary(
            lambda s: s.config.Get, _convert.config_get_request(key)
        )
        return _convert.config_entry(response.entry)

    async def list(self, prefix: str) -> list[ConfigEntry]:
        """Every key under `prefix` (possibly none)."""
        response = await self._transport.unary(
            lambda s: s.config.List, _convert.config_list_request(prefix)
        )
        return [_convert.config_entry(e) for e in response.entries]

    async def _start(
        self,
        prefix: str,
        on_event: Callable[[ConfigEvent], None],
        on_status: Callable[[StreamStatus], None],
    ) -> AsyncWatch:
        view = ConfigView()

        def open_stream() -> tuple[AsyncStream[Any], Endpoint]:
            request = _convert.watch_config_request(prefix, view.resume_index, view.resume_epoch)
            return self._transport.stream(lambda s: s.config.Watch, request)

        async def on_message(message: config_pb2.ConfigEvent) -> None:
            for event in view.apply(message):
                if isinstance(event, ConfigEvent):
                    on_event(event)
                elif isinstance(event, StreamStatus):
                    on_status(event)

        watch = AsyncWatch(self._transport, f"config:{prefix}", open_stream, on_message, on_status)
        await watch.start()
        self._watches.append(watch)
        return watch

    async def watch(self, prefix: str, callback: ConfigCallback) -> AsyncWatch:
        """Call `callback` with a `ConfigEvent` for the initial snapshot and every change under
        `prefix`, and with a `StreamStatus` when the data goes stale or the gateway is
        unreachable. Reconnects resume from the last index. Returns a handle to close."""
        return await self._start(prefix, callback, callback)

    async def bind(
        self,
        prefix: str,
        model: type[M],
        *,
        on_error: Callable[[Exception], None] | None = None,
    ) -> M:
        """A live instance of `model` whose fields follow the keys under `prefix`.

        Keys map to fields by name (`<prefix>/pool_size` → `pool_size`); values are decoded as
        JSON when they parse, else used as text. An update that fails validation keeps the last
        good value and is passed to `on_error` (never raised in the application). The first
        snapshot must validate. The binding lives until the client is closed.
        """
        binder = ModelBinder(prefix, model, on_error)
        first_error: list[Exception] = []

        def on_event(event: ConfigEvent) -> None:
            if binder.value is None:
                previous = binder.on_error
                binder.on_error = first_error.append
                binder.update(event.entries)
                binder.on_error = previous
            else:
                binder.update(event.entries)

        await self._start(prefix, on_event, lambda status: None)
        if binder.value is None:
            await self._watches.pop().aclose()
            raise first_error[0] if first_error else ValueError(f"nothing to bind under {prefix!r}")
        return binder.value

    async def aclose(self) -> None:
        watches, self._watches = self._watches, []
        for watch in watches:
            await watch.aclose()
