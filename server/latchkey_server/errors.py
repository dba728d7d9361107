"""Domain errors raised by the access, broker and upstream rooms.

Every error carries a status (named after the gRPC code it becomes) and a message that is safe
to show a caller: it never contains a secret value, token or password. The transport room maps
them to gRPC statuses in exactly one place (`transport/errors.py`).

    LatchkeyError                (INTERNAL, fixed message)
    ├── InvalidArgument          (INVALID_ARGUMENT)
    ├── NotFound                 (NOT_FOUND)
    ├── PermissionDenied         (PERMISSION_DENIED)
    ├── Unauthenticated          (UNAUTHENTICATED)
    ├── FailedPrecondition       (FAILED_PRECONDITION)
    ├── ResourceExhausted        (RESOURCE_EXHAUSTED, retry_after)
    │   └── StreamStalled        (a stream its client did not read for too long)
    └── Unavailable              (UNAVAILABLE, retry_after)
        └── Draining             (the gateway is shutting down; reconnect, elsewhere if you can)
"""

from __future__ import annotations

import enum
from typing import ClassVar


class Status(enum.Enum):
    """The subset of gRPC status codes latchkey produces (names match grpc.StatusCode)."""

    INVALID_ARGUMENT = "INVALID_ARGUMENT"
    NOT_FOUND = "NOT_FOUND"
    PERMISSION_DENIED = "PERMISSION_DENIED"
    UNAUTHENTICATED = "UNAUTHENTICATED"
    FAILED_PRECONDITION = "FAILED_PRECONDITION"
    RESOURCE_EXHAUSTED = "RESOURCE_EXHAUSTED"
    UNAVAILABLE = "UNAVAILABLE"
    INTERNAL = "INTERNAL"


class LatchkeyError(Exception):
    """Base of all domain errors. `message` must be safe to show the caller."""

    status: ClassVar[Status] = Status.INTERNAL

    def __init__(self, message: str, *, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.retry_after = retry_after


class InvalidArgument(LatchkeyError):
    status = Status.INVALID_ARGUMENT


class NotFound(LatchkeyError):
    status = Status.NOT_FOUND


class PermissionDenied(LatchkeyError):
    status = Status.PERMISSION_DENIED


class Unauthenticated(LatchkeyError):
    status = Status.UNAUTHENTICATED


class FailedPrecondition(LatchkeyError):
    status = Status.FAILED_PRECONDITION


class ResourceExhausted(LatchkeyError):
    status = Status.RESOURCE_EXHAUSTED


class StreamStalled(ResourceExhausted):
    """A stream's client did not take its messages for longer than the stall timeout."""


class Unavailable(LatchkeyError):
    """An upstream cannot be reached; `retry_after` (seconds) hints when to try again."""

    status = Status.UNAVAILABLE


class Draining(Unavailable):
    """The gateway is shutting down: every stream ends with this, naming the reason."""
