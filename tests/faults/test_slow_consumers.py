"""Defect 1: clients that open Config.Watch on a big prefix and never read.

Before the fix, 200 such streams on a 3.2 MB prefix took the gateway's RSS up by 1-2 GB, and
the memory stayed after the streams closed. Now what the gateway queues for clients is
bounded per stream and per identity, a stream its client blocks for longer than
`limits.stall_timeout` ends with RESOURCE_EXHAUSTED saying why, and other identities are
served throughout.
"""

from __future__ import annotations

import uuid

import consul
import grpc
import pytest

from latchkey.v1 import config_pb2, config_pb2_grpc
from latchkey_server.devstack.consul import ConsulAgent
from tests.faults.conftest import GatewayFactory
from tests.faults.process import GatewayProcess
from tests.faults.stalled_client import StalledClient
from tests.gateway.helpers import eventually

pytestmark = pytest.mark.faults

STREAMS = 200
KEYS = 100
VALUE_BYTES = 32_000  # 100 keys x 32 kB = 3.2 MB under one prefix
RSS_BUDGET_MB = 200.0
RSS_ABORT_MB = 3000.0  # stop opening streams well before the machine suffers


def _seed_big_prefix(agent: ConsulAgent) -> str:
    prefix = f"faults/big-{uuid.uuid4().hex[:8]}/"
    kv = consul.Consul(host="127.0.0.1", port=agent.http_port).kv
    for n in range(KEYS):
        kv.put(f"{prefix}k{n:03d}", f"{n:03d}" * (VALUE_BYTES // 3))
    return prefix


async def _served(stub: config_pb2_grpc.ConfigStub, gw: GatewayProcess, prefix: str) -> None:
    """Another identity reads the same big prefix: a full snapshot, within 10 s."""
    call = stub.Watch(
        config_pb2.WatchConfigRequest(prefix=prefix), metadata=gw.metadata("other"), timeout=10
    )
    try:
        first = await call.read()
        assert len(first.snapshot.entries) == KEYS
    finally:
        call.cancel()
    got = await stub.Get(
        config_pb2.GetConfigRequest(key=f"{prefix}k000"), metadata=gw.metadata("other"), timeout=10
    )
    assert got.entry.key == f"{prefix}k000"


def _opened(gw: GatewayProcess, identity: str) -> int:
    return sum(
        1
        for line in gw.audit_lines()
        if line["identity"] == identity
        and line["event"] in ("stream_open", "stream_end")
        and line["rpc"].endswith("/Watch")
    )


async def test_never_reading_streams_are_bounded(
    gateway_process: GatewayFactory, consul_agent: ConsulAgent
) -> None:
    prefix = _seed_big_prefix(consul_agent)
    gw = gateway_process("slow", limits={"stall_timeout": 5.0})
    async with grpc.aio.insecure_channel(
        gw.addr, options=[("grpc.max_receive_message_length", 32 << 20)]
    ) as channel:
        stub = config_pb2_grpc.ConfigStub(channel)
        for _ in range(3):  # warm: the prefix is watched, converted, and served once
            await _served(stub, gw, prefix)
        baseline = gw.rss_mb()
        peak = baseline
        request = config_pb2.WatchConfigRequest(prefix=prefix).SerializeToString()
        with StalledClient(gw.addr, gw.tokens["app"]) as hostile:
            for _ in range(STREAMS):
                hostile.open("/latchkey.v1.Config/Watch", request)
            # Until every stream was taken up by the gateway (audited open, or already ended),
            # and for a few rounds after, another identity must be served; RSS is sampled.
            rounds_after = 0
            while rounds_after < 5:
                await _served(stub, gw, prefix)
                peak = max(peak, gw.rss_mb())
                if peak - baseline > RSS_ABORT_MB:
                    break
                if _opened(gw, "app") >= STREAMS or len(hostile.ended) >= STREAMS:
                    rounds_after += 1
            grown = peak - baseline
            print(f"RSS baseline {baseline:.0f} MiB, peak {peak:.0f} MiB (+{grown:.0f} MiB)")
            assert grown <= RSS_BUDGET_MB, f"{STREAMS} stalled streams took +{grown:.0f} MiB"

            # Every stalled stream ends, saying why. Those that never got a message queued are
            # told at once; those with a message stuck in front of their status (HTTP/2 sends
            # trailers after data) are told as soon as the client reads again.
            exhausted = grpc.StatusCode.RESOURCE_EXHAUSTED.value[0]
            pinned_max = (32 << 20) // (KEYS * VALUE_BYTES) + 1  # limits.identity_queue_bytes
            await eventually(
                lambda: len(hostile.ended) >= STREAMS - pinned_max, within=60, what="ends"
            )
            print(f"{len(hostile.ended)} of {STREAMS} ended while the client did not read")
            hostile.resume_reading()
            await eventually(lambda: len(hostile.ended) >= STREAMS, within=60, what="all ended")
            codes = {end.status for end in hostile.ended.values()}
            assert codes == {exhausted}, codes
            sample = next(iter(hostile.ended.values()))
            assert "not reading" in sample.message, sample.message
            assert "stall_timeout" in sample.message, sample.message
            await _served(stub, gw, prefix)

        # The connection is gone: memory comes back (close to where it was).
        async def returned() -> bool:
            await _served(stub, gw, prefix)
            return gw.rss_mb() - baseline <= 64

        try:
            await eventually(returned, within=30, what="RSS back near the baseline")
        finally:
            print(f"RSS after close {gw.rss_mb():.0f} MiB (baseline {baseline:.0f} MiB)")
    assert "Traceback" not in gw.log_text()
