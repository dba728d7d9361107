"""`latchkey-server`: parses arguments and hands over; builds nothing itself."""

from __future__ import annotations

from pathlib import Path

import click


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def main() -> None:
    """latchkey gateway server and its development tools."""


@main.command()
@click.option(
    "--state-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path(".latchkey"),
    show_default=True,
    envvar="LATCHKEY_STATE_DIR",
    help="Where dev.env, logs and generated material are written.",
)
def dev(state_dir: Path) -> None:
    """Run the local development stack in the foreground (what `make dev` runs).

    Example: latchkey-server dev --state-dir .latchkey
    """
    from latchkey_server.devstack.run import run_dev

    run_dev(state_dir.resolve())
