"""Authorization: may this identity use this capability on this resource?

The single place every servicer asks. Until policies land (the access issue), every
authenticated identity is allowed everything, exactly as the dev policy will be.
"""

from __future__ import annotations

import enum
from typing import Protocol

from latchkey_server.models import Identity


class ResourceKind(enum.Enum):
    SECRET = "secret"
    DATABASE = "database"
    CONFIG = "config"
    SERVICE = "service"
    GATEWAY = "gateway"


class Authorizer(Protocol):
    def authorize(
        self, identity: Identity, kind: ResourceKind, resource: str, capability: str
    ) -> None:
        """Return if allowed; raise `PermissionDenied` otherwise."""


class AllowAuthenticated:
    """Allows every authenticated identity (the behaviour until policies are configured)."""

    def authorize(
        self, identity: Identity, kind: ResourceKind, resource: str, capability: str
    ) -> None:
        return None
