"""Writing `.latchkey/dev.env`: shell `export` lines for the CLI, SDK and operators."""

from __future__ import annotations

import os
import shlex
from collections.abc import Mapping
from pathlib import Path


def write_dev_env(path: Path, values: Mapping[str, str]) -> None:
    """Write `export NAME=value` lines atomically, readable only by the owner (it holds tokens)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    lines = [f"export {name}={shlex.quote(value)}" for name, value in values.items()]
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(
            "# Written by `make dev` (latchkey-server dev). Load with: source .latchkey/dev.env\n"
        )
        fh.write("\n".join(lines) + "\n")
    tmp.replace(path)
