"""Logical requests and responses, and the backend base class with its path router."""

from __future__ import annotations

import enum
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from latchkey_server.devvault.errors import unsupported_operation, unsupported_path
from latchkey_server.devvault.ttl import MountTTLs

if TYPE_CHECKING:
    from latchkey_server.devvault.leases import Lease
    from latchkey_server.devvault.tokens import Token


class Operation(enum.StrEnum):
    READ = "read"
    LIST = "list"
    CREATE = "create"
    UPDATE = "update"
    DELETE = "delete"
    PATCH = "patch"


WRITE_OPS = frozenset({Operation.CREATE, Operation.UPDATE})


@dataclass
class Mount:
    """A mounted backend: secrets engine under its path, or an auth method under ``auth/``."""

    path: str  # with trailing slash, e.g. "secret/" or "auth/approle/"
    type: str
    backend: Backend
    accessor: str
    uuid: str
    description: str = ""
    options: dict[str, str] | None = None
    local: bool = False
    seal_wrap: bool = False
    default_lease_ttl: int = 0
    max_lease_ttl: int = 0
    is_auth: bool = False

    def ttls(self) -> MountTTLs:
        system = MountTTLs()
        default = self.default_lease_ttl or system.default_ttl
        maximum = self.max_lease_ttl or system.max_ttl
        return MountTTLs(default_ttl=min(default, maximum), max_ttl=maximum)


@dataclass
class Request:
    operation: Operation
    path: str  # full logical path
    rel: str  # relative to the mount
    data: dict[str, Any]
    token: Token | None
    mount: Mount
    match: re.Match[str] | None = None
    is_root: bool = False
    has_sudo: bool = False


@dataclass
class SecretGrant:
    """A backend asking the core to register a lease for the secret it returns."""

    ttl: int
    renewable: bool
    internal: dict[str, Any]


@dataclass
class Response:
    data: dict[str, Any] | None = None
    auth: dict[str, Any] | None = None
    warnings: list[str] = field(default_factory=list)
    secret: SecretGrant | None = None
    lease_id: str = ""
    renewable: bool = False
    lease_duration: int = 0
    status: int | None = None
    inject_top_level: bool = False


Handler = Callable[[Request], Awaitable[Response | None]]
Existence = Callable[[Request], Awaitable[bool]]


@dataclass
class Route:
    regex: re.Pattern[str]
    handlers: dict[Operation, Handler]
    exists: Existence | None = None


@dataclass
class RenewResult:
    ttl: int
    warnings: list[str] = field(default_factory=list)


class Backend:
    """A backend: a list of routes, plus lease hooks for engines that issue secrets."""

    type_name = "unknown"

    def __init__(self) -> None:
        self.routes: list[Route] = []
        self.mount: Mount | None = None

    def route(
        self, pattern: str, handlers: dict[Operation, Handler], exists: Existence | None = None
    ) -> None:
        self.routes.append(Route(re.compile(pattern), handlers, exists))

    def find(self, rel: str) -> tuple[Route, re.Match[str]] | None:
        for route in self.routes:
            match = route.regex.fullmatch(rel)
            if match is not None:
                return route, match
        return None

    async def exists(self, req: Request) -> bool | None:
        """Whether the write target exists (None: this path has no existence check)."""
        found = self.find(req.rel)
        if found is None or found[0].exists is None:
            return None
        req.match = found[1]
        return await found[0].exists(req)

    async def handle(self, req: Request) -> Response | None:
        found = self.find(req.rel)
        if found is None:
            return await self.unsupported_path(req)
        route, match = found
        handler = route.handlers.get(req.operation)
        if handler is None and req.operation is Operation.CREATE:
            handler = route.handlers.get(Operation.UPDATE)
        if handler is None and req.operation is Operation.UPDATE:
            handler = route.handlers.get(Operation.CREATE)
        if handler is None:
            raise unsupported_operation()
        req.match = match
        return await handler(req)

    async def unsupported_path(self, req: Request) -> Response | None:
        raise unsupported_path()

    async def revoke_secret(self, lease: Lease) -> None:
        """Revoke the secret behind a lease (raise to keep the lease)."""

    async def renew_secret(self, lease: Lease, increment: int, now: float) -> RenewResult:
        raise NotImplementedError

    def token_params(self, role_name: str) -> tuple[int, int, int] | None:
        """Current (ttl, max_ttl, period) for renewing a token this auth method issued."""
        return None

    async def close(self) -> None:
        """Release resources when unmounted or at shutdown."""
