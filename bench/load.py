"""The load generator: separate client processes, each running a closed loop.

A measurement runs `concurrency` callers split across up to `processes` worker processes
(spawned once and reused). gRPC callers use grpc.aio with raw bytes (no protobuf work on the
client, so the client costs the same against the gateway and the floor); hvac and
python-consul2 callers run in threads, as an app would use them.
"""

from __future__ import annotations

import asyncio
import math
import multiprocessing
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from bench import raw
from bench.limits import raise_nofile
from bench.report import percentile


@dataclass(frozen=True)
class Target:
    """What one call does. kind: grpc | hvac_kv | hvac_creds | consul_kv | consul_health."""

    kind: str
    addr: str
    method: str = ""
    payload: bytes = b""
    metadata: tuple[tuple[str, str], ...] = ()
    args: dict[str, Any] = field(default_factory=dict)


@dataclass
class LoadResult:
    calls: int
    errors: int
    seconds: float
    latencies: list[float]
    first_error: str = ""

    @property
    def rps(self) -> float:
        return self.calls / self.seconds if self.seconds else 0.0

    @property
    def p50_ms(self) -> float:
        return percentile(self.latencies, 50) * 1000

    @property
    def p99_ms(self) -> float:
        return percentile(self.latencies, 99) * 1000


@dataclass(frozen=True)
class _Job:
    target: Target
    callers: int
    warmup: float
    duration: float
    start_at: float
    """time.monotonic() (system-wide on Linux) at which every worker begins its warm-up."""
    channels: int = 1
    max_calls: int = 0
    """Stop after this many measured calls per worker (0: no cap)."""


_WORKER_INIT = False


def _init_worker() -> None:
    raise_nofile()


def _run_job(job: _Job) -> tuple[int, int, float, list[float], str]:
    if job.target.kind == "grpc":
        return asyncio.run(_grpc_job(job))
    return _thread_job(job)


async def _grpc_job(job: _Job) -> tuple[int, int, float, list[float], str]:
    import grpc

    target = job.target
    channels = [grpc.aio.insecure_channel(target.addr) for _ in range(max(1, job.channels))]
    calls = [raw.aio_unary(ch, target.method) for ch in channels]
    latencies: list[float] = []
    errors = 0
    first_error = ""
    delay = job.start_at - time.monotonic()
    if delay > 0:
        await asyncio.sleep(delay)
    measure_from = time.monotonic() + job.warmup
    stop_at = measure_from + job.duration
    metadata = target.metadata or None
    cap = job.max_calls or math.inf

    async def caller(i: int) -> None:
        nonlocal errors, first_error
        call = calls[i % len(calls)]
        payload = target.payload
        record = latencies.append
        clock = time.monotonic
        while True:
            start = clock()
            if start >= stop_at or len(latencies) >= cap:
                return
            try:
                await call(payload, metadata=metadata, timeout=10)
            except grpc.RpcError as exc:
                errors += 1
                if not first_error:
                    first_error = f"{exc.code()}: {exc.details()}"
                await asyncio.sleep(0.01)
                continue
            if start >= measure_from:
                record(clock() - start)

    begun = time.monotonic()
    await asyncio.gather(*(caller(i) for i in range(job.callers)))
    seconds = min(job.duration, max(1e-9, time.monotonic() - max(begun, measure_from)))
    for ch in channels:
        await ch.close()
    return len(latencies), errors, seconds, latencies, first_error


def _sync_caller(target: Target) -> Callable[[], Any]:
    """A per-thread callable doing one read the way an app would without latchkey."""
    if target.kind in ("hvac_kv", "hvac_creds"):
        import hvac

        client = hvac.Client(url=target.addr, token=target.args["token"])
        if target.kind == "hvac_kv":
            path, mount = target.args["path"], target.args.get("mount", "secret")
            return lambda: client.secrets.kv.v2.read_secret_version(
                path=path, mount_point=mount, raise_on_deleted_version=True
            )
        role = target.args["role"]
        return lambda: client.secrets.database.generate_credentials(role)
    import consul

    host, _, port = target.addr.rpartition(":")
    c = consul.Consul(host=host, port=int(port))
    if target.kind == "consul_kv":
        key = target.args["key"]
        return lambda: c.kv.get(key)
    service = target.args["service"]
    return lambda: c.health.service(service, passing=True)


def _thread_job(job: _Job) -> tuple[int, int, float, list[float], str]:
    latencies: list[float] = []
    errors = [0]
    first_error: list[str] = []
    lock = threading.Lock()
    delay = job.start_at - time.monotonic()
    if delay > 0:
        time.sleep(delay)
    measure_from = time.monotonic() + job.warmup
    stop_at = measure_from + job.duration
    cap = job.max_calls or math.inf

    def run() -> None:
        call = _sync_caller(job.target)
        mine: list[float] = []
        while True:
            start = time.monotonic()
            if start >= stop_at or len(mine) >= cap:
                break
            try:
                call()
            except Exception as exc:
                with lock:
                    errors[0] += 1
                    if not first_error:
                        first_error.append(repr(exc)[:200])
                time.sleep(0.01)
                continue
            if start >= measure_from:
                mine.append(time.monotonic() - start)
        with lock:
            latencies.extend(mine)

    threads = [threading.Thread(target=run, daemon=True) for _ in range(job.callers)]
    begun = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=job.warmup + job.duration + 60)
    seconds = min(job.duration, max(1e-9, time.monotonic() - max(begun, measure_from)))
    return len(latencies), errors[0], seconds, latencies, (first_error or [""])[0]


class LoadGenerator:
    """A pool of spawned worker processes, reused across measurements."""

    def __init__(self, processes: int = 2) -> None:
        self.processes = processes
        self._pool = ProcessPoolExecutor(
            max_workers=processes,
            mp_context=multiprocessing.get_context("spawn"),
            initializer=_init_worker,
        )
        # Warm the workers up (imports) before the first measurement.
        list(self._pool.map(_noop, range(processes)))

    def run(
        self, target: Target, concurrency: int, *, duration: float, warmup: float = 0.5,
        channels_per_process: int = 1, max_calls: int = 0,
    ) -> LoadResult:  # fmt: skip
        workers = max(1, min(self.processes, concurrency))
        split = [
            concurrency // workers + (1 if i < concurrency % workers else 0) for i in range(workers)
        ]
        start_at = time.monotonic() + 0.3
        jobs = [
            _Job(target, n, warmup, duration, start_at, channels_per_process, max_calls)
            for n in split
        ]
        results = [
            f.result(timeout=warmup + duration + 120)
            for f in [self._pool.submit(_run_job, j) for j in jobs]
        ]
        latencies: list[float] = []
        calls = errors = 0
        seconds = 0.0
        first_error = ""
        for n, e, s, lat, err in results:
            calls += n
            errors += e
            seconds = max(seconds, s)
            latencies.extend(lat)
            first_error = first_error or err
        return LoadResult(calls, errors, seconds, latencies, first_error)

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)


def _noop(_: int) -> int:
    import grpc  # noqa: F401 (warm the import)

    return 0


def run_inline(target: Target, concurrency: int, duration: float, warmup: float = 0.0,
               max_calls: int = 0) -> LoadResult:  # fmt: skip
    """One measurement in this process (the smoke test uses it; no worker processes)."""
    job = _Job(target, concurrency, warmup, duration, time.monotonic(), 1, max_calls)
    n, e, s, lat, err = _run_job(job)
    return LoadResult(n, e, s, lat, err)


def summarize(results: Sequence[LoadResult]) -> LoadResult:
    out = LoadResult(0, 0, 0.0, [])
    for r in results:
        out.calls += r.calls
        out.errors += r.errors
        out.seconds += r.seconds
        out.latencies.extend(r.latencies)
    return out
