"""Files the gateway re-reads while it runs: the policies, the tokens file, the TLS material.

Each is a `Reloadable`: `changed()` compares a stat signature of the files it reads (name,
inode, size and modification time of each; nothing is read) with the one it last loaded or
tried, and `reload()` reads, validates and swaps the new content in, or keeps what it has and
logs why. `poll` runs that check every interval; SIGHUP (server.py) reloads at once.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Protocol

Signature = tuple[tuple[str, int, int, int] | None, ...]


def signature(paths: Iterable[Path | None]) -> Signature:
    """Name, inode, size and mtime of each path (None: missing or not configured)."""
    found: list[tuple[str, int, int, int] | None] = []
    for path in paths:
        try:
            st = os.stat(path) if path is not None else None
        except OSError:
            st = None
        found.append((str(path), st.st_ino, st.st_size, st.st_mtime_ns) if st is not None else None)
    return tuple(found)


class Reloadable(Protocol):
    def changed(self) -> bool:
        """Whether the files differ from those last loaded or tried (cheap: stat only)."""

    def reload(self) -> bool:
        """Read them again; True when new content is in force."""


async def poll(
    item: Reloadable, interval: float, on_reload: Callable[[], object] | None = None
) -> None:
    """Reload `item` whenever its files change, checking every `interval` seconds (forever;
    cancel the task to stop). `on_reload` runs after each reload that took effect."""
    while True:
        await asyncio.sleep(interval)
        if item.changed() and item.reload() and on_reload is not None:
            on_reload()
