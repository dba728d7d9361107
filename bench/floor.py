"""The floor: a bare grpc.aio server with no gateway logic, run as its own process.

`python -m bench.floor --port P` serves, with raw bytes (no protobuf):
- `/bench.Floor/Echo` (unary): the request's first 4 bytes (big-endian) give the response size;
  the reply is that many bytes. So the floor carries the same message sizes as the gateway.
- `/bench.Floor/Stream` (server stream): idle until a publish; then one message per publish.
- `/bench.Floor/Publish` (unary): sends the request bytes to every open stream; replies with
  the number of streams (4 bytes).
- `/bench.Floor/Count` (unary): the number of open streams (4 bytes).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
from collections.abc import AsyncIterator

import grpc

from bench import raw
from bench.limits import raise_nofile

SERVICE = "bench.Floor"
ECHO = f"/{SERVICE}/Echo"
STREAM = f"/{SERVICE}/Stream"
PUBLISH = f"/{SERVICE}/Publish"
COUNT = f"/{SERVICE}/Count"

SERVER_OPTIONS = (
    ("grpc.max_concurrent_streams", 100_000),
    ("grpc.server.max_pending_requests", 100_000),
    ("grpc.max_receive_message_length", 1 << 20),
)


def echo_request(response_size: int, request_size: int) -> bytes:
    """An Echo request of `request_size` bytes asking for a `response_size`-byte reply."""
    head = response_size.to_bytes(4, "big")
    return head + b"\x00" * max(0, request_size - len(head))


class Floor:
    def __init__(self) -> None:
        self._responses: dict[int, bytes] = {}
        self._queues: set[asyncio.Queue[bytes]] = set()

    async def echo(self, request: bytes, context: raw.AioContext) -> bytes:
        size = int.from_bytes(request[:4], "big")
        reply = self._responses.get(size)
        if reply is None:
            reply = self._responses[size] = b"x" * size
        return reply

    async def stream(self, request: bytes, context: raw.AioContext) -> AsyncIterator[bytes]:
        queue: asyncio.Queue[bytes] = asyncio.Queue()
        self._queues.add(queue)
        try:
            while True:
                yield await queue.get()
        finally:
            self._queues.discard(queue)

    async def publish(self, request: bytes, context: raw.AioContext) -> bytes:
        for queue in self._queues:
            queue.put_nowait(request)
        return len(self._queues).to_bytes(4, "big")

    async def count(self, request: bytes, context: raw.AioContext) -> bytes:
        return len(self._queues).to_bytes(4, "big")


def handlers(floor: Floor) -> grpc.GenericRpcHandler:
    return grpc.method_handlers_generic_handler(
        SERVICE,
        {
            "Echo": grpc.unary_unary_rpc_method_handler(floor.echo),
            "Stream": grpc.unary_stream_rpc_method_handler(floor.stream),
            "Publish": grpc.unary_unary_rpc_method_handler(floor.publish),
            "Count": grpc.unary_unary_rpc_method_handler(floor.count),
        },
    )


async def serve(port: int, ready: asyncio.Event | None = None) -> tuple[grpc.aio.Server, int]:
    server = grpc.aio.server(options=SERVER_OPTIONS)
    server.add_generic_rpc_handlers((handlers(Floor()),))
    bound = server.add_insecure_port(f"127.0.0.1:{port}")
    await server.start()
    return server, bound


async def _main(port: int) -> None:
    server, bound = await serve(port)
    print(f"floor listening on 127.0.0.1:{bound}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    with contextlib.suppress(Exception):
        await server.stop(0.5)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    raise_nofile()
    asyncio.run(_main(args.port))


if __name__ == "__main__":
    main()
