"""Writing `.latchkey/dev.env`: shell `export` lines for the CLI, SDK and operators."""

from __future__ import annotations

import os
import shlex
from collections.abc import Mapping, Sequence
from pathlib import Path


def write_dev_env(
    path: Path, values: Mapping[str, str], *, path_prepend: Sequence[Path] = ()
) -> None:
    """Write `export NAME=value` lines atomically, readable only by the owner (it holds tokens).

    `path_prepend` folders go in front of the `PATH` of the shell that sources the file.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    lines = [f"export {name}={shlex.quote(value)}" for name, value in values.items()]
    folders = list(dict.fromkeys(str(folder) for folder in path_prepend))
    if folders:
        lines.append(f'export PATH={shlex.quote(":".join(folders))}:"$PATH"')
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(
            "# Written by `make dev` (latchkey-server dev). Load with: source .latchkey/dev.env\n"
        )
        fh.write("\n".join(lines) + "\n")
    tmp.replace(path)
