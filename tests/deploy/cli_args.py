"""Parse a `latchkey-server` command line the way the real CLI would, without running it."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import click

from latchkey_server.cli import main


def parse_cli(argv: Sequence[str]) -> dict[str, Any]:
    """The parameters `latchkey-server ARGV...` would run with (click errors raise)."""
    name, *rest = argv
    command = main.get_command(click.Context(main), name)
    assert command is not None, f"latchkey-server has no command {name!r}"
    with command.make_context(name, list(rest)) as ctx:
        return dict(ctx.params)
