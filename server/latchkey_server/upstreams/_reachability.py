"""Whether an upstream answered its most recent request, since when, and who wants to know."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable
from datetime import UTC, datetime

from latchkey_server.upstreams.vault_port import ReachabilityListener

log = logging.getLogger("latchkey.upstreams")


class Reachability:
    """Reachability of one upstream, fed by the outcome of every request (`note`)."""

    def __init__(self, name: str, clock: Callable[[], float]) -> None:
        self._name = name
        self._clock = clock
        self.reachable = True
        """Whether the upstream answered the most recent request."""
        self.last_contact: datetime | None = None
        """When the upstream last answered (None: never)."""
        self._listeners: list[ReachabilityListener] = []

    def add_listener(self, listener: ReachabilityListener) -> Callable[[], None]:
        """Call `listener(reachable)` on every change; returns the function that unsubscribes."""
        self._listeners.append(listener)

        def remove() -> None:
            with contextlib.suppress(ValueError):
                self._listeners.remove(listener)

        return remove

    def note(self, *, answered: bool) -> None:
        """Record the outcome of a request: did the upstream answer (whatever it said)?"""
        if answered:
            self.last_contact = datetime.fromtimestamp(self._clock(), UTC)
        if answered == self.reachable:
            return
        self.reachable = answered
        log.warning("%s is %s", self._name, "reachable again" if answered else "unreachable")
        for listener in list(self._listeners):
            try:
                listener(answered)
            except Exception:
                log.exception("reachability listener failed")
