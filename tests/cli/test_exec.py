"""`latchkey exec` sees a changed config value, by restart and by signal, and exits with the
command's code (signals are forwarded)."""

from __future__ import annotations

import asyncio
import signal
import sys
from pathlib import Path

import pytest

from tests.fixtures.gateway import GatewayHandle
from tests.gateway.helpers import eventually
from tests.sdk.conftest import Upstreams

LATCHKEY = Path(sys.executable).parent / "latchkey"

CHILD = r"""
import os, shlex, signal, sys
out = sys.argv[1]
def record(value):
    with open(out, "a") as f:
        f.write(value + "\n")
def reread(signum, frame):
    with open(os.environ["LATCHKEY_ENV_FILE"]) as f:
        values = dict(line.rstrip("\n").split("=", 1) for line in f if "=" in line)
    record("hup:" + shlex.split(values["APP_LEVEL"])[0])
signal.signal(signal.SIGHUP, reread)
signal.signal(signal.SIGTERM, lambda s, f: sys.exit(7))
record("start:" + os.environ["APP_LEVEL"] + ":" + os.environ.get("DB_USERNAME", "")[:2])
while True:
    signal.pause()
"""


@pytest.mark.parametrize("mode", ["restart", "signal:HUP"])
async def test_exec_follows_config(
    gateway: GatewayHandle, upstreams: Upstreams, unique: str, tmp_path: Path, mode: str
) -> None:
    prefix = f"exec/{unique}/"
    upstreams.put(prefix + "level", "info")
    out = tmp_path / "out.txt"
    script = tmp_path / "child.py"
    script.write_text(CHILD)
    proc = await asyncio.create_subprocess_exec(
        str(LATCHKEY), "--addr", gateway.addr, "--token", gateway.tokens["app"],
        "exec", "--config", f"{prefix}=APP", "--db-role", "demo-readonly=DB",
        "--secret", "demo/app", "--on-change", mode,
        "--", sys.executable, str(script), str(out),
        stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip

    def lines() -> list[str]:
        return out.read_text().splitlines() if out.exists() else []

    try:
        await eventually(lambda: lines() == ["start:info:v-"], what="the child to start")
        upstreams.put(prefix + "level", "debug")
        expected = "start:debug:v-" if mode == "restart" else "hup:debug"
        await eventually(lambda: lines()[-1:] == [expected], what=f"the child to see it ({mode})")
    finally:
        if proc.returncode is None:
            proc.send_signal(signal.SIGTERM)
        code = await asyncio.wait_for(proc.wait(), 20)
    assert code == 7
