"""The caller identity of the RPC being served (set by the transport interceptor)."""

from __future__ import annotations

import contextvars

from latchkey_server.errors import Unauthenticated
from latchkey_server.models import Identity

_current: contextvars.ContextVar[Identity | None] = contextvars.ContextVar(
    "latchkey_identity", default=None
)


def set_identity(identity: Identity) -> contextvars.Token[Identity | None]:
    return _current.set(identity)


def reset_identity(token: contextvars.Token[Identity | None]) -> None:
    _current.reset(token)


def current_identity() -> Identity:
    identity = _current.get()
    if identity is None:
        raise Unauthenticated("no authenticated caller")
    return identity
