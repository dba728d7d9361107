"""LeaseBroker against the in-memory Vault: sharing, single-flight, holds, renewal, rotation."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, AsyncIterator
from contextlib import aclosing
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from latchkey_server.brokers.leases import LeaseBroker
from latchkey_server.errors import NotFound, Unavailable
from latchkey_server.models import (
    CredentialEvent,
    CredentialHeartbeat,
    CredentialIssued,
    CredentialRenewed,
    CredentialRevoked,
    CredentialRotation,
)
from tests.fakes.vault import FakeRole, FakeVault

WAIT = 15.0
"""Hang guard for a single wait (never a timing assertion)."""


async def next_event(stream: AsyncIterator[CredentialEvent], within: float = WAIT) -> Any:
    """The next event that is not a heartbeat."""
    async with asyncio.timeout(within):
        while True:
            event = await anext(stream)
            if not isinstance(event, CredentialHeartbeat):
                return event


async def next_of(stream: AsyncIterator[CredentialEvent], kind: type, within: float = WAIT) -> Any:
    async with asyncio.timeout(within):
        while True:
            event = await anext(stream)
            if isinstance(event, kind):
                return event


async def until(condition: Any, within: float = WAIT) -> None:
    async with asyncio.timeout(within):
        while True:
            if condition():
                return
            await asyncio.sleep(0.01)


@pytest.fixture
def vault() -> FakeVault:
    return FakeVault()


@pytest.fixture
async def make_broker(vault: FakeVault) -> AsyncGenerator[Any, None]:
    brokers: list[LeaseBroker] = []

    def make(**kwargs: Any) -> LeaseBroker:
        kwargs.setdefault("unheld_grace", 30.0)
        kwargs.setdefault("retry_delay", 0.05)
        kwargs.setdefault("retry_max_delay", 0.2)
        broker = LeaseBroker(kwargs.pop("vault", vault), **kwargs)
        brokers.append(broker)
        return broker

    yield make
    for broker in brokers:
        await broker.close()


# ---------------------------------------------------------------- sharing and single-flight


async def test_concurrent_acquires_issue_one_credential(vault: FakeVault, make_broker: Any) -> None:
    broker = make_broker()
    vault.issue_gate = asyncio.Event()
    calls = [asyncio.create_task(broker.acquire("alice", "app")) for _ in range(25)]
    await until(lambda: vault.issue_calls == 1)
    vault.issue_gate.set()
    creds = await asyncio.gather(*calls)
    assert vault.issue_calls == 1
    assert {c.lease_id for c in creds} == {creds[0].lease_id}
    assert broker.list()[0].holders == 25


async def test_concurrent_watches_and_acquires_share_one_issue(
    vault: FakeVault, make_broker: Any
) -> None:
    broker = make_broker()
    vault.issue_gate = asyncio.Event()
    streams = [broker.watch("alice", "app") for _ in range(5)]
    firsts = [asyncio.create_task(anext(s)) for s in streams]
    unary = asyncio.create_task(broker.acquire("alice", "app"))
    await until(lambda: vault.issue_calls == 1)
    vault.issue_gate.set()
    events = await asyncio.gather(*firsts)
    cred = await unary
    assert vault.issue_calls == 1
    assert all(isinstance(e, CredentialIssued) for e in events)
    assert {e.credential.lease_id for e in events} == {cred.lease_id}
    assert len({e.watch_id for e in events}) == 5
    for stream in streams:
        await stream.aclose()


async def test_one_lease_per_identity_and_role(vault: FakeVault, make_broker: Any) -> None:
    vault.roles["other"] = FakeRole(30.0, 300.0)
    broker = make_broker()
    a1 = await broker.acquire("alice", "app")
    a2 = await broker.acquire("alice", "app")
    b1 = await broker.acquire("bob", "app")
    a3 = await broker.acquire("alice", "other")
    assert a1.lease_id == a2.lease_id
    assert len({a1.lease_id, b1.lease_id, a3.lease_id}) == 3
    assert vault.issue_calls == 3
    holders = {(i.holder, i.role): i.holders for i in broker.list()}
    assert holders == {("alice", "app"): 2, ("bob", "app"): 1, ("alice", "other"): 1}
    assert [i.role for i in broker.list("other")] == ["other"]
    assert "pw-" not in repr(broker.list())


async def test_unknown_role_is_not_found(make_broker: Any) -> None:
    broker = make_broker()
    with pytest.raises(NotFound):
        await broker.acquire("alice", "nope")
    with pytest.raises(NotFound):
        await anext(broker.watch("alice", "nope"))


# ---------------------------------------------------------------- holds and release


async def test_release_counts_unary_holds(vault: FakeVault, make_broker: Any) -> None:
    broker = make_broker()
    cred = await broker.acquire("alice", "app")
    await broker.acquire("alice", "app")
    assert await broker.release("alice", cred.lease_id) is False
    assert vault.valid(cred.lease_id)
    assert await broker.release("alice", cred.lease_id) is True
    assert not vault.valid(cred.lease_id)
    with pytest.raises(NotFound):
        await broker.release("alice", cred.lease_id)
    assert broker.list() == []


async def test_release_by_another_identity(vault: FakeVault, make_broker: Any) -> None:
    broker = make_broker()
    cred = await broker.acquire("alice", "app")
    # Someone else's lease and no lease at all get the same answer (no existence leak).
    with pytest.raises(NotFound) as theirs:
        await broker.release("mallory", cred.lease_id)
    with pytest.raises(NotFound) as missing:
        await broker.release("alice", "database/creds/app/unknown")
    assert theirs.value.message.replace(cred.lease_id, "X") == missing.value.message.replace(
        "database/creds/app/unknown", "X"
    )
    assert vault.valid(cred.lease_id)
    assert await broker.release("operator", cred.lease_id, force=True) is True
    assert not vault.valid(cred.lease_id)


async def test_unheld_lease_is_revoked_after_grace(vault: FakeVault, make_broker: Any) -> None:
    broker = make_broker(unheld_grace=0.1)
    s1, s2 = broker.watch("alice", "app"), broker.watch("alice", "app")
    first = await next_event(s1)
    second = await next_event(s2)
    lease_id = first.credential.lease_id
    assert second.credential.lease_id == lease_id
    await s1.aclose()
    assert broker.list()[0].holders == 1
    assert vault.valid(lease_id)
    await s2.aclose()
    await vault.wait_revoked(lease_id)
    assert not vault.valid(lease_id)
    await until(lambda: broker.list() == [])


async def test_a_new_hold_within_the_grace_keeps_the_lease(
    vault: FakeVault, make_broker: Any
) -> None:
    broker = make_broker(unheld_grace=30.0)
    async with aclosing(broker.watch("alice", "app")) as stream:
        lease_id = (await next_event(stream)).credential.lease_id
    cred = await broker.acquire("alice", "app")
    assert cred.lease_id == lease_id
    assert vault.revoke_calls == []


async def test_cancelling_the_consumer_releases_the_hold(
    vault: FakeVault, make_broker: Any
) -> None:
    broker = make_broker(unheld_grace=0.05)
    got: asyncio.Queue[str] = asyncio.Queue()

    async def consume() -> None:
        async for event in broker.watch("alice", "app"):
            if isinstance(event, CredentialIssued):
                got.put_nowait(event.credential.lease_id)

    task = asyncio.create_task(consume())
    lease_id = await asyncio.wait_for(got.get(), WAIT)
    task.cancel()
    await vault.wait_revoked(lease_id)


# ---------------------------------------------------------------- renewal


async def test_streamed_lease_is_renewed(vault: FakeVault, make_broker: Any) -> None:
    vault.roles["app"] = FakeRole(default_ttl=0.6, max_ttl=60.0)
    broker = make_broker()
    async with aclosing(broker.watch("alice", "app")) as stream:
        issued = await next_event(stream)
        renewed = await next_event(stream)
        assert isinstance(renewed, CredentialRenewed)
        assert renewed.watch_id == issued.watch_id
        assert renewed.lease_id == issued.credential.lease_id
        assert renewed.expires_at > issued.credential.expires_at
        again = await next_event(stream)
        assert isinstance(again, CredentialRenewed)
    assert vault.issue_calls == 1


async def test_unary_renew_extends_the_hold(vault: FakeVault, make_broker: Any) -> None:
    broker = make_broker()
    cred = await broker.acquire("alice", "app")
    result = await broker.renew("alice", cred.lease_id, 100.0)
    assert result.lease_id == cred.lease_id
    assert result.expires_at > cred.expires_at
    assert broker.list()[0].expires_at == result.expires_at
    with pytest.raises(NotFound):
        await broker.renew("mallory", cred.lease_id, None)
    with pytest.raises(NotFound):
        await broker.renew("alice", "database/creds/app/unknown", None)


async def test_unavailable_vault_keeps_streams_alive(vault: FakeVault, make_broker: Any) -> None:
    vault.roles["app"] = FakeRole(default_ttl=2.0, max_ttl=60.0)
    broker = make_broker(heartbeat_interval=0.05)
    async with aclosing(broker.watch("alice", "app")) as stream:
        issued = await next_event(stream)
        beat = await next_of(stream, CredentialHeartbeat)
        assert beat.freshness.reachable
        vault.set_reachable(False)
        beat = await next_of(stream, CredentialHeartbeat)
        while beat.freshness.reachable:
            beat = await next_of(stream, CredentialHeartbeat)
        assert beat.freshness.stale
        await until(lambda: len(vault.renew_calls) >= 2)  # renewal keeps retrying
        vault.set_reachable(True)
        renewed = await next_of(stream, CredentialRenewed)
        assert renewed.lease_id == issued.credential.lease_id


# ---------------------------------------------------------------- rotation


def _short_role(vault: FakeVault) -> None:
    vault.roles["app"] = FakeRole(default_ttl=0.6, max_ttl=1.5)


async def test_rotation_before_expiry_and_ack_revokes_old(
    vault: FakeVault, make_broker: Any
) -> None:
    _short_role(vault)
    broker = make_broker(rotate_before=0.6, grace=30.0)
    async with aclosing(broker.watch("alice", "app")) as stream:
        issued = await next_event(stream)
        old = issued.credential.lease_id
        rotation = await next_of(stream, CredentialRotation)
        assert rotation.watch_id == issued.watch_id
        assert rotation.previous_lease_id == old
        assert rotation.credential.lease_id != old
        assert vault.valid(old), "the rotation must arrive while the old credential still works"
        assert vault.valid(rotation.credential.lease_id)
        assert rotation.previous_revoke_at <= issued.credential.max_ttl_deadline
        assert rotation.previous_revoke_at > datetime.now(UTC)
        revoked_at = await broker.ack("alice", rotation.watch_id, rotation.rotation_id)
        assert isinstance(revoked_at, datetime)
        assert not vault.valid(old)
        assert vault.valid(rotation.credential.lease_id)
        revoked = await next_of(stream, CredentialRevoked)
        assert revoked.lease_id == old
        assert revoked.watch_id == issued.watch_id
        # Acknowledging twice is harmless; a stranger's ack is not found.
        assert await broker.ack("alice", rotation.watch_id, rotation.rotation_id) == revoked_at
        with pytest.raises(NotFound):
            await broker.ack("mallory", rotation.watch_id, rotation.rotation_id)
    assert [i.lease_id for i in broker.list()] == [rotation.credential.lease_id]


async def test_unacknowledged_rotation_revokes_at_grace(vault: FakeVault, make_broker: Any) -> None:
    _short_role(vault)
    broker = make_broker(rotate_before=0.6, grace=0.1)
    async with aclosing(broker.watch("alice", "app")) as stream:
        old = (await next_event(stream)).credential.lease_id
        rotation = await next_of(stream, CredentialRotation)
        revoked = await next_of(stream, CredentialRevoked)
        assert revoked.lease_id == old
        assert not vault.valid(old)
        assert vault.valid(rotation.credential.lease_id)


async def test_rotation_waits_for_every_stream(vault: FakeVault, make_broker: Any) -> None:
    _short_role(vault)
    broker = make_broker(rotate_before=0.6, grace=30.0)
    s1, s2 = broker.watch("alice", "app"), broker.watch("alice", "app")
    old = (await next_event(s1)).credential.lease_id
    await next_event(s2)
    r1 = await next_of(s1, CredentialRotation)
    r2 = await next_of(s2, CredentialRotation)
    assert r1.rotation_id == r2.rotation_id
    assert r1.credential.lease_id == r2.credential.lease_id
    assert vault.issue_calls == 2
    await broker.ack("alice", r1.watch_id, r1.rotation_id)
    assert vault.valid(old)
    await broker.ack("alice", r2.watch_id, r2.rotation_id)
    assert not vault.valid(old)
    await s1.aclose()
    await s2.aclose()


async def test_unary_holder_keeps_the_rotated_lease(vault: FakeVault, make_broker: Any) -> None:
    vault.roles["app"] = FakeRole(default_ttl=0.8, max_ttl=2.0)
    broker = make_broker(rotate_before=1.0, grace=30.0)
    async with aclosing(broker.watch("alice", "app")) as stream:
        old = (await next_event(stream)).credential.lease_id
        assert (await broker.acquire("alice", "app")).lease_id == old
        await broker.renew("alice", old, 10.0)  # the unary hold now lasts to the max TTL
        rotation = await next_of(stream, CredentialRotation)
        await broker.ack("alice", rotation.watch_id, rotation.rotation_id)
        assert vault.valid(old), "a unary holder still holds the previous lease"
        assert await broker.release("alice", old) is True
        assert not vault.valid(old)


async def test_token_deadline_triggers_rotation(vault: FakeVault, make_broker: Any) -> None:
    broker = make_broker(grace=30.0)
    async with aclosing(broker.watch("alice", "app")) as stream:
        old = (await next_event(stream)).credential.lease_id
        soon = datetime.fromtimestamp(vault.leases[old].issued + 3.0, UTC)
        vault.announce_token_deadline([old], soon)
        rotation = await next_of(stream, CredentialRotation)
        assert rotation.previous_lease_id == old
        assert rotation.previous_revoke_at < soon
        await broker.ack("alice", rotation.watch_id, rotation.rotation_id)
        assert not vault.valid(old)


async def test_a_lost_lease_is_replaced(vault: FakeVault, make_broker: Any) -> None:
    vault.roles["app"] = FakeRole(default_ttl=0.6, max_ttl=60.0)
    broker = make_broker()
    async with aclosing(broker.watch("alice", "app")) as stream:
        old = (await next_event(stream)).credential.lease_id
        vault.lose(old)
        revoked = await next_of(stream, CredentialRevoked)
        assert revoked.lease_id == old
        rotation = await next_of(stream, CredentialRotation)
        assert rotation.previous_lease_id == old
        assert vault.valid(rotation.credential.lease_id)


async def test_force_revoke_gives_streams_a_new_credential(
    vault: FakeVault, make_broker: Any
) -> None:
    broker = make_broker()
    async with aclosing(broker.watch("alice", "app")) as stream:
        old = (await next_event(stream)).credential.lease_id
        assert await broker.release("operator", old, force=True) is True
        assert not vault.valid(old)
        revoked = await next_of(stream, CredentialRevoked)
        assert revoked.lease_id == old
        rotation = await next_of(stream, CredentialRotation)
        assert vault.valid(rotation.credential.lease_id)


async def test_failed_rotation_is_retried(vault: FakeVault, make_broker: Any) -> None:
    _short_role(vault)
    broker = make_broker(rotate_before=0.6, grace=30.0)
    async with aclosing(broker.watch("alice", "app")) as stream:
        await next_event(stream)
        vault.fail_next("issue", Unavailable("down", retry_after=0.1))
        rotation = await next_of(stream, CredentialRotation)
        assert vault.valid(rotation.credential.lease_id)
        assert vault.issue_calls == 3


async def test_a_refusing_vault_is_told_at_once_then_a_new_credential_follows(
    vault: FakeVault, make_broker: Any
) -> None:
    broker = make_broker(heartbeat_interval=30.0)
    async with aclosing(broker.watch("alice", "app")) as stream:
        old = (await next_event(stream)).credential.lease_id
        # Vault lost the gateway's token (an empty restart): it refuses, the lease is gone.
        vault.set_refused(True)
        beat = await next_of(stream, CredentialHeartbeat)
        assert beat.freshness.stale
        assert beat.freshness.refused
        vault.lose(old)
        vault.announce_token_deadline([old], datetime.now(UTC) - timedelta(seconds=1))
        revoked = await next_of(stream, CredentialRevoked)
        assert revoked.lease_id == old
        assert "token" in revoked.reason
        vault.set_refused(False)  # the operator provisioned Vault again
        beat = await next_of(stream, CredentialHeartbeat)
        assert not beat.freshness.stale
        rotation = await next_of(stream, CredentialRotation)
        assert rotation.previous_lease_id == old
        assert vault.valid(rotation.credential.lease_id)


async def test_a_stream_with_no_credential_left_ends_with_the_reason(
    vault: FakeVault, make_broker: Any
) -> None:
    vault.roles["app"] = FakeRole(default_ttl=0.6, max_ttl=60.0)
    broker = make_broker()
    stream = broker.watch("alice", "app")
    await next_event(stream)
    vault.set_refused(True)  # renewals and new credentials are refused from now on
    with pytest.raises(Unavailable, match="no new one could be obtained") as ended:
        async with asyncio.timeout(WAIT):
            async for _ in stream:
                pass
    assert "refused" in ended.value.message
    assert ended.value.retry_after
    await until(lambda: broker.list() == [])


async def test_an_operator_revokes_a_lease_this_gateway_does_not_hold(
    vault: FakeVault, make_broker: Any
) -> None:
    holder, other = make_broker(), make_broker()
    cred = await holder.acquire("alice", "app")
    with pytest.raises(NotFound):  # without force, only the caller's own leases
        await other.release("alice", cred.lease_id)
    assert await other.release("operator", cred.lease_id, force=True) is True
    assert not vault.valid(cred.lease_id)
    with pytest.raises(NotFound, match="Vault knows no lease"):
        await other.release("operator", cred.lease_id, force=True)


async def test_a_lease_that_arrives_after_its_ttl_is_renewed_not_thrown_away(
    vault: FakeVault, make_broker: Any
) -> None:
    """Vault busy (revoking a burst of expired leases) answers a creds call after the TTL it
    granted has passed by the broker's clock, which starts before the request: the lease is
    alive in Vault (it counts from when it issued it), so the broker renews it and uses it."""
    vault.roles["app"] = FakeRole(default_ttl=5.0, max_ttl=60.0)
    skew = [0.0]
    broker = make_broker(clock=lambda: datetime.now(UTC) + timedelta(seconds=skew[0]))
    vault.issue_gate = asyncio.Event()
    acquiring = asyncio.create_task(broker.acquire("alice", "app"))
    await until(lambda: vault.issue_calls == 1)
    skew[0] = 6.0  # by the broker's clock the call took longer than the lease's 5 s TTL
    vault.issue_gate.set()
    cred = await acquiring
    assert cred.lease_id in vault.renew_calls
    assert vault.valid(cred.lease_id)
    assert [i.lease_id for i in broker.list()] == [cred.lease_id]


# ---------------------------------------------------------------- re-attach and shutdown


async def test_watch_reattaches_by_lease_id(vault: FakeVault, make_broker: Any) -> None:
    broker = make_broker(unheld_grace=30.0)
    async with aclosing(broker.watch("alice", "app")) as stream:
        first = await next_event(stream)
    lease_id = first.credential.lease_id
    async with aclosing(broker.watch("alice", "app", lease_id)) as stream:
        again = await next_event(stream)
        assert again.credential.lease_id == lease_id
        assert again.watch_id != first.watch_id
    # Another identity cannot attach to it: it starts fresh.
    async with aclosing(broker.watch("bob", "app", lease_id)) as stream:
        other = await next_event(stream)
        assert other.credential.lease_id != lease_id
    assert vault.issue_calls == 2


async def test_reattach_to_a_revoked_lease_starts_fresh(vault: FakeVault, make_broker: Any) -> None:
    broker = make_broker(unheld_grace=0.05)
    async with aclosing(broker.watch("alice", "app")) as stream:
        lease_id = (await next_event(stream)).credential.lease_id
    await vault.wait_revoked(lease_id)
    async with aclosing(broker.watch("alice", "app", lease_id)) as stream:
        fresh = await next_event(stream)
        assert fresh.credential.lease_id != lease_id


async def test_close_revokes_everything_and_ends_streams(vault: FakeVault) -> None:
    broker = LeaseBroker(vault, unheld_grace=30.0)
    cred = await broker.acquire("alice", "app")
    stream = broker.watch("bob", "app")
    streamed = (await next_event(stream)).credential.lease_id
    await broker.close()
    assert not vault.valid(cred.lease_id)
    assert not vault.valid(streamed)
    revoked = await next_event(stream)
    assert isinstance(revoked, CredentialRevoked)
    with pytest.raises(StopAsyncIteration):
        await next_event(stream)
    with pytest.raises(Unavailable):
        await broker.acquire("alice", "app")


async def test_no_password_in_reprs(vault: FakeVault, make_broker: Any) -> None:
    broker = make_broker()
    cred = await broker.acquire("alice", "app")
    issued = vault.leases[cred.lease_id]
    assert issued.password not in repr(cred)
    assert issued.password not in repr(broker.list())
