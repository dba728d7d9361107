"""The SDK's exceptions: one base, named after what went wrong.

    LatchkeyError
    ├── TransportError               could not talk to the gateway
    │   ├── DeadlineExceeded         (DEADLINE_EXCEEDED)
    │   └── Cancelled                (CANCELLED)
    ├── StatusError                  the gateway answered with a non-OK status
    │   ├── InvalidArgument          (INVALID_ARGUMENT)
    │   ├── NotFound                 (NOT_FOUND)
    │   │   └── NoHealthyInstances   no instance of a service is healthy
    │   ├── PermissionDenied         (PERMISSION_DENIED)
    │   ├── Unauthenticated          (UNAUTHENTICATED)
    │   ├── FailedPrecondition       (FAILED_PRECONDITION)
    │   ├── ResourceExhausted        (RESOURCE_EXHAUSTED)
    │   ├── Unavailable              (UNAVAILABLE, retried with backoff; `retry_after`)
    │   │   ├── HandshakeFailed      the TLS set-up failed: wrong CA, missing or refused client
    │   │   │                        certificate, TLS spoken to a plaintext server or back
    │   │   └── DevStackNotRunning   the `make dev` that wrote LATCHKEY_* has stopped
    │   └── Internal                 (INTERNAL and any other code)
    └── ConfigurationError           the client was configured wrongly (no address, bad cert file)

Every class carries its gRPC status code name as `code`; the code→class table fills itself as the
classes are defined. The gRPC error is translated in one place (`latchkey._grpc.translate`);
connection failures, which gRPC reports only as text, are explained there by `latchkey._explain`
with a message that names the setting to change. Messages come from the gateway, which never
puts a secret value in them, or from the SDK, which never puts one in either.
"""

from __future__ import annotations

import enum
from typing import Any, ClassVar

__all__ = [
    "Cancelled",
    "ConfigurationError",
    "DeadlineExceeded",
    "DevStackNotRunning",
    "FailedPrecondition",
    "HandshakeFailed",
    "Internal",
    "InvalidArgument",
    "LatchkeyError",
    "NoHealthyInstances",
    "NotFound",
    "PermissionDenied",
    "ResourceExhausted",
    "StatusCode",
    "StatusError",
    "TransportError",
    "Unauthenticated",
    "Unavailable",
]


class StatusCode(enum.Enum):
    """gRPC status codes (names and numbers match `grpc.StatusCode`)."""

    OK = 0
    CANCELLED = 1
    UNKNOWN = 2
    INVALID_ARGUMENT = 3
    DEADLINE_EXCEEDED = 4
    NOT_FOUND = 5
    ALREADY_EXISTS = 6
    PERMISSION_DENIED = 7
    RESOURCE_EXHAUSTED = 8
    FAILED_PRECONDITION = 9
    ABORTED = 10
    OUT_OF_RANGE = 11
    UNIMPLEMENTED = 12
    INTERNAL = 13
    UNAVAILABLE = 14
    DATA_LOSS = 15
    UNAUTHENTICATED = 16


_BY_CODE: dict[StatusCode, type[LatchkeyError]] = {}


class LatchkeyError(Exception):
    """Base of every SDK error.

    Attributes:
        message: A message that is safe to show (never contains a secret value).
        code: The gRPC status code, when the error came from a gRPC call.
        retry_after: Seconds the gateway asked us to wait before retrying (UNAVAILABLE).
    """

    code: ClassVar[StatusCode | None] = None

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        code = cls.__dict__.get("code")
        if isinstance(code, StatusCode) and code not in _BY_CODE:
            _BY_CODE[code] = cls

    def __init__(self, message: str, *, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.retry_after = retry_after

    def __str__(self) -> str:
        return self.message

    @staticmethod
    def for_code(code: StatusCode) -> type[LatchkeyError]:
        """The class that stands for a gRPC status code (`Internal` for codes without one)."""
        return _BY_CODE.get(code, Internal)


class TransportError(LatchkeyError):
    """The SDK could not talk to the gateway."""


class DeadlineExceeded(TransportError):
    """The call did not finish within its deadline."""

    code = StatusCode.DEADLINE_EXCEEDED


class Cancelled(TransportError):
    """The call was cancelled (for instance because the client was closed)."""

    code = StatusCode.CANCELLED


class StatusError(LatchkeyError):
    """The gateway answered with a non-OK status."""


class InvalidArgument(StatusError):
    """The request was malformed; the message says which field and what is allowed."""

    code = StatusCode.INVALID_ARGUMENT


class NotFound(StatusError):
    """The secret, key, lease or role does not exist."""

    code = StatusCode.NOT_FOUND


class NoHealthyInstances(NotFound):
    """`services.pick` found no healthy instance of the service."""


class PermissionDenied(StatusError):
    """The caller's identity may not do this."""

    code = StatusCode.PERMISSION_DENIED


class Unauthenticated(StatusError):
    """The gateway did not accept the caller's credentials (token or client certificate)."""

    code = StatusCode.UNAUTHENTICATED


class FailedPrecondition(StatusError):
    """The request cannot be served in the current state."""

    code = StatusCode.FAILED_PRECONDITION


class ResourceExhausted(StatusError):
    """A rate limit or quota was hit."""

    code = StatusCode.RESOURCE_EXHAUSTED


class Unavailable(StatusError):
    """The gateway (or its upstream) cannot be reached; retried with backoff within a deadline.

    Attributes:
        retryable: False when waiting cannot help (a certificate that does not verify, a dev
            stack that has stopped); such errors are raised at once, without retrying.
    """

    code = StatusCode.UNAVAILABLE

    def __init__(
        self, message: str, *, retry_after: float | None = None, retryable: bool = True
    ) -> None:
        super().__init__(message, retry_after=retry_after)
        self.retryable = retryable


class HandshakeFailed(Unavailable):
    """The client and the gateway could not set up the connection's TLS: the gateway's
    certificate does not verify against the configured CA, it requires a client certificate
    that was not sent (or refused the one sent), or one side speaks TLS and the other not. The
    message names the setting to change (`LATCHKEY_CACERT`, `LATCHKEY_CLIENT_CERT`/`_KEY`,
    `LATCHKEY_ADDR`)."""


class DevStackNotRunning(Unavailable):
    """`LATCHKEY_DEV_PID` names the `latchkey-server dev` that wrote the environment, and that
    process has exited: run `make dev` and `source .latchkey/dev.env` again."""


class Internal(StatusError):
    """The gateway failed unexpectedly (or answered with a code the SDK does not name)."""

    code = StatusCode.INTERNAL


class ConfigurationError(LatchkeyError):
    """The client is configured wrongly (no address, unreadable certificate file, ...)."""
