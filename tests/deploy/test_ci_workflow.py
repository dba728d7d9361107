"""The GitHub workflow runs the same make targets as `.ci/run`, on both supported Pythons."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]


def _runs(job: dict[str, Any]) -> str:
    return "\n".join(step.get("run", "") for step in job["steps"])


def test_workflow_calls_the_make_targets_on_311_and_312() -> None:
    workflow = yaml.safe_load((ROOT / ".github" / "workflows" / "ci.yml").read_text())
    jobs = workflow["jobs"]
    everything = "\n".join(_runs(job) for job in jobs.values())
    for target in ("make lint", "make check", "make test"):
        assert target in everything, target
    assert "make test" in (ROOT / ".ci" / "run").read_text()
    test_job = next(job for job in jobs.values() if "make test" in _runs(job))
    assert test_job["strategy"]["matrix"]["python-version"] == ["3.11", "3.12"]
    assert "docker build" in everything
