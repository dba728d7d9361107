"""A child process in its own process group, with its output in a log file."""

from __future__ import annotations

import contextlib
import ctypes
import os
import pwd
import signal
import subprocess
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

_PR_SET_PDEATHSIG = 1
_STOP_SIGNALS = {signal.SIGINT, signal.SIGTERM, signal.SIGHUP}


def _die_with_parent() -> None:  # pragma: no cover (runs in the forked child)
    """Ask the kernel to SIGKILL this child when the thread that started it dies (Linux), and
    unblock the stop signals `signals_held` blocked in the parent (the mask survives exec)."""
    ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, _STOP_SIGNALS)


@contextlib.contextmanager
def signals_held() -> Iterator[None]:
    """Hold SIGINT/SIGTERM/SIGHUP until the block ends, so that a stop request cannot land
    between starting a child and recording it (the handler then runs right after)."""
    old = signal.pthread_sigmask(signal.SIG_BLOCK, _STOP_SIGNALS)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, old)


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
        die_with_parent: bool = False,
    ) -> None:
        self.name = name
        self.argv = list(argv)
        self.log_path = log_path
        self.env = env
        self.user = user
        self.die_with_parent = die_with_parent
        """SIGKILL the child when the starting thread dies (the dev stack: nothing outlives it,
        even when it is itself SIGKILLed). Only for children started from the main thread."""
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc else None

    def start(self) -> None:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        account = pwd.getpwnam(self.user) if self.user is not None else None
        held = signals_held() if self.die_with_parent else contextlib.nullcontext()
        with self.log_path.open("ab") as log, held:
            self._proc = subprocess.Popen(
                self.argv,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=self.env,
                start_new_session=True,
                user=account.pw_uid if account else None,
                group=account.pw_gid if account else None,
                extra_groups=[] if account else None,
                preexec_fn=_die_with_parent if self.die_with_parent else None,
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

    def stop(
        self,
        timeout: float = 10.0,
        sig: int = signal.SIGTERM,
        hurry: Callable[[], bool] | None = None,
    ) -> None:
        """Signal the whole process group, then SIGKILL it if it outlives `timeout` (or as soon
        as `hurry()` turns true)."""
        proc = self._proc
        if proc is None or proc.poll() is not None:
            return
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + timeout
        while True:
            step = 0.1 if hurry is not None else max(0.0, deadline - time.monotonic())
            try:
                proc.wait(timeout=step)
                return
            except subprocess.TimeoutExpired:
                if time.monotonic() >= deadline or (hurry is not None and hurry()):
                    break
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=max(timeout, 5.0))

    def kill(self) -> None:
        """SIGKILL the process group at once (used to simulate a crash)."""
        self.stop(timeout=5.0, sig=signal.SIGKILL)

    def log_tail(self, lines: int = 40) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:])
