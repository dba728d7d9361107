"""flagd.sync.v1 served by the gateway: the stock Python flagd provider (openfeature-provider-
flagd, in-process resolver) evaluates flags kept in the real Consul, over TLS with a bearer
token, and follows changes; policies and audit apply as for Config.Watch."""

from __future__ import annotations

import asyncio
import json
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import consul
import grpc
import pytest
from openfeature import api
from openfeature.contrib.provider.flagd import FlagdProvider
from openfeature.contrib.provider.flagd.config import ResolverType
from openfeature.evaluation_context import EvaluationContext
from openfeature.event import EventDetails, ProviderEvent
from openfeature.schemas.protobuf.flagd.sync.v1 import sync_pb2, sync_pb2_grpc

import latchkey
from latchkey.openfeature import LatchkeyProvider
from latchkey_server.access.certs import init_ca, issue_server
from latchkey_server.brokers.flag_sets import merge_flag_sets
from latchkey_server.devstack.consul import ConsulAgent
from latchkey_server.devstack.postgres import PostgresCluster
from latchkey_server.devstack.seed import new_ui_flag_set
from tests.fixtures.gateway import GatewayHandle, start_gateway

USERS = [f"user-{n}" for n in range(2_000)]


def stock_scenario(handle: GatewayHandle, kv: Any, ca_file: Path, port: int) -> None:
    ca = ca_file.read_bytes()
    prefix = f"flags/{uuid.uuid4().hex[:8]}/production/"
    kv.put(prefix + "web", json.dumps(new_ui_flag_set(10)))
    credentials = grpc.composite_channel_credentials(
        grpc.ssl_channel_credentials(ca), grpc.access_token_call_credentials(handle.tokens["app"])
    )
    stock = FlagdProvider(
        resolver_type=ResolverType.IN_PROCESS, host="127.0.0.1", port=port, selector=prefix,
        channel_credentials=credentials, deadline_ms=15_000,
    )  # fmt: skip
    domain = f"stock-{uuid.uuid4().hex[:6]}"
    changed = threading.Event()
    flags = api.get_client(domain)

    def on_change(details: EventDetails) -> None:
        changed.set()

    flags.add_handler(ProviderEvent.PROVIDER_CONFIGURATION_CHANGED, on_change)
    api.set_provider_and_wait(stock, domain=domain)
    with latchkey.Client(handle.addr, token=handle.tokens["app"], cacert=ca_file) as client:
        ours = LatchkeyProvider(client, prefix)
        ours.initialize(EvaluationContext())
        try:
            stock_values = [
                flags.get_boolean_value("new_ui", False, EvaluationContext(u)) for u in USERS
            ]
            our_values = [
                ours.resolve_boolean_details("new_ui", False, EvaluationContext(u)).value
                for u in USERS
            ]
            # the same flagd semantics on both sides: the same users get the new UI
            assert stock_values == our_values
            assert 0.07 <= sum(stock_values) / len(USERS) <= 0.13
            details = flags.get_boolean_details("new_ui", False, EvaluationContext("user-1"))
            assert details.reason == "TARGETING_MATCH"

            changed.clear()
            kv.put(prefix + "web", json.dumps(new_ui_flag_set(100)))
            assert changed.wait(15), "the stock provider never saw the change"
            deadline = time.monotonic() + 15
            while not all(flags.get_boolean_value("new_ui", False, EvaluationContext(u))
                          for u in USERS[:50]):  # fmt: skip
                assert time.monotonic() < deadline, "the change did not reach evaluations"
                changed.clear()
                changed.wait(1)
        finally:
            ours.shutdown()
            stock.shutdown()


async def test_stock_flagd_provider_evaluates_flags_served_by_latchkey(
    demo_env: dict[str, Any],
    consul_agent: ConsulAgent,
    vault_server: Any,
    postgres: PostgresCluster,
    tmp_path: Path,
) -> None:
    tls_dir = tmp_path / "tls"
    init_ca(tls_dir)
    server = issue_server(tls_dir)
    handle = await start_gateway(
        demo_env, consul_agent, vault_server, postgres, insecure=False,
        tls={"cert_file": str(server.cert), "key_file": str(server.key)},
    )  # fmt: skip
    try:
        kv = consul.Consul(host="127.0.0.1", port=consul_agent.http_port).kv
        port = int(handle.addr.rsplit(":", 1)[1])
        await asyncio.to_thread(stock_scenario, handle, kv, tls_dir / "ca.crt", port)
    finally:
        await handle.gateway.stop()
    text = await asyncio.to_thread(Path(demo_env["audit_file"]).read_text)
    audit = [json.loads(line) for line in text.splitlines()]
    synced = [r for r in audit if r["rpc"] == "/flagd.sync.v1.FlagSyncService/SyncFlags"]
    assert synced, "SyncFlags streams are audited"
    assert {r["kind"] for r in synced} == {"config"}
    assert {r["capability"] for r in synced} == {"watch"}
    assert any(r["event"] == "stream_open" and r["identity"] == "app" for r in synced)


async def test_sync_rpcs_need_a_selector_and_follow_policies(
    gateway: GatewayHandle, consul_agent: ConsulAgent
) -> None:
    kv = consul.Consul(host="127.0.0.1", port=consul_agent.http_port).kv
    prefix = f"flags/{uuid.uuid4().hex[:8]}/"
    kv.put(prefix + "web", json.dumps(new_ui_flag_set(10)))
    async with gateway.channel() as channel:
        stub = sync_pb2_grpc.FlagSyncServiceStub(channel)
        md = gateway.metadata()
        got = await stub.FetchAllFlags(
            sync_pb2.FetchAllFlagsRequest(), metadata=(*md, ("flagd-selector", prefix))
        )
        assert set(json.loads(got.flag_configuration)["flags"]) == {"new_ui"}
        with pytest.raises(grpc.aio.AioRpcError) as missing:
            await stub.FetchAllFlags(sync_pb2.FetchAllFlagsRequest(), metadata=md)
        assert missing.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "flagd-selector" in (missing.value.details() or "")
        with pytest.raises(grpc.aio.AioRpcError) as bad:
            await stub.FetchAllFlags(sync_pb2.FetchAllFlagsRequest(selector="../x"), metadata=md)
        assert bad.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        with pytest.raises(grpc.aio.AioRpcError) as anonymous:
            await stub.FetchAllFlags(sync_pb2.FetchAllFlagsRequest(selector=prefix))
        assert anonymous.value.code() == grpc.StatusCode.UNAUTHENTICATED
        stream = stub.SyncFlags(sync_pb2.SyncFlagsRequest(selector=prefix), metadata=md)
        first = await stream.read()
        assert set(json.loads(first.flag_configuration)["flags"]) == {"new_ui"}
        assert first.sync_context["prefix"] == prefix
        kv.put(prefix + "web", json.dumps(new_ui_flag_set(30)))
        second = await asyncio.wait_for(stream.read(), 15)
        targeting = json.loads(second.flag_configuration)["flags"]["new_ui"]["targeting"]
        assert targeting == {"fractional": [["on", 30], ["off", 70]]}
        stream.cancel()


def test_merge_flag_sets_resolves_refs_and_leaves_out_invalid_sets() -> None:
    shared = {
        "$evaluators": {"pros": {"==": [{"var": "plan"}, "pro"]}},
        "metadata": {"team": "web"},
        "flags": {
            "theme": {
                "state": "ENABLED",
                "variants": {"dark": "dark", "light": "light"},
                "defaultVariant": "light",
                "targeting": {"if": [{"$ref": "pros"}, "dark", None]},
                "metadata": {"owner": "ana"},
            }
        },
    }
    merged = merge_flag_sets({
        "f/a": json.dumps(new_ui_flag_set(10)).encode(),
        "f/b": json.dumps(shared).encode(),
        "f/c": b"{not json",
        "f/d": json.dumps(new_ui_flag_set(90)).encode(),  # a duplicate: f/a wins
    })  # fmt: skip
    document = json.loads(merged.document)
    assert merged.invalid == ("f/c",)
    assert document["flags"]["new_ui"]["targeting"]["fractional"][0] == ["on", 10]
    theme = document["flags"]["theme"]
    assert theme["targeting"] == {"if": [{"==": [{"var": "plan"}, "pro"]}, "dark", None]}
    assert theme["metadata"] == {"team": "web", "owner": "ana"}
    unknown = {"flags": {"x": {"targeting": {"$ref": "nope"}}}}
    assert merge_flag_sets({"f/x": json.dumps(unknown).encode()}).invalid == ("f/x",)
