"""Defect 4: Vault came back without the gateway's auth, and a credential stream looked healthy
while it was dead.

Before the fix, after OpenBao restarted empty, credential streams kept reporting `stale=false`
and CONNECTED while every login failed; at lease expiry they got "revoked: the lease expired"
and then stayed open with no credential and no error. Now the gateway notices on its next
renewal or probe (its token is gone), tells every stream at once (a heartbeat, stale, upstream
REFUSED, and the lease's revocation), logs in again, and once Vault lets it in delivers a new
credential as a rotation; a stream whose credential expired with no replacement ends with
UNAVAILABLE naming the cause.

The operator re-seeds Vault with the same AppRole role_id and secret_id (`seed_vault(...,
approle=...)`: the AppRole role-id and custom-secret-id APIs), as re-running their provisioning
would, so the gateway's configuration stays as it was.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import grpc
import pytest

from latchkey.v1 import common_pb2, secrets_pb2, secrets_pb2_grpc
from latchkey_server.devstack.seed import DEMO_ROLE, seed_postgres, seed_vault
from tests.faults.conftest import GatewayFactory
from tests.fixtures.vault import VaultServer
from tests.gateway.helpers import can_login

pytestmark = pytest.mark.faults

WAIT = 60.0
"""Hang guard for one wait (never a timing assertion): the demo role's TTL here is 30 s (4 s in
the second test), so every expected event comes well within it."""


async def _events(call: Any) -> AsyncIterator[secrets_pb2.CredentialEvent]:
    while True:
        message = await asyncio.wait_for(call.read(), WAIT)
        if message is grpc.aio.EOF:
            return
        yield message


def _summary(seen: list[Any]) -> list[str]:
    """What the stream said, without secrets: event kinds, and freshness for heartbeats."""
    out = []
    for event in seen:
        kind = event.WhichOneof("event")
        if kind == "heartbeat":
            fresh = event.heartbeat.freshness
            state = common_pb2.UpstreamState.Name(fresh.upstream)
            kind = f"heartbeat(stale={fresh.stale}, {state})"
        elif kind == "revoked":
            kind = f"revoked({event.revoked.reason})"
        if not out or out[-1] != kind:
            out.append(kind)
    return out


async def _until(
    events: AsyncIterator[Any], kind: str, seen: list[Any], test: Any = None, within: float = WAIT
) -> Any:
    """The next event of `kind` (that passes `test`); every event read goes to `seen`."""
    try:
        async with asyncio.timeout(within):
            async for event in events:
                seen.append(event)
                if event.WhichOneof("event") == kind and (test is None or test(event)):
                    return event
    except TimeoutError:
        said = _summary(seen)
        raise AssertionError(f"no {kind} event in {within:.0f}s; the stream said {said}") from None
    raise AssertionError(f"the stream ended before a {kind} event: {_summary(seen)}")


def _refused(event: Any) -> bool:
    fresh = event.heartbeat.freshness
    return bool(fresh.stale and fresh.upstream == common_pb2.UPSTREAM_STATE_REFUSED)


def _fresh(event: Any) -> bool:
    fresh = event.heartbeat.freshness
    return bool(not fresh.stale and fresh.upstream == common_pb2.UPSTREAM_STATE_CONNECTED)


def _gateway(gateway_process: GatewayFactory, vault: VaultServer, approle: Any, name: str) -> Any:
    auth = {"method": "approle", "role_id": approle.role_id, "secret_id": approle.secret_id}
    return gateway_process(name, vault={"addr": vault.addr, "auth": auth})


async def test_vault_restarted_empty_streams_hear_it_then_get_a_new_credential(
    openbao_process: VaultServer, postgres: Any, gateway_process: GatewayFactory
) -> None:
    vault = openbao_process
    db = seed_postgres(postgres.dsn)
    approle = seed_vault(vault.addr, vault.root_token, db, default_ttl="30s", max_ttl="10m")
    gw = _gateway(gateway_process, vault, approle, "vault-restart")
    seen: list[Any] = []
    async with grpc.aio.insecure_channel(gw.addr) as channel:
        call = secrets_pb2_grpc.SecretsStub(channel).WatchDatabaseCredentials(
            secrets_pb2.WatchDatabaseCredentialsRequest(role=DEMO_ROLE), metadata=gw.metadata()
        )
        events = _events(call)
        old = (await _until(events, "issued", seen)).issued.credential
        assert await can_login(postgres, old.username, old.password)

        await asyncio.to_thread(vault.process.restart)  # empty: no AppRole, no leases
        # The truth at once: the upstream refuses the gateway, the data is stale, and the
        # lease is gone from Vault.
        await _until(events, "heartbeat", seen, _refused)
        revoked = [e for e in seen if e.WhichOneof("event") == "revoked"]
        if not revoked:
            revoked = [await _until(events, "revoked", seen)]
        assert revoked[0].revoked.lease_id == old.lease_id

        # The operator provisions Vault again (same AppRole credentials): a new credential.
        await asyncio.to_thread(
            seed_vault, vault.addr, vault.root_token, db, default_ttl="30s", max_ttl="10m",
            approle=approle,
        )  # fmt: skip
        rotation = (await _until(events, "rotation", seen)).rotation
        assert rotation.previous_lease_id == old.lease_id
        new = rotation.credential
        assert new.lease_id != old.lease_id
        assert await can_login(postgres, new.username, new.password)
        if not _fresh(seen[-1]):
            await _until(events, "heartbeat", seen, _fresh)
        call.cancel()
    assert '"level": "ERROR"' not in gw.log_text()


async def test_a_stream_with_no_credential_left_ends_with_the_reason(
    openbao_process: VaultServer, postgres: Any, gateway_process: GatewayFactory
) -> None:
    vault = openbao_process
    db = seed_postgres(postgres.dsn)
    approle = seed_vault(vault.addr, vault.root_token, db, default_ttl="4s", max_ttl="10m")
    gw = _gateway(gateway_process, vault, approle, "vault-gone")
    seen: list[Any] = []
    async with grpc.aio.insecure_channel(gw.addr) as channel:
        call = secrets_pb2_grpc.SecretsStub(channel).WatchDatabaseCredentials(
            secrets_pb2.WatchDatabaseCredentialsRequest(role=DEMO_ROLE), metadata=gw.metadata()
        )
        events = _events(call)
        await _until(events, "issued", seen)
        await asyncio.to_thread(vault.process.restart)  # and nobody provisions it again
        with pytest.raises(grpc.aio.AioRpcError) as ended:
            try:
                async with asyncio.timeout(WAIT):
                    async for event in events:
                        seen.append(event)
            except TimeoutError:
                said = _summary(seen)
                raise AssertionError(f"the stream is still open: it said {said}") from None
    kinds = [e.WhichOneof("event") for e in seen]
    assert "revoked" in kinds, kinds
    assert any(_refused(e) for e in seen if e.WhichOneof("event") == "heartbeat"), kinds
    error = ended.value
    assert error.code() == grpc.StatusCode.UNAVAILABLE, error
    assert "no new one could be obtained" in (error.details() or ""), error.details()
    assert "Vault refused" in (error.details() or ""), error.details()
    assert dict(error.trailing_metadata() or ()).get("retry-after")
