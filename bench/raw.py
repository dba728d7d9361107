"""gRPC calls on raw bytes: the bench sends prepared request bodies and measures the replies'
size, so it neither serializes nor parses. Typed here once (grpc's stubs cannot infer
bytes-in, bytes-out for a method without (de)serializers)."""

from __future__ import annotations

from typing import TypeAlias, cast

import grpc

Unary: TypeAlias = "grpc.UnaryUnaryMultiCallable[bytes, bytes]"
AioUnary: TypeAlias = "grpc.aio.UnaryUnaryMultiCallable[bytes, bytes]"
AioStream: TypeAlias = "grpc.aio.UnaryStreamMultiCallable[bytes, bytes]"
AioContext: TypeAlias = "grpc.aio.ServicerContext[bytes, bytes]"


def unary(channel: grpc.Channel, method: str) -> Unary:
    return cast("Unary", channel.unary_unary(method))


def aio_unary(channel: grpc.aio.Channel, method: str) -> AioUnary:
    return cast("AioUnary", channel.unary_unary(method))


def aio_stream(channel: grpc.aio.Channel, method: str) -> AioStream:
    return cast("AioStream", channel.unary_stream(method))
