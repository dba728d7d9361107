"""The reaper: revokes the journaled leases of replicas that died.

One replica at a time holds the Consul lock `latchkey/v1/reaper` (the key acquired with its
session: when that replica dies its session is invalidated, the lock released, and another
replica takes it). The holder watches `latchkey/v1/` with blocking queries. A replica whose key
has no live session (released when its session was invalidated, or deleted) while records
remain in its journal is dead once it has not come back (taken its key again) within the grace:
the reaper revokes each of its leases through Vault, removes each record, then its key. A lease
Vault no longer knows counts as revoked (when the token that created it died, Vault revoked it
then). Private to `brokers/replica.py`.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Callable, Sequence

from latchkey_server.backoff import Backoff
from latchkey_server.brokers.journal import PREFIX, REAPER_LOCK, parse_key, replica_key
from latchkey_server.errors import LatchkeyError, NotFound
from latchkey_server.upstreams.session_port import KvRecord, SessionGone, SessionStore
from latchkey_server.upstreams.vault_port import VaultUpstream

log = logging.getLogger("latchkey.brokers.replica")

MIN_READ_INTERVAL = 0.2
"""Shortest time between two reads of the coordination tree (a busy journal changes often)."""


async def revoke_journaled(
    vault: VaultUpstream,
    store: SessionStore,
    entries: Sequence[KvRecord],
    *,
    keep_going: Callable[[], bool],
) -> int:
    """Revoke each journaled lease and delete its record (check-and-set: a record rewritten
    meanwhile stays). Failures are retried with backoff while `keep_going()`. Returns how many
    leases were revoked (or found gone)."""
    pending = list(entries)
    done = 0
    backoff = Backoff(0.5, 10.0)
    while pending and keep_going():
        results = await asyncio.gather(
            *(_revoke_one(vault, store, entry) for entry in pending), return_exceptions=True
        )
        left = []
        for entry, result in zip(pending, results, strict=True):
            if isinstance(result, BaseException):
                if not isinstance(result, LatchkeyError):
                    raise result
                log.info("revoking journaled lease %s failed: %s", entry.key, result.message)
                left.append(entry)
            else:
                done += 1
        pending = left
        if pending:
            await asyncio.sleep(backoff.next_delay())
    return done


async def _revoke_one(vault: VaultUpstream, store: SessionStore, entry: KvRecord) -> None:
    parsed = parse_key(entry.key)
    assert parsed is not None
    with contextlib.suppress(NotFound):  # Vault no longer has it: nothing left to revoke
        await vault.revoke_lease(parsed[1])
    await store.delete(entry.key, cas=entry.modify_index)


class Reaper:
    """Runs in every replica; reaps while its replica holds the reaper lock."""

    def __init__(
        self,
        replica_id: str,
        store: SessionStore,
        vault: VaultUpstream,
        *,
        grace: float,
        session: Callable[[], str | None],
        clock: Callable[[], float],
        wait: float,
    ) -> None:
        self._id = replica_id
        self._store = store
        self._vault = vault
        self._grace = grace
        self._session = session
        self._clock = clock
        self._wait = wait
        self.holding = False
        """Whether this replica holds the reaper lock now (observable by tests)."""
        self.reaped = 0
        """Leases of dead replicas this reaper revoked (observable by tests and metrics)."""
        self._holding_session: str | None = None

    async def run(self) -> None:
        backoff = Backoff(0.5, self._wait)
        while True:
            session = self._session()
            try:
                if session is None:
                    await asyncio.sleep(self._wait / 4)  # the replica is taking a new session
                elif await self._store.acquire(REAPER_LOCK, self._lock_value(), session):
                    self._hold(session)
                    await self._reap_while_holding(session)
                else:
                    await self._wait_for_lock()
                backoff.reset()
            except SessionGone:
                pass  # the replica takes a new session; the lock was released with the old one
            except LatchkeyError as exc:
                log.info("reaper of %s: %s", self._id, exc.message)
                await asyncio.sleep(backoff.next_delay())
            finally:
                self._hold(None)

    def _hold(self, session: str | None) -> None:
        if session is not None and not self.holding:
            log.info("replica %s holds the reaper lock", self._id)
        self.holding = session is not None
        self._holding_session = session

    def _lock_value(self) -> bytes:
        return json.dumps({"replica": self._id}).encode()

    async def give_up_lock(self) -> None:
        session = self._holding_session
        if session is not None:
            self._hold(None)
            await self._store.release(REAPER_LOCK, session)

    async def _wait_for_lock(self) -> None:
        """Block until the lock is free (its holder released it, or died), or a while passed."""
        index: int | None = None
        deadline = self._clock() + self._wait * 3
        while self._clock() < deadline:
            index, lock = await self._store.read(REAPER_LOCK, index=index, wait=self._wait)
            if lock is None or not lock.session:
                return

    async def _reap_while_holding(self, session: str) -> None:
        dead_since: dict[str, float] = {}
        index: int | None = None
        while True:
            started = self._clock()
            wait = self._wait
            if dead_since:
                due = min(dead_since.values()) + self._grace
                wait = max(MIN_READ_INTERVAL, min(wait, due - started))
            index, entries = await self._store.read_tree(PREFIX, index=index, wait=wait)
            lock = next((e for e in entries if e.key == REAPER_LOCK), None)
            if lock is None or lock.session != session:
                return  # the lock was lost (the session ended, or someone took the key)
            await self._reap_dead(entries, dead_since)
            pause = MIN_READ_INTERVAL - (self._clock() - started)
            if pause > 0:
                await asyncio.sleep(pause)  # bounds the reads of a busy journal

    async def _reap_dead(self, entries: list[KvRecord], dead_since: dict[str, float]) -> None:
        keys: dict[str, KvRecord] = {}
        journals: dict[str, list[KvRecord]] = {}
        for entry in entries:
            parsed = parse_key(entry.key)
            if parsed is None:
                continue
            replica, lease_id = parsed
            if lease_id:
                journals.setdefault(replica, []).append(entry)
            else:
                keys[replica] = entry
        now = self._clock()
        for replica in set(keys) | set(journals):
            key = keys.get(replica)
            if replica == self._id or (key is not None and key.session):
                dead_since.pop(replica, None)
                continue
            since = dead_since.setdefault(replica, now)
            if now - since >= self._grace:
                await self._reap(replica, key, journals.get(replica, []), now - since)
                dead_since.pop(replica, None)

    async def _reap(
        self, replica: str, key: KvRecord | None, journal: list[KvRecord], dead_for: float
    ) -> None:
        if journal:
            log.warning(
                "replica %s is gone (no Consul session for %.1fs): revoking its %d journaled "
                "lease(s)", replica, dead_for, len(journal),
            )  # fmt: skip
            revoked = await revoke_journaled(
                self._vault, self._store, journal, keep_going=lambda: self.holding
            )
            self.reaped += revoked
            log.warning("reaper: revoked %d lease(s) of replica %s", revoked, replica)
            if revoked < len(journal):
                return
        if key is not None:
            # Check-and-set: a replica that came back in the meantime keeps its key.
            await self._store.delete(replica_key(replica), cas=key.modify_index)
