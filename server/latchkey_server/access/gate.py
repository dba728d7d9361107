"""The access gate every servicer asks: authorize, filter, and register streams.

It records each decision on the current request (for the audit log) and keeps the registry of
open streams so a policy reload can end the ones it no longer allows.
"""

from __future__ import annotations

from latchkey_server.access.authz import Authorizer, ResourceKind
from latchkey_server.access.request import current_request
from latchkey_server.access.streams import Grant, StreamGrants
from latchkey_server.errors import PermissionDenied
from latchkey_server.models import Identity


class AccessGate:
    def __init__(self, authorizer: Authorizer, streams: StreamGrants | None = None) -> None:
        self._authz = authorizer
        self.streams = streams or StreamGrants()

    @property
    def authorizer(self) -> Authorizer:
        return self._authz

    def authorize(
        self, identity: Identity, kind: ResourceKind, resource: str, capability: str
    ) -> None:
        """Allow or raise PermissionDenied; the decision is recorded for the audit log."""
        info = current_request()
        if info is not None:
            info.kind, info.resource, info.capability = kind.value, resource, capability
        try:
            self._authz.authorize(identity, kind, resource, capability)
        except PermissionDenied:
            if info is not None:
                info.decision = "deny"
            raise
        if info is not None:
            info.decision = "allow"

    def allows(
        self, identity: Identity, kind: ResourceKind, resource: str, capability: str
    ) -> bool:
        """A silent check (for filtering results), not recorded as the call's decision."""
        return self._authz.allows(identity, kind, resource, capability)

    def open_stream(
        self, identity: Identity, kind: ResourceKind, resource: str, capability: str
    ) -> Grant:
        """Authorize a stream and register it; close the returned grant when the stream ends."""
        self.authorize(identity, kind, resource, capability)
        return self.streams.open(identity, kind, resource, capability)

    def recheck_streams(self) -> int:
        """After a policy reload: mark streams no longer allowed; return how many."""
        return self.streams.recheck(self._authz.allows)
