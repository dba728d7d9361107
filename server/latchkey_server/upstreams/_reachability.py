"""What the gateway knows of Vault's state: does it answer, does it accept the gateway, since
when, and who wants to know."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable
from datetime import UTC, datetime

from latchkey_server.upstreams.vault_port import StateListener

log = logging.getLogger("latchkey.upstreams")


class Reachability:
    """Reachability of one upstream, fed by the outcome of every request (`note`), and whether
    it refuses the gateway's credentials (`note_refused`)."""

    def __init__(self, name: str, clock: Callable[[], float]) -> None:
        self._name = name
        self._clock = clock
        self.reachable = True
        """Whether the upstream answered the most recent request."""
        self.refused = False
        """Whether the upstream refused the gateway's most recent attempt to authenticate."""
        self.last_contact: datetime | None = None
        """When the upstream last answered (None: never)."""
        self._listeners: list[StateListener] = []

    def add_listener(self, listener: StateListener) -> Callable[[], None]:
        """Call `listener()` on every change; returns the function that unsubscribes."""
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
        self._changed()

    def note_refused(self, refused: bool) -> None:
        """Record whether the upstream just refused (or accepted) the gateway's credentials."""
        if refused == self.refused:
            return
        self.refused = refused
        if refused:
            log.warning("%s refuses the gateway's credentials", self._name)
        else:
            log.warning("%s accepts the gateway's credentials again", self._name)
        self._changed()

    def _changed(self) -> None:
        for listener in list(self._listeners):
            try:
                listener()
            except Exception:
                log.exception("state listener failed")
