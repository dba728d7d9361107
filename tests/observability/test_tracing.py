"""The tracing module on its own: settings, a server span continuing a caller's traceparent,
child spans only inside a traced RPC, single-flight joins linked to the call they joined, and
the trace id in JSON logs. The whole path (SDK → gateway → Vault) is
tests/gateway/test_tracing_e2e.py."""

from __future__ import annotations

import asyncio
import json
import logging
from pathlib import Path
from typing import Any

import pytest

from latchkey_server.brokers.singleflight import SingleFlight
from latchkey_server.config import TracingSettings
from latchkey_server.observability.logs import JsonFormatter, RequestIdFilter
from latchkey_server.observability.tracing import (
    Tracing,
    TracingConfig,
    child_span,
    current_trace_id,
    end_status,
)

CALLER_TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
CALLER_SPAN = "00f067aa0ba902b7"


def _spans(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def _tracing(tmp_path: Path) -> tuple[Tracing, Path]:
    out = tmp_path / "spans.jsonl"
    return Tracing(TracingConfig(enabled=True, exporter="file", file=out)), out


def test_off_by_default_and_file_needs_a_path() -> None:
    assert not TracingSettings().enabled
    assert not Tracing().enabled
    with Tracing().server_span("/latchkey.v1.Secrets/GetSecret", tuple) as span:
        assert span is None
        with child_span("vault kv_read") as child:
            assert child is None
    with pytest.raises(ValueError, match=r"tracing\.file"):
        TracingSettings(enabled=True, exporter="file")


def test_server_span_continues_the_caller_and_children_nest(tmp_path: Path) -> None:
    tracing, out = _tracing(tmp_path)
    metadata = (("traceparent", f"00-{CALLER_TRACE}-{CALLER_SPAN}-01"), ("authorization", "x"))
    with tracing.server_span("/latchkey.v1.Config/Watch", lambda: metadata) as span:
        assert span is not None
        assert current_trace_id() == CALLER_TRACE
        with child_span("consul kv_list", {"latchkey.operation": "kv_list"}):
            pass
    with child_span("consul kv_list") as outside:  # no RPC: background work makes no span
        assert outside is None
    assert current_trace_id() == ""
    tracing.shutdown()
    child, server = _spans(out)
    assert server["name"] == "latchkey.v1.Config/Watch"
    assert server["kind"] == "SpanKind.SERVER"
    assert server["context"]["trace_id"] == f"0x{CALLER_TRACE}"
    assert server["parent_id"] == f"0x{CALLER_SPAN}"
    assert child["parent_id"] == server["context"]["span_id"]
    assert child["kind"] == "SpanKind.CLIENT"
    assert "authorization" not in out.read_text()


async def test_single_flight_join_is_marked_and_linked(tmp_path: Path) -> None:
    tracing, out = _tracing(tmp_path)
    flight: SingleFlight[str, int] = SingleFlight()
    release = asyncio.Event()
    started = asyncio.Event()

    async def upstream() -> int:
        started.set()
        with child_span("vault kv_read"):
            await release.wait()
        return 7

    async def call(rpc: str) -> int:
        with tracing.server_span(rpc, tuple):
            return await flight.do("key", upstream)

    leader = asyncio.create_task(call("/latchkey.v1.Secrets/GetSecret"))
    await started.wait()
    assert flight.in_flight("key")
    joiner = asyncio.create_task(call("/latchkey.v1.Secrets/GetSecret"))
    # The loop runs ready callbacks in order: the joiner's first step (up to its wait on the
    # flight) runs before the release.
    asyncio.get_running_loop().call_soon(release.set)
    assert await asyncio.gather(leader, joiner) == [7, 7]
    tracing.shutdown()
    spans = _spans(out)
    servers = [s for s in spans if s["kind"] == "SpanKind.SERVER"]
    (join,) = [s for s in spans if s["name"] == "singleflight.join"]
    (read,) = [s for s in spans if s["name"] == "vault kv_read"]
    lead_server = next(s for s in servers if s["context"]["span_id"] == read["parent_id"])
    join_server = next(s for s in servers if s is not lead_server)
    assert join["parent_id"] == join_server["context"]["span_id"]
    assert join["attributes"]["latchkey.singleflight"] == "join"
    assert [link["context"]["span_id"] for link in join["links"]] == [
        lead_server["context"]["span_id"]
    ]


def test_json_logs_carry_the_trace_id(tmp_path: Path) -> None:
    tracing, _ = _tracing(tmp_path)
    record = logging.LogRecord("latchkey.test", logging.INFO, __file__, 1, "hello", None, None)
    with tracing.server_span("/latchkey.v1.Secrets/GetSecret", tuple):
        RequestIdFilter().filter(record)
        expected = current_trace_id()
    line = json.loads(JsonFormatter().format(record))
    assert line["trace_id"] == expected
    assert len(expected) == 32
    tracing.shutdown()


def test_only_server_errors_fail_a_span(tmp_path: Path) -> None:
    tracing, out = _tracing(tmp_path)
    for code in ("OK", "NOT_FOUND", "CANCELLED", "UNAVAILABLE"):
        with tracing.server_span("/latchkey.v1.Secrets/GetSecret", tuple) as span:
            end_status(span, code, None if code == "OK" else LookupError("secret/x missing"))
    tracing.shutdown()
    spans = _spans(out)
    assert [s["attributes"]["rpc.grpc.status_code"] for s in spans] == [
        "OK", "NOT_FOUND", "CANCELLED", "UNAVAILABLE"
    ]  # fmt: skip
    assert [s["status"]["status_code"] for s in spans] == ["UNSET", "UNSET", "UNSET", "ERROR"]
    assert [s["attributes"].get("error.type") for s in spans] == [None, *["LookupError"] * 3]
    assert "secret/x" not in out.read_text()  # the class name, never the message
