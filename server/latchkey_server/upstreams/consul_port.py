"""The seam between the brokers and Consul: narrow Protocols and the plain values they use.

Brokers depend on this module only; the real adapter (`upstreams/consul.py`, the one module
that imports aiohttp) implements `SharedWatchUpstream`, and the brokers' unit tests use an
in-memory fake of the same Protocols.

Every method raises domain errors (`latchkey_server.errors`) and nothing else: `NotFound`,
`InvalidArgument`, or `Unavailable` (with `retry_after`); a `Saturated` one means the gateway's
own connection budget was busy and Consul was never asked. Arguments are not validated here:
the transport validated them at the edge.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from latchkey_server.errors import Unavailable
from latchkey_server.models import ConfigEntry, Instance

__all__ = [
    "CheckState",
    "ConsulUpstream",
    "Saturated",
    "SharedWatchUpstream",
    "WatchSlots",
]


class Saturated(Unavailable):
    """The gateway's own connection budget had no free connection in time. Consul was not
    asked, so this says nothing about its reachability; retry later."""


@dataclass(frozen=True, slots=True, order=True)
class CheckState:
    """One health check as `/v1/health/state/any` lists it (enough to notice a change)."""

    service_name: str
    """Empty for node-level checks (`serfHealth`, node maintenance)."""
    node: str
    check_id: str
    status: str
    service_id: str
    modify_index: int
    """Moves on every write of the check, so a flap and back never looks unchanged."""


class WatchSlots:
    """Shares the adapter's blocking capacity between dedicated watches and shared queries.

    First come, first served: a watch gets a blocking query of its own while one is free, else
    it becomes an overflow watch covered by its group's shared query. `shared_reserve` slots are
    kept for the shared queries (one for KV, one per datacenter for health) so that overflow
    never waits for a slot. A dedicated watch keeps its slot until it stops; overflow watches
    are not promoted when a slot frees up (they already see changes promptly).
    """

    def __init__(self, capacity: int, shared_reserve: int = 2) -> None:
        self.capacity = capacity
        self.shared_reserve = shared_reserve
        self.dedicated = 0
        """Watches holding a blocking query of their own."""
        self.shared = 0
        """Shared (overflow group) blocking queries."""
        self.overflow = 0
        """Watches covered by a shared query instead of their own."""

    def try_dedicated(self) -> bool:
        """Claim a dedicated slot if one is free (then `release_dedicated` when done)."""
        if self.dedicated + max(self.shared, self.shared_reserve) >= self.capacity:
            return False
        self.dedicated += 1
        return True

    def release_dedicated(self) -> None:
        self.dedicated = max(0, self.dedicated - 1)

    def add_shared(self, delta: int) -> None:
        self.shared = max(0, self.shared + delta)

    def add_overflow(self, delta: int) -> None:
        self.overflow = max(0, self.overflow + delta)


class ConsulUpstream(Protocol):
    """What the brokers need from Consul. Indexes are ints; `wait` is in seconds."""

    async def kv_list(
        self, prefix: str, index: int | None = None, wait: float | None = None
    ) -> tuple[int, list[ConfigEntry]]:
        """Every key under `prefix`, sorted by key; blocks when `index` is given."""
        ...

    async def health_service(
        self,
        service: str,
        *,
        tag: str = "",
        datacenter: str = "",
        index: int | None = None,
        wait: float | None = None,
    ) -> tuple[int, list[Instance]]:
        """All instances of `service` (not only passing), each classified by its worst check."""
        ...


@runtime_checkable
class SharedWatchUpstream(ConsulUpstream, Protocol):
    """An upstream with a finite blocking capacity, and the queries that let one blocking
    query stand for many watches (consul-notes §4, "many-services trick")."""

    @property
    def watch_slots(self) -> WatchSlots:
        """Who may hold a blocking query of their own (shared by all hubs on this upstream)."""
        ...

    async def kv_tree(
        self, prefix: str, index: int | None = None, wait: float | None = None
    ) -> tuple[int, list[tuple[str, int]]]:
        """(key, ModifyIndex) of every key under `prefix`, sorted; blocks when `index` is
        given. The index moves on any change under the prefix, deletes included."""
        ...

    async def health_state(
        self, *, datacenter: str = "", index: int | None = None, wait: float | None = None
    ) -> tuple[int, list[CheckState]]:
        """Every health check in the datacenter, sorted; blocks when `index` is given. The
        index moves on any check change in the datacenter."""
        ...
