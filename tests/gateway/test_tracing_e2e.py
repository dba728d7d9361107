"""Tracing end to end: the SDK's client span, the gateway's server span and its Vault spans form
one trace in the file exporter's output, with no secret, token or secret path in it; the audit
line carries the trace id. Real gateway, OpenBao, Consul and PostgreSQL.

The app side records with the OpenTelemetry SDK's in-memory exporter on the process-global
tracer provider (the SDK propagates through the global one, as an app's would); the gateway
writes to a file with its own provider.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import consul
import hvac
import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

import latchkey
from latchkey.v1 import config_pb2, config_pb2_grpc
from latchkey_server.devstack.consul import ConsulAgent
from latchkey_server.devstack.postgres import PostgresCluster
from latchkey_server.devstack.seed import DEMO_ROLE
from tests.fixtures.gateway import start_gateway
from tests.gateway.helpers import eventually

SECRET_VALUE = "sk-trace-check-51c2e"
SECRET_PATH = "tracecheck/app"


@pytest.fixture(scope="module")
def app_spans() -> InMemorySpanExporter:
    """The app's tracer provider (global, set once per process), recording in memory."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    trace.set_tracer_provider(provider)
    if trace.get_tracer_provider() is not provider:
        pytest.fail("another test set the global tracer provider first; run this file alone")
    return exporter


def _spans(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _hex(value: int, width: int) -> str:
    return f"0x{value:0{width}x}"


async def test_one_call_is_one_trace_from_app_to_vault(
    demo_env: dict[str, Any], consul_agent: ConsulAgent, vault_server: Any,
    postgres: PostgresCluster, tmp_path: Path, app_spans: InMemorySpanExporter,
) -> None:  # fmt: skip
    vault = hvac.Client(url=vault_server.addr, token=vault_server.root_token)
    vault.secrets.kv.v2.create_or_update_secret(
        path=SECRET_PATH, secret={"api_key": SECRET_VALUE}, mount_point="secret"
    )
    spans_file = tmp_path / "spans.jsonl"
    handle = await start_gateway(
        demo_env, consul_agent, vault_server, postgres,
        tracing={"enabled": True, "exporter": "file", "file": str(spans_file)},
    )  # fmt: skip
    token = handle.tokens["app"]
    try:
        async with latchkey.AsyncClient(handle.addr, token=token) as client:
            creds = await client.database.credentials(DEMO_ROLE)
            secret = await client.secrets.get(SECRET_PATH)
        password = creds.password.get_secret_value()
        assert secret.data["api_key"] == SECRET_VALUE

        def sync_call_in_app_span() -> Any:
            """The blocking client (generated from the async one), inside an app span."""
            with (
                trace.get_tracer("app").start_as_current_span("app handler") as app_span,
                latchkey.Client(handle.addr, token=token) as sync_client,
            ):
                sync_client.status()
            return app_span.get_span_context()

        app_ctx = await asyncio.to_thread(sync_call_in_app_span)

        client_span = next(
            s for s in app_spans.get_finished_spans()
            if s.name == "latchkey.v1.Secrets/GetDatabaseCredentials"
        )  # fmt: skip
        ctx = client_span.get_span_context()
        trace_id = _hex(ctx.trace_id, 32)

        def in_trace() -> list[dict[str, Any]]:
            return [s for s in _spans(spans_file) if s["context"]["trace_id"] == trace_id]

        def server_span_written() -> bool:
            return any(s["kind"] == "SpanKind.SERVER" for s in in_trace())

        await eventually(server_span_written, what="the gateway's server span in the file")

        def status_span_written() -> bool:
            return any(
                s["name"] == "latchkey.v1.Gateway/Status"
                and s["context"]["trace_id"] == _hex(app_ctx.trace_id, 32)
                for s in _spans(spans_file)
            )

        await eventually(status_span_written, what="the sync client's call in the app's trace")
    finally:
        await handle.gateway.stop()  # flushes and closes the exporter
    spans = in_trace()
    by_id = {s["context"]["span_id"]: s for s in spans}
    (server,) = [s for s in spans if s["kind"] == "SpanKind.SERVER"]
    assert server["name"] == "latchkey.v1.Secrets/GetDatabaseCredentials"
    assert server["parent_id"] == _hex(ctx.span_id, 16)  # the client span, in the app
    assert server["attributes"]["rpc.grpc.status_code"] == "OK"
    assert server["attributes"]["latchkey.identity"] == "app"
    vault_spans = [s for s in spans if s["name"].startswith("vault ")]
    assert {s["name"] for s in vault_spans} >= {"vault creds"}
    assert any(s["name"] == "audit.write" and s["parent_id"] == server["context"]["span_id"]
               for s in spans)  # fmt: skip
    for span in vault_spans:
        assert span["kind"] == "SpanKind.CLIENT"
        assert span["attributes"]["latchkey.upstream"] == "vault"
        parent = span["parent_id"]  # every Vault span descends from the server span
        while parent != server["context"]["span_id"]:
            parent = by_id[parent]["parent_id"]
    # The whole trace is one tree rooted at the app's span.
    for span in spans:
        assert span["parent_id"] in by_id or span is server

    # The audit line of the call carries the trace id.
    audit = [json.loads(x) for x in demo_env["audit_file"].read_text().splitlines()]
    assert any(
        line["trace_id"] == trace_id[2:]
        and line["rpc"] == "/latchkey.v1.Secrets/GetDatabaseCredentials"
        for line in audit
    )

    # No secret anywhere in what was exported: values, tokens, the secret's path.
    text = spans_file.read_text()
    assert "vault kv_read" in text  # the GetSecret trace was exported as well
    for value in (password, SECRET_VALUE, SECRET_PATH, token, demo_env["approle"].secret_id):
        assert value not in text
    assert vault_server.root_token not in text


async def test_a_stream_is_one_span_with_an_event_per_message(
    demo_env: dict[str, Any], consul_agent: ConsulAgent, vault_server: Any,
    postgres: PostgresCluster, tmp_path: Path,
) -> None:  # fmt: skip
    kv = consul.Consul(host="127.0.0.1", port=consul_agent.http_port).kv
    prefix = f"tracewatch/{tmp_path.name[-8:]}/"
    kv.put(prefix + "a", "first-value-9c1")
    spans_file = tmp_path / "spans.jsonl"
    handle = await start_gateway(
        demo_env, consul_agent, vault_server, postgres,
        tracing={"enabled": True, "exporter": "file", "file": str(spans_file)},
    )  # fmt: skip
    caller_trace = "0af7651916cd43dd8448eb211c80319c"
    metadata = (*handle.metadata(), ("traceparent", f"00-{caller_trace}-b7ad6b7169203331-01"))
    try:
        async with handle.channel() as channel:
            watch = config_pb2_grpc.ConfigStub(channel).Watch(
                config_pb2.WatchConfigRequest(prefix=prefix), metadata=metadata
            )
            kinds = []
            while "change" not in kinds:
                event = await watch.read()
                kinds.append(event.WhichOneof("event"))
                if kinds == ["snapshot"]:
                    kv.put(prefix + "b", "second-value-4d2")
            watch.cancel()

            def stream_span_written() -> bool:
                return any(s["name"] == "latchkey.v1.Config/Watch" for s in _spans(spans_file))

            await eventually(stream_span_written, what="the stream's span once it ended")
    finally:
        await handle.gateway.stop()
    spans = [s for s in _spans(spans_file) if s["context"]["trace_id"] == f"0x{caller_trace}"]
    (stream,) = [s for s in spans if s["name"] == "latchkey.v1.Config/Watch"]
    assert stream["parent_id"] == "0xb7ad6b7169203331"
    assert [e["name"] for e in stream["events"]] == ["snapshot", "change"]
    assert stream["attributes"]["latchkey.stream_end"] == "client_cancel"
    consul_spans = [s for s in spans if s["name"].startswith("consul ")]
    assert consul_spans
    assert all(s["parent_id"] == stream["context"]["span_id"] for s in consul_spans)
    text = spans_file.read_text()
    for value in ("first-value-9c1", "second-value-4d2", prefix, handle.tokens["app"]):
        assert value not in text
