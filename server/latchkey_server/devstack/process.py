"""A child process in its own process group, with its output in a log file."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Callable, Sequence
from pathlib import Path


class ComponentError(RuntimeError):
    """A local component could not be found, started or made ready."""


class ManagedProcess:
    """Starts a command in a new session, logs to a file, waits on a probe, kills the group."""

    def __init__(
        self,
        name: str,
        argv: Sequence[str],
        log_path: Path,
        *,
        env: dict[str, str] | None = None,
        user: str | None = None,
    ) -> None:
        self.name = name
        self.argv = list(argv)
        self.log_path = log_path
        self.env = env
        self.user = user
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc else None

    def start(self) -> None:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        argv = self.argv
        if self.user is not None:
            argv = ["runuser", "-u", self.user, "--", *argv]
        with self.log_path.open("ab") as log:
            self._proc = subprocess.Popen(
                argv,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=self.env,
                start_new_session=True,
            )

    def alive(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def wait_ready(self, probe: Callable[[], bool], timeout: float) -> None:
        """Poll `probe` until it returns True; fail early if the process exits."""
        deadline = time.monotonic() + timeout
        delay = 0.02
        while True:
            if not self.alive():
                raise ComponentError(
                    f"{self.name} exited before it was ready (exit code "
                    f"{self._proc.returncode if self._proc else '?'}); log tail:\n{self.log_tail()}"
                )
            if probe():
                return
            if time.monotonic() > deadline:
                raise ComponentError(
                    f"{self.name} was not ready within {timeout:.0f}s; log tail:\n{self.log_tail()}"
                )
            # Polling interval of a readiness probe (backs off to 0.2 s), not a synchronisation.
            time.sleep(delay)
            delay = min(delay * 2, 0.2)

    def stop(self, timeout: float = 10.0, sig: int = signal.SIGTERM) -> None:
        """Signal the whole process group, then SIGKILL it if it outlives `timeout`."""
        proc = self._proc
        if proc is None or proc.poll() is not None:
            return
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=timeout)

    def kill(self) -> None:
        """SIGKILL the process group at once (used to simulate a crash)."""
        self.stop(timeout=5.0, sig=signal.SIGKILL)

    def log_tail(self, lines: int = 40) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:])
