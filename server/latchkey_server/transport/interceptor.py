"""The one interceptor every RPC passes through.

It authenticates the caller (attaching the identity for the servicer), decodes the request
itself so that undecodable input (e.g. non-UTF-8 strings) becomes INVALID_ARGUMENT instead of
gRPC's INTERNAL, and maps every error to a status through `errors.abort_with`. Authorization,
audit and rate limits hook in here too (`on_call`), so no servicer repeats them.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc

from latchkey_server.access.authn import Authenticator
from latchkey_server.access.context import reset_identity, set_identity
from latchkey_server.errors import InvalidArgument
from latchkey_server.models import Identity
from latchkey_server.transport.errors import abort_with

log = logging.getLogger("latchkey.transport")

PUBLIC_PREFIXES = ("/grpc.health.v1.Health/", "/grpc.reflection.v1alpha.ServerReflection/",
                   "/grpc.reflection.v1.ServerReflection/")  # fmt: skip

Context = grpc.aio.ServicerContext[Any, Any]


class GatewayInterceptor(grpc.aio.ServerInterceptor):
    def __init__(self, authenticator: Authenticator) -> None:
        self._authn = authenticator

    def _identify(self, context: Context) -> Identity:
        metadata = {k: v for k, v in (context.invocation_metadata() or ()) if isinstance(v, str)}
        return self._authn.authenticate(metadata, context.peer() or "")

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[Any]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> Any:
        handler: Any = await continuation(handler_call_details)
        method: str = handler_call_details.method
        if handler is None or method.startswith(PUBLIC_PREFIXES):
            return handler
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
                token = None
                try:
                    token = set_identity(self._identify(context))
                    return await inner_uu(parse(raw), context)
                except grpc.aio.AbortError:
                    raise
                except Exception as exc:
                    await abort_with(context, exc)
                finally:
                    if token is not None:
                        reset_identity(token)

            return grpc.unary_unary_rpc_method_handler(
                unary, response_serializer=handler.response_serializer
            )
        if handler.unary_stream:
            inner_us: Any = handler.unary_stream

            async def stream(raw: bytes, context: Context) -> AsyncIterator[Any]:
                token = None
                try:
                    token = set_identity(self._identify(context))
                    async for item in inner_us(parse(raw), context):
                        yield item
                except grpc.aio.AbortError:
                    raise
                except Exception as exc:
                    await abort_with(context, exc)
                finally:
                    if token is not None:
                        reset_identity(token)

            return grpc.unary_stream_rpc_method_handler(
                stream, response_serializer=handler.response_serializer
            )
        return handler
