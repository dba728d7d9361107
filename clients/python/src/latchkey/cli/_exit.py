"""The CLI's exit codes: one table, rendered into `latchkey --help` and kept in step with
clients/python/README.md by tests/cli/test_exit_codes.py."""

from __future__ import annotations

import enum
from dataclasses import dataclass

import latchkey


class Exit(enum.IntEnum):
    OK = 0
    ERROR = 1
    USAGE = 2
    NOT_FOUND = 3
    PERMISSION_DENIED = 4
    UNAVAILABLE = 5
    UNAUTHENTICATED = 6
    CONFIGURATION = 7
    NOT_EXECUTABLE = 126
    COMMAND_NOT_FOUND = 127
    INTERRUPTED = 130


@dataclass(frozen=True)
class Row:
    code: Exit
    meaning: str
    errors: tuple[type[latchkey.LatchkeyError], ...] = ()
    """SDK errors that end the CLI with this code (the first matching row wins)."""

    @property
    def name(self) -> str:
        return self.code.name.lower().replace("_", " ")


TABLE: tuple[Row, ...] = (
    Row(Exit.OK, "done"),
    Row(Exit.ERROR, "any other failure (INTERNAL, FAILED_PRECONDITION, ...)"),
    Row(Exit.USAGE, "bad command line, or INVALID_ARGUMENT", (latchkey.InvalidArgument,)),
    Row(Exit.NOT_FOUND, "no such secret, key, lease, role or service", (latchkey.NotFound,)),
    Row(Exit.PERMISSION_DENIED, "the caller may not do this", (latchkey.PermissionDenied,)),
    Row(Exit.CONFIGURATION, "no address, bad certificate file, TLS handshake failed",
        (latchkey.ConfigurationError, latchkey.HandshakeFailed)),
    Row(Exit.UNAVAILABLE, "gateway or upstream unreachable, dev stack not running",
        (latchkey.Unavailable, latchkey.TransportError)),
    Row(Exit.UNAUTHENTICATED, "token or client certificate not accepted",
        (latchkey.Unauthenticated,)),
    Row(Exit.NOT_EXECUTABLE, "exec: the command cannot be run"),
    Row(Exit.COMMAND_NOT_FOUND, "exec: the command was not found"),
    Row(Exit.INTERRUPTED, "Ctrl-C"),
)  # fmt: skip
"""Every exit code the CLI itself chooses. `exec` otherwise exits with its command's code
(128+N when a signal N ended it)."""


def for_error(error: latchkey.LatchkeyError) -> Exit:
    """The exit code of an SDK error."""
    for row in TABLE:
        if isinstance(error, row.errors):
            return row.code
    return Exit.ERROR


def epilog() -> str:
    """The table as `latchkey --help` shows it."""
    lines = ["\b", "Exit codes:"]
    lines += [
        f"  {row.code.value:>3}  {row.name}: {row.meaning}" for row in sorted(TABLE, key=_code)
    ]
    return "\n".join(lines)


def _code(row: Row) -> int:
    return row.code.value
