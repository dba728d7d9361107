"""gRPC plumbing shared by the sync and async transports: credentials, metadata, error mapping.

`grpc` is imported here and in the two transport modules (`_async/_transport.py`,
`_sync/_transport.py`) only.
"""

from __future__ import annotations

import grpc

from latchkey._errors import Cancelled, LatchkeyError, StatusCode
from latchkey._explain import explain
from latchkey._settings import ClientSettings, Endpoint
from latchkey._tls import TlsMaterial

Metadata = tuple[tuple[str, str], ...]

# Detect dead connections while streams are quiet, and reconnect quickly after a failover.
CHANNEL_OPTIONS: list[tuple[str, int]] = [
    ("grpc.keepalive_time_ms", 10_000),
    ("grpc.keepalive_timeout_ms", 5_000),
    ("grpc.keepalive_permit_without_calls", 1),
    ("grpc.initial_reconnect_backoff_ms", 100),
    ("grpc.min_reconnect_backoff_ms", 100),
    ("grpc.max_reconnect_backoff_ms", 2_000),
]


def metadata(settings: ClientSettings) -> Metadata:
    """Call metadata: the bearer token, when there is one."""
    if settings.token:
        return (("authorization", f"Bearer {settings.token}"),)
    return ()


def channel_credentials(
    settings: ClientSettings, endpoint: Endpoint, material: TlsMaterial | None = None
) -> grpc.ChannelCredentials | None:
    """TLS credentials for an endpoint (None: plaintext), from `material` (the files' current
    content) when given, else from the settings."""
    if not endpoint.tls:
        return None
    if material is None:
        material = TlsMaterial(settings.cacert, settings.client_cert, settings.client_key)
    return grpc.ssl_channel_credentials(
        root_certificates=material.cacert,
        private_key=material.client_key,
        certificate_chain=material.client_cert,
    )


def _retry_after(exc: grpc.RpcError) -> float | None:
    trailers = getattr(exc, "trailing_metadata", None)
    try:
        items = trailers() if callable(trailers) else None
    except Exception:
        return None
    for key, value in items or ():
        if key == "retry-after":
            try:
                return float(value)
            except (TypeError, ValueError):
                return None
    return None


def translate(
    exc: grpc.RpcError, settings: ClientSettings | None = None, endpoint: Endpoint | None = None
) -> LatchkeyError:
    """The one mapping from a gRPC error to the SDK's exception tree. With the settings and the
    endpoint of the call, a failed connection is explained (`latchkey._explain`)."""
    code_fn = getattr(exc, "code", None)
    details_fn = getattr(exc, "details", None)
    code = code_fn() if callable(code_fn) else grpc.StatusCode.UNKNOWN
    details = details_fn() if callable(details_fn) else None
    try:
        status = StatusCode[code.name]
    except (KeyError, AttributeError):
        status = StatusCode.UNKNOWN
    error: LatchkeyError | None = None
    if status is StatusCode.UNAVAILABLE and settings is not None and endpoint is not None:
        error = explain(details or "", settings, endpoint)
    if error is None:
        cls = LatchkeyError.for_code(status)
        message = details or f"the gateway call failed with {status.name}"
        error = cls(message, retry_after=_retry_after(exc))
    error.__cause__ = exc
    return error


def is_cancelled(error: LatchkeyError) -> bool:
    return isinstance(error, Cancelled)
