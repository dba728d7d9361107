"""What keeps one `make dev` run honest: a lock per checkout, a record of what it started, and
a stop that always finishes.

- `DevLock`: an exclusive `flock` on `.latchkey/dev.lock`, held for the life of the run, with
  the holder's PID written in it; a second `make dev` in the same checkout is refused at once,
  naming that PID. The kernel drops the lock when the holder dies, however it dies.
- `RunRecord`: `.latchkey/dev.run.json` lists every process the run started (PID and kernel
  start time, so a recycled PID is never mistaken for ours) and every folder it made. A clean
  stop deletes it; the next start finds one left by a run that was killed and stops what is
  still alive and removes the folders.
- `StopRequested` is raised by the SIGINT/SIGTERM handler while the stack starts, so start-up
  is abandoned at once wherever it is; while the stack stops, a further signal only makes the
  remaining stops hurry (SIGKILL instead of waiting).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import signal
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import IO, Any

from latchkey_server.devstack.process import ComponentError

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


class StopRequested(BaseException):
    """A stop signal arrived while the dev stack was starting."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


class DevLock:
    """An exclusive lock on `path` for this process, with our PID written into the file."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fh: IO[str] | None = None

    def acquire(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fh = self.path.open("a+")
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            fh.seek(0)
            holder = fh.read().strip() or "unknown"
            fh.close()
            env = self.path.parent / "dev.env"
            raise ComponentError(
                f"another `make dev` is already running in this checkout (PID {holder}); its "
                f"environment is in {env} (source it to use that stack). Stop it with Ctrl-C "
                f"in its terminal or `kill {holder}`, then run `make dev` again."
            ) from None
        fh.seek(0)
        fh.truncate()
        fh.write(f"{os.getpid()}\n")
        fh.flush()
        self._fh = fh

    def release(self) -> None:
        if self._fh is not None:
            self._fh.close()  # closing drops the flock; the file stays (it is only a handle)
            self._fh = None


def process_start_time(pid: int) -> int | None:
    """The kernel's start time of `pid` (clock ticks since boot), None if it is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name (field 2) may contain spaces and parentheses: split after the last ')'.
    fields = stat[stat.rindex(")") + 2 :].split()
    return int(fields[19])


@dataclass
class RunRecord:
    """`dev.run.json`: the processes and folders of one run, written as they appear."""

    path: Path
    processes: dict[str, dict[str, int]] = field(default_factory=dict)
    folders: list[str] = field(default_factory=list)

    def add_process(self, name: str, pid: int | None) -> None:
        if pid is None:
            return
        started = process_start_time(pid)
        if started is not None:
            self.processes[name] = {"pid": pid, "start_time": started}
            self._save()

    def add_folder(self, folder: Path) -> None:
        if str(folder) not in self.folders:
            self.folders.append(str(folder))
            self._save()

    def _save(self) -> None:
        data = {"dev_pid": os.getpid(), "processes": self.processes, "folders": self.folders}
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(data, indent=2) + "\n")
        tmp.replace(self.path)

    def clear(self) -> None:
        self.path.unlink(missing_ok=True)

    def clean_leftovers(self, say: Callable[[str], None]) -> None:
        """Stop what a previous, killed run left alive and remove its folders."""
        try:
            data: dict[str, Any] = json.loads(self.path.read_text())
        except FileNotFoundError:
            return
        except (OSError, ValueError):
            data = {}
        for name, proc in (data.get("processes") or {}).items():
            pid, started = int(proc["pid"]), int(proc["start_time"])
            if process_start_time(pid) == started:
                say(f"stopping {name} (PID {pid}), left running by an earlier `make dev`")
                terminate_group(pid, timeout=10.0)
        for folder in data.get("folders") or []:
            if Path(folder).exists():
                say(f"removing {folder}, left by an earlier `make dev`")
                shutil.rmtree(folder, ignore_errors=True)
        self.clear()


def terminate_group(pid: int, timeout: float, sig: int = signal.SIGTERM) -> None:
    """Signal the process group led by `pid`; SIGKILL it if `pid` outlives `timeout`."""
    started = process_start_time(pid)
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, sig)
    deadline = time.monotonic() + timeout
    while process_start_time(pid) == started and started is not None:
        if time.monotonic() > deadline:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pid, signal.SIGKILL)
            return
        time.sleep(0.05)  # polling a process that is not our child (no wait() possible)


class SignalPlan:
    """SIGINT/SIGTERM/SIGHUP handling for the two halves of a run (start, then stop)."""

    def __init__(self) -> None:
        self.stopping = False
        self.hurry = False
        """Set by a signal during the stop: remaining components are killed without waiting."""
        self._old: dict[signal.Signals, Any] = {}

    @contextlib.contextmanager
    def installed(self) -> Iterator[SignalPlan]:
        for sig in STOP_SIGNALS:
            self._old[sig] = signal.signal(sig, self._handle)
        try:
            yield self
        finally:
            for sig, old in self._old.items():
                signal.signal(sig, old)

    def _handle(self, signum: int, _frame: FrameType | None) -> None:
        if self.stopping:
            self.hurry = True
            return
        self.stopping = True
        raise StopRequested(signum)
