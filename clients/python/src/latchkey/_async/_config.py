"""Live configuration from Consul KV (async source of truth)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar, overload

from pydantic import BaseModel

from latchkey import _convert
from latchkey._async._transport import AsyncStream, AsyncTransport
from latchkey._async._watch import AsyncWatch
from latchkey._models import ConfigEntry, ConfigEvent, StreamStatus
from latchkey._settings import Endpoint
from latchkey._streams import ConfigView, ModelBinder, merge_layers, nest
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

    async def merged(self, *prefixes: str) -> dict[str, Any]:
        """The keys under `prefixes` as one nested document, as `bind` sees them: key paths
        become nested keys (`database/host` → `{"database": {"host": ...}}`), values are
        decoded as JSON when they parse, and later prefixes override earlier ones key by key."""
        if not prefixes:
            raise TypeError("merged takes one or more prefixes")
        layers = [{e.key: e for e in await self.list(prefix)} for prefix in prefixes]
        return nest(merge_layers(prefixes, layers))

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

    @overload
    async def bind(
        self,
        model: type[M],
        /,
        *prefixes: str,
        on_error: Callable[[Exception], None] | None = None,
    ) -> M: ...

    @overload
    async def bind(
        self,
        prefix: str,
        model: type[M],
        /,
        *,
        on_error: Callable[[Exception], None] | None = None,
    ) -> M: ...

    async def bind(
        self,
        first: type[M] | str,
        /,
        *rest: Any,
        on_error: Callable[[Exception], None] | None = None,
    ) -> M:
        """A live instance of `model` that follows the keys under one or more prefixes.

        `bind(Settings, "config/myapp/", "config/myapp/env/production/")`: key paths map to
        (nested) fields, `config/myapp/database/host` → `database.host` (a field spelled flat,
        `database__host`, works too); values are decoded as JSON when they parse, else used as
        text, and validated by the field types. Later prefixes override earlier ones key by
        key, and every prefix is watched. An update that fails validation keeps the last good
        value and is passed to `on_error` (never raised in the application). The first merged
        view must validate. The binding lives until the client is closed.
        (`bind(prefix, Model)`, one layer, is the older spelling of the same.)
        """
        model, prefixes = _bind_arguments(first, rest)
        binder: ModelBinder[M] = ModelBinder(prefixes, model, on_error)
        ready = False

        def on_layer(layer: int) -> Callable[[ConfigEvent], None]:
            def on_event(event: ConfigEvent) -> None:
                binder.set_layer(layer, event.entries)
                if ready:
                    binder.update()

            return on_event

        started: list[AsyncWatch] = []
        try:
            for layer, prefix in enumerate(prefixes):
                started.append(await self._start(prefix, on_layer(layer), lambda status: None))
        except BaseException:
            for watch in started:
                await self._forget(watch)
            raise
        first_error: list[Exception] = []
        binder.on_error = first_error.append
        binder.update()
        binder.on_error = on_error
        ready = True
        if binder.value is None:
            for watch in started:
                await self._forget(watch)
            raise first_error[0] if first_error else ValueError(f"nothing to bind under {prefixes}")
        return binder.value

    async def _forget(self, watch: AsyncWatch) -> None:
        self._watches.remove(watch)
        await watch.aclose()

    async def aclose(self) -> None:
        watches, self._watches = self._watches, []
        for watch in watches:
            await watch.aclose()


def _bind_arguments(first: Any, rest: tuple[Any, ...]) -> tuple[Any, list[str]]:
    """(model, prefixes) from either spelling of `bind`; a clear TypeError otherwise."""
    if isinstance(first, str) and len(rest) == 1 and _is_model(rest[0]):
        return rest[0], [first]
    if _is_model(first) and rest and all(isinstance(p, str) for p in rest):
        return first, list(rest)
    raise TypeError(
        "bind takes a pydantic model class and one or more prefixes: "
        "bind(Settings, 'config/myapp/', 'config/myapp/env/production/')"
    )


def _is_model(value: Any) -> bool:
    return isinstance(value, type) and issubclass(value, BaseModel)
