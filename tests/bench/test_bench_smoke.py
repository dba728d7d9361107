"""The bench harness produces figures of the right shape (no timings are asserted)."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

from bench import floor
from bench.load import Target, run_inline
from bench.report import Figure, compared, document, table, write_json


def test_report_writes_figures_with_peers(tmp_path: Path) -> None:
    figures = [
        compared("x throughput", 80.0, "req/s", "echo throughput", 100.0, group="g", target=">= 0.8x", met=True),  # noqa: E501
        Figure(name="failed queries", value=0.0, unit="queries", group="h", target="0", met=True),
    ]  # fmt: skip
    out = tmp_path / "bench.json"
    write_json(out, document(figures, quick=True, settings={}, elapsed=1.0))
    doc = json.loads(out.read_text())
    assert {"machine", "figures", "settings", "quick"} <= doc.keys()
    assert doc["machine"]["cpu_count"] >= 1
    first, second = doc["figures"]
    assert first["peer"] == {"name": "echo throughput", "value": 100.0, "unit": "req/s"}
    assert first["ratio"] == 0.8
    assert second["peer"] is None
    assert second["ratio"] is None
    for fig in doc["figures"]:
        assert {"name", "value", "unit", "peer", "ratio", "target", "met"} <= fig.keys()
    rendered = table(figures)
    assert "x throughput" in rendered
    assert "failed queries" in rendered


def test_floor_echo_produces_a_figure() -> None:
    async def start() -> tuple[object, int]:
        return await floor.serve(0)

    loop = asyncio.new_event_loop()
    try:
        server, port = loop.run_until_complete(start())
        target = Target("grpc", f"127.0.0.1:{port}", floor.ECHO, floor.echo_request(100, 12))
        # The load generator runs its own loop; run it in a thread so the server keeps serving.
        import concurrent.futures

        with concurrent.futures.ThreadPoolExecutor(1) as pool:
            future = pool.submit(run_inline, target, 2, 0.5, 0.0, 20)
            while not future.done():
                loop.run_until_complete(asyncio.sleep(0.01))
            result = future.result()
        loop.run_until_complete(server.stop(0))  # type: ignore[attr-defined]
    finally:
        loop.close()
    assert result.errors == 0
    assert result.calls > 0
    fig = compared("echo", result.rps, "req/s", "echo", result.rps)
    assert fig.as_json()["unit"] == "req/s"
    assert fig.ratio is not None
