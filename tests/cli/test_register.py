"""`latchkey services register ... -- CMD`: the instance is registered while CMD runs, gone
when it ends, and the command exits with CMD's code."""

from __future__ import annotations

import asyncio
import sys
import uuid

from tests.cli.helpers import LATCHKEY, clean_env
from tests.fixtures.gateway import GatewayHandle
from tests.gateway.test_register_e2e import discovery

CHILD = "import sys; sys.stdin.read(); sys.exit(3)"
"""Runs until its stdin is closed (the test decides when), then exits 3."""


async def test_register_while_a_command_runs(gateway: GatewayHandle) -> None:
    service = f"cli-{uuid.uuid4().hex[:8]}"
    proc = await asyncio.create_subprocess_exec(
        str(LATCHKEY), "--addr", gateway.addr, "--token", gateway.tokens["app"],
        "services", "register", service, "--port", "3000", "--tag", "api", "--tag", "v1",
        "--id", f"{service}-1", "--", sys.executable, "-c", CHILD,
        stdin=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env=clean_env(),
    )  # fmt: skip
    assert proc.stdin is not None
    assert proc.stderr is not None
    try:
        async with discovery(gateway, service) as seen:
            await seen.until(lambda ids: ids == {f"{service}-1"}, "registered while CMD runs")
            proc.stdin.close()
            code = await asyncio.wait_for(proc.wait(), 30)
            await seen.until(lambda ids: not ids, "gone once CMD ended")
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    said = (await proc.stderr.read()).decode()
    assert code == 3, said
    assert f"{service} registered as {service}-1" in said


async def test_a_command_that_cannot_run(gateway: GatewayHandle) -> None:
    proc = await asyncio.create_subprocess_exec(
        str(LATCHKEY), "--addr", gateway.addr, "--token", gateway.tokens["app"],
        "services", "register", f"cli-{uuid.uuid4().hex[:8]}", "--port", "1", "--",
        "no-such-command-here", stderr=asyncio.subprocess.PIPE, env=clean_env(),
    )  # fmt: skip
    _, err = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode == 127
    assert b"command not found" in err
