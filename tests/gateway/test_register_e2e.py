"""Discovery.Register against the real Consul agent: an instance registered by a stream is seen
passing by discovery while the stream is open (TTL check held by the stream; HTTP check run by
Consul against a real local HTTP server flipped to failing and back) and is gone once the
stream ends; bad requests are INVALID_ARGUMENT saying what to fix. (Access: test_access_e2e.py;
SDK and CLI: tests/sdk/test_register.py, tests/cli/test_register.py.)"""

from __future__ import annotations

import asyncio
import threading
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import grpc
import pytest

import latchkey
from latchkey.v1 import discovery_pb2, discovery_pb2_grpc
from tests.fixtures.gateway import GatewayHandle

WAIT = 30.0
"""Hang guard for one wait (never a timing assertion)."""
PASSING = discovery_pb2.HEALTH_STATUS_PASSING
CRITICAL = discovery_pb2.HEALTH_STATUS_CRITICAL


class HealthServer:
    """A real HTTP server whose /health answers 200 or 500, as the test says."""

    def __init__(self) -> None:
        self.healthy = True
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                self.send_response(200 if outer.healthy else 500)
                self.end_headers()
                self.wfile.write(b"ok" if outer.healthy else b"failing")

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/health"


@contextmanager
def health_server() -> Iterator[HealthServer]:
    hs = HealthServer()
    thread = threading.Thread(target=hs.server.serve_forever, daemon=True)
    thread.start()
    try:
        yield hs
    finally:
        hs.server.shutdown()
        hs.server.server_close()
        thread.join(10)


class Discovered:
    """What a discovery watch (the SDK's) says about one service, with waits on its events."""

    def __init__(self) -> None:
        self.ids: set[str] = set()
        self.changed = asyncio.Event()

    def on_event(self, event: latchkey.ServiceEvent | latchkey.StreamStatus) -> None:
        if isinstance(event, latchkey.ServiceEvent):
            self.ids = {i.id for i in event.instances}
            self.changed.set()

    async def until(self, test: Callable[[set[str]], bool], what: str) -> None:
        async with asyncio.timeout(WAIT):
            while not test(self.ids):
                self.changed.clear()
                await self.changed.wait()
        assert test(self.ids), what


@asynccontextmanager
async def discovery(gateway: GatewayHandle, service: str) -> AsyncIterator[Discovered]:
    seen = Discovered()
    async with latchkey.AsyncClient(gateway.addr, token=gateway.tokens["other"]) as client:
        await client.services.watch(service, seen.on_event)
        yield seen


async def _next(call: Any, kind: str, test: Callable[[Any], bool] = lambda e: True) -> Any:
    async with asyncio.timeout(WAIT):
        while True:
            event = await call.read()
            assert event is not grpc.aio.EOF, "the register stream ended"
            if event.WhichOneof("event") == kind and test(event):
                return event


async def test_ttl_registration_lives_as_long_as_its_stream(gateway: GatewayHandle) -> None:
    service = f"reg-{uuid.uuid4().hex[:8]}"
    async with gateway.channel() as channel:
        call = discovery_pb2_grpc.DiscoveryStub(channel).Register(
            discovery_pb2.RegisterRequest(
                service=service, port=3000, tags=["api", "v1"], meta={"version": "1.2.3"},
                ttl_check=True,
            ),
            metadata=gateway.metadata(),
        )  # fmt: skip
        registered = (await _next(call, "registered")).registered
        assert registered.instance_id.startswith(service + "-")
        assert registered.address == "127.0.0.1", "defaults to the caller's peer address"
        assert registered.check_ids == [f"service:{registered.instance_id}:stream"]
        health = await _next(call, "health", lambda e: e.health.status == PASSING)
        assert [c.check_id for c in health.health.checks] == list(registered.check_ids)
        async with discovery(gateway, service) as seen:
            await seen.until(lambda ids: registered.instance_id in ids, "instance passing")
            async with latchkey.AsyncClient(gateway.addr, token=gateway.tokens["app"]) as client:
                (instance,) = await client.services.healthy(service)
            assert (instance.port, instance.tags) == (3000, ["api", "v1"])
            assert instance.meta == {"version": "1.2.3"}
            call.cancel()
            await seen.until(lambda ids: not ids, "the instance gone after the stream ended")


async def test_http_check_follows_the_app(gateway: GatewayHandle) -> None:
    service = f"reg-{uuid.uuid4().hex[:8]}"
    with health_server() as app:
        async with gateway.channel() as channel:
            call = discovery_pb2_grpc.DiscoveryStub(channel).Register(
                discovery_pb2.RegisterRequest(
                    service=service, id=f"{service}-a", address="127.0.0.1", port=3000,
                    checks=[discovery_pb2.ServiceCheck(http=app.url, interval="1s", timeout="1s")],
                ),
                metadata=gateway.metadata(),
            )  # fmt: skip
            registered = (await _next(call, "registered")).registered
            assert registered.instance_id == f"{service}-a"
            await _next(call, "health", lambda e: e.health.status == PASSING)
            async with discovery(gateway, service) as seen:
                await seen.until(lambda ids: ids == {f"{service}-a"}, "passing with its check")
                app.healthy = False
                failing = await _next(call, "health", lambda e: e.health.status == CRITICAL)
                assert "500" in failing.health.checks[0].output
                await seen.until(lambda ids: not ids, "critical: not served by discovery")
                app.healthy = True
                await _next(call, "health", lambda e: e.health.status == PASSING)
                await seen.until(lambda ids: ids == {f"{service}-a"}, "passing again")
                call.cancel()
                await seen.until(lambda ids: not ids, "gone after the stream ended")


@pytest.mark.parametrize(
    ("request_fields", "says"),
    [
        ({"service": "", "port": 1}, "service is required"),
        ({"service": "x", "port": 0}, "port must be 1-65535"),
        ({"service": "x", "port": 70000}, "port must be 1-65535"),
        ({"service": "x", "port": 1, "tags": ["t"] * 33}, "at most 32 tags"),
        ({"service": "x", "port": 1, "meta": {"consul-x": "1"}}, "reserved by Consul"),
        (
            {"service": "x", "port": 1, "checks": [{"http": "http://h/x", "interval": "10 s"}]},
            "checks[0].interval",
        ),
        (
            {"service": "x", "port": 1, "checks": [{"tcp": "h:1", "timeout": "20s"}]},
            "checks[0].timeout is 20s; it must be between",
        ),
        (
            {
                "service": "x", "port": 1,
                "checks": [{"grpc": "h:1", "deregister_critical_after": "10s"}],
            },
            "deregister_critical_after is 10s; it must be between 1m",
        ),
        ({"service": "x", "port": 1, "checks": [{"http": "ftp://h/x"}]}, "http:// or https://"),
        ({"service": "x", "port": 1, "checks": [{"interval": "1s"}]}, "needs a target"),
    ],
)  # fmt: skip
async def test_bad_requests_say_what_to_fix(
    gateway: GatewayHandle, request_fields: dict[str, Any], says: str
) -> None:
    fields = dict(request_fields)
    checks = [discovery_pb2.ServiceCheck(**c) for c in fields.pop("checks", [])]
    request = discovery_pb2.RegisterRequest(**fields, checks=checks)
    async with gateway.channel() as channel:
        call = discovery_pb2_grpc.DiscoveryStub(channel).Register(
            request, metadata=gateway.metadata()
        )
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await call.read()
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert says in (err.value.details() or "")
