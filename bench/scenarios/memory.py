"""Figure 5: gateway RSS per idle watch stream at 1,000 and 10,000 streams (QUICK: 1,000),
versus a bare grpc.aio server stream on the floor server, measured in the same run.

Streams are opened cumulatively (1,000, then up to 10,000) without closing in between, so
freed memory is never reused by the next step. RSS is read from /proc/<pid>/status.
"""

from __future__ import annotations

import time

import grpc

from bench import floor, raw
from bench.limits import rss_bytes
from bench.report import Figure, compared
from bench.scenarios import Context
from bench.subscribers import Subscribers, split
from latchkey.v1 import config_pb2

GROUP = "5. stream memory"
TARGET = 2.0
CONFIG_WATCH = "/latchkey.v1.Config/Watch"
PREFIX = "bench/mem/"


def _settle(pid: int, seconds: float) -> int:
    time.sleep(seconds)
    return rss_bytes(pid)


def _floor_count(addr: str) -> int:
    with grpc.insecure_channel(addr) as channel:
        return int.from_bytes(raw.unary(channel, floor.COUNT)(b"", timeout=5), "big")


def run(ctx: Context) -> list[Figure]:
    stack = ctx.stack
    levels = [1000] if ctx.quick else [1000, 10000]
    import urllib.request

    req = urllib.request.Request(
        f"http://{stack.consul_http}/v1/kv/{PREFIX}k", data=b"v", method="PUT"
    )
    with urllib.request.urlopen(req, timeout=10) as resp:  # noqa: S310 (loopback)
        resp.read()
    request = config_pb2.WatchConfigRequest(prefix=PREFIX).SerializeToString()
    subs = Subscribers(2)
    figures: list[Figure] = []
    try:
        gw_base = _settle(stack.gateway_pid, 1.0)
        floor_base = _settle(stack.floor_pid, 0.0)
        opened = 0
        gw_per: dict[int, float] = {}
        for level in levels:
            add = level - opened
            replies = subs.call(
                "raw", [{"requests": m} for m in split([request] * add, subs.count)],
                addr=stack.gateway_addr, method=CONFIG_WATCH, metadata=stack.metadata,
                channels=4, ready_timeout=120, timeout=200,
            )  # fmt: skip
            opened = level
            ready = sum(r["ready"] for r in replies)
            gw_per[level] = (_settle(stack.gateway_pid, 2.0) - gw_base) / level
            if ready < add:
                gw_per[level] = float("nan")
        subs.call("close")
        opened = 0
        for level in levels:
            add = level - opened
            subs.call(
                "raw", [{"requests": m} for m in split([b""] * add, subs.count)],
                addr=stack.floor_addr, method=floor.STREAM, channels=4, floor=True,
            )  # fmt: skip
            opened = level
            deadline = time.monotonic() + 120
            while _floor_count(stack.floor_addr) < level and time.monotonic() < deadline:
                time.sleep(0.1)
            bare = (_settle(stack.floor_pid, 2.0) - floor_base) / level
            figures.append(
                compared(
                    f"gateway RSS per idle watch stream ({level:,} streams)", gw_per[level] / 1024,
                    "KiB", "bare grpc.aio stream", bare / 1024, group=GROUP,
                    target=f"<= {TARGET}x", met=gw_per[level] <= TARGET * bare,
                    note=f"gateway RSS before {gw_base / 2**20:.0f} MiB; floor before {floor_base / 2**20:.0f} MiB",  # noqa: E501
                )
            )  # fmt: skip
        subs.call("close")
    finally:
        subs.close()
    return figures
