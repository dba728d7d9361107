"""The CLI's exit codes: one table in the code (`latchkey.cli._exit.TABLE`), the same in
clients/python/README.md and in `latchkey --help`."""

from __future__ import annotations

import re
from pathlib import Path

import _latchkey_cli
from click.testing import CliRunner

import latchkey
from latchkey.cli._app import cli
from latchkey.cli._exit import TABLE, Exit, for_error

README = Path(__file__).resolve().parents[2] / "clients" / "python" / "README.md"


def _readme_rows() -> list[tuple[int, str, str]]:
    section = README.read_text().split("| code | name | when |", 1)[1].split("\n\n", 1)[0]
    return [
        (int(m[1]), m[2], m[3])
        for m in re.finditer(r"^\| (\d+) \| ([^|]+) \| ([^|]+) \|$", section, flags=re.M)
    ]


def test_readme_table_is_the_code_table() -> None:
    rows = sorted(TABLE, key=lambda row: row.code.value)
    assert _readme_rows() == [(row.code.value, row.name, row.meaning) for row in rows]
    assert sorted(row.code for row in TABLE) == sorted(Exit)


def test_help_shows_every_code() -> None:
    out = CliRunner().invoke(cli, ["--help"]).output
    for row in TABLE:
        assert f"{row.code.value:>3}  {row.name}: {row.meaning}" in out


def test_errors_map_to_their_rows() -> None:
    cases = {
        latchkey.NotFound("x"): Exit.NOT_FOUND,
        latchkey.NoHealthyInstances("x"): Exit.NOT_FOUND,
        latchkey.PermissionDenied("x"): Exit.PERMISSION_DENIED,
        latchkey.Unauthenticated("x"): Exit.UNAUTHENTICATED,
        latchkey.Unavailable("x"): Exit.UNAVAILABLE,
        latchkey.DevStackNotRunning("x"): Exit.UNAVAILABLE,
        latchkey.DeadlineExceeded("x"): Exit.UNAVAILABLE,
        latchkey.HandshakeFailed("x"): Exit.CONFIGURATION,
        latchkey.ConfigurationError("x"): Exit.CONFIGURATION,
        latchkey.InvalidArgument("x"): Exit.USAGE,
        latchkey.Internal("x"): Exit.ERROR,
        latchkey.FailedPrecondition("x"): Exit.ERROR,
    }
    assert {error: for_error(error) for error in cases} == cases
    assert _latchkey_cli.INTERRUPTED == Exit.INTERRUPTED
