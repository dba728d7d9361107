"""What the access room knows about the RPC being served, for authorization and the audit log.

The transport interceptor opens one `RequestInfo` per RPC; the gate records the authorization
decision on it; servicers note secret values they return (the audit log writes only their HMAC).
"""

from __future__ import annotations

import contextvars
import itertools
import secrets
import time
from collections.abc import Mapping
from dataclasses import dataclass, field

from latchkey_server.models import Identity

_current: contextvars.ContextVar[RequestInfo | None] = contextvars.ContextVar(
    "latchkey_request", default=None
)


_RUN = secrets.token_hex(8)
_SEQUENCE = itertools.count(1)


def new_request_id() -> str:
    """Unique across processes and restarts: a random prefix chosen at start, then a sequence
    number (no system call per request, unlike `uuid4`)."""
    return f"{_RUN}{next(_SEQUENCE):08x}"


@dataclass(slots=True)
class RequestInfo:
    rpc: str
    peer: str
    request_id: str = field(default_factory=new_request_id)
    trace_id: str = ""
    """The OpenTelemetry trace id of the call's span ("" when tracing is off)."""
    started: float = field(default_factory=time.monotonic)
    identity: Identity | None = None
    kind: str = ""
    resource: str = ""
    capability: str = ""
    decision: str = "n/a"
    returned: dict[str, str] = field(default_factory=dict, repr=False)
    """Secret values returned by this call (field name → value); audited only as HMACs."""
    returns_secrets: bool = False

    def latency_ms(self) -> float:
        return (time.monotonic() - self.started) * 1000.0


def begin(info: RequestInfo) -> contextvars.Token[RequestInfo | None]:
    return _current.set(info)


def end(token: contextvars.Token[RequestInfo | None]) -> None:
    _current.reset(token)


def current_request() -> RequestInfo | None:
    return _current.get()


def note_returned_all(values: Mapping[str, str]) -> None:
    """`note_returned` for each item of `values` (field name -> value)."""
    info = _current.get()
    if info is not None and values:
        info.returns_secrets = True
        info.returned.update(values)


def note_returned(name: str, value: str) -> None:
    """Record a secret value the current call returns (audited as an HMAC, never in plain)."""
    info = _current.get()
    if info is not None:
        info.returns_secrets = True
        info.returned[name] = value
