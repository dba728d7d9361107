"""The gateway's health probe: one `grpc.health.v1.Health/Check`, as a container would ask it.

Used by `latchkey-server healthcheck` (the image's HEALTHCHECK, compose, Kubernetes exec
probes). Plaintext unless TLS material is given; with a client certificate and key it speaks
mTLS. It never waits for the channel to become ready: a refused connection fails at once.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc


@dataclass(frozen=True)
class ProbeTLS:
    """TLS material for the probe; `cert` and `key` together turn on mTLS."""

    cacert: Path
    """CA bundle that verifies the gateway's certificate."""
    cert: Path | None = None
    """Client certificate (PEM) presented to the gateway."""
    key: Path | None = None
    """Private key (PEM) of the client certificate."""
    server_name: str | None = None
    """Name to verify the gateway's certificate against (default: the host in the address)."""


@dataclass(frozen=True)
class ProbeResult:
    serving: bool
    message: str
    """What was found, fit for an operator's terminal (never contains key material)."""


def _read(path: Path, what: str) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise ValueError(f"cannot read {what} {path}: {exc.strerror}") from exc


def _channel(addr: str, tls: ProbeTLS | None) -> grpc.Channel:
    if tls is None:
        return grpc.insecure_channel(addr)
    credentials = grpc.ssl_channel_credentials(
        root_certificates=_read(tls.cacert, "CA certificate"),
        private_key=_read(tls.key, "client key") if tls.key else None,
        certificate_chain=_read(tls.cert, "client certificate") if tls.cert else None,
    )
    options = [("grpc.ssl_target_name_override", tls.server_name)] if tls.server_name else []
    return grpc.secure_channel(addr, credentials, options=options)


def _explain(exc: grpc.RpcError, addr: str, label: str, timeout: float) -> str:
    call = exc if isinstance(exc, grpc.Call) else None
    code = call.code() if call else grpc.StatusCode.UNKNOWN
    if code == grpc.StatusCode.NOT_FOUND:
        return f"{addr} does not know {label} (NOT_FOUND)"
    if code == grpc.StatusCode.DEADLINE_EXCEEDED:
        return f"{addr} did not answer within {timeout:g}s"
    details = (call.details() if call else None) or "no details"
    return f"cannot check {addr}: {code.name}: {details}"


def check_health(
    addr: str, *, service: str = "", timeout: float = 3.0, tls: ProbeTLS | None = None
) -> ProbeResult:
    """Ask the gateway at `addr` whether `service` ("" = the whole server) is SERVING."""
    label = f"service {service!r}" if service else "the server"
    try:
        channel = _channel(addr, tls)
    except ValueError as exc:
        return ProbeResult(False, str(exc))
    with channel:
        stub = health_pb2_grpc.HealthStub(channel)
        try:
            reply = stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=timeout)
        except grpc.RpcError as exc:
            return ProbeResult(False, _explain(exc, addr, label, timeout))
    status = health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)
    if reply.status == health_pb2.HealthCheckResponse.SERVING:
        return ProbeResult(True, f"{addr}: {label} is SERVING")
    return ProbeResult(False, f"{addr}: {label} is {status}")
