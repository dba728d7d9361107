"""The Dockerfile's build steps, run directly (no Docker engine here).

Builds the wheels of both distributions with the Dockerfile's own `pip wheel --no-deps` command,
installs them into a fresh venv (dependencies from pip's index and cache, no dev extras) and
runs the installed `latchkey-server`: its help, and the health probe against a real gRPC
health server and against a closed port.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from latchkey_server.devstack.ports import free_ports
from tests.deploy.dockerfile import stages
from tests.deploy.health_server import NOT_SERVING, health_server

ROOT = Path(__file__).resolve().parents[2]
WHEEL_CMD = "pip wheel --no-deps --wheel-dir /wheels ./clients/python ."


def _run(argv: list[str], cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LATCHKEY_")}
    return subprocess.run(
        argv, capture_output=True, text=True, timeout=600, check=False, env=env, cwd=cwd
    )


@pytest.fixture(scope="module")
def image_venv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    assert WHEEL_CMD in " ".join(stages()[0].args("RUN")), "the Dockerfile's wheel step changed"
    work = tmp_path_factory.mktemp("image")
    wheels = work / "wheels"
    argv = WHEEL_CMD.replace("/wheels", str(wheels)).split()
    built = _run([sys.executable, "-m", *argv], cwd=ROOT)
    assert built.returncode == 0, built.stderr
    names = sorted(p.name for p in wheels.glob("*.whl"))
    assert [n.split("-")[0] for n in names] == ["latchkey", "latchkey_server"], names
    venv = work / "venv"
    created = _run([sys.executable, "-m", "venv", str(venv)])
    assert created.returncode == 0, created.stderr
    pip = [str(venv / "bin" / "python"), "-m", "pip", "install", "--quiet"]
    installed = _run([*pip, *(str(p) for p in sorted(wheels.glob("*.whl")))])
    assert installed.returncode == 0, installed.stderr
    return venv


def test_installed_image_has_the_server_and_no_dev_tools(image_venv: Path) -> None:
    result = _run([str(image_venv / "bin" / "latchkey-server"), "--help"])
    assert result.returncode == 0, result.stderr
    for command in ("serve", "healthcheck", "bootstrap", "token"):
        assert command in result.stdout
    listed = _run([str(image_venv / "bin" / "python"), "-m", "pip", "list"]).stdout.lower()
    for tool in ("pytest", "mypy", "ruff", "hypothesis", "grpcio-tools"):
        assert tool not in listed, tool


def test_installed_probe_checks_a_real_health_service(image_venv: Path) -> None:
    probe = [str(image_venv / "bin" / "latchkey-server"), "healthcheck", "--timeout", "5"]
    with health_server() as (addr, servicer):
        serving = _run([*probe, "--addr", addr, "--insecure"])
        servicer.set("", NOT_SERVING)
        not_serving = _run([*probe, "--addr", addr])
    closed = _run([*probe, "--addr", f"127.0.0.1:{free_ports(1)[0]}"])
    assert serving.returncode == 0, serving.stderr
    assert not_serving.returncode == 1
    assert "NOT_SERVING" in not_serving.stderr
    assert closed.returncode == 1
    assert "UNAVAILABLE" in closed.stderr
