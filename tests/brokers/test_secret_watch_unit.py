"""SecretWatchHub on the in-memory Vault (beside tests/gateway/test_secret_watch_e2e.py and
tests/faults/test_secret_watch_stale.py, the same behaviour against the real OpenBao): one poll
for many watchers, new versions reach all, a deleted secret ends the streams, the jitter."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncGenerator
from typing import Any

import pytest

from latchkey_server.brokers.secret_cache import SecretCache
from latchkey_server.brokers.secret_watch import SecretWatchHub, poll_delay
from latchkey_server.errors import NotFound
from latchkey_server.models import SecretVersion
from tests.fakes.vault import FakeVault
from tests.gateway.helpers import eventually


def test_poll_delay_stays_within_the_jitter() -> None:
    assert poll_delay(10.0, 0.1, rng=lambda: 0.0) == pytest.approx(9.0)
    assert poll_delay(10.0, 0.1, rng=lambda: 1.0) == pytest.approx(11.0)
    assert poll_delay(10.0, 0.1, rng=lambda: 0.5) == pytest.approx(10.0)
    assert poll_delay(10.0, 5.0, rng=lambda: 0.0) == pytest.approx(1.0), "never below a tenth"


async def _next_version(events: AsyncGenerator[Any, None]) -> SecretVersion:
    async with asyncio.timeout(10):
        async for event in events:
            if isinstance(event, SecretVersion):
                return event
    raise AssertionError("the stream ended")


async def test_one_poll_for_many_watchers_and_new_versions_reach_all() -> None:
    vault = FakeVault()
    vault.put_kv("secret", "app/key", {"k": "one"})
    hub = SecretWatchHub(vault, SecretCache(vault), interval=0.05, heartbeat_interval=5.0)
    await hub.start()
    a, b = hub.watch("secret", "app/key"), hub.watch("secret", "app/key")
    async with contextlib.aclosing(a), contextlib.aclosing(b):
        assert (await _next_version(a)).secret.data == {"k": "one"}
        assert (await _next_version(b)).secret.version == 1
        assert hub.active_polls == 1
        vault.put_kv("secret", "app/key", {"k": "two"})
        for events in (a, b):
            assert (await _next_version(events)).secret.data == {"k": "two"}
        reads_before = vault.kv_reads
        polls = hub.polls
        await eventually(lambda: hub.polls >= polls + 3, within=10, what="three more polls")
        assert vault.kv_reads == reads_before, "no new version: the data is not read again"
    await hub.close()


async def test_a_deleted_secret_ends_its_streams() -> None:
    vault = FakeVault()
    vault.put_kv("secret", "gone", {"k": "v"})
    hub = SecretWatchHub(vault, SecretCache(vault), interval=0.05, heartbeat_interval=5.0)
    await hub.start()
    events = hub.watch("secret", "gone")
    async with contextlib.aclosing(events):
        await _next_version(events)
        del vault.kv[("secret", "gone")]
        with pytest.raises(NotFound, match="deleted while watched"):
            await _next_version(events)
    await hub.close()
