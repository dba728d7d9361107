"""The seam between replica coordination and Consul: sessions, and KV writes tied to them.

`brokers/replica.py` and `brokers/_reaper.py` depend on `SessionStore` only; the real one is
`upstreams/_consul_sessions.py`, which sends every request through the Consul adapter's one
request path (its connection budget, timeouts, reachability and metrics). Coordination is
Consul's own: sessions with a TTL, `acquire`/`release` on keys, check-and-set deletes, blocking
reads. Nothing here decides anything.

Every method raises domain errors: `Unavailable` when Consul cannot be reached or answers with
an error, `SessionGone` when the session named no longer exists, `FailedPrecondition` when
Consul refuses the session's settings.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

from latchkey_server.errors import Unavailable


@dataclass(frozen=True, slots=True)
class KvRecord:
    """One Consul KV entry with the session holding it."""

    key: str
    value: bytes = field(repr=False)
    modify_index: int
    session: str = ""
    """The session that acquired the key ("" when none holds it)."""


class SessionGone(Unavailable):
    """The session no longer exists in Consul (its TTL ran out, it was destroyed, or Consul
    lost its state)."""


class SessionStore(Protocol):
    """What replica coordination needs from Consul, and nothing more."""

    async def create_session(self, name: str, ttl: float) -> str:
        """A new session (TTL in seconds; no lock delay; its locks are released when it dies).
        Returns its id."""
        ...

    async def renew_session(self, session: str) -> bool:
        """Renew the session's TTL; False when it no longer exists."""
        ...

    async def destroy_session(self, session: str) -> None:
        """End the session now (its locks are released)."""
        ...

    async def acquire(self, key: str, value: bytes, session: str) -> bool:
        """Write `key` and lock it with `session`; False when another session holds it."""
        ...

    async def release(self, key: str, session: str) -> bool:
        """Unlock `key` if `session` holds it."""
        ...

    async def put(self, key: str, value: bytes) -> None:
        """Write `key` (no lock)."""
        ...

    async def delete(self, key: str, *, cas: int | None = None) -> bool:
        """Delete `key` (with `cas`: only if its ModifyIndex is still that); False when the
        check-and-set failed."""
        ...

    async def read(
        self, key: str, *, index: int | None = None, wait: float | None = None
    ) -> tuple[int, KvRecord | None]:
        """One key (None when missing); blocks while the index is `index`, up to `wait`."""
        ...

    async def read_tree(
        self, prefix: str, *, index: int | None = None, wait: float | None = None
    ) -> tuple[int, list[KvRecord]]:
        """Every key under `prefix`, sorted; blocks while the index is `index`, up to `wait`."""
        ...
