"""Defect 2: a resume across a Consul index reset diverged silently.

Before the fix, after a `-dev` Consul restarted empty and its index climbed past a client's old
`resume_index`, the client resuming with that index got a partial replay from the new epoch and
kept keys that no longer existed (49 keys seen vs 46 real). Now a Consul index reset starts a
new epoch; a resume from another epoch, or from an index the history cannot prove it covers,
gets a full snapshot flagged `reset`, and open streams get one too.

Each round restarts a real Consul agent under clients in every timing the test can provoke:
a stream open throughout (raw and SDK), a client away during the restart that resumes with its
old index after the new epoch passed it, a client that resumes while Consul is still down, and
one that resumes on another gateway. Every client must end with exactly Consul's key set.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import consul
import grpc
import pytest

import latchkey
from latchkey._streams import ConfigView
from latchkey.v1 import (
    common_pb2,
    config_pb2,
    config_pb2_grpc,
    discovery_pb2,
    discovery_pb2_grpc,
)
from latchkey_server.devstack.consul import ConsulAgent
from tests.faults.conftest import GatewayFactory
from tests.faults.process import GatewayProcess
from tests.gateway.helpers import eventually

pytestmark = pytest.mark.faults


@dataclass
class Reader:
    """A raw Config.Watch client keeping its state with the SDK's own ConfigView."""

    gw: GatewayProcess
    prefix: str
    view: ConfigView = field(default_factory=ConfigView)
    resets: int = 0
    task: asyncio.Task[None] | None = None
    channel: grpc.aio.Channel | None = None

    async def connect(self, gw: GatewayProcess | None = None) -> None:
        await self.disconnect()
        self.gw = gw or self.gw
        self.channel = grpc.aio.insecure_channel(self.gw.addr)
        stub = config_pb2_grpc.ConfigStub(self.channel)
        request = config_pb2.WatchConfigRequest(
            prefix=self.prefix,
            resume_index=self.view.resume_index,
            resume_epoch=self.view.resume_epoch,
        )
        call = stub.Watch(request, metadata=self.gw.metadata())
        self.task = asyncio.create_task(self._read(call))

    async def _read(self, call: Any) -> None:
        with contextlib.suppress(grpc.aio.AioRpcError):
            async for message in call:
                if message.WhichOneof("event") == "snapshot" and message.snapshot.reset:
                    self.resets += 1
                self.view.apply(message)

    async def disconnect(self) -> None:
        if self.task is not None:
            self.task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.task
            self.task = None
        if self.channel is not None:
            await self.channel.close()
            self.channel = None

    def state(self) -> dict[str, bytes]:
        return {key: entry.value for key, entry in self.view.entries.items()}


def _consul_state(agent: ConsulAgent, prefix: str) -> dict[str, bytes]:
    _, items = consul.Consul(host="127.0.0.1", port=agent.http_port).kv.get(prefix, recurse=True)
    return {item["Key"]: item["Value"] or b"" for item in items or []}


def _write(agent: ConsulAgent, prefix: str, keys: range, tag: str) -> None:
    kv = consul.Consul(host="127.0.0.1", port=agent.http_port).kv
    for n in keys:
        kv.put(f"{prefix}k{n:02d}", f"{tag}-{n}")


def _delete(agent: ConsulAgent, prefix: str, keys: range) -> None:
    kv = consul.Consul(host="127.0.0.1", port=agent.http_port).kv
    for n in keys:
        kv.delete(f"{prefix}k{n:02d}")


@contextlib.asynccontextmanager
async def _sdk_state(gw: GatewayProcess, prefix: str) -> AsyncIterator[dict[str, bytes]]:
    """The state an SDK `config.watch` callback sees (a snapshot replaces it)."""
    state: dict[str, bytes] = {}

    def on_event(event: Any) -> None:
        if isinstance(event, latchkey.ConfigEvent):
            state.clear()
            state.update({k: e.value for k, e in event.entries.items()})

    async with latchkey.AsyncClient(gw.addr, token=gw.tokens["app"], insecure=True) as client:
        watch = await client.config.watch(prefix, on_event)
        try:
            yield state
        finally:
            await watch.aclose()


@pytest.mark.parametrize("new_epoch_passes_old_index", [True, False])
async def test_every_client_ends_with_consuls_key_set_across_a_restart(
    gateway_process: GatewayFactory, private_consul: ConsulAgent, new_epoch_passes_old_index: bool
) -> None:
    prefix = f"faults/epoch-{uuid.uuid4().hex[:6]}/"
    _write(private_consul, prefix, range(0, 30), "old")
    # Push the old epoch's index well above what the new epoch reaches before the clients
    # resume: the replicas' own Consul writes (sessions, locks, registrations) raise it too.
    for _ in range(150):
        _write(private_consul, prefix, range(30, 31), "churn")
    _delete(private_consul, prefix, range(30, 31))
    gw = gateway_process("epoch-a", consul=private_consul)
    gw_b = gateway_process("epoch-b", consul=private_consul)
    open_reader = Reader(gw, prefix)
    away = Reader(gw, prefix)
    early = Reader(gw, prefix)
    moving = Reader(gw, prefix)
    readers = (open_reader, away, early, moving)
    async with _sdk_state(gw, prefix) as sdk:
        for reader in readers:
            await reader.connect()
        expected = _consul_state(private_consul, prefix)
        await eventually(
            lambda: all(r.state() == expected for r in readers) and sdk == expected,
            what="every client has the first snapshot",
        )
        old_index = away.view.resume_index
        for reader in (away, early, moving):
            await reader.disconnect()

        await asyncio.to_thread(private_consul.stop)
        await early.connect()  # resumes while Consul is down: stale data, then the new epoch
        await asyncio.to_thread(private_consul.start)
        # The new epoch: keys 0-9 come back with new values, 10-29 are gone, 40-44 are new.
        _write(private_consul, prefix, range(0, 10), "new")
        _write(private_consul, prefix, range(40, 45), "new")
        if new_epoch_passes_old_index:
            # Churn until Consul's index passes the old one, then delete keys again: a replay
            # of only the changes after the old index would miss these deletes.
            kv = consul.Consul(host="127.0.0.1", port=private_consul.http_port).kv
            n = 0
            while int(kv.get(prefix, recurse=True)[0]) <= old_index + 5:
                kv.put(f"{prefix}churn", str(n))
                n += 1
            _delete(private_consul, prefix, range(40, 43))
            kv.delete(f"{prefix}churn")
            _write(private_consul, prefix, range(50, 52), "late")
            assert int(kv.get(prefix, recurse=True)[0]) > old_index
        else:  # the scenario this case is about: Consul's index went backwards
            kv = consul.Consul(host="127.0.0.1", port=private_consul.http_port).kv
            assert int(kv.get(prefix, recurse=True)[0]) < old_index
        expected = _consul_state(private_consul, prefix)
        assert set(expected) != {f"{prefix}k{n:02d}" for n in range(30)}

        await away.connect()  # resumes with its old index (and old epoch)
        await moving.connect(gw_b)  # resumes on another gateway
        try:
            await eventually(
                lambda: all(r.state() == expected for r in readers) and sdk == expected,
                within=60,
                what="every client ends with exactly Consul's key set",
            )
        finally:
            for reader in readers:
                seen = reader.state()
                print(
                    f"{reader.gw.workdir.name}: {len(seen)} keys seen, {len(expected)} in Consul,"
                    f" {len(set(seen) - set(expected))} stale, resets={reader.resets}"
                )
        if not new_epoch_passes_old_index:
            # Consul's index went backwards: open and resuming streams were told at once.
            assert open_reader.resets >= 1
            assert away.resets >= 1
        # (Otherwise the gateway may have seen the index only move forward: its history of
        # its own states still leads exactly from the old index to the present.)
    for reader in readers:
        await reader.disconnect()


async def test_discovery_watch_learns_the_new_epoch(
    gateway_process: GatewayFactory, private_consul: ConsulAgent
) -> None:
    agent = consul.Consul(host="127.0.0.1", port=private_consul.http_port).agent
    agent.service.register("epochsvc", service_id="epochsvc-1", port=9001)
    gw = gateway_process("epoch-disc", consul=private_consul)
    async with grpc.aio.insecure_channel(gw.addr) as channel:
        stub = discovery_pb2_grpc.DiscoveryStub(channel)
        call = stub.Watch(
            discovery_pb2.WatchServiceRequest(service="epochsvc"), metadata=gw.metadata()
        )

        async def next_event() -> discovery_pb2.ServiceEvent:
            return await asyncio.wait_for(call.read(), timeout=60)

        first = (await next_event()).instances
        assert [i.id for i in first.instances] == ["epochsvc-1"]
        await asyncio.to_thread(private_consul.restart)
        agent = consul.Consul(host="127.0.0.1", port=private_consul.http_port).agent
        agent.service.register("epochsvc", service_id="epochsvc-1", port=9001)
        registered_at = time.time()
        # The stream follows the restarted agent until the gateway confirmed the new state
        # (heard from Consul after the re-registration) and the client holds the instance.
        # When Consul's index went backwards, that state belongs to a new epoch, announced by
        # a set flagged reset (sent even if the instances are the same); when it moved
        # forward, an unchanged set is (rightly) not sent again.
        current, sets = first, []
        async with asyncio.timeout(60):
            while True:
                event = await next_event()
                if event.WhichOneof("event") == "instances":
                    current = event.instances
                    sets.append(current)
                    freshness = current.freshness
                else:
                    freshness = event.heartbeat.freshness
                contact = freshness.last_contact
                confirmed = contact.seconds + contact.nanos / 1e9 > registered_at
                reachable = freshness.upstream == common_pb2.UPSTREAM_STATE_CONNECTED
                ids = [i.id for i in current.instances]
                if confirmed and reachable and ids == ["epochsvc-1"]:
                    break
        print([(s.epoch, s.reset, s.index, len(s.instances)) for s in sets], first.index)
        if freshness.index < first.index:
            assert current.epoch != first.epoch
            assert any(s.reset for s in sets)
        call.cancel()
