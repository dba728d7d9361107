"""The lease journal: what each replica records in Consul KV about the leases it holds, so that
no credential outlives the gateway that brokered it.

The key layout (documented in the README; operators and other replicas rely on it):

    latchkey/v1/replicas/<replica-id>                     the replica key, held by its session
    latchkey/v1/replicas/<replica-id>/leases/<lease-id>   one record per lease it holds
    latchkey/v1/reaper                                    the reaper lock

`<lease-id>` is Vault's lease id as it is (a path, e.g. `database/creds/app/AbC123`). A record
holds what revoking the lease needs and what an operator wants to see: lease id, mount, role,
holder identity, database user name, the accessor of the Vault token that created it, and its
times. Never a password or a token.

A record is written before the credential leaves the gateway and removed once Vault no longer
has the lease (revoked, expired, lost). `Replica` (`brokers/replica.py`) implements the
journal; `NoJournal` stands in where a broker runs alone (unit tests, embedding).
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass, replace
from datetime import datetime
from typing import Any, Protocol

from latchkey_server.errors import InvalidArgument

PREFIX = "latchkey/v1/"
REPLICAS = PREFIX + "replicas/"
REAPER_LOCK = PREFIX + "reaper"
_LEASES = "/leases/"
_REPLICA_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$")


def check_replica_id(replica_id: str) -> str:
    """A replica id is one key segment: letters, digits, `.`, `_`, `-` (a hostname fits)."""
    if not _REPLICA_ID.match(replica_id):
        raise InvalidArgument(
            f"replica.id {replica_id!r} is not usable as a replica id: use 1 to 63 letters, "
            "digits, '.', '_' or '-', starting with a letter or digit"
        )
    return replica_id


def replica_key(replica_id: str) -> str:
    return REPLICAS + replica_id


def leases_prefix(replica_id: str) -> str:
    return REPLICAS + replica_id + _LEASES


def lease_key(replica_id: str, lease_id: str) -> str:
    return leases_prefix(replica_id) + lease_id


def parse_key(key: str) -> tuple[str, str] | None:
    """(replica id, lease id) of a key under `REPLICAS`; lease id "" for a replica key; None
    for anything else."""
    if not key.startswith(REPLICAS):
        return None
    rest = key[len(REPLICAS) :]
    replica, sep, lease_id = rest.partition(_LEASES)
    if not replica or "/" in replica or (sep and not lease_id):
        return None
    return replica, lease_id


@dataclass(frozen=True, slots=True)
class JournalRecord:
    """What the journal keeps about one lease (no secret)."""

    lease_id: str
    mount: str
    role: str
    holder: str
    """The identity the lease was issued for."""
    username: str
    """The database user the credential logs in as (not a secret; operators look for it)."""
    token_accessor: str
    """Accessor of the Vault token that created the lease (revoking it revokes the lease)."""
    issued_at: datetime
    expires_at: datetime
    """The lease's expiry when it was issued (renewals move it; the record is not rewritten)."""
    max_ttl_deadline: datetime
    """When Vault revokes it whatever happens (its max TTL)."""
    replica: str = ""
    """The replica that journaled it (from the key; not stored in the value)."""

    def encode(self) -> bytes:
        body: dict[str, Any] = asdict(self)
        body.pop("replica")
        for name in ("issued_at", "expires_at", "max_ttl_deadline"):
            body[name] = body[name].isoformat()
        return json.dumps(body, sort_keys=True).encode()

    @classmethod
    def decode(cls, replica: str, raw: bytes) -> JournalRecord | None:
        """The record in a journal value; None when it is not one (written by someone else)."""
        try:
            body = json.loads(raw)
            return cls(
                lease_id=str(body["lease_id"]),
                mount=str(body["mount"]),
                role=str(body["role"]),
                holder=str(body["holder"]),
                username=str(body.get("username", "")),
                token_accessor=str(body.get("token_accessor", "")),
                issued_at=datetime.fromisoformat(body["issued_at"]),
                expires_at=datetime.fromisoformat(body["expires_at"]),
                max_ttl_deadline=datetime.fromisoformat(body["max_ttl_deadline"]),
                replica=replica,
            )
        except (ValueError, KeyError, TypeError):
            return None

    def of(self, replica: str) -> JournalRecord:
        return replace(self, replica=replica)


class LeaseJournal(Protocol):
    """What the lease broker needs from the journal."""

    @property
    def replica_id(self) -> str:
        """This gateway's replica id (shown with every lease it lists)."""
        ...

    async def record(self, record: JournalRecord) -> None:
        """Record a lease before its credential leaves the gateway. Raises `Unavailable` when
        it cannot be recorded: the caller then revokes the lease and hands out nothing."""
        ...

    def forget(self, lease_id: str) -> None:
        """Vault no longer has the lease: remove its record (in the background, retried)."""
        ...

    async def records(self) -> list[JournalRecord]:
        """Every replica's records, with the replica that wrote each (operators' view)."""
        ...

    async def forget_everywhere(self, lease_id: str) -> int:
        """An operator revoked the lease: remove any replica's record of it; how many."""
        ...


class NoJournal:
    """Records nothing: for a broker used on its own (unit tests, embedding)."""

    replica_id = ""

    async def record(self, record: JournalRecord) -> None:
        return None

    def forget(self, lease_id: str) -> None:
        return None

    async def records(self) -> list[JournalRecord]:
        return []

    async def forget_everywhere(self, lease_id: str) -> int:
        return 0


def _conforms(journal: NoJournal) -> LeaseJournal:
    return journal  # mypy checks that NoJournal implements the Protocol
