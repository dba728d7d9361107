"""Healthy service instances from Consul (async source of truth)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from latchkey import _convert
from latchkey._async._backend import AsyncLock
from latchkey._async._transport import AsyncStream, AsyncTransport
from latchkey._async._watch import AsyncWatch
from latchkey._models import Instance, ServiceEvent, StreamStatus
from latchkey._pick import Picker, Strategy
from latchkey._settings import Endpoint
from latchkey._streams import ServiceView
from latchkey.v1 import discovery_pb2

ServiceCallback = Callable[[ServiceEvent | StreamStatus], None]


class AsyncServices:
    """`client.services`: healthy instances, live watches and load-balanced picks."""

    def __init__(self, transport: AsyncTransport) -> None:
        self._transport = transport
        self._watches: list[AsyncWatch] = []
        self._live: dict[tuple[str, str], ServiceView] = {}
        self._picker = Picker()
        self._lock = AsyncLock()

    async def healthy(self, name: str, tag: str | None = None) -> list[Instance]:
        """The instances of `name` (carrying `tag`, when given) whose checks all pass. Raises
        `NotFound` when Consul knows no instance of it at all (an empty list: every instance
        fails a check)."""
        response = await self._transport.unary(
            lambda s: s.discovery.GetHealthyInstances, _convert.healthy_request(name, tag)
        )
        return [_convert.instance(i) for i in response.instances]

    async def _start(
        self, name: str, tag: str | None, view: ServiceView, callback: ServiceCallback
    ) -> AsyncWatch:
        def open_stream() -> tuple[AsyncStream[Any], Endpoint]:
            request = _convert.watch_service_request(name, tag)
            return self._transport.stream(lambda s: s.discovery.Watch, request)

        async def on_message(message: discovery_pb2.ServiceEvent) -> None:
            for event in view.apply(message):
                callback(event)

        watch = AsyncWatch(self._transport, f"service:{name}", open_stream, on_message, callback)
        await watch.start()
        self._watches.append(watch)
        return watch

    async def watch(
        self, name: str, callback: ServiceCallback, *, tag: str | None = None
    ) -> AsyncWatch:
        """Call `callback` with the full instance set (`ServiceEvent`) now and on every change,
        and with a `StreamStatus` when the data goes stale or the gateway is unreachable.
        Returns a handle to close."""
        return await self._start(name, tag, ServiceView(name), callback)

    async def pick(
        self, name: str, strategy: Strategy = "round_robin", *, tag: str | None = None
    ) -> Instance:
        """One healthy instance, chosen `round_robin` or at `random` from the live set (kept
        current by a watch started on first use). Raises `NoHealthyInstances`."""
        key = (name, tag or "")
        view = self._live.get(key)
        if view is None:
            async with self._lock:
                view = self._live.get(key)
                if view is None:
                    view = ServiceView(name)
                    await self._start(name, tag, view, lambda event: None)
                    self._live[key] = view
        instances = view.current.instances if view.current is not None else []
        return self._picker.pick(name, instances, strategy)

    async def aclose(self) -> None:
        watches, self._watches = self._watches, []
        self._live.clear()
        for watch in watches:
            await watch.aclose()
