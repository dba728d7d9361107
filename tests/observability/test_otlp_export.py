"""The OTLP exporter path: spans reach an OTLP/gRPC receiver (the collector's TraceService, served
here with the stubs opentelemetry-proto ships) with the pinned grpcio/protobuf, and shutdown
flushes them. The receiver stands in for a collector, which is not one of latchkey's upstreams;
the file exporter's end-to-end test is tests/gateway/test_tracing_e2e.py."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from concurrent import futures
from typing import Any

import grpc
import pytest
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc

from latchkey_server.observability.tracing import Tracing, TracingConfig, child_span


class Receiver(trace_service_pb2_grpc.TraceServiceServicer):
    def __init__(self) -> None:
        self.spans: list[Any] = []
        self.service_names: set[str] = set()
        self.received = threading.Event()

    def Export(self, request: Any, context: Any) -> Any:
        for resource_spans in request.resource_spans:
            for attr in resource_spans.resource.attributes:
                if attr.key == "service.name":
                    self.service_names.add(attr.value.string_value)
            for scope in resource_spans.scope_spans:
                self.spans.extend(scope.spans)
        self.received.set()
        return trace_service_pb2.ExportTraceServiceResponse()


@pytest.fixture
def receiver() -> Iterator[tuple[Receiver, int]]:
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    servicer = Receiver()
    trace_service_pb2_grpc.add_TraceServiceServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    yield servicer, port
    server.stop(None)


def test_spans_reach_an_otlp_receiver(receiver: tuple[Receiver, int]) -> None:
    servicer, port = receiver
    tracing = Tracing(
        TracingConfig(enabled=True, exporter="otlp", endpoint=f"http://127.0.0.1:{port}",
                      service_name="latchkey-test")
    )  # fmt: skip
    # (the child span is made after the server span is entered, as nested blocks would)
    with (
        tracing.server_span("/latchkey.v1.Secrets/GetSecret", tuple),
        child_span("vault kv_read", {"latchkey.operation": "kv_read"}),
    ):
        pass
    tracing.shutdown()  # flushes the batch
    assert servicer.received.wait(30)
    by_name = {span.name: span for span in servicer.spans}
    assert set(by_name) == {"latchkey.v1.Secrets/GetSecret", "vault kv_read"}
    server, child = by_name["latchkey.v1.Secrets/GetSecret"], by_name["vault kv_read"]
    assert child.parent_span_id == server.span_id
    assert child.trace_id == server.trace_id
    assert servicer.service_names == {"latchkey-test"}
