"""Flow control of server streams: what the gateway may queue for a client, and for how long.

grpc.aio hands a message to the transport and `context.write()` returns only once HTTP/2 flow
control let it go, so a client that does not read leaves exactly one message queued per
stream, held by gRPC. `StreamSender` bounds that message and the time it may wait:

- a message larger than `snapshot_bytes` is never queued: the stream ends with
  RESOURCE_EXHAUSTED naming the limit (a snapshot of too wide a prefix);
- each message is charged to the caller's identity (`QueueBudget`) until gRPC sent it;
- a message that could not be queued or sent within `stall_timeout` ends the stream with
  `StreamStalled` (RESOURCE_EXHAUSTED, saying the client is not reading). Its bytes stay charged
  until the call is really gone, since gRPC still holds them;
- one serialization of a message is shared by every stream sending it at the same time (a
  snapshot of a popular prefix), so a stalled stream pins only gRPC's own copy.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

import grpc
from google.protobuf.message import Message

from latchkey_server.access.budget import QueueBudget, mib
from latchkey_server.errors import ResourceExhausted, StreamStalled


@dataclass(frozen=True, slots=True)
class FlowLimits:
    """Bounds on what one stream, and one identity's streams, may have queued."""

    snapshot_bytes: int = 8 << 20
    """Largest single stream message (a snapshot); larger ones end the stream."""
    identity_bytes: int = 32 << 20
    """Bytes queued to one identity's streams at once, all streams together."""
    stall_timeout: float = 30.0
    """Seconds a stream may wait for its client (or its identity's budget) before it ends."""


class SharedPayloads:
    """Serialized messages shared by the streams sending the same message object right now."""

    def __init__(self) -> None:
        self._live: dict[int, tuple[Message, bytes, int]] = {}

    def acquire(self, message: Message) -> bytes:
        key = id(message)
        entry = self._live.get(key)
        if entry is None or entry[0] is not message:
            entry = (message, message.SerializeToString(), 0)
        self._live[key] = (entry[0], entry[1], entry[2] + 1)
        return entry[1]

    def release(self, message: Message) -> None:
        key = id(message)
        entry = self._live.get(key)
        if entry is None or entry[0] is not message:
            return
        if entry[2] <= 1:
            del self._live[key]
        else:
            self._live[key] = (entry[0], entry[1], entry[2] - 1)


class StreamSender:
    """Writes one stream's messages under the flow limits; owned by the stream's task."""

    def __init__(
        self,
        context: grpc.aio.ServicerContext[Any, Any],
        identity: str,
        limits: FlowLimits,
        budget: QueueBudget,
        shared: SharedPayloads,
    ) -> None:
        self._context = context
        self._identity = identity
        self._limits = limits
        self._budget = budget
        self._shared = shared
        self._headers_sent = False
        self.pinned = 0
        """Bytes gRPC still holds for a write that stalled (charged until the call ends)."""

    async def send(self, message: Message) -> None:
        size = message.ByteSize()
        limits = self._limits
        if size > limits.snapshot_bytes:
            raise ResourceExhausted(
                f"the next message of this stream is {mib(size)}, over limits.snapshot_bytes "
                f"({mib(limits.snapshot_bytes)}): watch a narrower prefix, or raise the limit"
            )
        if not self._headers_sent:
            # Headers are not flow-controlled: send them on their own so that a status can
            # always follow, even when the first message stalls.
            await self._context.send_initial_metadata(())
            self._headers_sent = True
        loop = asyncio.get_running_loop()
        deadline = loop.time() + limits.stall_timeout
        await self._budget.reserve(self._identity, size, limits.stall_timeout)
        payload = self._shared.acquire(message)
        try:
            async with asyncio.timeout_at(deadline):
                await self._context.write(payload)
        except TimeoutError:
            self.pinned += size  # gRPC keeps the message: stay charged until the call ends
            raise StreamStalled(
                f"the client is not reading this stream: a message of {mib(size)} waited "
                f"{limits.stall_timeout:g}s (limits.stall_timeout) for it; the stream is closed",
                retry_after=limits.stall_timeout,
            ) from None
        except BaseException:
            self._budget.release(self._identity, size)
            raise
        else:
            self._budget.release(self._identity, size)
        finally:
            self._shared.release(message)

    def close(self) -> None:
        """The call is over: give back what a stalled write kept charged."""
        if self.pinned:
            self._budget.release(self._identity, self.pinned)
            self.pinned = 0
