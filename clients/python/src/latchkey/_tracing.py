"""Trace propagation: the app's OpenTelemetry context travels with every call, when there is one.

With `opentelemetry-api` importable (the `otel` extra, or an app that already uses it), a unary
call runs in a client span named after the RPC (`latchkey.v1.Secrets/GetDatabaseCredentials`)
and carries the W3C `traceparent` (and `tracestate`) in its metadata, so the gateway's server
span joins the app's trace; a stream carries the app's current context. Without it, nothing is
added and nothing is imported. Shared by the sync and async transports (no I/O here). Which
tracer provider records the spans is the app's choice (the global one); the SDK installs none.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

try:
    from opentelemetry import propagate as _propagate
    from opentelemetry import trace as _trace
except ImportError:  # the SDK works without OpenTelemetry: nothing is propagated
    _propagate = None  # type: ignore[assignment]
    _trace = None  # type: ignore[assignment]

Metadata = tuple[tuple[str, str], ...]

AVAILABLE = _trace is not None
"""Whether opentelemetry-api could be imported."""


def rpc_name(multicallable: Any) -> str:
    """`latchkey.v1.Secrets/GetSecret` for a stub's method (grpc keeps the path it calls)."""
    method = getattr(multicallable, "_method", b"")
    if isinstance(method, bytes):
        method = method.decode("ascii", "replace")
    return str(method).lstrip("/") or "latchkey"


def with_context(metadata: Metadata) -> Metadata:
    """`metadata` plus the current trace context (unchanged when there is none)."""
    if _propagate is None:
        return metadata
    carrier: dict[str, str] = {}
    _propagate.inject(carrier)
    return metadata + tuple(carrier.items()) if carrier else metadata


@contextlib.contextmanager
def client_span(name: str, metadata: Metadata) -> Iterator[Metadata]:
    """A client span for one call (current while it runs); yields the metadata to send."""
    if _trace is None:
        yield metadata
        return
    tracer = _trace.get_tracer("latchkey")
    with tracer.start_as_current_span(
        name,
        kind=_trace.SpanKind.CLIENT,
        attributes={"rpc.system": "grpc", "rpc.method": name.rpartition("/")[2]},
        record_exception=False,
        set_status_on_exception=False,
    ) as span:
        try:
            yield with_context(metadata)
        except BaseException as exc:  # the class name only: messages stay out of traces
            span.set_status(_trace.Status(_trace.StatusCode.ERROR, type(exc).__name__))
            raise
