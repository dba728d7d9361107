"""The committed latchkey.v1 stubs are exactly what `make proto` generates from proto/."""

from __future__ import annotations

import filecmp
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
COMMITTED = ROOT / "clients" / "python" / "src" / "latchkey" / "v1"


def test_generated_stubs_match_proto(tmp_path: Path) -> None:
    subprocess.run(
        ["bash", str(ROOT / "scripts" / "gen-proto.sh"), str(tmp_path)],
        check=True,
        capture_output=True,
    )
    fresh = tmp_path / "latchkey" / "v1"
    generated = sorted(p.name for p in fresh.iterdir() if p.is_file())
    committed = sorted(
        p.name for p in COMMITTED.iterdir() if p.name != "__init__.py" and p.is_file()
    )
    assert generated == committed, "stub files differ from proto/: run `make proto` and commit"
    _, mismatch, errors = filecmp.cmpfiles(fresh, COMMITTED, generated, shallow=False)
    assert not mismatch, f"stale stubs {mismatch}: run `make proto` and commit"
    assert not errors, f"unreadable stubs {errors}"
