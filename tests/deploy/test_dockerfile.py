"""The Dockerfile, read statically: multi-stage, only wheels in the last stage, non-root."""

from __future__ import annotations

import json
import re
from pathlib import Path

from tests.deploy.cli_args import parse_cli
from tests.deploy.dockerfile import stages

ROOT = Path(__file__).resolve().parents[2]


def test_build_stage_builds_both_distributions_into_wheels() -> None:
    build, *_ = stages()
    run = " ".join(build.args("RUN"))
    assert "pip wheel --no-deps --wheel-dir /wheels ./clients/python ." in run
    copied = " ".join(build.args("COPY"))
    for path in ("pyproject.toml", "server/", "clients/python/"):
        assert path in copied


def test_final_stage_is_slim_python_and_gets_only_the_wheels() -> None:
    all_stages = stages()
    assert len(all_stages) >= 2
    build, final = all_stages[0], all_stages[-1]
    assert final.base.startswith("python:")
    assert final.base.endswith("-slim")
    assert build.name is not None
    copies = final.args("COPY") + final.args("ADD")
    assert all(f"--from={build.name}" in c and "/wheels" in c for c in copies), copies
    mounts = re.findall(r"--mount=(\S+)", " ".join(final.args("RUN")))
    for mount in mounts:
        if f"from={build.name}" in mount:
            assert "source=/wheels" in mount, mount
    assert copies or mounts, "the final stage never receives the wheels"
    run = " ".join(final.args("RUN"))
    assert "pip install --no-index --find-links=/wheels latchkey-server" in run
    assert "[dev]" not in run


def test_runs_as_a_non_root_numeric_user() -> None:
    final = stages()[-1]
    (user,) = final.args("USER")
    uid = user.split(":")[0]
    assert uid.isdigit(), "USER must be numeric (runAsNonRoot checks it)"
    assert int(uid) != 0
    assert final.instructions.index(("USER", user)) > max(
        i for i, (kw, _) in enumerate(final.instructions) if kw == "RUN"
    )


def test_healthcheck_runs_the_shipped_probe() -> None:
    final = stages()[-1]
    (health,) = final.args("HEALTHCHECK")
    command = json.loads(health.split(" CMD ", 1)[1])
    assert command[:2] == ["latchkey-server", "healthcheck"]
    params = parse_cli(command[1:])
    expose = {int(p.split("/")[0]) for p in final.args("EXPOSE")}
    assert int(params["addr"].rsplit(":", 1)[1]) in expose
    env = " ".join(final.args("ENV"))
    assert "LATCHKEY_HEALTHCHECK_CACERT=/run/secrets/latchkey-tls/ca.crt" in env


def test_entrypoint_serves_the_mounted_config() -> None:
    final = stages()[-1]
    (entrypoint,) = final.args("ENTRYPOINT")
    (cmd,) = final.args("CMD")
    argv = json.loads(entrypoint) + json.loads(cmd)
    assert argv[0] == "latchkey-server"
    assert parse_cli(argv[1:])["config_path"] == Path("/etc/latchkey/gateway.yaml")


def test_dockerignore_sends_only_the_sources() -> None:
    rules = [
        ln.strip()
        for ln in (ROOT / ".dockerignore").read_text().splitlines()
        if ln.strip() and not ln.startswith("#")
    ]
    assert rules[0] == "*"
    included = {r[1:].rstrip("/") for r in rules if r.startswith("!")}
    assert included == {"pyproject.toml", "README.md", "server", "clients/python"}
