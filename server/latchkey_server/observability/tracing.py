"""OpenTelemetry tracing: the only module that imports opentelemetry (off by default).

`Tracing(config)` owns one tracer provider (not the process-global one, so that several gateways
can live in one process, as in the tests) and exports to OTLP/gRPC, a file (one JSON span per
line) or stderr. The transport interceptor opens one server span per RPC with
`Tracing.server_span`, continuing the caller's W3C `traceparent` from the call metadata; while it
is open, the tracer travels with the request's context (a context variable), so the rooms below
open child spans with the module functions `child_span` and `add_event` without holding a
tracer: the upstream adapters' request functions (one span per Vault or Consul request), the
single-flight join and the audit write. With tracing off, or outside a traced RPC, these cost
one context-variable read and do nothing.

Attributes are fixed labels only: the RPC's service and method, the request id, the caller's
identity name, an upstream operation ("kv_read", "kv_get"), an HTTP status, an error's class
name. Never a secret, a token, a key, a path or a message text (messages may name paths).
"""

from __future__ import annotations

import contextlib
import contextvars
import logging
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Literal

from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import (
    BatchSpanProcessor,
    ConsoleSpanExporter,
    SimpleSpanProcessor,
    SpanExporter,
)
from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased
from opentelemetry.trace import Link, Span, SpanContext, SpanKind, Status, StatusCode
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

log = logging.getLogger("latchkey.tracing")

__all__ = [
    "Span",
    "SpanContext",
    "Tracing",
    "TracingConfig",
    "add_event",
    "annotate",
    "child_span",
    "current_span_context",
    "current_trace_id",
    "end_status",
    "set_attributes",
]

Exporter = Literal["otlp", "file", "console"]
AttributeValue = str | bool | int | float

_PROPAGATOR = TraceContextTextMapPropagator()
_NO_SPAN: AbstractContextManager[None] = contextlib.nullcontext(None)
"""What the span functions return when there is nothing to trace (reusable, no generator)."""
_tracer: contextvars.ContextVar[trace.Tracer | None] = contextvars.ContextVar(
    "latchkey_tracer", default=None
)


@dataclass(frozen=True)
class TracingConfig:
    """What the tracer provider is built from (from the `tracing` settings)."""

    enabled: bool = False
    """Off by default: no provider, no spans."""
    exporter: Exporter = "otlp"
    """otlp (gRPC to `endpoint`), file (JSON lines to `file`) or console (stderr)."""
    endpoint: str = "http://127.0.0.1:4317"
    """OTLP/gRPC collector address."""
    file: Path | None = None
    """exporter file: where spans are appended, one JSON object per line."""
    sample_ratio: float = 1.0
    """Share of new traces sampled (a caller's sampled flag is followed)."""
    service_name: str = "latchkey-gateway"
    """The `service.name` resource attribute."""


class Tracing:
    """One gateway's tracer provider and the server spans of its RPCs."""

    def __init__(self, config: TracingConfig | None = None) -> None:
        self.config = config = config or TracingConfig()
        self._provider: TracerProvider | None = None
        self._out: IO[str] | None = None
        self._tracer: trace.Tracer | None = None
        if config.enabled:
            provider = TracerProvider(
                resource=Resource.create({"service.name": config.service_name}),
                sampler=ParentBased(TraceIdRatioBased(config.sample_ratio)),
            )
            provider.add_span_processor(self._processor(config))
            self._provider = provider
            self._tracer = provider.get_tracer("latchkey_server")

    def _processor(self, config: TracingConfig) -> SimpleSpanProcessor | BatchSpanProcessor:
        if config.exporter == "otlp":
            from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

            # A short export deadline: a collector that is down costs shutdown at most that.
            return BatchSpanProcessor(OTLPSpanExporter(endpoint=config.endpoint, timeout=2))
        exporter: SpanExporter
        if config.exporter == "file":
            assert config.file is not None  # the settings require it
            config.file.parent.mkdir(parents=True, exist_ok=True)
            self._out = config.file.open("a", encoding="utf-8", buffering=1)
            exporter = ConsoleSpanExporter(out=self._out, formatter=_json_line)
        else:
            exporter = ConsoleSpanExporter(formatter=_json_line)
        # Local developer outputs: each span is written as it ends, so it can be read at once.
        return SimpleSpanProcessor(exporter)

    @property
    def enabled(self) -> bool:
        return self._tracer is not None

    def server_span(
        self, rpc: str, metadata: Callable[[], Iterable[tuple[str, str | bytes]] | None]
    ) -> AbstractContextManager[Span | None]:
        """The span of one RPC (`/pkg.Service/Method`), child of the caller's `traceparent`
        (read from `metadata()` only when tracing is on), current (with this tracer) until the
        block ends. Yields None when tracing is off."""
        tracer = self._tracer
        if tracer is None:
            return _NO_SPAN
        return self._server_span(tracer, rpc, metadata() or ())

    @contextlib.contextmanager
    def _server_span(
        self, tracer: trace.Tracer, rpc: str, metadata: Iterable[tuple[str, str | bytes]]
    ) -> Iterator[Span]:
        carrier = {k: v for k, v in metadata if isinstance(v, str)}
        parent = _PROPAGATOR.extract(carrier)
        service, _, method = rpc.lstrip("/").rpartition("/")
        token = _tracer.set(tracer)
        try:
            with tracer.start_as_current_span(
                f"{service}/{method}",
                context=parent,
                kind=SpanKind.SERVER,
                attributes={"rpc.system": "grpc", "rpc.service": service, "rpc.method": method},
                record_exception=False,
                set_status_on_exception=False,
            ) as span:
                yield span
        finally:
            _tracer.reset(token)

    def flush(self) -> None:
        if self._provider is not None:
            self._provider.force_flush()

    def shutdown(self) -> None:
        if self._provider is not None:
            self._provider.shutdown()
            self._provider = None
            self._tracer = None
        if self._out is not None:
            self._out.close()
            self._out = None


_SERVER_ERRORS = frozenset(
    {"UNKNOWN", "DEADLINE_EXCEEDED", "UNIMPLEMENTED", "INTERNAL", "UNAVAILABLE", "DATA_LOSS"}
)
"""Status codes that mark a server span as failed (OpenTelemetry's gRPC conventions): the
caller's mistakes and cancellations (INVALID_ARGUMENT, NOT_FOUND, CANCELLED ...) do not."""


def end_status(span: Span | None, code: str, error: BaseException | None = None) -> None:
    """Record an RPC's outcome on its span: the gRPC status name (never the message)."""
    if span is None:
        return
    span.set_attribute("rpc.grpc.status_code", code)
    if error is not None:
        span.set_attribute("error.type", type(error).__name__)
    if code in _SERVER_ERRORS:
        span.set_status(Status(StatusCode.ERROR, code))


def set_attributes(span: Span | None, attributes: Mapping[str, AttributeValue]) -> None:
    if span is not None:
        span.set_attributes(attributes)


def annotate(attributes: Mapping[str, AttributeValue]) -> None:
    """Set attributes on the current span, if one is recording."""
    span = trace.get_current_span()
    if span.is_recording():
        span.set_attributes(attributes)


def current_span_context() -> SpanContext | None:
    """The current span's context when one is recording (to link to it later), else None."""
    span = trace.get_current_span()
    return span.get_span_context() if span.is_recording() else None


def child_span(
    name: str,
    attributes: Mapping[str, AttributeValue] | None = None,
    *,
    links: Iterable[SpanContext | None] = (),
) -> AbstractContextManager[Span | None]:
    """A client/internal span under the RPC span being served, or nothing (yields None) when no
    traced RPC is open in this context: background work (watch loops, renewals of leases nobody
    is waiting on) makes no orphan traces. An exception ends the span with its class name only.
    """
    tracer = _tracer.get()
    if tracer is None or not trace.get_current_span().is_recording():
        return _NO_SPAN
    return _child_span(tracer, name, attributes, links)


@contextlib.contextmanager
def _child_span(
    tracer: trace.Tracer,
    name: str,
    attributes: Mapping[str, AttributeValue] | None,
    links: Iterable[SpanContext | None],
) -> Iterator[Span]:
    kind = SpanKind.CLIENT if name.startswith(("vault", "consul")) else SpanKind.INTERNAL
    with tracer.start_as_current_span(
        name,
        kind=kind,
        attributes=attributes,
        links=[Link(c) for c in links if c is not None],
        record_exception=False,
        set_status_on_exception=False,
    ) as span:
        try:
            yield span
        except BaseException as exc:
            span.set_status(Status(StatusCode.ERROR, type(exc).__name__))
            span.set_attribute("error.type", type(exc).__name__)
            raise


def add_event(name: str, attributes: Mapping[str, AttributeValue] | None = None) -> None:
    """An event on the current span (a stream's snapshot, change, rotation ...), if recording."""
    span = trace.get_current_span()
    if span.is_recording():
        span.add_event(name, attributes)


def current_trace_id() -> str:
    """The current trace id (32 hex digits) when a span is active, else ""."""
    ctx = trace.get_current_span().get_span_context()
    return f"{ctx.trace_id:032x}" if ctx.is_valid else ""


def _json_line(span: ReadableSpan) -> str:
    return str(span.to_json(indent=None)) + "\n"
