"""The seam between self-registration (`brokers/registrations.py`) and the Consul agent.

The real one is `upstreams/_consul_agent.py`, which sends every request through the Consul
adapter's one request path (its request budget, connection budget, timeouts, reachability,
metrics and error table). Nothing here decides anything.

Every method raises domain errors: `Unavailable` when Consul cannot be reached or answers with
an error, `InvalidArgument` when the agent rejects the registration (its message says why).
"""

from __future__ import annotations

from typing import Protocol

from latchkey_server.models import CheckStatus, ServiceRegistration
from latchkey_server.upstreams.consul_port import WatchSlots


class AgentServices(Protocol):
    """What self-registration needs from the local Consul agent, and nothing more."""

    @property
    def watch_slots(self) -> WatchSlots:
        """The adapter's blocking capacity (each registration's check watch takes a slot)."""
        ...

    @property
    def reachable(self) -> bool:
        """Whether Consul answered the most recent request."""
        ...

    async def register_service(self, registration: ServiceRegistration) -> None:
        """Register (or re-register: the same id replaces) the instance and its checks."""
        ...

    async def deregister_service(self, instance_id: str) -> None:
        """Remove the instance and its checks; an unknown id succeeds."""
        ...

    async def pass_ttl(self, check_id: str, note: str) -> bool:
        """Mark a TTL check passing; False when the agent no longer knows the check (it lost
        the registration, e.g. it restarted)."""
        ...

    async def service_checks(
        self, service: str, instance_id: str, index: int | None = None, wait: float | None = None
    ) -> tuple[int, list[CheckStatus]]:
        """The checks of one instance, sorted by id (blocking when `index` is given); empty
        when Consul does not know the instance."""
        ...
