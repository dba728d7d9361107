"""`latchkey exec` sees a changed config value, by restart and by signal, and exits with the
command's code (signals are forwarded); a command it cannot run exits 127/126 like a shell, and
secrets reach the disk only with --env-file, in a file removed however exec ends."""

from __future__ import annotations

import asyncio
import signal
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from latchkey.cli._app import cli
from tests.cli.helpers import clean_env, run_cli
from tests.fixtures.gateway import GatewayHandle
from tests.gateway.helpers import eventually
from tests.gateway.test_secret_watch_e2e import bao_kv_put
from tests.sdk.conftest import Upstreams

LATCHKEY = Path(sys.executable).parent / "latchkey"

CHILD = r"""
import os, shlex, signal, sys
out = sys.argv[1]
def record(value):
    with open(out, "a") as f:
        f.write(value + "\n")
def reread(signum, frame):
    with open(os.environ["LATCHKEY_ENV_FILE"]) as f:
        values = dict(line.rstrip("\n").split("=", 1) for line in f if "=" in line)
    record("hup:" + shlex.split(values["APP_LEVEL"])[0])
signal.signal(signal.SIGHUP, reread)
signal.signal(signal.SIGTERM, lambda s, f: sys.exit(7))
record("start:" + os.environ["APP_LEVEL"] + ":" + os.environ.get("DB_USERNAME", "")[:2])
while True:
    signal.pause()
"""


@pytest.mark.parametrize("mode", ["restart", "signal:HUP"])
async def test_exec_follows_config(
    gateway: GatewayHandle, upstreams: Upstreams, unique: str, tmp_path: Path, mode: str
) -> None:
    prefix = f"exec/{unique}/"
    upstreams.put(prefix + "level", "info")
    out = tmp_path / "out.txt"
    script = tmp_path / "child.py"
    script.write_text(CHILD)
    proc = await asyncio.create_subprocess_exec(
        str(LATCHKEY), "--addr", gateway.addr, "--token", gateway.tokens["app"],
        "exec", "--config", f"{prefix}=APP", "--db-role", "demo-readonly=DB",
        "--secret", "demo/app", "--on-change", mode, *(["--env-file"] if mode != "restart" else []),
        "--", sys.executable, str(script), str(out),
        stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip

    def lines() -> list[str]:
        return out.read_text().splitlines() if out.exists() else []

    try:
        await eventually(lambda: lines() == ["start:info:v-"], what="the child to start")
        upstreams.put(prefix + "level", "debug")
        expected = "start:debug:v-" if mode == "restart" else "hup:debug"
        await eventually(lambda: lines()[-1:] == [expected], what=f"the child to see it ({mode})")
    finally:
        if proc.returncode is None:
            proc.send_signal(signal.SIGTERM)
        code = await asyncio.wait_for(proc.wait(), 20)
    assert code == 7


def _private_dirs(tmp_path: Path) -> dict[str, str]:
    """TMPDIR and XDG_RUNTIME_DIR of the test's own, to see every file exec leaves."""
    dirs = {"TMPDIR": tmp_path / "tmp", "XDG_RUNTIME_DIR": tmp_path / "run"}
    for d in dirs.values():
        d.mkdir(mode=0o700)
    return {k: str(v) for k, v in dirs.items()}


def _leftovers(dirs: dict[str, str]) -> list[str]:
    return [str(p) for d in dirs.values() for p in Path(d).iterdir()]


async def test_exec_of_what_cannot_run(gateway: GatewayHandle, tmp_path: Path) -> None:
    dirs = _private_dirs(tmp_path)
    env = clean_env(LATCHKEY_ADDR=gateway.addr, LATCHKEY_TOKEN=gateway.tokens["app"], **dirs)
    (tmp_path / "not-executable").write_text("#!/bin/sh\necho hi\n")
    garbage = tmp_path / "garbage"  # executable bit, but neither a program nor a script
    garbage.write_bytes(b"\x00\x01 not a program")
    garbage.chmod(0o755)
    cases = [
        ("./app", 127, "latchkey exec: ./app: no such file"),
        ("no-such-command-" + tmp_path.name, 127, "command not found (not in PATH)"),
        ("./not-executable", 126, "permission denied (not executable; chmod +x"),
        (str(tmp_path), 126, "is a directory"),
        (str(garbage), 126, "Exec format error"),
    ]
    for command, code, needle in cases:
        run = await run_cli(
            "exec", "--db-role", "demo-readonly=PG", "--secret", "demo/app", "--env-file",
            "--", command, "arg", env=env, cwd=tmp_path,
        )  # fmt: skip
        assert run.code == code, (command, run)
        assert needle in run.stderr, (command, run)
        assert "Traceback" not in run.stderr, run
        assert _leftovers(dirs) == [], command


CHECK_ENV = r"""
import os, stat, sys
dirs = sys.argv[1:]
print("file=" + os.environ.get("LATCHKEY_ENV_FILE", "none"))
print("password-set=" + str(bool(os.environ.get("PG_PASSWORD"))))
for d in dirs:
    for root, _, files in os.walk(d):
        for name in files:
            path = os.path.join(root, name)
            print("on-disk=" + path + " mode=" + oct(stat.S_IMODE(os.stat(path).st_mode)))
sys.stdout.flush()
os.kill(os.getpid(), 15)
"""


async def test_exec_keeps_secrets_off_disk_unless_asked(
    gateway: GatewayHandle, tmp_path: Path
) -> None:
    dirs = _private_dirs(tmp_path)
    env = clean_env(LATCHKEY_ADDR=gateway.addr, LATCHKEY_TOKEN=gateway.tokens["app"], **dirs)
    script = tmp_path / "check.py"
    script.write_text(CHECK_ENV)
    command = ["--", sys.executable, str(script), *dirs.values()]
    quiet = await run_cli("exec", "--db-role", "demo-readonly=PG", *command, env=env)
    assert quiet.code == 128 + 15, quiet  # the command's SIGTERM, as a shell reports it
    assert quiet.stdout.splitlines() == ["file=none", "password-set=True"]
    asked = await run_cli("exec", "--db-role", "demo-readonly=PG", "--env-file", *command, env=env)
    assert asked.code == 143, asked
    lines = asked.stdout.splitlines()
    env_file = lines[0].removeprefix("file=")
    assert env_file.startswith(dirs["XDG_RUNTIME_DIR"] + "/latchkey-exec-"), lines
    assert f"on-disk={env_file} mode=0o600" in lines
    assert _leftovers(dirs) == []


def test_exec_help_documents_names_without_private_modules() -> None:
    result = CliRunner().invoke(cli, ["exec", "--help"])
    assert result.exit_code == 0
    assert "latchkey.cli._" not in result.output
    assert "DEMO_READONLY_USERNAME" in result.output
    assert "127 when the command is not" in result.output


SECRET_CHILD = r"""
import os, signal, sys
with open(sys.argv[1], "a") as f:
    f.write("start:" + os.environ["API_KEY"] + "\n")
signal.signal(signal.SIGTERM, lambda s, f: sys.exit(7))
while True:
    signal.pause()
"""


async def test_exec_restarts_on_a_new_secret_version(
    gateway: GatewayHandle, unique: str, tmp_path: Path
) -> None:
    path = f"exec/{unique}"
    vault = (gateway.vault_addr, gateway.vault_root_token)
    await asyncio.to_thread(bao_kv_put, *vault, path, key="first")
    out = tmp_path / "out.txt"
    script = tmp_path / "child.py"
    script.write_text(SECRET_CHILD)
    proc = await asyncio.create_subprocess_exec(
        str(LATCHKEY), "--addr", gateway.addr, "--token", gateway.tokens["app"],
        "exec", "--secret", f"{path}=API", "--on-change", "restart",
        "--", sys.executable, str(script), str(out),
        stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip

    def lines() -> list[str]:
        return out.read_text().splitlines() if out.exists() else []

    try:
        await eventually(lambda: lines() == ["start:first"], what="the child to start")
        await asyncio.to_thread(bao_kv_put, *vault, path, key="second")
        await eventually(
            lambda: lines() == ["start:first", "start:second"],
            what="the child to restart with the new version",
        )
    finally:
        if proc.returncode is None:
            proc.send_signal(signal.SIGTERM)
        code = await asyncio.wait_for(proc.wait(), 20)
        assert proc.stderr is not None
        said = (await proc.stderr.read()).decode()
    assert code == 7
    assert f"secret {path} (version 2) changed" in said
    assert "second" not in said.replace("(version 2)", "")
