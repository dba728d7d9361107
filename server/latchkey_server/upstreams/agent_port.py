"""The seam between registering services in Consul and Consul's agent service API.

`brokers/registration.py` (the gateway's own instance) depends on `AgentServices` only;
`brokers/app_registrations.py` (apps' instances, `Discovery.Register`) on `AgentServices` and
`InstanceChecks`. The real one is `upstreams/_consul_agent.py`, which sends every request
through the Consul adapter's one request path. Registration is agent-local (the agent syncs it
to the catalog); the TTL check is one the registrant keeps passing, other checks (HTTP, TCP,
gRPC) Consul runs itself, each with `DeregisterCriticalServiceAfter` as a backstop.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Protocol

from latchkey_server.models import CheckSpec, CheckStatus
from latchkey_server.upstreams.consul_port import WatchSlots


@dataclass(frozen=True, slots=True)
class ServiceDefinition:
    """One service instance with its checks (a TTL check, and/or checks Consul runs), as
    registered in the local Consul agent."""

    id: str
    """Instance id (unique per agent)."""
    name: str
    """Service name."""
    port: int
    address: str = ""
    """Address clients dial; "" lets Consul give them the node's address."""
    tags: tuple[str, ...] = ()
    meta: Mapping[str, str] = field(default_factory=dict)
    check_id: str = ""
    """The TTL check's id ("" : `service:<id>`)."""
    check_ttl: float = 10.0
    """Seconds without a pass before the check turns critical."""
    deregister_after: float = 60.0
    """Seconds critical before the agent removes the instance (Consul's minimum is 60)."""
    ttl_check: bool = True
    """Register the TTL check (the registrant passes it); False: only `checks`."""
    checks: tuple[CheckSpec, ...] = ()
    """Checks Consul runs itself (HTTP, TCP, gRPC), each with its own timing and backstop."""

    @property
    def ttl_check_id(self) -> str:
        return self.check_id or f"service:{self.id}"


class AgentServices(Protocol):
    """What registering a service needs from the Consul agent, and nothing more."""

    async def register(self, service: ServiceDefinition) -> None:
        """Register (or replace) the instance and its TTL check, which starts passing."""
        ...

    async def pass_check(self, check_id: str, note: str = "") -> bool:
        """Mark the TTL check passing; False when the agent does not know the check (it lost
        the registration: register again)."""
        ...

    async def deregister(self, service_id: str) -> None:
        """Remove the instance and its checks (an unknown id is a no-op)."""
        ...


class InstanceChecks(Protocol):
    """What following a registered instance's checks needs from Consul."""

    @property
    def watch_slots(self) -> WatchSlots:
        """The adapter's blocking capacity (following an instance takes a dedicated slot)."""
        ...

    @property
    def reachable(self) -> bool:
        """Whether Consul answered the most recent request."""
        ...

    async def service_checks(
        self, service: str, instance_id: str, index: int | None = None, wait: float | None = None
    ) -> tuple[int, list[CheckStatus]]:
        """The checks of one instance, sorted by id (blocking when `index` is given); empty
        when Consul does not know the instance."""
        ...
