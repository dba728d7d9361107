"""The generated blocking `Client` against the real stack (run in a thread: the in-process
gateway lives in the test's event loop)."""

from __future__ import annotations

import asyncio
import queue
import threading
import time
from collections.abc import Callable

import pytest
from pydantic import BaseModel

import latchkey
from tests.fixtures.gateway import GatewayHandle
from tests.sdk.conftest import Upstreams, sync_client


class Limits(BaseModel):
    rate: int


def _wait(check: Callable[[], bool], within: float = 15.0) -> None:
    """Poll an observable condition until it holds (never a fixed sleep as synchronisation)."""
    idle = threading.Event()
    deadline = time.monotonic() + within
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        idle.wait(0.05)  # polling interval of an observable condition


def scenario(gateway: GatewayHandle, upstreams: Upstreams, unique: str) -> None:
    with sync_client(gateway) as client:
        assert client.secrets.get("demo/app").data["greeting"] == "hello from Vault"
        with pytest.raises(latchkey.NotFound):
            client.secrets.get("demo/nope")
        creds = client.database.credentials("demo-readonly")
        assert gateway.postgres.can_login(creds.username, creds.password.get_secret_value(), "demo")
        assert creds.lease_id in {x.lease_id for x in client.leases.list()}
        assert client.leases.renew(creds.lease_id).lease_id == creds.lease_id
        client.leases.revoke(creds.lease_id)

        prefix = f"sync/{unique}/"
        upstreams.put(prefix + "rate", "5")
        assert client.config.get(prefix + "rate").text == "5"
        assert len(client.config.list(prefix)) == 1
        events: queue.Queue[latchkey.ConfigEvent | latchkey.StreamStatus] = queue.Queue()
        watch = client.config.watch(prefix, events.put)
        assert isinstance(events.get(timeout=10), latchkey.ConfigEvent)
        limits = client.config.bind(prefix, Limits)
        upstreams.put(prefix + "rate", "7")
        while True:
            event = events.get(timeout=10)
            if (
                isinstance(event, latchkey.ConfigEvent)
                and event.entries[prefix + "rate"].text == "7"
            ):
                break
        _wait(lambda: limits.rate == 7)
        watch.close()

        name = f"sync-{unique}"
        upstreams.register(name, 1)
        assert [i.id for i in client.services.healthy(name)] == [f"{name}-1"]
        svc_events: queue.Queue[latchkey.ServiceEvent | latchkey.StreamStatus] = queue.Queue()
        with client.services.watch(name, svc_events.put):
            first = svc_events.get(timeout=10)
            assert isinstance(first, latchkey.ServiceEvent)
        assert client.services.pick(name).id == f"{name}-1"
        assert client.status().identity == "app"


async def test_sync_client_end_to_end(
    gateway: GatewayHandle, upstreams: Upstreams, unique: str
) -> None:
    await asyncio.to_thread(scenario, gateway, upstreams, unique)
