"""h2load, the C load generator from nghttp2: one tool for gRPC (HTTP/2) and HTTP/1.1 peers.

`ensure()` finds the binary (installing Debian's `nghttp2-client` as root when it is missing,
through scripts/ensure-h2load.sh). `run()` drives one target for a duration, `concurrency`
connections with one request in flight each (so concurrency means the same for both
protocols), and returns a `LoadResult` whose latencies come from h2load's per-request log.

A gRPC unary call is a POST of a prepared body (the 5-byte gRPC frame prefix, then the
protobuf request) with `content-type: application/grpc`, `te: trailers` and the caller's
`authorization`. h2load counts HTTP statuses only; a gRPC error is a 200 whose trailers say
otherwise, so callers check the server's own counters (the gateway's metrics) for the calls
that really succeeded.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

from bench.load import LoadResult
from bench.stack import REPO

ENSURE = REPO / "scripts" / "ensure-h2load.sh"
_DONE = re.compile(
    r"requests: (\d+) total, (\d+) started, (\d+) done, (\d+) succeeded, (\d+) failed, "
    r"(\d+) errored"
)
_STATUS = re.compile(r"status codes: (\d+) 2xx, (\d+) 3xx, (\d+) 4xx, (\d+) 5xx")


def ensure() -> str:
    """The h2load binary; installs it (as root, with apt) or raises with what to do."""
    explicit = os.environ.get("LATCHKEY_H2LOAD_BIN")
    found = explicit or shutil.which("h2load")
    if found and os.access(found, os.X_OK):
        return found
    done = subprocess.run(["bash", str(ENSURE)], capture_output=True, text=True, check=False)
    found = shutil.which("h2load")
    if done.returncode != 0 or not found:
        raise RuntimeError(done.stderr.strip() or "h2load is not installed (nghttp2-client)")
    return found


def grpc_frame(message: bytes) -> bytes:
    """A gRPC length-prefixed message: not compressed, 4-byte big-endian length, the bytes."""
    return b"\x00" + len(message).to_bytes(4, "big") + message


@dataclass(frozen=True)
class H2Target:
    """One endpoint for h2load: a gRPC method (body set) or an HTTP/1.1 GET."""

    url: str
    body: bytes | None = None
    headers: tuple[tuple[str, str], ...] = ()
    http1: bool = False

    @staticmethod
    def grpc(
        addr: str, method: str, request: bytes, metadata: tuple[tuple[str, str], ...] = ()
    ) -> H2Target:
        headers = (("content-type", "application/grpc"), ("te", "trailers"), *metadata)
        return H2Target(f"http://{addr}{method}", grpc_frame(request), headers)

    @staticmethod
    def http(url: str, headers: tuple[tuple[str, str], ...] = ()) -> H2Target:
        return H2Target(url, None, headers, http1=True)


def run(
    binary: str, target: H2Target, concurrency: int, *, duration: float, warmup: float
) -> LoadResult:
    """Drive `target` for `duration` seconds (after `warmup`) with `concurrency` connections."""
    with tempfile.TemporaryDirectory(prefix="latchkey-h2load-") as tmp:
        log = Path(tmp) / "requests.tsv"
        cmd = [
            binary, "-c", str(concurrency), "-m", "1", "-t", "1",
            "-D", _ms(duration), "--warm-up-time", _ms(warmup), "--log-file", str(log),
        ]  # fmt: skip
        for name, value in target.headers:
            cmd += ["-H", f"{name}: {value}"]
        if target.body is not None:
            body = Path(tmp) / "body"
            body.write_bytes(target.body)
            cmd += ["-d", str(body)]
        if target.http1:
            cmd.append("--h1")
        cmd.append(target.url)
        done = subprocess.run(
            cmd, capture_output=True, text=True, timeout=duration + warmup + 60, check=False
        )
        if done.returncode != 0:
            raise RuntimeError(f"h2load failed ({done.returncode}): {done.stderr.strip()[-400:]}")
        return _result(done.stdout, log, duration)


def _ms(seconds: float) -> str:
    return f"{max(1, round(seconds * 1000))}ms"


def _result(stdout: str, log: Path, duration: float) -> LoadResult:
    counts = _DONE.search(stdout)
    statuses = _STATUS.search(stdout)
    if counts is None or statuses is None:
        raise RuntimeError(f"unexpected h2load output: {stdout[-400:]}")
    latencies: list[float] = []
    bad = 0
    for line in log.read_text().splitlines():
        fields = line.split("\t")
        if len(fields) < 3:
            continue
        if not fields[1].startswith("2"):
            bad += 1
            continue
        latencies.append(int(fields[2]) / 1e6)
    failed = int(counts.group(5)) + int(counts.group(6))
    errors = max(failed, bad)
    first_error = f"{errors} non-2xx or failed requests" if errors else ""
    return LoadResult(len(latencies), errors, duration, latencies, first_error)
