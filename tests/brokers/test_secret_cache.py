"""SecretCache against the in-memory Vault, on a hand-moved clock."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from latchkey_server.brokers.secret_cache import SecretCache
from latchkey_server.errors import NotFound, PermissionDenied, Unavailable
from tests.fakes.vault import FakeVault


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def vault() -> FakeVault:
    vault = FakeVault()
    vault.put_kv("secret", "app/db", {"user": "app", "password": "s3cr3t-value"})
    return vault


@pytest.fixture
def clock() -> Clock:
    return Clock()


def cache_for(vault: FakeVault, clock: Clock, **kwargs: Any) -> SecretCache:
    return SecretCache(vault, clock=clock, **kwargs)


async def test_hit_within_ttl_then_refresh(vault: FakeVault, clock: Clock) -> None:
    cache = cache_for(vault, clock, ttl=30.0)
    first, fresh = await cache.get("secret", "app/db")
    assert first.data == {"user": "app", "password": "s3cr3t-value"}
    assert fresh.index == 1
    assert not fresh.stale
    assert fresh.reachable
    again, _ = await cache.get("secret", "app/db")
    assert again is first  # the cached object itself, shared by every caller
    clock.now += 29
    await cache.get("secret", "app/db")
    assert vault.kv_reads == 1
    vault.put_kv("secret", "app/db", {"user": "app", "password": "rotated"})
    clock.now += 2
    second, _ = await cache.get("secret", "app/db")
    assert vault.kv_reads == 2
    assert second.version == 2
    assert second.data["password"] == "rotated"


async def test_versions_are_cached_separately(vault: FakeVault, clock: Clock) -> None:
    vault.put_kv("secret", "app/db", {"v": 2})
    cache = cache_for(vault, clock)
    assert (await cache.get("secret", "app/db", 1))[0].version == 1
    assert (await cache.get("secret", "app/db"))[0].version == 2
    assert vault.kv_reads == 2


async def test_concurrent_misses_read_once(vault: FakeVault, clock: Clock) -> None:
    cache = cache_for(vault, clock)
    vault.read_gate = asyncio.Event()
    gets = [asyncio.create_task(cache.get("secret", "app/db")) for _ in range(50)]
    await asyncio.sleep(0)
    vault.read_gate.set()
    results = await asyncio.gather(*gets)
    assert vault.kv_reads == 1
    assert {secret.version for secret, _ in results} == {1}


async def test_not_found_is_cached_briefly(vault: FakeVault, clock: Clock) -> None:
    cache = cache_for(vault, clock, negative_ttl=2.0)
    with pytest.raises(NotFound, match="secret/missing"):
        await cache.get("secret", "missing")
    with pytest.raises(NotFound):
        await cache.get("secret", "missing")
    assert vault.kv_reads == 1
    vault.put_kv("secret", "missing", {"now": "here"})
    clock.now += 2.5
    assert (await cache.get("secret", "missing"))[0].data == {"now": "here"}
    assert vault.kv_reads == 2


async def test_stale_if_error(vault: FakeVault, clock: Clock) -> None:
    cache = cache_for(vault, clock, ttl=30.0, stale_limit=300.0)
    fresh, fresh_state = await cache.get("secret", "app/db")
    vault.set_reachable(False)
    clock.now += 60
    stale, stale_state = await cache.get("secret", "app/db")
    assert stale.data == fresh.data
    assert stale_state.stale
    assert not stale_state.reachable
    assert stale_state.confirmed_at == fresh_state.confirmed_at
    reads = vault.kv_reads
    await cache.get("secret", "app/db")  # within the retry pause: no new upstream read
    assert vault.kv_reads == reads
    clock.now += 300
    with pytest.raises(Unavailable) as info:
        await cache.get("secret", "app/db")
    assert info.value.retry_after is not None
    vault.set_reachable(True)
    _, again = await cache.get("secret", "app/db")
    assert not again.stale


async def test_unavailable_without_a_copy_raises(vault: FakeVault, clock: Clock) -> None:
    cache = cache_for(vault, clock)
    vault.set_reachable(False)
    with pytest.raises(Unavailable):
        await cache.get("secret", "app/db")


async def test_other_errors_are_not_masked_by_stale_data(vault: FakeVault, clock: Clock) -> None:
    cache = cache_for(vault, clock, ttl=1.0)
    await cache.get("secret", "app/db")
    clock.now += 5
    vault.fail_next("read_kv", PermissionDenied("denied"))
    with pytest.raises(PermissionDenied):
        await cache.get("secret", "app/db")


async def test_lru_bound(vault: FakeVault, clock: Clock) -> None:
    for name in ("a", "b", "c"):
        vault.put_kv("secret", name, {"k": name})
    cache = cache_for(vault, clock, max_entries=2)
    await cache.get("secret", "a")
    await cache.get("secret", "b")
    await cache.get("secret", "a")  # a is now the most recently used
    await cache.get("secret", "c")  # evicts b
    assert len(cache) == 2
    reads = vault.kv_reads
    await cache.get("secret", "a")
    assert vault.kv_reads == reads
    await cache.get("secret", "b")
    assert vault.kv_reads == reads + 1


async def test_results_are_read_only_and_repr_hides_data(vault: FakeVault, clock: Clock) -> None:
    cache = cache_for(vault, clock)
    first, _ = await cache.get("secret", "app/db")
    with pytest.raises(TypeError):
        first.data["password"] = "tampered"  # type: ignore[index]
    second, _ = await cache.get("secret", "app/db")
    assert second.data["password"] == "s3cr3t-value"
    assert "s3cr3t-value" not in repr(second)
