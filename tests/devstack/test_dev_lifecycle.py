"""`latchkey-server dev` always stops, and only one runs per checkout.

Each case starts the real stack (Consul, its own PostgreSQL, OpenBao, the gateway) and interrupts
it at a phase named by the line the stack prints when it enters that phase. Afterwards no process
of that run may be alive (found by the marker every child inherits in its environment), and no
folder it made (the throwaway PostgreSQL cluster) nor its dev.env may be left.
"""

from __future__ import annotations

import os
import queue
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from latchkey_server.devstack.run import RUN_MARKER

STARTUP_PHASES = [
    "starting consul agent -dev",
    "starting PostgreSQL",
    "starting OpenBao",
    "seeding the demo",
    "starting the latchkey gateway",
    "ready:",
]
SHUTDOWN_PHASES = ["stopping gateway", "stopping OpenBao", "stopping PostgreSQL", "stopping Consul"]


@dataclass
class DevRun:
    proc: subprocess.Popen[str]
    marker: str
    state: Path
    lines: queue.Queue[str]
    seen: list[str]
    pumps: list[threading.Thread]

    def wait_for(self, needle: str, timeout: float = 120.0) -> None:
        """Block until the stack prints a line containing `needle` (stdout or stderr)."""
        deadline = time.monotonic() + timeout
        while not any(needle in line for line in self.seen):
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                pytest.fail(f"`latchkey-server dev` never printed {needle!r}; it printed:\n"
                            + "".join(self.seen))  # fmt: skip
            try:
                self.seen.append(self.lines.get(timeout=remaining))
            except queue.Empty:
                continue

    def signal(self, sig: int = signal.SIGTERM) -> None:
        os.kill(self.proc.pid, sig)

    def wait_exit(self, timeout: float = 90.0) -> int:
        return self.proc.wait(timeout=timeout)

    def close(self) -> None:
        """Reap the process and its output pipes (the pumps end at EOF)."""
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(timeout=30)
        for pump in self.pumps:
            pump.join(timeout=10)
        for stream in (self.proc.stdout, self.proc.stderr):
            if stream is not None:
                stream.close()

    @property
    def pg_folder(self) -> Path:
        return Path(tempfile.gettempdir()) / f"latchkey-dev-pg-{self.marker}"


def _pump(stream: object, lines: queue.Queue[str]) -> None:
    for line in stream:  # type: ignore[attr-defined]
        lines.put(line)


def start_dev(state: Path) -> DevRun:
    marker = "test" + os.urandom(6).hex()
    env = {k: v for k, v in os.environ.items() if k != "LATCHKEY_DEMO_PG_DSN"}
    env[RUN_MARKER] = marker
    proc = subprocess.Popen(
        [sys.executable, "-m", "latchkey_server", "dev", "--state-dir", str(state)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
    )  # fmt: skip
    lines: queue.Queue[str] = queue.Queue()
    pumps = [
        threading.Thread(target=_pump, args=(stream, lines), daemon=True)
        for stream in (proc.stdout, proc.stderr)
    ]
    for pump in pumps:
        pump.start()
    return DevRun(proc, marker, state, lines, [], pumps)


def processes_with_marker(marker: str) -> list[int]:
    """PIDs of live processes whose environment carries this run's marker."""
    needle = f"{RUN_MARKER}={marker}".encode()
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            environ = (entry / "environ").read_bytes()
        except OSError:
            continue
        if needle in environ.split(b"\0"):
            found.append(int(entry.name))
    return found


def assert_nothing_left(run: DevRun) -> None:
    left = processes_with_marker(run.marker)
    assert left == [], f"processes left running: {left}\n" + "".join(run.seen)
    assert not run.pg_folder.exists(), f"{run.pg_folder} was left behind"
    assert not (run.state / "dev.env").exists(), "dev.env points at a stack that is gone"
    assert not (run.state / "dev.run.json").exists()


@pytest.fixture
def runs() -> Iterator[list[DevRun]]:
    """Every run a test starts is killed at the end, whatever the test did."""
    started: list[DevRun] = []
    yield started
    for run in started:
        run.close()


@pytest.mark.parametrize("phase", STARTUP_PHASES)
def test_sigterm_during_startup_stops_everything(
    phase: str, tmp_path: Path, runs: list[DevRun]
) -> None:
    run = start_dev(tmp_path / "state")
    runs.append(run)
    run.wait_for(phase)
    run.signal()
    assert run.wait_exit() == 0, "".join(run.seen)
    assert_nothing_left(run)


@pytest.mark.parametrize("phase", SHUTDOWN_PHASES)
def test_second_sigterm_during_shutdown_still_stops_everything(
    phase: str, tmp_path: Path, runs: list[DevRun]
) -> None:
    run = start_dev(tmp_path / "state")
    runs.append(run)
    run.wait_for("ready:")
    run.signal(signal.SIGINT)
    run.wait_for(phase)
    run.signal()
    assert run.wait_exit() == 0, "".join(run.seen)
    run.wait_for("stopped")
    assert_nothing_left(run)


def test_sigkill_takes_the_children_along_and_the_next_run_cleans_up(
    tmp_path: Path, runs: list[DevRun]
) -> None:
    state = tmp_path / "state"
    first = start_dev(state)
    runs.append(first)
    first.wait_for("ready:")
    first.signal(signal.SIGKILL)
    first.wait_exit()
    # The kernel kills every child with its parent (PR_SET_PDEATHSIG); poll until it has.
    deadline = time.monotonic() + 30
    while processes_with_marker(first.marker):
        assert time.monotonic() < deadline, processes_with_marker(first.marker)
        time.sleep(0.1)  # polling the process table, not a synchronisation
    assert first.pg_folder.exists(), "a SIGKILLed run cannot remove its folders itself"
    second = start_dev(state)
    runs.append(second)
    second.wait_for("ready:")
    assert any("left by an earlier `make dev`" in line for line in second.seen)
    assert not first.pg_folder.exists()
    second.signal()
    assert second.wait_exit() == 0
    assert_nothing_left(second)


def test_a_second_make_dev_in_the_same_checkout_is_refused(
    tmp_path: Path, runs: list[DevRun]
) -> None:
    state = tmp_path / "state"
    first = start_dev(state)
    runs.append(first)
    first.wait_for("starting consul agent -dev")
    second = start_dev(state)
    runs.append(second)
    assert second.wait_exit(timeout=90) == 1
    second.wait_for(f"PID {first.proc.pid}")
    second.wait_for("dev.env")
    first.wait_for("ready:")  # the first run is undisturbed
    assert (state / "dev.env").exists()
    first.signal()
    assert first.wait_exit() == 0
    assert_nothing_left(first)
