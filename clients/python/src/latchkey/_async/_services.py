"""Healthy service instances from Consul (async source of truth)."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from latchkey import _convert
from latchkey._async._backend import AsyncLock
from latchkey._async._transport import AsyncStream, AsyncTransport
from latchkey._async._watch import AsyncWatch
from latchkey._models import Instance, RegistrationHealth, ServiceEvent, StreamStatus
from latchkey._pick import Picker, Strategy
from latchkey._settings import Endpoint
from latchkey._streams import RegistrationView, ServiceView
from latchkey.v1 import discovery_pb2

ServiceCallback = Callable[[ServiceEvent | StreamStatus], None]
HealthCallback = Callable[[RegistrationHealth], None]
StatusCallback = Callable[[StreamStatus], None]


class AsyncRegistration:
    """An instance of a service registered in Consul while this object is open.

    Use it as a context manager (`async with client.services.register(...) as reg:`), or call
    `start()` and `aclose()`. The gateway deregisters the instance when the stream ends. If the
    gateway goes away, the stream reconnects (to another gateway when several are configured)
    and the same instance id is registered again.
    """

    def __init__(self, transport: AsyncTransport, request: discovery_pb2.RegisterRequest) -> None:
        self._transport = transport
        self._request = request
        self.service = request.service
        self._view = RegistrationView(request.id)
        self._callbacks: list[HealthCallback] = []
        self._status_callbacks: list[StatusCallback] = []
        self._watch = AsyncWatch(
            transport, f"register:{request.service}", self._open, self._on_message, self._status
        )

    def __repr__(self) -> str:
        return f"<Registration {self.service} id={self.instance_id!r} status={self.status!r}>"

    @property
    def instance_id(self) -> str:
        """The Consul service id of the instance (made by the gateway unless given)."""
        return self._view.instance_id

    @property
    def status(self) -> str:
        """`passing`, `warning` or `critical` (the worst check), `unknown` until Consul said."""
        return self._view.health.status if self._view.health is not None else "unknown"

    @property
    def health(self) -> RegistrationHealth | None:
        """The instance's checks as Consul last reported them."""
        return self._view.health

    def on_change(self, callback: HealthCallback) -> HealthCallback:
        """Call `callback(RegistrationHealth)` whenever a check's status changes."""
        self._callbacks.append(callback)
        return callback

    def on_status(self, callback: StatusCallback) -> StatusCallback:
        """Call `callback(StreamStatus)` when Consul or the gateway becomes unreachable, or is
        back."""
        self._status_callbacks.append(callback)
        return callback

    def _open(self) -> tuple[AsyncStream[Any], Endpoint]:
        request = discovery_pb2.RegisterRequest()
        request.CopyFrom(self._request)
        request.id = self._view.instance_id
        return self._transport.stream(lambda s: s.discovery.Register, request)

    async def _on_message(self, message: discovery_pb2.RegisterEvent) -> None:
        for event in self._view.apply(message):
            if isinstance(event, StreamStatus):
                self._status(event)
            else:
                for callback in list(self._callbacks):
                    callback(event)

    def _status(self, status: StreamStatus) -> None:
        for callback in list(self._status_callbacks):
            callback(status)

    @property
    def closed(self) -> bool:
        return self._watch.closed

    async def start(self) -> AsyncRegistration:
        """Register; returns once the gateway confirmed it (raises why it could not)."""
        await self._watch.start()
        return self

    async def aclose(self) -> None:
        """End the stream: the gateway deregisters the instance."""
        await self._watch.aclose()

    async def __aenter__(self) -> AsyncRegistration:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()


class AsyncServices:
    """`client.services`: healthy instances, live watches and load-balanced picks."""

    def __init__(self, transport: AsyncTransport) -> None:
        self._transport = transport
        self._watches: list[AsyncWatch] = []
        self._registrations: list[AsyncRegistration] = []
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

    def register(
        self,
        service: str,
        *,
        port: int,
        instance_id: str | None = None,
        address: str | None = None,
        tags: Sequence[str] = (),
        meta: Mapping[str, str] | None = None,
        http_check: str | None = None,
        tcp_check: str | None = None,
        grpc_check: str | None = None,
        interval: str | None = None,
        timeout: str | None = None,
        deregister_after: str | None = None,
        ttl: bool = False,
    ) -> AsyncRegistration:
        """Register an instance of `service` in Consul for as long as the returned object is
        open: `async with client.services.register("myapp", port=3000, http_check=URL) as reg:`.

        Checks: `http_check` (a URL), `tcp_check` (host:port), `grpc_check` (host:port), run by
        Consul every `interval` ("10s") with `timeout` ("5s"); `ttl=True` adds a check the
        gateway keeps passing while the stream is open (the only check when none is named).
        `address` defaults to the address the gateway sees the client at. Needs the `register`
        capability on the service.
        """
        checks = _convert.service_checks(
            http=http_check, tcp=tcp_check, grpc=grpc_check, interval=interval,
            timeout=timeout, deregister_after=deregister_after,
        )  # fmt: skip
        request = _convert.register_request(
            service, instance_id=instance_id or "", port=port, address=address, tags=tags,
            meta=meta or {}, checks=checks, ttl=ttl,
        )  # fmt: skip
        registration = AsyncRegistration(self._transport, request)
        self._registrations = [r for r in self._registrations if not r.closed]
        self._registrations.append(registration)
        return registration

    async def aclose(self) -> None:
        registrations, self._registrations = self._registrations, []
        for registration in registrations:
            await registration.aclose()
        watches, self._watches = self._watches, []
        self._live.clear()
        for watch in watches:
            await watch.aclose()
