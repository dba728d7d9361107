"""What a failed Vault call means: causes, the domain error each becomes, and whether to retry.

The hvac half of the table (which hvac or requests exception, refined by which text in Vault's
`errors` list, is which cause) lives in `upstreams/vault.py`, the one module that imports hvac;
this module holds everything else and is hvac-free. A call site may replace the message of a
cause with one that names what it was looking for (`messages=`); the class, retry hint and
retry policy always come from `OUTCOMES`.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Mapping
from dataclasses import dataclass

from latchkey_server.errors import (
    FailedPrecondition,
    InvalidArgument,
    LatchkeyError,
    NotFound,
    PermissionDenied,
    ResourceExhausted,
    Unavailable,
)


class Cause(enum.Enum):
    """Why a Vault call failed."""

    MISSING = "missing"
    """404: no such path, mount, secret or version."""
    UNKNOWN_ROLE = "unknown_role"
    """400 "unknown role": the database role does not exist."""
    LEASE_GONE = "lease_gone"
    """400 "lease not found" / "invalid lease" / "lease expired": revoked or expired."""
    NOT_RENEWABLE = "not_renewable"
    """400 "lease is not renewable" / "past the max TTL": Vault will not extend it."""
    LOGIN_REFUSED = "login_refused"
    """400/401/403 on a login: the gateway's credentials or auth role are wrong."""
    DENIED = "denied"
    """401/403: the gateway's token lacks a policy (or died)."""
    BAD_REQUEST = "bad_request"
    """Any other 400."""
    RATE_LIMITED = "rate_limited"
    """429."""
    SEALED = "sealed"
    """503 "Vault is sealed"."""
    UNINITIALIZED = "uninitialized"
    """501: Vault was never initialised."""
    DOWN = "down"
    """Any other 503 (standby without a leader, shutting down, ...)."""
    SERVER_ERROR = "server_error"
    """500/502: Vault (or the database behind it) failed."""
    CONNECT_TIMEOUT = "connect_timeout"
    """No connection within the timeout (nothing was sent)."""
    TIMEOUT = "timeout"
    """No answer within the timeout (Vault may have acted)."""
    UNREACHABLE = "unreachable"
    """Connection refused or reset."""
    UNEXPECTED = "unexpected"
    """Any other status from Vault."""
    INTERNAL = "internal"
    """Not a Vault or HTTP error at all: a bug on our side."""


class Retry(enum.Enum):
    """When a failed call may be sent again."""

    NEVER = "never"
    IF_IDEMPOTENT = "if_idempotent"
    """Vault may have acted: only calls that are safe to repeat."""
    ALWAYS = "always"
    """Vault certainly did not act: safe even for calls that create something."""


@dataclass(frozen=True, slots=True)
class Outcome:
    """The domain error a cause becomes."""

    error: type[LatchkeyError]
    message: str
    """Template: `{action}` is what the gateway was doing, `{detail}` Vault's own (redacted)
    words prefixed with ": " (empty when Vault gave none)."""
    retry: Retry = Retry.NEVER
    retry_after: float | None = None
    """Seconds a client should wait before trying again (UNAVAILABLE, RESOURCE_EXHAUSTED)."""


OUTCOMES: Mapping[Cause, Outcome] = {
    Cause.MISSING: Outcome(NotFound, "Vault found nothing to {action}"),
    Cause.UNKNOWN_ROLE: Outcome(NotFound, "Vault knows no such role (asked to {action})"),
    Cause.LEASE_GONE: Outcome(NotFound, "the lease no longer exists in Vault ({action})"),
    Cause.NOT_RENEWABLE: Outcome(FailedPrecondition, "Vault will not {action} any further{detail}"),
    Cause.LOGIN_REFUSED: Outcome(
        PermissionDenied,
        "Vault refused to let the gateway {action}{detail}; check the vault.auth settings and "
        "the auth role in Vault",
    ),
    Cause.DENIED: Outcome(
        PermissionDenied,
        "Vault denied the gateway permission to {action}; check the gateway's Vault policy",
    ),
    Cause.BAD_REQUEST: Outcome(InvalidArgument, "Vault rejected the request to {action}{detail}"),
    Cause.RATE_LIMITED: Outcome(
        ResourceExhausted, "Vault is rate limiting the gateway ({action})", Retry.IF_IDEMPOTENT, 1.0
    ),
    Cause.SEALED: Outcome(
        Unavailable, "Vault is sealed: cannot {action} until it is unsealed", Retry.ALWAYS, 5.0
    ),
    Cause.UNINITIALIZED: Outcome(
        Unavailable, "Vault is not initialized: cannot {action}", Retry.ALWAYS, 5.0
    ),
    Cause.DOWN: Outcome(Unavailable, "Vault is unavailable to {action}{detail}", Retry.ALWAYS, 1.0),
    Cause.SERVER_ERROR: Outcome(
        Unavailable, "Vault failed with a server error to {action}", Retry.IF_IDEMPOTENT, 1.0
    ),
    Cause.CONNECT_TIMEOUT: Outcome(
        Unavailable, "Vault did not accept a connection in time to {action}", Retry.ALWAYS, 1.0
    ),
    Cause.TIMEOUT: Outcome(
        Unavailable, "Vault did not answer in time to {action}", Retry.IF_IDEMPOTENT, 1.0
    ),
    Cause.UNREACHABLE: Outcome(
        Unavailable, "Vault cannot be reached to {action}", Retry.IF_IDEMPOTENT, 1.0
    ),
    Cause.UNEXPECTED: Outcome(
        LatchkeyError, "Vault answered unexpectedly to a request to {action}"
    ),
    Cause.INTERNAL: Outcome(LatchkeyError, "internal error while asking Vault to {action}"),
}


@dataclass(frozen=True, slots=True)
class Rule:
    """One row of the hvac side of the table: exceptions of `kinds` mean `cause` when Vault's
    `errors` contain `says` (lower case; empty: any) and the call is operation `op` (empty:
    any). The first matching row wins."""

    kinds: type[BaseException] | tuple[type[BaseException], ...]
    cause: Cause
    says: str = ""
    op: str = ""

    def matches(self, exc: BaseException, op: str, said: str) -> bool:
        return (
            isinstance(exc, self.kinds)
            and (not self.op or self.op == op)
            and (not self.says or self.says in said)
        )


def classify(rules: tuple[Rule, ...], exc: BaseException, op: str) -> Cause:
    """The cause of `exc` raised by a call of operation `op`, by the first matching rule."""
    said = " ".join(vault_errors(exc)).lower()
    for rule in rules:
        if rule.matches(exc, op, said):
            return rule.cause
    return Cause.INTERNAL


def domain_error(
    cause: Cause, exc: BaseException, action: str, messages: Mapping[Cause, str] | None = None
) -> LatchkeyError:
    """The domain error for `cause`; its message is safe to show (redacted, no secrets)."""
    outcome = OUTCOMES[cause]
    message = (messages or {}).get(cause)
    if message is None:
        detail = vault_messages(exc)
        message = outcome.message.format(action=action, detail=f": {detail}" if detail else "")
    return outcome.error(message, retry_after=outcome.retry_after)


# ---------------------------------------------------------------- Vault's own words, redacted

_REDACT = (
    re.compile(r"\b(hv[sbr]\.|s\.|b\.|r\.)[A-Za-z0-9_.-]{8,}"),
    re.compile(r"\b(eyJ)[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]*){1,2}"),  # a JWT
    re.compile(r"(?i)(password|secret_id|token|secret|jwt)(\"?\s*[:=]\s*)\S+"),
)


def vault_errors(exc: BaseException) -> list[str]:
    """The `errors` list of Vault's response carried by an hvac exception (may be empty)."""
    errors = getattr(exc, "errors", None)
    return [str(e) for e in errors] if isinstance(errors, list) else []


def vault_messages(exc: BaseException) -> str:
    """Vault's own error texts from an hvac exception, redacted and shortened (log/message safe)."""
    text = " ".join("; ".join(vault_errors(exc)).split())
    for pattern in _REDACT:
        text = pattern.sub(lambda m: f"{m.group(1)}<redacted>", text)
    return text[:300]


# ---------------------------------------------------------------- operation labels

# Metric label for each kind of Vault call (a fixed vocabulary; never a path or role).
_OPERATIONS = (
    ("read secret metadata", "kv_metadata"),
    ("read secret", "kv_read"),
    ("issue credentials", "creds"),
    ("renew lease", "lease_renew"),
    ("revoke lease", "lease_revoke"),
    ("look up lease", "lease_lookup"),
    ("log in", "login"),
    ("look up its own token", "token_lookup"),
    ("renew its token", "token_renew"),
    ("revoke", "token_revoke"),
    ("read database role", "role_read"),
    ("read the configuration of mount", "mount_read"),
    ("check health", "health"),
)


def operation(action: str) -> str:
    """The fixed operation label for a call described by `action`."""
    for prefix, label in _OPERATIONS:
        if action.startswith(prefix):
            return label
    return "other"
