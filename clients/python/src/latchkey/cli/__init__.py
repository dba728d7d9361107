"""The operator CLI `latchkey` (installed with the `cli` extra: `pip install 'latchkey[cli]'`)."""

from __future__ import annotations

import sys


def main() -> None:
    """Entry point of `latchkey`."""
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
