"""A `Discovery.Register` request as a `ServiceRegistration`, validated field by field.

Limits follow Consul's own where it has them (64 meta entries, meta keys of letters, digits,
`-` and `_`, no `consul-` prefix, DeregisterCriticalServiceAfter of at least a minute) and are
otherwise what keeps one registration small (32 tags, 8 checks).
"""

from __future__ import annotations

import re
import secrets
from urllib.parse import unquote, urlsplit

from latchkey.v1 import discovery_pb2
from latchkey_server.errors import InvalidArgument
from latchkey_server.models import CheckKind, CheckSpec, ServiceRegistration
from latchkey_server.transport import validate

MAX_TAGS = 32
MAX_META = 64
MAX_META_VALUE = 512
MAX_CHECKS = 8
MAX_TARGET = 512
DEFAULT_INTERVAL = 10.0
DEFAULT_TIMEOUT = 5.0
DEREGISTER_MIN = 60.0
"""Consul's reaper never removes an instance sooner (it runs every 30 s, floor one minute)."""
STREAM_TTL_MIN = 3.0

_META_KEY = re.compile(r"^[A-Za-z0-9_-]{1,128}$")
_HOST_PORT = re.compile(r"^(?:\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9.-]+):(\d{1,5})(/[A-Za-z0-9._/-]*)?$")
_ADDRESS = re.compile(r"^(?:[A-Za-z0-9.-]{1,253}|[0-9A-Fa-f:.]{2,45})$")


def peer_host(peer: str) -> str:
    """The host of a gRPC peer string (`ipv4:10.0.0.5:5312`, `ipv6:%5B::1%5D:5312`); '' when it
    has none (a Unix socket)."""
    kind, _, rest = peer.partition(":")
    if kind not in ("ipv4", "ipv6"):
        return ""
    host, _, _port = unquote(rest).rpartition(":")
    return host.strip("[]")


def _check(n: int, spec: discovery_pb2.ServiceCheck, instance_id: str) -> CheckSpec:
    field = f"checks[{n}]"
    which = spec.WhichOneof("target")
    if which is None:
        raise InvalidArgument(f"{field} needs a target: http (a URL), tcp or grpc (host:port)")
    target = getattr(spec, which)
    if not target or len(target) > MAX_TARGET:
        raise InvalidArgument(f"{field}.{which} must be 1-{MAX_TARGET} characters")
    if which == "http":
        url = urlsplit(target)
        if url.scheme not in ("http", "https") or not url.hostname:
            raise InvalidArgument(
                f"{field}.http must be an http:// or https:// URL, e.g. "
                "http://127.0.0.1:3000/health"
            )
    else:
        match = _HOST_PORT.match(target)
        if match is None or not 1 <= int(match.group(1)) <= 65535:
            raise InvalidArgument(
                f"{field}.{which} must be host:port"
                + ("[/service]" if which == "grpc" else "")
                + " with a port of 1-65535"
            )
        if which == "tcp" and match.group(2):
            raise InvalidArgument(f"{field}.tcp must be host:port, without a path")
    interval = validate.go_duration(
        f"{field}.interval", spec.interval, default=DEFAULT_INTERVAL, low=1.0, high=86400.0
    )
    timeout = validate.go_duration(
        f"{field}.timeout", spec.timeout, default=min(DEFAULT_TIMEOUT, interval), low=0.1,
        high=interval,
    )  # fmt: skip
    deregister = validate.go_duration(
        f"{field}.deregister_critical_after", spec.deregister_critical_after,
        default=DEREGISTER_MIN, low=DEREGISTER_MIN, high=30 * 86400.0,
    )  # fmt: skip
    name = spec.name or f"{which} {target}"
    if len(name) > validate.MAX_NAME:
        raise InvalidArgument(f"{field}.name is longer than {validate.MAX_NAME} characters")
    return CheckSpec(
        kind=CheckKind(which), target=target, interval=interval, timeout=timeout,
        deregister_after=deregister, name=name, check_id=f"service:{instance_id}:{n + 1}",
    )  # fmt: skip


def registration(
    request: discovery_pb2.RegisterRequest, peer: str, *, stream_ttl: float
) -> ServiceRegistration:
    """The instance to register; InvalidArgument naming the field and what to fix."""
    service = validate.name("service", request.service)
    instance_id = (
        validate.name("id", request.id) if request.id else f"{service}-{secrets.token_hex(4)}"
    )
    address = request.address or peer_host(peer)
    if not address:
        raise InvalidArgument("address is required: the caller's peer address has no host")
    if not _ADDRESS.match(address):
        raise InvalidArgument("address must be a host name or an IP address")
    if not 1 <= request.port <= 65535:
        raise InvalidArgument(f"port must be 1-65535 (got {request.port})")
    if len(request.tags) > MAX_TAGS:
        raise InvalidArgument(f"at most {MAX_TAGS} tags (got {len(request.tags)})")
    for tag in request.tags:
        if not tag:
            raise InvalidArgument("tags must not be empty")
        validate.tag(tag)
    if len(request.meta) > MAX_META:
        raise InvalidArgument(f"at most {MAX_META} meta entries (got {len(request.meta)})")
    for key, value in request.meta.items():
        if not _META_KEY.match(key) or key.startswith("consul-"):
            raise InvalidArgument(
                f"meta key {key[:128]!r}: 1-128 letters, digits, '-' or '_', not starting with "
                "'consul-' (reserved by Consul)"
            )
        if len(value) > MAX_META_VALUE:
            raise InvalidArgument(f"meta value of {key!r} is longer than {MAX_META_VALUE}")
    if len(request.checks) > MAX_CHECKS:
        raise InvalidArgument(f"at most {MAX_CHECKS} checks (got {len(request.checks)})")
    ttl = max(STREAM_TTL_MIN, stream_ttl)
    checks = [_check(n, c, instance_id) for n, c in enumerate(request.checks)]
    if request.ttl_check or not checks:
        stream_check = CheckSpec(
            kind=CheckKind.TTL, target="", interval=ttl, timeout=ttl,
            deregister_after=DEREGISTER_MIN, name="latchkey stream",
            check_id=f"service:{instance_id}:stream",
        )  # fmt: skip
        checks.append(stream_check)
    return ServiceRegistration(
        service=service, instance_id=instance_id, address=address, port=request.port,
        tags=tuple(request.tags), meta=dict(request.meta), checks=tuple(checks),
    )  # fmt: skip
