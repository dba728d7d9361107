"""Defects 5 and 6: shutdown did not drain, and the audit trail had gaps.

Before the fix, on SIGTERM open streams got a generic UNAVAILABLE "Cancelling all calls" only
when the grace period ended, with no retry hint; a stream ended by its client or by shutdown
was never recorded (4,791 stream_open against 1 stream_end), and each such end logged an ERROR
("Token ... was created in a different Context"). Now `Gateway.serve()` drains first: every
stream ends with UNAVAILABLE, a retry-after and a message naming the reason; then leases are
revoked; and every stream_open has exactly one stream_end, with its cause, and no ERROR.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

import consul
import grpc
import pytest

import latchkey
from latchkey.v1 import (
    config_pb2,
    config_pb2_grpc,
    discovery_pb2,
    discovery_pb2_grpc,
    secrets_pb2,
    secrets_pb2_grpc,
)
from latchkey_server.config import Settings
from latchkey_server.devstack.consul import ConsulAgent
from latchkey_server.devstack.seed import DEMO_ROLE
from latchkey_server.errors import LatchkeyError
from latchkey_server.server import Gateway
from tests.faults.conftest import GatewayFactory
from tests.faults.process import GatewayProcess
from tests.fixtures.gateway import gateway_settings
from tests.gateway.helpers import can_login, eventually

pytestmark = pytest.mark.faults

CLIENT_CANCELS = 25


async def _first(call: Any) -> Any:
    message = await asyncio.wait_for(call.read(), timeout=30)
    assert message is not grpc.aio.EOF
    return message


async def _ending(call: Any) -> grpc.aio.AioRpcError:
    """Read until the stream ends; return the error it ended with."""
    with pytest.raises(grpc.aio.AioRpcError) as ended:
        async with asyncio.timeout(30):
            while (await call.read()) is not grpc.aio.EOF:
                pass
    return ended.value


def _stream_records(gw: GatewayProcess) -> tuple[Counter[str], dict[str, list[str]]]:
    opened: Counter[str] = Counter()
    ends: dict[str, list[str]] = {}
    for line in gw.audit_lines():
        if line["event"] == "stream_open":
            opened[line["request_id"]] += 1
        elif line["event"] == "stream_end":
            ends.setdefault(line["request_id"], []).append(line["detail"])
    return opened, ends


async def test_sigterm_drains_every_stream_with_a_reason_and_a_retry_hint(
    gateway_process: GatewayFactory, consul_agent: ConsulAgent, postgres: Any
) -> None:
    prefix = f"faults/drain-{uuid.uuid4().hex[:6]}/"
    kv = consul.Consul(host="127.0.0.1", port=consul_agent.http_port).kv
    kv.put(prefix + "a", "1")
    gw = gateway_process("drain-a", shutdown_grace=10.0)
    spare = gateway_process("drain-b")
    seen: list[Any] = []

    def on_event(event: Any) -> None:
        seen.append(event)

    async with (
        grpc.aio.insecure_channel(gw.addr) as channel,
        latchkey.AsyncClient([gw.addr, spare.addr], token=gw.tokens["app"], insecure=True) as sdk,
    ):
        config = config_pb2_grpc.ConfigStub(channel).Watch(
            config_pb2.WatchConfigRequest(prefix=prefix), metadata=gw.metadata()
        )
        discovery = discovery_pb2_grpc.DiscoveryStub(channel).Watch(
            discovery_pb2.WatchServiceRequest(service="consul"), metadata=gw.metadata()
        )
        creds = secrets_pb2_grpc.SecretsStub(channel).WatchDatabaseCredentials(
            secrets_pb2.WatchDatabaseCredentialsRequest(role=DEMO_ROLE), metadata=gw.metadata()
        )
        issued = (await _first(creds)).issued.credential
        await _first(config)
        await _first(discovery)
        assert await can_login(postgres, issued.username, issued.password)
        watch = await sdk.config.watch(prefix, on_event)
        assert sdk._transport.address == gw.addr

        gw.signal(signal.SIGTERM)
        for call in (config, discovery, creds):
            error = await _ending(call)
            assert error.code() == grpc.StatusCode.UNAVAILABLE, error
            details = error.details() or ""
            assert "SIGTERM" in details, details
            assert "draining" in details, details
            trailers = dict(error.trailing_metadata() or ())
            assert trailers.get("retry-after") == "1", trailers
        assert gw.wait_exit(timeout=60) == 0

        # The SDK saw the reason, moved to the other gateway, and goes on with live data.
        await eventually(
            lambda: any(
                isinstance(e, latchkey.StreamStatus) and "draining" in e.detail for e in seen
            ),
            what="the SDK to be told why",
        )
        kv.put(prefix + "b", "2")
        await eventually(
            lambda: any(
                isinstance(e, latchkey.ConfigEvent) and prefix + "b" in e.entries for e in seen
            ),
            what="a change after the drain, through the other gateway",
        )
        assert sdk._transport.address == spare.addr
        await watch.aclose()
    # Leases were revoked after the streams were drained, before the process exited.
    assert not await can_login(postgres, issued.username, issued.password)
    log = gw.log_text()
    assert log.index("draining: the gateway received SIGTERM") < log.index("gateway stopped")
    opened, ends = _stream_records(gw)
    assert {rid: ends.get(rid) for rid in opened} == {rid: ["cause=drain"] for rid in opened}


async def test_every_stream_open_has_one_stream_end_and_no_error_is_logged(
    gateway_process: GatewayFactory, consul_agent: ConsulAgent
) -> None:
    prefix = f"faults/audit-{uuid.uuid4().hex[:6]}/"
    consul.Consul(host="127.0.0.1", port=consul_agent.http_port).kv.put(prefix + "a", "1")
    gw = gateway_process("audit")
    async with grpc.aio.insecure_channel(gw.addr) as channel:
        stub = config_pb2_grpc.ConfigStub(channel)
        # Streams the client cancels, after the first event.
        for _ in range(CLIENT_CANCELS):
            call = stub.Watch(config_pb2.WatchConfigRequest(prefix=prefix), metadata=gw.metadata())
            await _first(call)
            call.cancel()
        # Streams whose channel just goes away.
        other = grpc.aio.insecure_channel(gw.addr)
        dropped = [
            config_pb2_grpc.ConfigStub(other).Watch(
                config_pb2.WatchConfigRequest(prefix=prefix), metadata=gw.metadata()
            )
            for _ in range(5)
        ]
        for call in dropped:
            await _first(call)
        await other.close()
        # Streams still open at shutdown.
        left_open = [
            stub.Watch(config_pb2.WatchConfigRequest(prefix=prefix), metadata=gw.metadata())
            for _ in range(5)
        ]
        for call in left_open:
            await _first(call)
        expected = CLIENT_CANCELS + len(dropped)
        await eventually(
            lambda: sum(len(v) for v in _stream_records(gw)[1].values()) >= expected,
            what="the cancelled streams' stream_end records",
        )
        gw.signal(signal.SIGTERM)
        for call in left_open:
            with contextlib.suppress(grpc.aio.AioRpcError):
                await _ending(call)
    assert gw.wait_exit(timeout=60) == 0
    opened, ends = _stream_records(gw)
    assert len(opened) == expected + len(left_open)
    assert all(count == 1 for count in opened.values())
    assert {rid: len(ends.get(rid, [])) for rid in opened} == dict.fromkeys(opened, 1)
    causes = Counter(detail for details in ends.values() for detail in details)
    assert causes == {"cause=client_cancel": expected, "cause=drain": len(left_open)}, causes
    log = gw.log_text()
    assert '"level": "ERROR"' not in log, log[-3000:]
    assert "different Context" not in log


async def test_serve_captures_signals_and_restores_them(
    demo_env: dict[str, Any], consul_agent: ConsulAgent, vault_server: Any, tmp_path: Path
) -> None:
    def settings(**overrides: Any) -> Settings:
        return gateway_settings(
            consul_addr=consul_agent.http_addr,
            vault_addr=vault_server.addr,
            role_id=demo_env["approle"].role_id,
            secret_id=demo_env["approle"].secret_id,
            tokens_file=demo_env["tokens_file"],
            policies_dir=demo_env["policies_dir"],
            audit_file=tmp_path / "audit.log",
            **overrides,
        )

    # No file I/O in __init__: a missing file is reported by start(), naming it.
    broken = Gateway(settings(auth={"tokens_file": str(tmp_path / "missing.yaml")}))
    with pytest.raises(LatchkeyError) as missing:
        await broken.start()
    assert "missing.yaml" in missing.value.message
    await broken.shutdown()

    def mine(sig: int, frame: Any) -> None:
        raise AssertionError("the gateway's handler should be in place while it serves")

    before = {sig: signal.signal(sig, mine) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        gateway = Gateway(settings())
        ready = asyncio.Event()
        serving = asyncio.create_task(gateway.serve(announce=lambda addr: ready.set()))
        await asyncio.wait_for(ready.wait(), timeout=60)
        assert signal.getsignal(signal.SIGTERM) is not mine
        os.kill(os.getpid(), signal.SIGTERM)  # handled by the gateway: a graceful stop
        await asyncio.wait_for(serving, timeout=60)
        assert signal.getsignal(signal.SIGTERM) is mine
        assert signal.getsignal(signal.SIGINT) is mine
    finally:
        for sig, handler in before.items():
            signal.signal(sig, handler)
