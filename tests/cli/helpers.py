"""Running the installed `latchkey` command as a user does: a subprocess with a clean
environment (so gRPC core starts with the launcher's log settings, as it does for users)."""

from __future__ import annotations

import asyncio
import os
import re
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

LATCHKEY = Path(sys.executable).parent / "latchkey"
GRPC_LOG_LINE = re.compile(r"^[IWEF]\d{4} \d\d:\d\d:\d\d", re.M)
"""A line of gRPC core's own log (absl format: `I1201 04:34:00.919532 861 file.cc:123] ...`)."""


def clean_env(**extra: str) -> dict[str, str]:
    """The test process's environment without anything that steers latchkey, gRPC or libpq."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("LATCHKEY_", "GRPC_", "PG")) and k != "XDG_RUNTIME_DIR"
    }
    return {**env, **extra}


@dataclass
class Run:
    code: int
    stdout: str
    stderr: str


async def run_cli(*args: str, env: Mapping[str, str], cwd: Path | None = None) -> Run:
    """Run `latchkey ARGS` to its end (bounded: a hung command fails the test)."""
    proc = await asyncio.create_subprocess_exec(
        str(LATCHKEY), *args, env=dict(env), cwd=cwd,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode is not None
    return Run(proc.returncode, out.decode(), err.decode())
