"""Long-lived subscriber processes: many streams per process, sharing a few channels.

The driver sends commands over a pipe; each worker runs an asyncio loop holding its streams:
- `sdk_config`: SDK `AsyncClient.config.watch` subscriptions; the callback records when a
  change carrying round number r (the value of `<prefix>k`) arrived.
- `raw`: raw-bytes grpc.aio server streams (gateway watches or the floor's Stream); counts
  messages, and for the floor records the round number in each message's first 4 bytes.
Timestamps are time.monotonic(), which is system-wide on Linux, so the driver can subtract its
own PUT/publish times.
"""

from __future__ import annotations

import asyncio
import contextlib
import multiprocessing
import time
from collections import defaultdict
from collections.abc import Awaitable, Callable
from multiprocessing.connection import Connection
from typing import Any

from bench import raw
from bench.limits import raise_nofile, rss_bytes

FLOOR_ROUND_OFFSET = 1_000_000


class _State:
    def __init__(self) -> None:
        self.receipts: dict[int, list[float]] = defaultdict(list)
        self.clients: list[Any] = []
        self.watches: list[Any] = []
        self.channels: list[Any] = []
        self.tasks: list[asyncio.Task[None]] = []
        self.first = 0
        self.messages = 0
        self.errors = 0
        self.first_error = ""


async def _sdk_config(
    st: _State, addr: str, token: str, prefixes: list[str], clients: int = 4
) -> dict[str, Any]:
    import latchkey
    from latchkey import ConfigEvent

    made = [latchkey.AsyncClient(addr, token=token, insecure=True) for _ in range(clients)]
    st.clients.extend(made)

    def callback_for(prefix: str) -> Any:
        key = prefix + "k"
        receipts = st.receipts

        def callback(event: Any) -> None:
            now = time.monotonic()
            if isinstance(event, ConfigEvent) and event.kind == "change":
                for change in event.changes:
                    if change.key == key and change.entry is not None:
                        with contextlib.suppress(ValueError):
                            receipts[int(change.entry.value)].append(now)

        return callback

    async def one(i: int, prefix: str) -> None:
        try:
            st.watches.append(await made[i % clients].config.watch(prefix, callback_for(prefix)))
        except Exception as exc:
            st.errors += 1
            st.first_error = st.first_error or repr(exc)[:300]

    for start in range(0, len(prefixes), 200):
        batch = prefixes[start : start + 200]
        await asyncio.gather(*(one(start + i, p) for i, p in enumerate(batch)))
    return {"watches": len(st.watches), "errors": st.errors, "first_error": st.first_error}


async def _raw(
    st: _State, addr: str, method: str, requests: list[bytes],
    metadata: tuple[tuple[str, str], ...] = (), channels: int = 4, floor: bool = False,
    ready_timeout: float = 60.0,
) -> dict[str, Any]:  # fmt: skip
    import grpc

    options = (("grpc.max_concurrent_streams", 100_000),)
    made = [grpc.aio.insecure_channel(addr, options=options) for _ in range(max(1, channels))]
    st.channels.extend(made)
    calls = [raw.aio_stream(ch, method) for ch in made]
    base_first = st.first
    receipts = st.receipts

    async def reader(i: int, request: bytes) -> None:
        got_first = False
        try:
            call = calls[i % len(calls)](request, metadata=metadata or None)
            async for message in call:
                now = time.monotonic()
                st.messages += 1
                if not got_first:
                    got_first = True
                    st.first += 1
                if floor and len(message) >= 4:
                    receipts[FLOOR_ROUND_OFFSET + int.from_bytes(message[:4], "big")].append(now)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            st.errors += 1
            st.first_error = st.first_error or repr(exc)[:300]

    for i, request in enumerate(requests):
        st.tasks.append(asyncio.create_task(reader(i, request)))
        if i % 500 == 499:
            await asyncio.sleep(0)  # let the streams start in batches
    if not floor:
        deadline = time.monotonic() + ready_timeout
        while st.first - base_first < len(requests) and time.monotonic() < deadline:  # noqa: ASYNC110 (bounded poll)
            await asyncio.sleep(0.05)
    return {"ready": st.first - base_first, "errors": st.errors, "first_error": st.first_error}


async def _wait_round(st: _State, round_id: int, expected: int, wait: float) -> dict[str, Any]:
    deadline = time.monotonic() + wait
    while len(st.receipts.get(round_id, ())) < expected and time.monotonic() < deadline:  # noqa: ASYNC110 (bounded poll)
        await asyncio.sleep(0.001)
    return {"got": len(st.receipts.get(round_id, ()))}


async def _collect(st: _State) -> dict[str, Any]:
    out = {k: list(v) for k, v in st.receipts.items()}
    st.receipts.clear()
    return {"receipts": out}


async def _stats(st: _State) -> dict[str, Any]:
    import os

    return {
        "first": st.first, "messages": st.messages, "errors": st.errors,
        "first_error": st.first_error, "rss": rss_bytes(os.getpid()),
    }  # fmt: skip


async def _close(st: _State) -> dict[str, Any]:
    for task in st.tasks:
        task.cancel()
    for task in st.tasks:
        with contextlib.suppress(BaseException):
            await task
    for watch in st.watches:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(watch.aclose(), 5)
    for client in st.clients:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(client.aclose(), 5)
    for channel in st.channels:
        with contextlib.suppress(Exception):
            await channel.close()
    fresh = _State()
    st.__dict__.update(fresh.__dict__)
    return {}


_COMMANDS: dict[str, Callable[..., Awaitable[Any]]] = {
    "sdk_config": _sdk_config,
    "raw": _raw,
    "wait_round": _wait_round,
    "collect": _collect,
    "stats": _stats,
    "close": _close,
}


async def _serve(conn: Connection) -> None:
    loop = asyncio.get_running_loop()
    st = _State()
    while True:
        if not await loop.run_in_executor(None, conn.poll, 3600):
            break
        command, kwargs = conn.recv()
        if command == "quit":
            await _close(st)
            conn.send({})
            break
        try:
            result = await _COMMANDS[command](st, **kwargs)
        except Exception as exc:
            result = {"error": repr(exc)[:500]}
        conn.send(result)


def _entry(conn: Connection) -> None:
    raise_nofile()
    import logging

    logging.getLogger("latchkey").setLevel(logging.ERROR)
    asyncio.run(_serve(conn))


class Subscribers:
    """`count` worker processes; `call` sends a command to each and gathers the replies."""

    def __init__(self, count: int = 2) -> None:
        ctx = multiprocessing.get_context("spawn")
        self._conns: list[Connection] = []
        self._procs: list[Any] = []
        for _ in range(count):
            parent, child = ctx.Pipe()
            proc = ctx.Process(target=_entry, args=(child,), daemon=True)
            proc.start()
            self._conns.append(parent)
            self._procs.append(proc)

    @property
    def count(self) -> int:
        return len(self._conns)

    @property
    def pids(self) -> list[int]:
        return [p.pid for p in self._procs]

    def call(
        self, command: str, per_worker: list[dict[str, Any]] | None = None, timeout: float = 300,
        **common: Any,
    ) -> list[dict[str, Any]]:  # fmt: skip
        """Send `command` to every worker (with `per_worker[i]` merged into its kwargs)."""
        for i, conn in enumerate(self._conns):
            conn.send((command, {**common, **(per_worker[i] if per_worker else {})}))
        replies = []
        for conn in self._conns:
            if not conn.poll(timeout):
                raise TimeoutError(f"subscriber worker did not answer {command!r} in {timeout}s")
            replies.append(conn.recv())
        for reply in replies:
            if "error" in reply:
                raise RuntimeError(f"subscriber worker failed {command!r}: {reply['error']}")
        return replies

    def close(self) -> None:
        for conn in self._conns:
            with contextlib.suppress(Exception):
                conn.send(("quit", {}))
        for conn in self._conns:
            with contextlib.suppress(Exception):
                if conn.poll(30):
                    conn.recv()
        for proc in self._procs:
            proc.join(timeout=10)
            if proc.is_alive():
                proc.kill()
                proc.join(timeout=5)


def split(items: list[Any], workers: int) -> list[list[Any]]:
    """Round-robin `items` over `workers` lists."""
    return [items[w::workers] for w in range(workers)]
