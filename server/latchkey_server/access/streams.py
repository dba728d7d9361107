"""Open streams and the grant each was opened under, so a policy reload can end them.

A stream whose grant is revoked ends with PERMISSION_DENIED at its next event; every stream
carries a heartbeat at least every `heartbeat_interval`, so that is the longest it can outlive
a narrowing reload.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

from latchkey_server.access.authz import ResourceKind
from latchkey_server.errors import PermissionDenied, ResourceExhausted
from latchkey_server.models import Identity

Allows = Callable[[Identity, ResourceKind, str, str], bool]


@dataclass(eq=False)
class Grant:
    identity: Identity
    kind: ResourceKind
    resource: str
    capability: str
    revoked: bool = False
    _registry: StreamGrants | None = field(default=None, repr=False)

    def check(self) -> None:
        """Raise PermissionDenied if a policy reload withdrew this stream's access."""
        if self.revoked:
            raise PermissionDenied(
                f"access to {self.kind.value} {self.resource!r} was withdrawn by a policy "
                "reload; this stream is closed"
            )

    def close(self) -> None:
        if self._registry is not None:
            self._registry.release(self)
            self._registry = None


class StreamGrants:
    """Registry of open streams, with a cap on concurrent streams per identity."""

    def __init__(self, max_per_identity: int = 1000) -> None:
        self._max = max_per_identity
        self._open: set[Grant] = set()
        self._per_identity: Counter[str] = Counter()

    def open(self, identity: Identity, kind: ResourceKind, resource: str, capability: str) -> Grant:
        if self._per_identity[identity.name] >= self._max:
            raise ResourceExhausted(
                f"identity {identity.name!r} already has {self._max} open streams (the limit); "
                "close some before opening more",
                retry_after=5.0,
            )
        grant = Grant(identity, kind, resource, capability, _registry=self)
        self._open.add(grant)
        self._per_identity[identity.name] += 1
        return grant

    def release(self, grant: Grant) -> None:
        if grant in self._open:
            self._open.discard(grant)
            self._per_identity[grant.identity.name] -= 1
            if self._per_identity[grant.identity.name] <= 0:
                del self._per_identity[grant.identity.name]

    def recheck(self, allows: Allows) -> int:
        """Mark every open stream no longer allowed as revoked; return how many."""
        revoked = 0
        for grant in list(self._open):
            if not grant.revoked and not allows(
                grant.identity, grant.kind, grant.resource, grant.capability
            ):
                grant.revoked = True
                revoked += 1
        return revoked

    def by_kind(self) -> Counter[str]:
        """Open streams per resource kind (for metrics)."""
        return Counter(grant.kind.value for grant in self._open)

    def count(self, identity: str | None = None) -> int:
        return len(self._open) if identity is None else self._per_identity[identity]
