"""The committed Node stubs (clients/node/src/gen) are exactly what `make proto` generates."""

from __future__ import annotations

import filecmp
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
COMMITTED = ROOT / "clients" / "node" / "src" / "gen"
PLUGIN = ROOT / "clients" / "node" / "node_modules" / ".bin" / "protoc-gen-ts_proto"


def _files(base: Path) -> list[str]:
    return sorted(str(p.relative_to(base)) for p in base.rglob("*") if p.is_file())


def test_generated_node_stubs_match_proto(tmp_path: Path) -> None:
    if not PLUGIN.exists():
        pytest.fail(
            "the Node packages are not installed: run `make node-deps` (npm ci in clients/node)",
            pytrace=False,
        )
    out = tmp_path / "gen"
    subprocess.run(
        ["bash", str(ROOT / "scripts" / "gen-proto-node.sh"), str(out)],
        check=True,
        capture_output=True,
    )
    generated = _files(out)
    assert generated == _files(COMMITTED), "Node stub files differ from proto/: run `make proto`"
    _, mismatch, errors = filecmp.cmpfiles(out, COMMITTED, generated, shallow=False)
    assert not mismatch, f"stale Node stubs {mismatch}: run `make proto` and commit"
    assert not errors, f"unreadable Node stubs {errors}"
