"""`python -m bench.consul_capacity`: how many reads per second one `consul agent -dev` serves here.

This is how the default of `consul.requests_per_second` (the gateway's one request budget for
Consul) was chosen. It starts a real agent on free loopback ports, seeds a KV prefix of 10 keys
and a service of 3 instances with a check each, then for each read the gateway makes (one key,
a recursive prefix read, a `?stale` health read) runs closed-loop load from `--processes`
spawned client processes (aiohttp, keep-alive, `--concurrency` requests in flight each) for
`--seconds`, and reports:

- req/s: what the clients got (on a shared machine the clients take CPU from the agent, so
  this is a lower bound of what the agent alone could serve);
- req per agent CPU-second: requests divided by the CPU time the agent's process used during
  the run (/proc/<pid>/stat utime+stime), i.e. what one fully used core of the agent serves,
  independent of the clients' own cost.

Figures, never assertions.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import os
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

from latchkey_server.devstack.consul import ConsulAgent

READS = {
    "kv key": "/v1/kv/bench/capacity/k3",
    "kv prefix (10 keys, recurse)": "/v1/kv/bench/capacity/?recurse=",
    "health service (3 instances, stale)": "/v1/health/service/capacity?stale=",
}


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    return (int(fields[11]) + int(fields[12])) / ticks  # utime + stime


def _put(base: str, path: str, body: bytes) -> None:
    req = urllib.request.Request(base + path, data=body, method="PUT")  # noqa: S310 (loopback)
    with urllib.request.urlopen(req, timeout=10) as resp:  # noqa: S310 (loopback)
        resp.read()


def _seed(base: str) -> None:
    for i in range(10):
        _put(base, f"/v1/kv/bench/capacity/k{i}", b"value-%d-" % i + b"x" * 40)
    for i in range(3):
        service = {
            "ID": f"capacity-{i}", "Name": "capacity", "Port": 9000 + i, "Tags": ["v1"],
            "Check": {"TTL": "600s", "Status": "passing"},
        }  # fmt: skip
        _put(base, "/v1/agent/service/register", json.dumps(service).encode())


async def _load(url: str, concurrency: int, seconds: float) -> tuple[int, int]:
    import aiohttp

    done = errors = 0
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector) as session:
        deadline = time.monotonic() + seconds

        async def loop() -> None:
            nonlocal done, errors
            while time.monotonic() < deadline:
                async with session.get(url) as resp:
                    await resp.read()
                    if resp.status == 200:
                        done += 1
                    else:
                        errors += 1

        await asyncio.gather(*(loop() for _ in range(concurrency)))
    return done, errors


def _worker(url: str, concurrency: int, seconds: float, out: Any) -> None:
    out.put(asyncio.run(_load(url, concurrency, seconds)))


def measure(
    base: str, pid: int, path: str, processes: int, concurrency: int, seconds: float
) -> dict[str, float]:
    ctx = multiprocessing.get_context("spawn")
    out = ctx.Queue()
    procs = [
        ctx.Process(target=_worker, args=(base + path, concurrency, seconds, out))
        for _ in range(processes)
    ]
    cpu0, t0 = _cpu_seconds(pid), time.monotonic()
    for proc in procs:
        proc.start()
    results = [out.get(timeout=seconds + 120) for _ in procs]
    elapsed, cpu = time.monotonic() - t0, _cpu_seconds(pid) - cpu0
    for proc in procs:
        proc.join(timeout=10)
    done = sum(r[0] for r in results)
    # The processes' start-up is inside `elapsed`; the load ran `seconds` in each.
    return {
        "req_per_s": done / seconds,
        "errors": float(sum(r[1] for r in results)),
        "agent_cpu_s": cpu,
        "req_per_agent_cpu_s": done / cpu if cpu > 0 else 0.0,
        "elapsed_s": elapsed,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.consul_capacity", description=__doc__)
    parser.add_argument("--processes", type=int, default=2)
    parser.add_argument("--concurrency", type=int, nargs="*", default=[1, 8, 32])
    parser.add_argument("--seconds", type=float, default=5.0)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="consul-capacity-") as tmp:
        agent = ConsulAgent(Path(tmp) / "consul")
        agent.start()
        try:
            base = f"http://{agent.http_addr}"
            _seed(base)
            assert agent.pid is not None
            print(f"consul agent -dev pid {agent.pid}, {os.cpu_count()} CPUs, "
                  f"{args.processes} client processes, {args.seconds:g} s per cell")  # fmt: skip
            for name, path in READS.items():
                for conc in args.concurrency:
                    r = measure(base, agent.pid, path, args.processes, conc, args.seconds)
                    per_cpu = r["req_per_agent_cpu_s"]
                    print(
                        f"{name:38s} c={args.processes}x{conc:<3d} {r['req_per_s']:8.0f} req/s  "
                        f"agent CPU {r['agent_cpu_s']:5.2f} s  {per_cpu:6.0f} req/agent-CPU-s  "
                        f"errors {r['errors']:.0f}",
                        flush=True,
                    )
        finally:
            agent.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
