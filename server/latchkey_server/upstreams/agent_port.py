"""The seam between a gateway registering itself in Consul and Consul's agent service API.

`brokers/registration.py` depends on `AgentServices` only; the real one is
`upstreams/_consul_agent.py`, which sends every request through the Consul adapter's one
request path. Registration is agent-local (the agent syncs it to the catalog); the check is a
TTL check the registrant keeps passing, with `DeregisterCriticalServiceAfter` as a backstop.
Apps registering through the gateway (`Discovery.Register`) need the same three calls.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Protocol


@dataclass(frozen=True, slots=True)
class ServiceDefinition:
    """One service instance with one TTL check, as registered in the local Consul agent."""

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
