"""The install steps of `make dev`/`make test` recover from an interrupted earlier run.

These run against a fresh clone of the repository (what CI and a newcomer start from), in the
states an interrupted first run leaves behind.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def clone(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A clone of the checkout's HEAD (what `git clone` gives a newcomer)."""
    target = tmp_path_factory.mktemp("clone") / "latchkey"
    subprocess.run(["git", "clone", "-q", str(REPO), str(target)], check=True, timeout=120)
    return target


def _env_without(*names: str) -> dict[str, str]:
    """The environment with no venv and no consul on PATH, and the named variables removed."""
    path = [
        p for p in os.environ["PATH"].split(os.pathsep)
        if not (Path(p) / "consul").exists() and ".venv" not in p
    ]  # fmt: skip
    env = {k: v for k, v in os.environ.items() if k not in names}
    env["PATH"] = os.pathsep.join(path)
    return env


def test_make_help_lists_every_target() -> None:
    makefile = (REPO / "Makefile").read_text()
    targets = set(re.findall(r"^([a-z][a-z-]*):", makefile, re.MULTILINE))
    listed = subprocess.run(
        ["make", "-s", "help"], cwd=REPO, capture_output=True, text=True, check=True
    ).stdout
    shown = {line.split()[1] for line in listed.splitlines() if line.startswith("make ")}
    assert targets == shown


def test_an_interrupted_venv_without_pip_is_recreated(clone: Path) -> None:
    # The state a Ctrl-C during `python -m venv` leaves: a python, but no pip.
    subprocess.run(["python3", "-m", "venv", "--without-pip", ".venv"], cwd=clone, check=True)
    broken = subprocess.run(
        [".venv/bin/python", "-m", "pip", "--version"], cwd=clone, capture_output=True, check=False
    )
    assert broken.returncode != 0
    result = subprocess.run(
        ["make", "install"], cwd=clone, capture_output=True, text=True, timeout=900,
        env=_env_without("VIRTUAL_ENV"), check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    assert "incomplete (an earlier run was interrupted): recreating it" in result.stderr
    cli = subprocess.run(
        [".venv/bin/latchkey", "--help"], cwd=clone, capture_output=True, text=True, check=False
    )
    assert cli.returncode == 0, cli.stderr
    assert (clone / ".venv" / "bin" / "bao").exists()
    again = subprocess.run(
        ["make", "install"], cwd=clone, capture_output=True, text=True, check=True
    )  # the stamp is written: nothing more to do
    assert "installing" not in again.stderr


def test_a_half_unpacked_consul_is_provisioned_again(clone: Path) -> None:
    binary = clone / ".cache" / "consul" / "root" / "usr" / "bin" / "consul"
    binary.parent.mkdir(parents=True)
    binary.write_bytes(b"\x7fELF truncated")  # what an interrupted unpack leaves
    binary.chmod(0o755)
    env = _env_without("LATCHKEY_CONSUL_BIN")
    assert shutil.which("consul", path=env["PATH"]) is None
    result = subprocess.run(
        ["bash", "scripts/provision-consul.sh"], cwd=clone, capture_output=True, text=True,
        env=env, timeout=300, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines()[-1] == str(binary)
    version = subprocess.run([str(binary), "version"], capture_output=True, text=True, check=True)
    assert version.stdout.startswith("Consul v")


def test_the_readme_lists_every_make_target() -> None:
    makefile = (REPO / "Makefile").read_text()
    targets = set(re.findall(r"^([a-z][a-z-]*):", makefile, re.MULTILINE))
    readme = (REPO / "README.md").read_text()
    section = readme[readme.index("## Make targets") :]
    section = section[: section.index("\n## ", 1)]
    assert set(re.findall(r"^\| `make ([a-z-]+)`", section, re.MULTILINE)) == targets
