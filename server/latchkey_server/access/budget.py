"""Per-identity budget of bytes queued to clients (messages handed to gRPC, not yet sent).

A stream reserves the size of each message before it is written and gives it back once gRPC
has sent it. A client that does not read keeps its messages queued, so its identity's budget
runs out: its other streams then wait for room, and a stream that waited `timeout` seconds
ends with `StreamStalled` (RESOURCE_EXHAUSTED) instead of growing the gateway's memory.
Other identities are not affected.
"""

from __future__ import annotations

import asyncio
import collections
from collections import Counter

from latchkey_server.errors import InvalidArgument, StreamStalled

MIB = 1 << 20


def mib(size: int) -> str:
    return f"{size / MIB:.1f} MiB"


class QueueBudget:
    """`limit` bytes per identity; an identity's waiters are served first come, first served."""

    def __init__(self, limit: int) -> None:
        if limit < 1:
            raise InvalidArgument("the per-identity queue budget must be at least 1 byte")
        self.limit = limit
        self._used: Counter[str] = Counter()
        self._queues: dict[str, collections.deque[object]] = {}
        self._changed: dict[str, asyncio.Event] = {}

    def used(self, identity: str) -> int:
        return self._used[identity]

    async def reserve(self, identity: str, size: int, timeout: float) -> None:  # noqa: ASYNC109
        """Take `size` bytes of the identity's budget, waiting up to `timeout` seconds."""
        if size > self.limit:
            raise InvalidArgument(f"a message of {mib(size)} can never fit the queue budget")
        queue = self._queues.setdefault(identity, collections.deque())
        ticket = object()
        queue.append(ticket)
        try:
            async with asyncio.timeout(timeout):
                while queue[0] is not ticket or self._used[identity] + size > self.limit:
                    changed = self._changed.setdefault(identity, asyncio.Event())
                    await changed.wait()
        except TimeoutError:
            raise StreamStalled(
                f"identity {identity!r} already has {mib(self._used[identity])} queued on "
                f"streams its clients are not reading (limits.identity_queue_bytes is "
                f"{mib(self.limit)}); this stream waited {timeout:g}s (limits.stall_timeout) "
                "and is closed: read your streams, or open fewer",
                retry_after=timeout,
            ) from None
        finally:
            queue.remove(ticket)
            if not queue:
                del self._queues[identity]
            self._signal(identity)
        self._used[identity] += size

    def release(self, identity: str, size: int) -> None:
        left = self._used[identity] - size
        if left > 0:
            self._used[identity] = left
        else:
            del self._used[identity]
        self._signal(identity)

    def _signal(self, identity: str) -> None:
        changed = self._changed.pop(identity, None)
        if changed is not None:
            changed.set()
