"""Errors a logical request can end with, carrying the HTTP status and Vault's message(s).

Messages never include a token, password, secret value or connection-URL password.
"""

from __future__ import annotations

from typing import Any


def multierror(*messages: str) -> str:
    """Format messages the way Go's hashicorp/go-multierror does."""
    count = len(messages)
    head = "1 error occurred:" if count == 1 else f"{count} errors occurred:"
    body = "".join(f"\n\t* {m}" for m in messages)
    return f"{head}{body}\n\n"


class VaultError(Exception):
    """A request failure: HTTP status plus the ``errors`` list (or a full body)."""

    def __init__(
        self, status: int, errors: list[str] | None = None, body: dict[str, Any] | None = None
    ) -> None:
        self.status = status
        self.errors = list(errors or [])
        self.body = body
        super().__init__(f"{status}: {'; '.join(self.errors)}")


class BadRequest(VaultError):
    """A backend "error response" (400, message verbatim)."""

    def __init__(self, message: str) -> None:
        super().__init__(400, [message])


class InternalError(VaultError):
    """A Go error bubbling out of a backend (500, multierror-formatted)."""

    def __init__(self, message: str) -> None:
        super().__init__(500, [multierror(message)])


def permission_denied() -> VaultError:
    return VaultError(403, [multierror("permission denied")])


def missing_token() -> VaultError:
    return VaultError(403, ["permission denied"])


def invalid_token() -> VaultError:
    return VaultError(403, [multierror("permission denied", "invalid token")])


def not_found() -> VaultError:
    return VaultError(404, [])


def unsupported_path() -> VaultError:
    return VaultError(404, [multierror("unsupported path")])


def unsupported_operation() -> VaultError:
    return VaultError(405, [multierror("unsupported operation")])


def no_handler(path: str) -> VaultError:
    return VaultError(404, [f'no handler for route "{path}". route entry not found.'])
