"""The operator CLI `latchkey` (installed with the `cli` extra: `pip install 'latchkey[cli]'`).

The `latchkey` command starts in `_latchkey_cli` (outside this package), which sets gRPC core's
log level before `grpc` is imported and then calls `main`.
"""

from __future__ import annotations

import sys


def main() -> None:
    """Run the CLI (exit codes: `latchkey --help`, table in `latchkey.cli._exit`)."""
    try:
        from latchkey.cli._app import run
    except ImportError as exc:  # pragma: no cover - depends on the installed extras
        if exc.name != "click":
            raise
        print(
            "The latchkey CLI needs click: pip install 'latchkey[cli]'",
            file=sys.stderr,
        )
        raise SystemExit(1) from None
    run()


__all__ = ["main"]
