"""The gateway replicas Consul lists as passing, kept current (for `consul://` addresses)."""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable

from latchkey._async._backend import AsyncBackgroundTask, AsyncLock, AsyncSignal, run_blocking
from latchkey._consul import ConsulReplicas, PassingQuery
from latchkey._errors import LatchkeyError, Unavailable
from latchkey._retry import Backoff
from latchkey._settings import Endpoint

log = logging.getLogger("latchkey")

FIRST_ANSWER_TIMEOUT = 10.0
"""How long the first call waits for Consul's first answer before failing (UNAVAILABLE)."""


class AsyncReplicaList:
    """Runs Consul's blocking health query for the gateway's service and hands every new set
    of passing instances to `on_change`. An empty set, or Consul out of reach, keeps the last
    set (the replicas may well be up; the calls themselves fail over)."""

    def __init__(
        self,
        replicas: ConsulReplicas,
        tls: bool,
        on_change: Callable[[tuple[Endpoint, ...]], None],
        backoff: Backoff | None = None,
    ) -> None:
        self.replicas = replicas
        self._tls = tls
        self._on_change = on_change
        self._query = PassingQuery(replicas)
        self._backoff = backoff or Backoff(initial=0.2, maximum=5.0)
        self._answered = AsyncSignal()
        self._stop = AsyncSignal()
        self._task: AsyncBackgroundTask | None = None
        self._starting = AsyncLock()
        self._error: LatchkeyError | None = None
        self.endpoints: tuple[Endpoint, ...] = ()
        """The last non-empty set of passing instances."""

    async def ready(self) -> tuple[Endpoint, ...]:
        """The replicas known now; the first call starts the query and waits for its answer.
        Raises `Unavailable` when none is known (Consul unreachable, or no passing instance)."""
        async with self._starting:
            if self._task is None:
                if self._stop.is_set():
                    raise LatchkeyError("the client is closed")
                self._task = AsyncBackgroundTask(self._run, name="latchkey-replicas")
        if not self.endpoints:
            await self._answered.wait(FIRST_ANSWER_TIMEOUT)
        if self.endpoints:
            return self.endpoints
        if self._error is not None:
            raise self._error
        raise Unavailable(
            f"Consul lists no passing instance of service {self.replicas.service!r} "
            f"({self.replicas.describe()}): is a gateway running, registered in Consul "
            "(replica.register_service), and passing its check?",
            retry_after=1.0,
        )

    async def _run(self) -> None:
        index = 0
        attempt = 0
        while not self._stop.is_set():
            try:
                new_index, targets = await run_blocking(
                    functools.partial(self._query.fetch, index), "latchkey-consul-query"
                )
            except LatchkeyError as exc:
                if self._stop.is_set():
                    return
                if self._error is None:
                    log.warning("finding gateway replicas in Consul failed: %s", exc.message)
                self._error = exc
                self._answered.set()
                await self._stop.wait(self._backoff.delay(attempt))
                attempt = min(attempt + 1, 10)
                index = 0
                continue
            if self._error is not None:
                log.warning("finding gateway replicas in Consul works again")
            self._error = None
            attempt = 0
            index = new_index if new_index >= index else 0  # Consul's index went back: reset
            endpoints = tuple(Endpoint(target=t, tls=self._tls) for t in targets)
            if endpoints and endpoints != self.endpoints:
                self.endpoints = endpoints
                self._on_change(endpoints)
            elif not endpoints and self.endpoints:
                log.warning(
                    "Consul lists no passing instance of %s; keeping the last known replicas",
                    self.replicas.service,
                )
            self._answered.set()

    async def aclose(self) -> None:
        self._stop.set()
        self._query.abort()
        if self._task is not None:
            await self._task.join()
