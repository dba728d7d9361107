"""The asyncio transport: lazily created channels, failover between gateways, retries of
UNAVAILABLE with backoff, and error translation at every stub call.

The gateways are a static list (`LATCHKEY_ADDR=a:7400,b:7400`) or the replicas Consul lists as
passing (`consul://AGENT/latchkey`, kept current by `AsyncReplicaList`). A channel is kept per
address; one to a replica that left the list is not closed (a stream may still run on it).

Channels are built from the TLS files' current material: when the files change (`_tls.py`),
new calls go over new channels, and the channels already open keep serving their streams until
the client closes. With OpenTelemetry importable, each call carries the app's trace context
(`_tracing.py`)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Generic, TypeVar

import grpc
from grpc import aio as grpc_aio  # unasync: remove

from latchkey._async._backend import AsyncLock, monotonic, sleep
from latchkey._async._replicas import AsyncReplicaList
from latchkey._errors import LatchkeyError
from latchkey._grpc import CHANNEL_OPTIONS, channel_credentials, metadata, translate
from latchkey._retry import Backoff, is_retryable
from latchkey._settings import ClientSettings, Endpoint
from latchkey._tls import TlsMaterial, TlsReloader
from latchkey._tracing import client_span, rpc_name, with_context
from latchkey.v1 import config_pb2_grpc, discovery_pb2_grpc, gateway_pb2_grpc, secrets_pb2_grpc

if TYPE_CHECKING:
    from latchkey.v1.config_pb2_grpc import ConfigAsyncStub
    from latchkey.v1.discovery_pb2_grpc import DiscoveryAsyncStub
    from latchkey.v1.gateway_pb2_grpc import GatewayAsyncStub
    from latchkey.v1.secrets_pb2_grpc import SecretsAsyncStub

Req = TypeVar("Req")
Resp = TypeVar("Resp")


@dataclass
class AsyncStubs:
    """The generated stubs on one channel."""

    secrets: SecretsAsyncStub
    config: ConfigAsyncStub
    discovery: DiscoveryAsyncStub
    gateway: GatewayAsyncStub


class AsyncStream(Generic[Resp]):
    """A server stream whose errors (also those raised mid-iteration) are SDK exceptions."""

    def __init__(
        self, call: Any, settings: ClientSettings | None = None, endpoint: Endpoint | None = None
    ) -> None:
        self._call = call
        self._iterator = call.__aiter__()
        self._settings = settings
        self._endpoint = endpoint

    def __aiter__(self) -> AsyncStream[Resp]:
        return self

    async def __anext__(self) -> Resp:
        try:
            item: Resp = await self._iterator.__anext__()
        except grpc.RpcError as exc:
            raise translate(exc, self._settings, self._endpoint) from exc
        return item

    def cancel(self) -> None:
        self._call.cancel()


class AsyncTransport:
    """Channels to one or more gateways; the active one changes when a call finds it down."""

    def __init__(self, settings: ClientSettings, backoff: Backoff | None = None) -> None:
        self.settings = settings
        self._backoff = backoff or Backoff()
        self._metadata = metadata(settings)
        self._channels: dict[Endpoint, grpc_aio.Channel] = {}
        self._retired: list[grpc_aio.Channel] = []
        self._stubs: dict[Endpoint, AsyncStubs] = {}
        self._tls = TlsReloader(
            settings.tls_files,
            TlsMaterial(settings.cacert, settings.client_cert, settings.client_key),
        )
        self.endpoints: tuple[Endpoint, ...] = settings.endpoints
        """The gateways to fail over between, now."""
        self._active: Endpoint | None = self.endpoints[0] if self.endpoints else None
        self._replicas: AsyncReplicaList | None = None
        if settings.replicas is not None:
            self._replicas = AsyncReplicaList(
                settings.replicas, settings.replicas_tls, self.set_endpoints
            )
        self._lock = AsyncLock()
        self._closed = False

    @property
    def address(self) -> str:
        """The gateway address currently in use."""
        if self._active is not None:
            return self._active.target
        assert self.settings.replicas is not None
        return self.settings.replicas.describe()

    def set_endpoints(self, endpoints: tuple[Endpoint, ...]) -> None:
        """A new list of gateways (from Consul); the active one stays while it is listed."""
        self.endpoints = endpoints
        if self._active not in endpoints:
            self._active = endpoints[0]

    async def _endpoint(self) -> Endpoint:
        """The active gateway (with `consul://`: once Consul listed at least one)."""
        if self._replicas is not None and self._active is None:
            await self._replicas.ready()
        if self._active is None:
            raise LatchkeyError("the client has no gateway address")
        return self._active

    def _refresh_tls(self, *, force: bool = False) -> None:
        """New TLS material in the files: later calls open new channels with it."""
        if self._tls.refresh(monotonic(), force=force):
            self._retired.extend(self._channels.values())
            self._channels.clear()
            self._stubs.clear()

    def _stubs_for(self, endpoint: Endpoint) -> AsyncStubs:
        self._refresh_tls()
        stubs = self._stubs.get(endpoint)
        if stubs is None:
            if self._closed:
                raise LatchkeyError("the client is closed")
            creds = channel_credentials(self.settings, endpoint, self._tls.material)
            if creds is None:
                channel = grpc_aio.insecure_channel(endpoint.target, options=CHANNEL_OPTIONS)
            else:
                channel = grpc_aio.secure_channel(endpoint.target, creds, options=CHANNEL_OPTIONS)
            self._channels[endpoint] = channel
            stubs = AsyncStubs(
                secrets=secrets_pb2_grpc.SecretsStub(channel),
                config=config_pb2_grpc.ConfigStub(channel),
                discovery=discovery_pb2_grpc.DiscoveryStub(channel),
                gateway=gateway_pb2_grpc.GatewayStub(channel),
            )
            self._stubs[endpoint] = stubs
        return stubs

    def failover(self, failed: Endpoint) -> None:
        """Move to the next gateway when the one that failed is still the active one."""
        endpoints = self.endpoints
        if self._active != failed or not endpoints:
            return
        if failed in endpoints:
            self._active = endpoints[(endpoints.index(failed) + 1) % len(endpoints)]
        else:  # it left the list meanwhile
            self._active = endpoints[0]

    async def unary(
        self,
        method: Callable[[AsyncStubs], grpc_aio.UnaryUnaryMultiCallable[Req, Resp]],
        request: Req,
        *,
        timeout: float | None = None,  # noqa: ASYNC109 - the per-attempt gRPC deadline
    ) -> Resp:
        """Call a unary RPC; UNAVAILABLE is retried (on the next gateway) within the deadline."""
        active = self._active  # None until Consul lists a replica (consul://)
        name = rpc_name(method(self._stubs_for(active))) if active is not None else "latchkey"
        with client_span(name, self._metadata) as md:
            return await self._unary(method, request, md, timeout)

    async def _unary(
        self,
        method: Callable[[AsyncStubs], grpc_aio.UnaryUnaryMultiCallable[Req, Resp]],
        request: Req,
        metadata: tuple[tuple[str, str], ...],
        timeout: float | None,  # noqa: ASYNC109 - the per-attempt gRPC deadline
    ) -> Resp:
        deadline = monotonic() + self.settings.retry_deadline
        attempt = 0
        while True:
            endpoint: Endpoint | None = None
            try:
                endpoint = await self._endpoint()
                call = method(self._stubs_for(endpoint))
                response: Resp = await call(
                    request,
                    metadata=metadata,
                    timeout=timeout if timeout is not None else self.settings.timeout,
                )
                return response
            except grpc.RpcError as exc:
                error = translate(exc, self.settings, endpoint)
            except LatchkeyError as exc:  # no replica known yet (consul://)
                error = exc
            if not is_retryable(error):
                raise error
            self._refresh_tls(force=True)  # a renewed certificate may be why it failed
            if endpoint is not None:
                self.failover(endpoint)
            delay = self._backoff.delay(attempt, error.retry_after)
            if monotonic() + delay > deadline:
                raise error
            await sleep(delay)
            attempt += 1

    async def ready(self) -> None:
        """Return once a gateway is known (with `consul://`: listed by Consul), else raise
        `Unavailable`; streams are opened after it."""
        await self._endpoint()

    def stream(
        self,
        method: Callable[[AsyncStubs], grpc_aio.UnaryStreamMultiCallable[Req, Resp]],
        request: Req,
    ) -> tuple[AsyncStream[Resp], Endpoint]:
        """Open a server stream on the active gateway (see `ready`); returns it with the
        gateway."""
        endpoint = self._active
        if endpoint is None:
            raise LatchkeyError("no gateway is known yet: await ready() first")
        call = method(self._stubs_for(endpoint))(request, metadata=with_context(self._metadata))
        return AsyncStream(call, self.settings, endpoint), endpoint

    async def aclose(self) -> None:
        if self._replicas is not None:
            await self._replicas.aclose()
        async with self._lock:
            self._closed = True
            channels = [*self._channels.values(), *self._retired]
            self._channels.clear()
            self._retired.clear()
            self._stubs.clear()
        for channel in channels:
            await channel.close()
