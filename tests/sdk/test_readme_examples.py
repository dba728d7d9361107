"""The SDK README's Python examples run as written (against the test stack, like make dev)."""

from __future__ import annotations

import asyncio
import os
import re
import sys
from pathlib import Path

from latchkey_server.devstack.consul import ConsulAgent
from latchkey_server.devstack.postgres import PostgresCluster
from latchkey_server.devstack.seed import seed_consul
from tests.fixtures.gateway import GatewayHandle

README = Path(__file__).resolve().parents[2] / "clients" / "python" / "README.md"


async def test_readme_examples_run(
    gateway: GatewayHandle, consul_agent: ConsulAgent, postgres: PostgresCluster, tmp_path: Path
) -> None:
    seed_consul(consul_agent.http_addr)
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)
    assert len(blocks) >= 6
    script = tmp_path / "examples.py"
    script.write_text("\n\n".join(blocks) + "\nclient.close()\n")
    env = {
        **os.environ,
        "LATCHKEY_ADDR": f"http://{gateway.addr}",
        "LATCHKEY_TOKEN": gateway.tokens["app"],
        "LATCHKEY_DEMO_PG_DSN": postgres.dsn,
    }
    proc = await asyncio.create_subprocess_exec(
        sys.executable, str(script), env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await asyncio.wait_for(proc.communicate(), timeout=120)
    assert proc.returncode == 0, err.decode()[-3000:]
    text = out.decode()
    assert "hello from Vault" in text
    assert "(3,)" in text
    assert "127.0.0.1:808" in text
