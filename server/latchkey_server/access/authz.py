"""Authorization: may this identity use this capability on this resource?

`PolicyAuthorizer` (access/policies.py) is the real one; servicers reach it through the
`AccessGate` (access/gate.py). Deny by default: with no policies configured, `DenyAll`.
"""

from __future__ import annotations

import enum
from typing import Protocol

from latchkey_server.errors import PermissionDenied
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

    def allows(
        self, identity: Identity, kind: ResourceKind, resource: str, capability: str
    ) -> bool:
        """The same decision as a boolean."""


class AllowAuthenticated:
    """Allows every authenticated identity (for tests of other rooms; never the server default)."""

    def authorize(
        self, identity: Identity, kind: ResourceKind, resource: str, capability: str
    ) -> None:
        return None

    def allows(
        self, identity: Identity, kind: ResourceKind, resource: str, capability: str
    ) -> bool:
        return True


class DenyAll:
    """Deny by default when no policies are configured."""

    def authorize(
        self, identity: Identity, kind: ResourceKind, resource: str, capability: str
    ) -> None:
        raise PermissionDenied(
            "no access policies are configured on this gateway (auth.policies_dir); "
            "everything is denied"
        )

    def allows(
        self, identity: Identity, kind: ResourceKind, resource: str, capability: str
    ) -> bool:
        return False
