"""The client's TLS files, re-read when they change (certificate rotation without a restart).

`resolve_settings` records the paths it read the CA, client certificate and key from; the
transports ask `TlsFiles.changed()` (a `stat` of each file: inode, size, modification time) at
most once a second, before opening a channel, and after a call failed to connect. When a file
changed, the new material is read and validated (PEM markers) and new channels use it; channels
already open, and their streams, keep the material they were opened with. A half-written file
(the wrong markers, or unreadable) is not taken: the previous material stays until it is whole.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from latchkey._errors import ConfigurationError

Signature = tuple[tuple[int, int, int] | None, ...]

CHECK_INTERVAL = 1.0
"""Least seconds between two looks at the files."""


@dataclass(frozen=True)
class TlsMaterial:
    """PEM bytes a channel is built from."""

    cacert: bytes | None = field(default=None, repr=False)
    client_cert: bytes | None = field(default=None, repr=False)
    client_key: bytes | None = field(default=None, repr=False)


@dataclass(frozen=True)
class TlsFiles:
    """Where the client's TLS material comes from (None: not given as a file)."""

    cacert: Path | None = None
    client_cert: Path | None = None
    client_key: Path | None = None

    def _paths(self) -> tuple[Path | None, ...]:
        return (self.cacert, self.client_cert, self.client_key)

    def signature(self) -> Signature:
        """What identifies the files' current content without reading them."""
        out: list[tuple[int, int, int] | None] = []
        for path in self._paths():
            try:
                st = os.stat(path) if path is not None else None
            except OSError:
                st = None
            out.append((st.st_ino, st.st_size, st.st_mtime_ns) if st is not None else None)
        return tuple(out)

    def read(self) -> TlsMaterial:
        """The files' material; ConfigurationError when one cannot be read or is not PEM."""
        from latchkey._settings import read_pem

        return TlsMaterial(
            cacert=read_pem(self.cacert, "CA certificate"),
            client_cert=read_pem(self.client_cert, "client certificate"),
            client_key=read_pem(self.client_key, "client key"),
        )


class TlsReloader:
    """Tracks one client's TLS files and says when channels need the new material."""

    def __init__(self, files: TlsFiles | None, material: TlsMaterial) -> None:
        self._files = files
        self.material = material
        self._signature = files.signature() if files is not None else ()
        self._checked = float("-inf")

    def refresh(self, now: float, *, force: bool = False) -> bool:
        """Re-read the files if they changed (looked at once a second unless `force`); True
        when `material` is new."""
        files = self._files
        if files is None or (not force and now - self._checked < CHECK_INTERVAL):
            return False
        self._checked = now
        signature = files.signature()
        if signature == self._signature:
            return False
        try:
            material = files.read()
        except ConfigurationError:
            return False  # mid-rotation (a file half written or missing): look again later
        self._signature = signature
        if material == self.material:
            return False
        self.material = material
        return True
