"""This gateway as one replica among others, coordinated through Consul only.

A replica has an id (`replica.id`, by default the host name), stable across restarts and
unique among live replicas, and:

- a Consul session (TTL `replica.session_ttl`, renewed every third of it, destroyed on a
  graceful stop; Consul invalidates it up to twice its TTL after the last renewal when the
  replica dies), taken again at once if Consul loses it;
- its replica key `latchkey/v1/replicas/<id>`, acquired with that session: a second live
  replica with the same id cannot acquire it, and refuses to start;
- its lease journal under that key (`journal.py`): it implements `LeaseJournal` for the lease
  broker;
- on start, the leases its previous incarnation journaled are revoked (the restart path: with
  one replica it is the whole story);
- the reaper (`_reaper.py`), which runs while this replica holds the `latchkey/v1/reaper` lock
  and revokes the journals of replicas that died.

- its instance of service `latchkey` in the local Consul agent (`registration.py`), whose TTL
  check passes at every session renewal.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass

from latchkey_server.backoff import Backoff
from latchkey_server.brokers._reaper import Reaper, revoke_journaled
from latchkey_server.brokers.journal import (
    REPLICAS,
    JournalRecord,
    check_replica_id,
    lease_key,
    leases_prefix,
    parse_key,
    replica_key,
)
from latchkey_server.brokers.registration import Registration
from latchkey_server.errors import FailedPrecondition, LatchkeyError, Unavailable
from latchkey_server.models import utcnow
from latchkey_server.upstreams.session_port import KvRecord, SessionGone, SessionStore
from latchkey_server.upstreams.vault_port import VaultUpstream

log = logging.getLogger("latchkey.brokers.replica")


@dataclass(frozen=True, slots=True)
class ReplicaConfig:
    id: str
    """This replica's id: one key segment, stable across restarts, unique among replicas."""
    session_ttl: float = 10.0
    """TTL of the replica's Consul session, seconds (Consul's servers allow 10 s and more
    unless their `session_ttl_min` is lower)."""
    reap_grace: float = 5.0
    """How long a replica whose session died has to come back before the reaper revokes the
    leases it journaled."""
    claim_timeout: float | None = None
    """How long start waits for the replica key held by another session to be released (a
    killed previous incarnation's session dies within twice the TTL); None: 2 x TTL + 2 s."""
    address: str = ""
    """Where this replica listens (recorded in its key for operators)."""

    @property
    def renew_interval(self) -> float:
        return max(0.2, self.session_ttl / 3)


START_PATIENCE = 30.0
"""How long start waits for Consul to answer (an agent starting up, a blip) before failing."""


def default_replica_id() -> str:
    """The host name (its first label), as a replica id."""
    return socket.gethostname().split(".", 1)[0] or "latchkey"


class Replica:
    """Session, replica key, lease journal and reaper of one gateway (see the module doc)."""

    def __init__(
        self,
        config: ReplicaConfig,
        store: SessionStore,
        vault: VaultUpstream,
        *,
        clock: Callable[[], float] = time.monotonic,
        registration: Registration | None = None,
    ) -> None:
        self.config = config
        self.registration = registration
        """This replica's service instance in Consul (None: `replica.register_service` is off)."""
        self._id = check_replica_id(config.id)
        self._store = store
        self._vault = vault
        self._clock = clock
        self._session: str | None = None
        self._holding = False
        """Whether this replica holds its replica key now (journal writes need it)."""
        self._records: dict[str, JournalRecord] = {}
        """What this incarnation journaled and Vault still has."""
        self._forget: set[str] = set()
        self._forget_wake = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._closed = False
        self.previous_revoked = 0
        """Leases of the previous incarnation revoked at start (observable by tests)."""
        self.previous_done = asyncio.Event()
        self.reaper = Reaper(
            self._id, store, vault, grace=config.reap_grace, session=lambda: self._session,
            clock=clock, wait=max(1.0, config.session_ttl),
        )  # fmt: skip

    @property
    def replica_id(self) -> str:
        return self._id

    @property
    def session(self) -> str | None:
        """The replica's current Consul session (None before start and after a loss)."""
        return self._session

    # ------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        """Take a session and the replica key (or fail: the id is in use by a live replica),
        then revoke what the previous incarnation journaled and start the keeper and reaper."""
        try:
            self._session = await self._first_session()
            await self._claim()
            _, previous = await self._store.read_tree(leases_prefix(self._id))
        except LatchkeyError as exc:
            await self._end_session()
            if isinstance(exc, Unavailable) and not isinstance(exc, SessionGone):
                raise Unavailable(
                    f"cannot start: Consul is needed for the lease journal ({exc.message})",
                    retry_after=exc.retry_after,
                ) from exc
            raise
        log.info(
            "replica %s holds %s (session %s, ttl %gs)",
            self._id, replica_key(self._id), self._session, self.config.session_ttl,
        )  # fmt: skip
        self._tasks = [
            asyncio.create_task(self._keep(), name=f"replica {self._id} session"),
            asyncio.create_task(self._forgetter(), name=f"replica {self._id} journal"),
            asyncio.create_task(self._revoke_previous(previous), name=f"replica {self._id} start"),
            asyncio.create_task(self.reaper.run(), name=f"replica {self._id} reaper"),
        ]

    async def announce(self, listen: str, bound_port: int) -> None:
        """Register this replica as a service instance (once it accepts calls)."""
        if self.registration is not None:
            await self.registration.register(listen, bound_port)

    async def withdraw(self) -> None:
        """Deregister the service instance (a graceful stop, as the drain begins)."""
        if self.registration is not None:
            await self.registration.withdraw()

    async def close(self) -> None:
        """Graceful stop (after the lease broker revoked its leases): remove the records of
        revoked leases, give the replica key and the reaper lock back, end the session. Records
        of leases that could not be revoked stay, for the next start or the reaper."""
        if self._closed:
            return
        self._closed = True
        await self.withdraw()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self._delete_forgotten()
        with contextlib.suppress(LatchkeyError):
            await self.reaper.give_up_lock()
        if self._holding:
            with contextlib.suppress(LatchkeyError):
                await self._store.delete(replica_key(self._id))
        self._holding = False
        await self._end_session()
        left = len(self._records) + len(self._forget)
        if left:
            log.warning("replica %s stops with %d journaled lease(s) left", self._id, left)

    async def _first_session(self) -> str:
        """A session, waiting (bounded) for a Consul that is starting or out of reach."""
        deadline = self._clock() + START_PATIENCE
        while True:
            try:
                return await self._store.create_session(self._name(), self.config.session_ttl)
            except Unavailable as exc:
                if self._clock() >= deadline:
                    raise
                log.info("replica %s: waiting for Consul (%s)", self._id, exc.message)
                await asyncio.sleep(1.0)  # Consul's agent registers itself, or comes back

    async def _end_session(self) -> None:
        session, self._session = self._session, None
        if session is not None:
            with contextlib.suppress(LatchkeyError):
                await self._store.destroy_session(session)

    def _name(self) -> str:
        return f"latchkey replica {self._id}"

    def _key_value(self) -> bytes:
        return json.dumps(
            {
                "replica": self._id,
                "host": socket.gethostname(),
                "pid": os.getpid(),
                "address": self.config.address,
                "since": utcnow().isoformat(),
            }
        ).encode()

    async def _claim(self) -> None:
        """Acquire the replica key; wait for another session holding it to end (a killed
        previous incarnation's does within twice the TTL); fail if it does not."""
        assert self._session is not None
        key = replica_key(self._id)
        timeout = self.config.claim_timeout
        if timeout is None:
            timeout = 2 * self.config.session_ttl + 2.0
        deadline = self._clock() + timeout
        index: int | None = None
        while True:
            if await self._store.acquire(key, self._key_value(), self._session):
                self._holding = True
                return
            left = deadline - self._clock()
            index, holder = await self._store.read(key, index=index, wait=max(0.1, left))
            if holder is not None and holder.session and self._clock() >= deadline:
                raise FailedPrecondition(
                    f"replica id {self._id!r} is in use by another live gateway (Consul session "
                    f"{holder.session} holds {key}: {_describe(holder)}); give each replica its "
                    "own replica.id (LATCHKEY_REPLICA__ID)"
                )

    # ------------------------------------------------------------ the session

    async def _keep(self) -> None:
        """Renew the session; take a new one (and the key, and rewrite the journal) when
        Consul lost it."""
        failing = False
        while not self._closed:
            await asyncio.sleep(self.config.renew_interval)  # the session's renewal period
            try:
                session = self._session
                if session is None or not await self._store.renew_session(session):
                    await self._reestablish()
            except LatchkeyError as exc:
                if not failing:  # once per outage, not once per renewal period
                    log.warning("replica %s: keeping the Consul session failed (retrying): %s",
                                self._id, exc.message)  # fmt: skip
                failing = True
            else:
                if failing:
                    log.warning("replica %s: its Consul session is kept again", self._id)
                failing = False
                if self._holding and self.registration is not None:
                    await self.registration.heartbeat()  # the service check lives with it

    async def _reestablish(self) -> None:
        if self._holding:
            log.warning(
                "replica %s: its Consul session is gone (Consul lost it, or did not hear from "
                "this gateway for twice its TTL); taking a new one", self._id,
            )  # fmt: skip
        self._holding = False
        self._session = await self._store.create_session(self._name(), self.config.session_ttl)
        if not await self._store.acquire(replica_key(self._id), self._key_value(), self._session):
            log.error(
                "replica %s: another gateway now holds replica id %r; this one hands out no "
                "credential until it is free again", self._id, self._id,
            )  # fmt: skip
            return
        for record in list(self._records.values()):  # Consul may have lost them
            await self._store.put(lease_key(self._id, record.lease_id), record.encode())
        self._holding = True
        log.warning(
            "replica %s holds its key again (session %s); %d journal record(s) rewritten",
            self._id, self._session, len(self._records),
        )  # fmt: skip

    # ------------------------------------------------------------ the journal (LeaseJournal)

    async def record(self, record: JournalRecord) -> None:
        if not self._holding or self._closed:
            raise Unavailable(
                f"replica {self._id} does not hold its key in Consul right now (its session is "
                "being renewed or taken again); no credential is handed out without a journal "
                "record: retry",
                retry_after=1.0,
            )
        try:
            await self._store.put(lease_key(self._id, record.lease_id), record.encode())
        except LatchkeyError as exc:
            raise Unavailable(
                f"the lease journal in Consul cannot be written ({exc.message}); no credential "
                "is handed out without a journal record: retry",
                retry_after=exc.retry_after or 1.0,
            ) from exc
        self._records[record.lease_id] = record.of(self._id)

    def forget(self, lease_id: str) -> None:
        self._records.pop(lease_id, None)
        self._forget.add(lease_id)
        self._forget_wake.set()

    async def records(self) -> list[JournalRecord]:
        try:
            _, entries = await self._store.read_tree(REPLICAS)
        except LatchkeyError as exc:
            raise Unavailable(
                f"the lease journal in Consul cannot be read ({exc.message})",
                retry_after=exc.retry_after or 1.0,
            ) from exc
        out = []
        for entry in entries:
            parsed = parse_key(entry.key)
            if parsed is None or not parsed[1]:
                continue
            record = JournalRecord.decode(parsed[0], entry.value)
            if record is not None:
                out.append(record)
        return out

    async def forget_everywhere(self, lease_id: str) -> int:
        self._records.pop(lease_id, None)
        self._forget.discard(lease_id)
        _, entries = await self._store.read_tree(REPLICAS)
        removed = 0
        for entry in entries:
            parsed = parse_key(entry.key)
            if parsed is not None and parsed[1] == lease_id:
                removed += await self._store.delete(entry.key, cas=entry.modify_index)
        return removed

    async def _forgetter(self) -> None:
        """Delete the records of leases Vault no longer has, retrying while Consul fails."""
        backoff = Backoff(0.5, 10.0)
        while not self._closed:
            await self._forget_wake.wait()
            self._forget_wake.clear()
            if await self._delete_forgotten():
                backoff.reset()
                continue
            self._forget_wake.set()
            await asyncio.sleep(backoff.next_delay())

    async def _delete_forgotten(self) -> bool:
        for lease_id in list(self._forget):
            try:
                await self._store.delete(lease_key(self._id, lease_id))
            except LatchkeyError as exc:
                log.info("journal: removing the record of %s failed: %s", lease_id, exc.message)
                return False
            self._forget.discard(lease_id)
        return True

    # ------------------------------------------------------------ the previous incarnation

    async def _revoke_previous(self, previous: list[KvRecord]) -> None:
        """Revoke what this replica's previous incarnation journaled (it died holding them)."""
        try:
            entries = [e for e in previous if _lease_of(e)]
            if entries:
                log.warning(
                    "replica %s: its previous incarnation left %d journaled lease(s); revoking",
                    self._id, len(entries),
                )  # fmt: skip
            self.previous_revoked = await revoke_journaled(
                self._vault, self._store, entries, keep_going=lambda: not self._closed
            )
            if entries:
                log.warning(
                    "replica %s: revoked %d lease(s) of its previous incarnation",
                    self._id, self.previous_revoked,
                )  # fmt: skip
        finally:
            self.previous_done.set()


def _lease_of(entry: KvRecord) -> str:
    parsed = parse_key(entry.key)
    return parsed[1] if parsed is not None else ""


def _describe(holder: KvRecord) -> str:
    try:
        info = json.loads(holder.value)
    except ValueError:
        return "no details"
    if not isinstance(info, dict):
        return "no details"
    return ", ".join(f"{k} {info[k]}" for k in ("host", "pid", "address", "since") if info.get(k))
