"""Client settings: explicit arguments win; `LATCHKEY_*` variables fill what is missing.

The environment is read here and nowhere else.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from latchkey import _consul
from latchkey._consul import ConsulReplicas
from latchkey._errors import ConfigurationError
from latchkey._tls import TlsFiles

ENV_ADDR = "LATCHKEY_ADDR"
ENV_TOKEN = "LATCHKEY_TOKEN"
ENV_CACERT = "LATCHKEY_CACERT"
ENV_CLIENT_CERT = "LATCHKEY_CLIENT_CERT"
ENV_CLIENT_KEY = "LATCHKEY_CLIENT_KEY"
ENV_DEV_PID = "LATCHKEY_DEV_PID"
ENV_CONSUL_TOKEN = "LATCHKEY_CONSUL_TOKEN"

NO_ADDRESS = (
    f"no gateway address: pass addr=... or set {ENV_ADDR} (e.g. 127.0.0.1:7400; for the "
    "stack `make dev` runs: source .latchkey/dev.env)"
)
_PEM_MARKERS = {
    "CA certificate": (b"-----BEGIN CERTIFICATE-----", ENV_CACERT),
    "client certificate": (b"-----BEGIN CERTIFICATE-----", ENV_CLIENT_CERT),
    "client key": (b"PRIVATE KEY-----", ENV_CLIENT_KEY),
}


@dataclass(frozen=True)
class Endpoint:
    """One gateway address."""

    target: str
    """`host:port` as gRPC dials it."""
    tls: bool
    """Whether the channel uses TLS."""


@dataclass(frozen=True)
class ClientSettings:
    """Everything a client needs to reach the gateway."""

    endpoints: tuple[Endpoint, ...]
    """Gateway addresses, tried in order; the client fails over between them (empty when
    `replicas` finds them)."""
    token: str | None = field(default=None, repr=False)
    """Bearer token sent as `authorization: Bearer <token>`."""
    cacert: bytes | None = field(default=None, repr=False)
    """PEM of the CA that signed the gateway's certificate (None: system roots)."""
    client_cert: bytes | None = field(default=None, repr=False)
    """PEM client certificate for mTLS."""
    client_key: bytes | None = field(default=None, repr=False)
    """PEM private key of the client certificate."""
    timeout: float = 10.0
    """Deadline of each unary attempt, seconds."""
    retry_deadline: float = 15.0
    """Total time a unary call may spend retrying UNAVAILABLE, seconds."""
    replicas: ConsulReplicas | None = None
    """Where Consul lists the gateway's replicas (`consul://AGENT/SERVICE`): its passing
    instances are the failover list, kept current."""
    replicas_tls: bool = False
    """Whether the channels to the replicas found in Consul use TLS."""
    dev_pid: int | None = None
    """PID of the `latchkey-server dev` that wrote these settings (`LATCHKEY_DEV_PID`, set by
    `.latchkey/dev.env`); once it has exited, a failed connection raises `DevStackNotRunning`."""
    tls_files: TlsFiles | None = None
    """The files `cacert`/`client_cert`/`client_key` were read from: re-read when they change,
    for new channels (certificate rotation)."""


def read_pem(path: str | os.PathLike[str] | None, what: str) -> bytes | None:
    if path is None or str(path) == "":
        return None
    marker, env = _PEM_MARKERS[what]
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise ConfigurationError(
            f"cannot read the {what} file {str(path)!r} ({env}): {exc.strerror}"
        ) from exc
    if marker not in data:
        raise ConfigurationError(
            f"the {what} file {str(path)!r} ({env}) is not PEM: it has no "
            f"{marker.decode().strip('-')!r} block"
        )
    return data


def _dev_pid(text: str | None) -> int | None:
    if not text:
        return None
    if not text.isdigit() or int(text) <= 0:
        raise ConfigurationError(f"{ENV_DEV_PID} must be a process id, not {text!r}")
    return int(text)


def parse_addresses(
    addr: str | Sequence[str], *, tls_default: bool, insecure: bool
) -> tuple[Endpoint, ...]:
    """`host:port`, `http://host:port` (plaintext) or `https://host:port` (TLS); a string may hold
    several addresses separated by commas."""
    items = [addr] if isinstance(addr, str) else list(addr)
    endpoints: list[Endpoint] = []
    for item in items:
        for raw in item.split(","):
            text = raw.strip()
            if not text:
                continue
            tls = tls_default
            if text.startswith("http://"):
                text, tls = text.removeprefix("http://"), False
            elif text.startswith("https://"):
                text, tls = text.removeprefix("https://"), True
            text = text.rstrip("/")
            if insecure:
                tls = False
            endpoints.append(Endpoint(target=text, tls=tls))
    if not endpoints:
        raise ConfigurationError(NO_ADDRESS)
    return tuple(endpoints)


def resolve_settings(
    addr: str | Sequence[str] | None = None,
    *,
    token: str | None = None,
    cacert: str | os.PathLike[str] | None = None,
    client_cert: str | os.PathLike[str] | None = None,
    client_key: str | os.PathLike[str] | None = None,
    insecure: bool = False,
    timeout: float = 10.0,
    retry_deadline: float = 15.0,
    environ: Mapping[str, str] | None = None,
) -> ClientSettings:
    """Build settings from explicit arguments, falling back to `LATCHKEY_*` variables.

    The address is one or more gateways (`host:port`, `http://...`, `https://...`, comma
    separated) or `consul://AGENT/SERVICE` (the replicas Consul lists as passing; its token from
    `LATCHKEY_CONSUL_TOKEN`)."""
    env = os.environ if environ is None else environ
    addr = addr if addr is not None else env.get(ENV_ADDR)
    token = token if token is not None else env.get(ENV_TOKEN) or None
    cacert = cacert if cacert is not None else env.get(ENV_CACERT) or None
    client_cert = client_cert if client_cert is not None else env.get(ENV_CLIENT_CERT) or None
    client_key = client_key if client_key is not None else env.get(ENV_CLIENT_KEY) or None
    if (client_cert is None) != (client_key is None):
        raise ConfigurationError(
            f"a client certificate needs its key: give both {ENV_CLIENT_CERT} and {ENV_CLIENT_KEY}"
        )
    if addr is None:
        raise ConfigurationError(NO_ADDRESS)
    tls_default = cacert is not None or client_cert is not None
    items = [addr] if isinstance(addr, str) else list(addr)
    replicas: ConsulReplicas | None = None
    endpoints: tuple[Endpoint, ...] = ()
    if any(_consul.is_consul(part) for item in items for part in item.split(",")):
        if len(items) != 1 or "," in items[0]:
            raise ConfigurationError(
                "a consul:// address stands alone: give either consul://AGENT/SERVICE or a "
                "comma-separated list of gateway addresses"
            )
        replicas = _consul.parse(items[0], env.get(ENV_CONSUL_TOKEN))
    else:
        endpoints = parse_addresses(addr, tls_default=tls_default, insecure=insecure)
    return ClientSettings(
        endpoints=endpoints,
        replicas=replicas,
        replicas_tls=tls_default and not insecure,
        token=token,
        cacert=read_pem(cacert, "CA certificate"),
        client_cert=read_pem(client_cert, "client certificate"),
        client_key=read_pem(client_key, "client key"),
        timeout=timeout,
        retry_deadline=retry_deadline,
        dev_pid=_dev_pid(env.get(ENV_DEV_PID)),
        tls_files=_tls_files(cacert, client_cert, client_key),
    )


def _tls_files(*paths: str | os.PathLike[str] | None) -> TlsFiles | None:
    given = [Path(p) if p is not None and str(p) else None for p in paths]
    return TlsFiles(*given) if any(given) else None
