"""The peers of figure 8: h2load drives gRPC and HTTP/1.1, OpenBao Proxy serves cached leases.

Shapes and behaviour only; no timing is asserted.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
from pathlib import Path
from typing import Any

import hvac

from bench import floor, h2load
from bench.h2load import H2Target
from bench.proxy import OpenBaoProxy, get_json
from bench.scenarios.peers import CREDS_PATH, KV_PATH, _check_cached


def test_grpc_frame_is_the_length_prefixed_message() -> None:
    assert h2load.grpc_frame(b"\x0a\x03abc") == b"\x00\x00\x00\x00\x05\x0a\x03abc"
    target = H2Target.grpc("127.0.0.1:1", "/p.S/M", b"x", (("authorization", "Bearer t"),))
    assert target.url == "http://127.0.0.1:1/p.S/M"
    assert ("content-type", "application/grpc") in target.headers
    assert ("te", "trailers") in target.headers
    assert ("authorization", "Bearer t") in target.headers
    assert not target.http1


def test_h2load_drives_a_grpc_server() -> None:
    binary = h2load.ensure()  # installs nghttp2-client as root, or fails saying how to get it

    async def start() -> tuple[object, int]:
        return await floor.serve(0)

    loop = asyncio.new_event_loop()
    try:
        server, port = loop.run_until_complete(start())
        target = H2Target.grpc(f"127.0.0.1:{port}", floor.ECHO, floor.echo_request(64, 8))
        with concurrent.futures.ThreadPoolExecutor(1) as pool:
            future = pool.submit(h2load.run, binary, target, 2, duration=0.3, warmup=0.1)
            while not future.done():
                loop.run_until_complete(asyncio.sleep(0.01))
            result = future.result()
        loop.run_until_complete(server.stop(0))  # type: ignore[attr-defined]
    finally:
        loop.close()
    assert result.errors == 0
    assert result.calls == len(result.latencies) > 0
    assert result.p50_ms > 0


async def test_openbao_proxy_serves_database_creds_from_its_cache(
    demo_env: dict[str, Any], vault_server: Any, tmp_path: Path
) -> None:
    proxy = OpenBaoProxy(tmp_path / "proxy", vault_server.addr, vault_server.root_token)
    await asyncio.to_thread(proxy.start, KV_PATH)
    try:
        assert "cache hit" in await asyncio.to_thread(_check_cached, proxy)
        status, body = await asyncio.to_thread(get_json, proxy.url + CREDS_PATH)
        assert status == 200
        lease_id = str(body["lease_id"])
        binary = h2load.ensure()
        result = await asyncio.to_thread(
            h2load.run, binary, H2Target.http(proxy.url + CREDS_PATH), 2, duration=0.3,
            warmup=0.1,
        )  # fmt: skip
        assert result.errors == 0
        assert result.calls > 0
        again = await asyncio.to_thread(get_json, proxy.url + CREDS_PATH)
        assert again[1]["lease_id"] == lease_id  # still the one cached lease
    finally:
        await asyncio.to_thread(proxy.stop)
    client = hvac.Client(url=vault_server.addr, token=vault_server.root_token)
    client.sys.revoke_lease(lease_id)  # the proxy does not revoke what it cached
