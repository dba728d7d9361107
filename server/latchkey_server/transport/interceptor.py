"""The one interceptor every RPC passes through.

For each call it: opens the request record; authenticates the caller (bearer token or client
certificate) and attaches the identity; applies the identity's rate limit; decodes the request
itself, so undecodable input (e.g. non-UTF-8 strings) is INVALID_ARGUMENT instead of gRPC's
INTERNAL; maps every error to a status through `errors.abort_with`; and queues the audit
record (access/audit.py: a writer thread writes records in batches). A call that returns secret
values awaits its record's write *before* the value leaves: if the audit sink cannot be written
and audit is fail-closed, the call fails with UNAVAILABLE instead. A unary reply may come from
the servicer already serialized (bytes); the response serializer passes it through.
Authorization happens in the servicers through the access gate, which records its decision on
the same request record.

A server stream is driven from the task gRPC runs the call in (a coroutine handler writing with
`context.write`, not an async generator gRPC iterates): its end, however it comes (the client
cancels, the gateway drains, a policy reload, a stalled client, an error), is handled and
audited there, exactly once (`stream_end` with its cause in `detail`), and the context
variables are reset in the context that set them. Writes go through `StreamSender` (flow.py).
Tracing (observability/tracing.py, off by default): each call runs inside a server span that
continues the caller's `traceparent`; its outcome is the status name, the audit write a call
waits for is a child span, and a stream's span carries one event per message it sends (issued,
renewed, rotation, revoked, snapshot, change, instances; not heartbeats), not a span per message.
Public methods (health, reflection) are not authenticated, but a health request that cannot be
decoded still gets INVALID_ARGUMENT, not gRPC's logged UNKNOWN.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
from collections.abc import Awaitable, Callable
from contextlib import aclosing
from typing import Any

import grpc

from latchkey_server.access.audit import AuditLog, AuditRecord
from latchkey_server.access.authn import Authenticator
from latchkey_server.access.budget import QueueBudget
from latchkey_server.access.context import reset_identity, set_identity
from latchkey_server.access.ratelimit import RateLimiter
from latchkey_server.access.request import RequestInfo, begin, end
from latchkey_server.errors import (
    Draining,
    InvalidArgument,
    PermissionDenied,
    ResourceExhausted,
    StreamStalled,
    Unauthenticated,
)
from latchkey_server.models import Identity, utcnow
from latchkey_server.observability.telemetry import Telemetry
from latchkey_server.observability.tracing import (
    Span,
    Tracing,
    add_event,
    annotate,
    child_span,
    current_trace_id,
    end_status,
    set_attributes,
)
from latchkey_server.transport.errors import abort_with, status_name
from latchkey_server.transport.flow import FlowLimits, SharedPayloads, StreamSender

log = logging.getLogger("latchkey.transport")

PUBLIC_PREFIXES = ("/grpc.health.v1.Health/", "/grpc.reflection.v1alpha.ServerReflection/",
                   "/grpc.reflection.v1.ServerReflection/")  # fmt: skip


def end_cause(error: BaseException | None, *, stopping: bool = False) -> str:
    """Why a stream ended, as the audit log's `stream_end` records it (`detail`)."""
    if error is None:
        return "completed"
    if isinstance(error, asyncio.CancelledError):
        return "shutdown" if stopping else "client_cancel"
    if isinstance(error, Draining):
        return "drain"
    if isinstance(error, PermissionDenied):
        return "policy"
    if isinstance(error, StreamStalled):
        return "stalled"
    if isinstance(error, ResourceExhausted):
        return "limit"
    return "error"


Context = grpc.aio.ServicerContext[Any, Any]


def _peer_certificate(context: Context) -> bytes | None:
    """The verified client certificate (PEM), when the connection is mTLS."""
    certs = list((context.auth_context() or {}).get("x509_pem_cert") or ())
    return certs[0] if certs else None


class GatewayInterceptor(grpc.aio.ServerInterceptor):
    def __init__(
        self,
        authenticator: Authenticator,
        *,
        audit: AuditLog | None = None,
        limiter: RateLimiter | None = None,
        telemetry: Telemetry | None = None,
        flow: FlowLimits | None = None,
        tracing: Tracing | None = None,
    ) -> None:
        self._authn = authenticator
        self._tracing = tracing or Tracing()
        self._flow = flow or FlowLimits()
        self._budget = QueueBudget(self._flow.identity_bytes)
        self._shared = SharedPayloads()
        self.stopping = False
        """Set by the server when it stops: a cancelled stream then ended by shutdown."""
        self._telemetry = telemetry or Telemetry()
        # Wrapped handlers and metric children are built once per method, not per call.
        self._wrapped: dict[str, Any] = {}
        self._counters: dict[tuple[str, str], Any] = {}
        self._timers: dict[tuple[str, str], Any] = {}
        self._audit_log = audit
        self._limiter = limiter

    # ---------------------------------------------------------------- per call

    def _admit(self, context: Context, info: RequestInfo) -> Identity:
        metadata: dict[str, str] = {}
        for key, value in context.invocation_metadata() or ():
            if key == "authorization" and isinstance(value, str):
                metadata[key] = value
                break
        # The peer certificate is only needed when no bearer token is presented.
        certificate = None if metadata else _peer_certificate(context)
        try:
            identity = self._authn.authenticate(metadata, info.peer, certificate)
        except Unauthenticated:
            info.decision = "deny"
            raise
        info.identity = identity
        if info.trace_id:
            annotate({"latchkey.request_id": info.request_id, "latchkey.identity": identity.name})
        if self._limiter is not None:
            self._limiter.check(identity.name)
        return identity

    def _audit(
        self,
        info: RequestInfo,
        error: BaseException | None,
        event: str,
        *,
        quiet: bool = False,
        detail: str = "",
    ) -> asyncio.Future[None] | None:
        """Queue one audit line. The returned future (when there is one) must be awaited before
        a secret leaves: it raises AuditUnavailable when the line could not be written."""
        identity = info.identity
        decision = info.decision
        if error is not None and decision == "n/a":
            decision = "error"
        returned = info.returned
        if returned:
            info.returned = {}  # the record owns the values noted so far
        latency_ms = info.latency_ms()
        record = AuditRecord(
            time=utcnow(),
            request_id=info.request_id,
            trace_id=info.trace_id,
            identity=identity.name if identity else "",
            auth_method=identity.method if identity else "",
            peer=info.peer,
            rpc=info.rpc,
            resource=info.resource,
            kind=info.kind,
            capability=info.capability,
            decision=decision,  # type: ignore[arg-type]
            code=status_name(error),
            latency_ms=latency_ms,
            event=event,  # type: ignore[arg-type]
            returned=returned,
            detail=detail,
        )
        if event in ("request", "stream_end"):
            kind = "unary" if event == "request" else "stream"
            self._count(info.rpc, record.code, kind, latency_ms)
        if self._audit_log is None:
            return None
        return self._audit_log.submit(record, returns_secret=bool(returned) and not quiet)

    def _count(self, rpc: str, code: str, kind: str, latency_ms: float) -> None:
        counter = self._counters.get((rpc, code))
        if counter is None:
            method = rpc.rsplit("/", 1)[-1]
            counter = self._counters[(rpc, code)] = self._telemetry.rpc_requests.labels(
                method, code
            )
        timer = self._timers.get((rpc, kind))
        if timer is None:
            method = rpc.rsplit("/", 1)[-1]
            timer = self._timers[(rpc, kind)] = self._telemetry.rpc_duration.labels(method, kind)
        counter.inc()
        timer.observe(latency_ms / 1000)

    # ---------------------------------------------------------------- wiring

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[Any]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> Any:
        method: str = handler_call_details.method
        wrapped = self._wrapped.get(method)
        if wrapped is not None:
            return wrapped
        handler: Any = await continuation(handler_call_details)
        if handler is None:
            return handler
        if method.startswith(PUBLIC_PREFIXES):
            wrapped = _decoding(method, handler)
        else:
            wrapped = self._wrap(method, handler)
        self._wrapped[method] = wrapped
        return wrapped

    def _wrap(self, method: str, handler: Any) -> Any:
        decode = handler.request_deserializer
        name = method.rsplit("/", 1)[-1]

        def parse(raw: bytes) -> Any:
            try:
                return decode(raw) if decode else raw
            except Exception as exc:
                raise InvalidArgument(
                    f"{name}: the request is not a valid message (strings must be UTF-8)"
                ) from exc

        if handler.unary_unary:
            inner_uu: Any = handler.unary_unary

            async def unary(raw: bytes, context: Context) -> Any:
                info = RequestInfo(rpc=method, peer=context.peer() or "")
                request_token = begin(info)
                identity_token = None
                with self._tracing.server_span(method, context.invocation_metadata) as span:
                    if span is not None:
                        info.trace_id = current_trace_id()
                    try:
                        identity_token = set_identity(self._admit(context, info))
                        response = await inner_uu(parse(raw), context)
                        with child_span("audit.write"):
                            written = self._audit(info, None, "request")
                            if written is not None:
                                await written
                        end_status(span, "OK")
                        return response
                    except grpc.aio.AbortError:
                        raise
                    except Exception as exc:
                        end_status(span, status_name(exc), exc)
                        self._audit_failure(info, exc, "request")
                        await abort_with(context, exc)
                    finally:
                        if identity_token is not None:
                            reset_identity(identity_token)
                        end(request_token)

            return grpc.unary_unary_rpc_method_handler(
                unary, response_serializer=_passing_bytes(handler.response_serializer)
            )
        if handler.unary_stream:
            inner_us: Any = handler.unary_stream

            async def stream(raw: bytes, context: Context) -> None:
                await self._stream(method, inner_us, parse, raw, context)

            # Messages are serialized by the StreamSender (shared between streams).
            return grpc.unary_stream_rpc_method_handler(stream)
        return handler

    async def _stream(
        self,
        method: str,
        inner: Callable[[Any, Context], Any],
        parse: Callable[[bytes], Any],
        raw: bytes,
        context: Context,
    ) -> None:
        """Run one server stream in this (the call's own) task, and end it exactly once."""
        with self._tracing.server_span(method, context.invocation_metadata) as span:
            await self._stream_in_span(span, method, inner, parse, raw, context)

    async def _stream_in_span(
        self,
        span: Span | None,
        method: str,
        inner: Callable[[Any, Context], Any],
        parse: Callable[[bytes], Any],
        raw: bytes,
        context: Context,
    ) -> None:
        info = RequestInfo(rpc=method, peer=context.peer() or "")
        if span is not None:
            info.trace_id = current_trace_id()
        request_token = begin(info)
        identity_token = None
        sender: StreamSender | None = None
        opened = False
        try:
            identity = self._admit(context, info)
            identity_token = set_identity(identity)
            sender = StreamSender(context, identity.name, self._flow, self._budget, self._shared)
            async with aclosing(inner(parse(raw), context)) as events:
                async for item in events:
                    if not opened or info.returned:
                        with child_span("audit.write"):
                            written = self._audit(
                                info, None, "stream_event" if opened else "stream_open"
                            )
                            if written is not None:
                                await written
                        opened = True
                    if span is not None:
                        _stream_event(item)
                    await sender.send(item)
            if opened:
                self._audit(info, None, "stream_end", quiet=True, detail="cause=completed")
            end_status(span, "OK")
        except asyncio.CancelledError as exc:
            cause = end_cause(exc, stopping=self.stopping)
            end_status(span, "CANCELLED", exc)
            set_attributes(span, {"latchkey.stream_end": cause})
            event = "stream_end" if opened else "request"
            self._audit_failure(info, exc, event, detail=f"cause={cause}")
            raise
        except Exception as exc:
            event = "stream_end" if opened else "request"
            end_status(span, status_name(exc), exc)
            set_attributes(span, {"latchkey.stream_end": end_cause(exc)})
            self._audit_failure(info, exc, event, detail=f"cause={end_cause(exc)}")
            await abort_with(context, exc)
        finally:
            if sender is not None:
                sender.close()
            if identity_token is not None:
                reset_identity(identity_token)
            end(request_token)

    def _audit_failure(
        self, info: RequestInfo, error: BaseException | None, event: str, *, detail: str = ""
    ) -> None:
        """Audit a failed or cancelled call; never raises (the call is ending anyway)."""
        info.returned.clear()
        self._audit(info, error, event, quiet=True, detail=detail)


def _stream_event(item: Any) -> None:
    """One span event per stream message, named after its kind (heartbeats are left out)."""
    which = getattr(item, "WhichOneof", None)
    kind = which("event") if which is not None else None
    if kind and kind != "heartbeat":
        add_event(kind)


def _passing_bytes(serialize: Callable[[Any], bytes] | None) -> Callable[[Any], bytes] | None:
    """The reply serializer, passing through replies a servicer serialized itself (bytes)."""
    if serialize is None:
        return None

    def serialized(reply: Any) -> bytes:
        return reply if type(reply) is bytes else serialize(reply)

    return serialized


def _decoding(method: str, handler: Any) -> Any:
    """A public handler whose undecodable requests get INVALID_ARGUMENT (and no log line)."""
    decode = handler.request_deserializer
    if decode is None or handler.request_streaming:
        return handler  # reflection decodes per message, inside its own servicer
    name = method.rsplit("/", 1)[-1]

    async def parsed(raw: bytes, context: Context) -> Any:
        try:
            return decode(raw)
        except Exception:
            await context.abort(
                grpc.StatusCode.INVALID_ARGUMENT,
                f"{name}: the request is not a valid {name} request message",
            )

    if handler.unary_unary:
        inner_uu: Any = handler.unary_unary

        async def unary(raw: bytes, context: Context) -> Any:
            return await inner_uu(await parsed(raw, context), context)

        return grpc.unary_unary_rpc_method_handler(
            unary, response_serializer=handler.response_serializer
        )
    if handler.unary_stream:
        inner_us: Any = handler.unary_stream
        serialize = handler.response_serializer

        async def stream(raw: bytes, context: Context) -> None:
            request = await parsed(raw, context)
            if inspect.isasyncgenfunction(inner_us):
                async with aclosing(inner_us(request, context)) as items:
                    async for item in items:
                        await context.write(item)
            else:
                await inner_us(request, context)

        return grpc.unary_stream_rpc_method_handler(stream, response_serializer=serialize)
    return handler
