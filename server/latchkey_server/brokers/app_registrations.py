"""Self-registration held by a stream: an instance lives in Consul while its stream is open.

`RegistrationBroker.hold(registration)` registers the instance with the local agent, yields
`InstanceRegistered`, then `InstanceHealth` whenever a check's status changes (and first once
Consul reports the checks), and heartbeats; when the stream ends, however it ends, the instance
is deregistered. While it is held:

- its checks are followed with one blocking query (`/v1/health/checks/<service>` filtered to
  the instance), run by the one Consul watch loop (`ConsulWatch`: its pacing, backoff, index
  rules); each registration takes one of the adapter's dedicated blocking slots, and a gateway
  with none free refuses more registrations (RESOURCE_EXHAUSTED) rather than starve watches;
- the TTL check, when there is one, is passed every third of its TTL;
- when Consul loses the instance (the agent restarted: the TTL pass names an unknown check, or
  the checks seen before are gone) it is registered again, with backoff;
- while Consul cannot be reached, heartbeats say so (stale, upstream UNREACHABLE).

Every check carries DeregisterCriticalServiceAfter: if the gateway dies without deregistering,
Consul removes the instance once a check has been critical that long (the TTL check goes
critical one TTL after the gateway stopped passing it).

`close(error)` (drain, shutdown) ends every stream with `error` and deregisters every instance
before it returns.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncGenerator
from datetime import datetime

from latchkey_server.backoff import Backoff
from latchkey_server.brokers.consul_watch import ConsulWatch, WatchSettings
from latchkey_server.brokers.fanout import Subscriber
from latchkey_server.errors import (
    FailedPrecondition,
    LatchkeyError,
    ResourceExhausted,
    Unavailable,
)
from latchkey_server.models import (
    CheckKind,
    CheckStatus,
    Freshness,
    HealthStatus,
    Heartbeat,
    InstanceHealth,
    InstanceRegistered,
    RegistrationEvent,
    ServiceRegistration,
    utcnow,
)
from latchkey_server.upstreams.agent_port import AgentServices, InstanceChecks, ServiceDefinition

__all__ = ["RegistrationBroker", "definition", "worst"]

log = logging.getLogger(__name__)

_SEVERITY = {HealthStatus.PASSING: 0, HealthStatus.WARNING: 1, HealthStatus.CRITICAL: 2}


def worst(checks: tuple[CheckStatus, ...]) -> HealthStatus:
    """The worst status among `checks` (PASSING with none)."""
    status = HealthStatus.PASSING
    for check in checks:
        if _SEVERITY[check.status] > _SEVERITY[status]:
            status = check.status
    return status


def definition(reg: ServiceRegistration) -> ServiceDefinition:
    """The agent registration of an app's instance: its TTL check (if any) and the checks
    Consul runs."""
    ttl = next((c for c in reg.checks if c.kind is CheckKind.TTL), None)
    return ServiceDefinition(
        id=reg.instance_id,
        name=reg.service,
        port=reg.port,
        address=reg.address,
        tags=reg.tags,
        meta=reg.meta,
        check_id=ttl.check_id if ttl else "",
        check_ttl=ttl.interval if ttl else 10.0,
        deregister_after=ttl.deregister_after if ttl else 60.0,
        ttl_check=ttl is not None,
        checks=tuple(c for c in reg.checks if c.kind is not CheckKind.TTL),
    )


class _Held:
    """One registration and the stream holding it."""

    def __init__(
        self, broker: RegistrationBroker, registration: ServiceRegistration, settings: WatchSettings
    ) -> None:
        self.broker = broker
        self.reg = registration
        self.sub: Subscriber[RegistrationEvent] = Subscriber(maxsize=1)
        """Latest-value: a health event carries every check, so a newer one replaces it."""
        self.watch: ConsulWatch[list[CheckStatus]] = ConsulWatch(
            f"checks:{registration.instance_id}", self._fetch, self, settings
        )
        self.index = 0
        self.confirmed_at: datetime | None = None
        self.reachable = True
        self.statuses: tuple[tuple[str, HealthStatus], ...] | None = None
        self.seen = False
        """Consul listed the instance's checks since it was (last) registered."""
        self.registrations = 0
        """Times registered with the agent (again after Consul lost it)."""
        self.deregistered = False
        self._tasks: list[asyncio.Task[None]] = []
        self._reregistering: asyncio.Task[None] | None = None
        self.ttl = next((c for c in registration.checks if c.kind is CheckKind.TTL), None)

    async def _fetch(self, index: int | None, wait: float | None) -> tuple[int, list[CheckStatus]]:
        return await self.broker.checks.service_checks(
            self.reg.service, self.reg.instance_id, index, wait
        )

    def start(self) -> None:
        self.watch.start()
        if self.ttl is not None:
            loop = asyncio.get_running_loop()
            self._tasks.append(loop.create_task(self._pass_ttl(self.ttl.check_id)))

    def freshness(self) -> Freshness:
        reachable = self.reachable and self.broker.checks.reachable
        return Freshness(
            index=self.index,
            confirmed_at=self.confirmed_at,
            stale=not reachable,
            reachable=reachable,
        )

    # WatchOwner
    def on_response(self, index: int, payload: list[CheckStatus], reset: bool) -> None:
        self.index = index
        self.confirmed_at = utcnow()
        if not payload:
            if self.seen:
                self.lost("Consul no longer lists the instance")
            return
        self.seen = True
        statuses = tuple((c.check_id, c.status) for c in payload)
        if statuses == self.statuses:
            return
        self.statuses = statuses
        checks = tuple(payload)
        self.sub.replace(InstanceHealth(worst(checks), checks, self.freshness()))

    def on_reachability(self, reachable: bool, error: LatchkeyError | None) -> None:
        self.reachable = reachable
        self.sub.request_heartbeat()

    async def _pass_ttl(self, check_id: str) -> None:
        assert self.ttl is not None
        every = self.ttl.interval / 3.0
        while True:
            try:
                known = await self.broker.agent.pass_check(check_id, "the latchkey stream is open")
            except LatchkeyError as exc:  # Consul down: the check watch reports it
                log.debug("registration %s: TTL pass failed: %s", self.reg.instance_id, exc)
            else:
                if not known:
                    self.lost("the agent no longer knows its TTL check")
            await asyncio.sleep(every)

    def lost(self, why: str) -> None:
        """Consul lost the registration: register it again (once at a time, with backoff)."""
        if self._reregistering is not None and not self._reregistering.done():
            return
        log.info("registration %s: %s; registering it again", self.reg.instance_id, why)
        self.seen = False
        self._reregistering = asyncio.get_running_loop().create_task(self._reregister())

    async def _reregister(self) -> None:
        backoff = Backoff(0.2, 5.0)
        while True:
            try:
                await self.broker.agent.register(definition(self.reg))
            except LatchkeyError as exc:
                log.debug("registration %s: again failed: %s", self.reg.instance_id, exc)
                await asyncio.sleep(backoff.next_delay())
                continue
            self.registrations += 1
            self.broker.reregistrations += 1
            return

    async def stop(self) -> None:
        tasks = [*self._tasks, self._reregistering] if self._reregistering else self._tasks
        for task in tasks:
            task.cancel()
        await self.watch.stop()
        await asyncio.gather(*tasks, return_exceptions=True)


class RegistrationBroker:
    """Registrations held by streams (module docstring)."""

    def __init__(
        self,
        agent: AgentServices,
        checks: InstanceChecks,
        *,
        heartbeat_interval: float = 10.0,
        watch_settings: WatchSettings | None = None,
    ) -> None:
        self.agent = agent
        self.checks = checks
        self.heartbeat_interval = heartbeat_interval
        self.watch_settings = watch_settings or WatchSettings()
        self._held: dict[str, _Held] = {}
        self._cleanup: set[asyncio.Task[None]] = set()
        self._closed: LatchkeyError | None = None
        self.reregistrations = 0
        """Registrations made again because Consul lost them (counter)."""

    @property
    def active(self) -> int:
        """Instances registered by open streams."""
        return len(self._held)

    async def start(self) -> None:
        self._closed = None

    async def hold(
        self, registration: ServiceRegistration
    ) -> AsyncGenerator[RegistrationEvent, None]:
        """Register, yield events while the caller iterates, deregister when it stops."""
        if self._closed is not None:
            raise self._closed
        instance_id = registration.instance_id
        if instance_id in self._held:
            raise FailedPrecondition(
                f"instance {instance_id!r} is already registered by another open stream on "
                "this gateway; choose another id (or none: the gateway makes one)"
            )
        slots = self.checks.watch_slots
        if not slots.try_dedicated():
            raise ResourceExhausted(
                "this gateway has no Consul connection left to follow one more registration "
                "(consul.max_connections); retry later or on another gateway",
                retry_after=5.0,
            )
        held = _Held(self, registration, self.watch_settings)
        self._held[instance_id] = held
        try:
            await self.agent.register(definition(registration))
            held.registrations = 1
            yield InstanceRegistered(
                instance_id,
                registration.address,
                registration.port,
                tuple(c.check_id for c in registration.checks),
            )
            held.start()
            async for event in held.sub.stream(
                self.heartbeat_interval, lambda: Heartbeat(held.freshness())
            ):
                yield event
        finally:
            slots.release_dedicated()
            if self._held.get(instance_id) is held:
                del self._held[instance_id]
            task = asyncio.get_running_loop().create_task(self._end(held))
            self._cleanup.add(task)
            task.add_done_callback(self._cleanup.discard)
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.shield(task)

    async def _end(self, held: _Held) -> None:
        await held.stop()
        if held.deregistered or not held.registrations:
            return  # never registered: an instance of that id, if any, is not ours
        held.deregistered = True
        try:
            await self.agent.deregister(held.reg.instance_id)
        except LatchkeyError as exc:
            log.warning(
                "could not deregister %s (%s); Consul removes it once its checks have been "
                "critical for DeregisterCriticalServiceAfter",
                held.reg.instance_id,
                exc.message,
            )

    async def close(self, error: LatchkeyError | None = None) -> None:
        """End every stream with `error` and deregister every instance (drain, shutdown)."""
        self._closed = error or Unavailable("the gateway is shutting down", retry_after=1.0)
        held = list(self._held.values())
        # Deregister before the streams end: a client that reconnects at once to another
        # gateway on the same agent registers the same id again, which must come after.
        await asyncio.gather(*(self._end(h) for h in held), return_exceptions=True)
        for h in held:
            h.sub.close(self._closed)
        await asyncio.gather(*list(self._cleanup), return_exceptions=True)
