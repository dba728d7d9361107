"""This replica as an instance of service `latchkey` in its Consul agent.

Apps and the CLI find replicas through Consul (`LATCHKEY_ADDR=consul://AGENT/latchkey`): the
passing instances of the service are the failover list. A replica registers once it accepts
calls, with a TTL check (the replica's session TTL) that its session loop passes at every
renewal (`Replica._keep`): a replica that stops renewing turns critical within that TTL and
drops out of the list; `DeregisterCriticalServiceAfter` removes what a killed replica left. A
graceful stop deregisters right after health turns NOT_SERVING, before streams are drained, so
clients refreshing their list move away first. If the agent lost the registration (it
restarted), the next pass registers again.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from latchkey_server import __version__
from latchkey_server.errors import LatchkeyError, Unavailable
from latchkey_server.upstreams.agent_port import AgentServices, ServiceDefinition

log = logging.getLogger("latchkey.brokers.registration")

WILDCARDS = frozenset({"", "0.0.0.0", "::", "[::]", "*"})


@dataclass(frozen=True, slots=True)
class RegistrationConfig:
    service: str = "latchkey"
    """Consul service name."""
    address: str = ""
    """Advertised address ("" : the listen host, or the agent's node address when the gateway
    listens on a wildcard address)."""
    port: int = 0
    """Advertised port (0: the port the gateway bound)."""
    tags: tuple[str, ...] = ()
    deregister_after: float = 60.0
    """`DeregisterCriticalServiceAfter`, seconds (Consul's minimum is 60)."""
    tls: bool = True
    """Whether the gateway serves TLS (recorded in the instance's meta)."""


def advertised(listen: str, config: RegistrationConfig, bound_port: int) -> tuple[str, int]:
    """The address and port clients dial: the configured ones, else the listen host (none when
    it is a wildcard: Consul then hands out the node's address) and the bound port."""
    host = listen.rsplit(":", 1)[0] if ":" in listen else listen
    address = config.address or ("" if host in WILDCARDS else host.strip("[]"))
    return address, config.port or bound_port


class Registration:
    """Register, keep passing, and deregister one replica's service instance."""

    def __init__(
        self, config: RegistrationConfig, agent: AgentServices, replica_id: str, check_ttl: float
    ) -> None:
        self.config = config
        self._agent = agent
        self._replica = replica_id
        self._check_ttl = check_ttl
        self._definition: ServiceDefinition | None = None
        self._failing = False

    @property
    def definition(self) -> ServiceDefinition | None:
        """What is registered now (None before `register` and after `withdraw`)."""
        return self._definition

    async def register(self, listen: str, bound_port: int) -> None:
        address, port = advertised(listen, self.config, bound_port)
        definition = ServiceDefinition(
            id=self._replica,
            name=self.config.service,
            address=address,
            port=port,
            tags=self.config.tags,
            meta={
                "replica": self._replica,
                "version": __version__,
                "tls": "true" if self.config.tls else "false",
            },
            check_id=f"{self.config.service}:{self._replica}",
            check_ttl=self._check_ttl,
            deregister_after=max(60.0, self.config.deregister_after),
        )
        try:
            await self._agent.register(definition)
        except LatchkeyError as exc:
            raise Unavailable(
                f"cannot register this replica in Consul as service {self.config.service!r} "
                f"({exc.message}); with Consul ACLs its token needs service "
                f'"{self.config.service}" {{ policy = "write" }}, or set replica.register_service '
                "false (LATCHKEY_REPLICA__REGISTER_SERVICE=false)",
                retry_after=exc.retry_after,
            ) from exc
        self._definition = definition
        log.info(
            "replica %s registered as service %s at %s:%d", self._replica, definition.name,
            address or "<node address>", port,
        )  # fmt: skip

    async def heartbeat(self) -> None:
        """Pass the TTL check (register again when the agent forgot it). Never raises: a failed
        pass is logged once per outage, and the check turns critical by itself."""
        definition = self._definition
        if definition is None:
            return
        try:
            if not await self._agent.pass_check(definition.ttl_check_id, "session renewed"):
                log.warning(
                    "replica %s: the Consul agent lost its registration; registering again",
                    self._replica,
                )
                await self._agent.register(definition)
        except LatchkeyError as exc:
            if not self._failing:
                log.warning("replica %s: passing its Consul check failed: %s",
                            self._replica, exc.message)  # fmt: skip
            self._failing = True
            return
        self._failing = False

    async def withdraw(self) -> None:
        """Deregister (idempotent; a failure is logged, the backstop removes it)."""
        definition, self._definition = self._definition, None
        if definition is None:
            return
        try:
            await self._agent.deregister(definition.id)
        except LatchkeyError as exc:
            log.warning(
                "replica %s: deregistering from Consul failed (%s); the agent removes it %gs "
                "after its check turns critical", self._replica, exc.message,
                definition.deregister_after,
            )  # fmt: skip
            return
        log.info("replica %s deregistered service %s", self._replica, definition.name)
