"""Counts open connections per database user and waits for the rotated ones to be gone."""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter

log = logging.getLogger("latchkey")


class ConnectionTracker:
    """Open connections per database user (a credential is one user)."""

    def __init__(self) -> None:
        self._open: Counter[str] = Counter()
        self._changed = threading.Condition()

    def opened(self, user: str) -> None:
        with self._changed:
            self._open[user] += 1

    def closed(self, user: str) -> None:
        with self._changed:
            self._open[user] -= 1
            if self._open[user] <= 0:
                del self._open[user]
            self._changed.notify_all()

    def count(self, user: str) -> int:
        with self._changed:
            return self._open.get(user, 0)

    def wait_retired(self, current_user: str, timeout: float) -> bool:
        """Block until only `current_user` has open connections; False after `timeout`."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while any(user != current_user for user in self._open):
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    log.warning(
                        "connections with a rotated credential still open after %.0fs", timeout
                    )
                    return False
                self._changed.wait(remaining)
        return True
