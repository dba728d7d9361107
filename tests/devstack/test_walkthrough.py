"""The README's "Your own app" walkthrough, run as written against `latchkey-server dev`.

The README marks its steps with HTML comments a reader does not see:
`<!-- walkthrough: run -->` (a shell block, run in one bash session with what came before),
`<!-- walkthrough: file NAME -->` (a block saved as NAME), `<!-- walkthrough: app -->` (a
command started and left running, as in a second terminal) and
`<!-- walkthrough: while the app runs -->` (a shell block run while it does). The test runs them
in a copy of the checkout's `policies/`, the way a newcomer would from the checkout's root.
"""

from __future__ import annotations

import os
import queue
import re
import shutil
import signal
import subprocess
import sys
import threading
from dataclasses import dataclass
from pathlib import Path

from latchkey_server.devstack.postgres import PostgresCluster
from tests.devstack.test_make_dev import _read_env, _wait_for_line

REPO = Path(__file__).resolve().parents[2]
README = REPO / "README.md"
MARK = re.compile(
    r"<!-- walkthrough: (?P<what>[^>]*?) -->\n```(?P<lang>\w+)\n(?P<body>.*?)```", re.S
)


@dataclass(frozen=True)
class Step:
    what: str
    body: str


def walkthrough_steps() -> list[Step]:
    text = README.read_text()
    section = text.split("## Your own app", 1)[1].split("\n## ", 1)[0]
    return [Step(m["what"].strip(), m["body"]) for m in MARK.finditer(section)]


def test_the_walkthrough_is_marked_up_as_the_test_expects() -> None:
    kinds = [step.what for step in walkthrough_steps()]
    assert kinds.count("run") >= 4
    assert "file app.py" in kinds
    assert kinds.index("app") < kinds.index("while the app runs")


class Shell:
    """One bash session: each step sees the variables and directory the previous ones left."""

    def __init__(self, cwd: Path) -> None:
        self.cwd = cwd
        self.env_file = cwd / ".walkthrough-env"
        keep = ("HOME", "LANG", "TMPDIR")
        self.env = {name: os.environ[name] for name in keep if name in os.environ}
        # No virtualenv active: `source .latchkey/dev.env` is what puts the tools on PATH.
        venv_bin = str(Path(sys.executable).parent)
        self.env["PATH"] = os.pathsep.join(
            p for p in os.environ["PATH"].split(os.pathsep) if p != venv_bin
        )

    def run(self, body: str) -> subprocess.CompletedProcess[str]:
        script = f"set -euo pipefail\n{body}\nexport -p > {self.env_file}\n"
        result = subprocess.run(
            ["bash", "-c", script], cwd=self.cwd, env=self.env, capture_output=True, text=True,
            timeout=120, check=False,
        )  # fmt: skip
        assert result.returncode == 0, f"step failed:\n{body}\n{result.stdout}\n{result.stderr}"
        self.env = _exported(self.env_file.read_text())
        return result


def _exported(declarations: str) -> dict[str, str]:
    """The variables of `export -p` output (bash quotes them as `declare -x NAME="value"`)."""
    dumped = subprocess.run(
        ["bash", "-c", f"{declarations}\nenv -0"], capture_output=True, check=True, env={}
    ).stdout.decode()
    pairs = (item.partition("=") for item in dumped.split("\0") if "=" in item)
    return {name: value for name, _, value in pairs if name not in ("PWD", "OLDPWD", "SHLVL", "_")}


class App:
    """A command left running, its output read line by line."""

    def __init__(self, command: str, cwd: Path, env: dict[str, str]) -> None:
        self.proc = subprocess.Popen(
            ["bash", "-c", f"exec {command}"], cwd=cwd, env=env, stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT, text=True,
        )  # fmt: skip
        self.lines: queue.Queue[str] = queue.Queue()
        self.seen: list[str] = []
        self.pump = threading.Thread(target=self._pump, daemon=True)
        self.pump.start()

    def _pump(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.put(line)

    def expect(self, pattern: str, timeout: float = 60) -> str:
        while True:
            try:
                line = self.lines.get(timeout=timeout)
            except queue.Empty:
                raise AssertionError(f"the app never printed {pattern!r}: {self.seen}") from None
            self.seen.append(line)
            if re.search(pattern, line):
                return line


def test_your_own_app_walkthrough_runs_as_written(
    tmp_path: Path, postgres: PostgresCluster
) -> None:
    checkout = tmp_path / "checkout"
    checkout.mkdir()
    shutil.copytree(REPO / "policies", checkout / "policies")
    state = checkout / ".latchkey"
    dev_log = (tmp_path / "dev.log").open("w")
    dev = subprocess.Popen(
        [sys.executable, "-m", "latchkey_server", "dev"], cwd=checkout,
        env={**os.environ, "LATCHKEY_DEMO_PG_DSN": postgres.dsn}, stdout=subprocess.PIPE,
        stderr=dev_log, text=True, start_new_session=True,
    )  # fmt: skip
    app: App | None = None
    try:
        _wait_for_line(dev, "ready", timeout=120)
        shell = Shell(checkout)
        outputs: list[str] = []
        for step in walkthrough_steps():
            if step.what == "run":
                outputs.append(shell.run(step.body).stdout)
            elif step.what.startswith("file "):
                (checkout / step.what.removeprefix("file ")).write_text(step.body)
            elif step.what == "app":
                app = App(step.body.strip(), checkout, shell.env)
                app.expect(r"^calling https://api\.example\.com with a key of 12 characters")
                app.expect(r"^hello from v-\S*myapp\S* \(3 items\)")
            elif step.what == "while the app runs":
                assert app is not None, "the README runs a step 'while the app runs' before it"
                shell.run(step.body)
                app.expect(r"^hola from v-\S*myapp\S* \(3 items\)")
            else:
                raise AssertionError(f"unknown walkthrough step {step.what!r}")
        said = "".join(outputs)
        assert "identity  myapp (via mtls)" in said
        assert "https://api.example.com" in said
        assert re.search(r"v-\S*myapp\S* \|\s+3", said), said  # psql as the brokered role
        assert "refused (exit code 4)" in said
        assert '"password": "********"' in said
        assert "sk-test-8c2f" not in said  # never shown without --reveal
        assert app is not None
        app.proc.send_signal(signal.SIGINT)
        assert app.proc.wait(timeout=60) == 0, app.seen
        app.expect(r"^stopping: the pool closes")
        held = _read_env(state / "dev.env")
        assert held["LATCHKEY_ADDR"]  # the stack outlived the app
    finally:
        if app is not None:
            if app.proc.poll() is None:
                app.proc.kill()
            app.proc.wait(timeout=30)
            app.pump.join(timeout=30)  # it ends at the pipe's end of file
            assert app.proc.stdout is not None
            app.proc.stdout.close()
        os.killpg(dev.pid, signal.SIGINT)
        code = dev.wait(timeout=90)
        dev_log.close()
        if dev.stdout is not None:
            dev.stdout.close()
    assert code == 0, (tmp_path / "dev.log").read_text()[-3000:]
