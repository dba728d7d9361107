"""Defects 3 and 7: a shared port, and the smaller ones found by hostile input.

Before the fix: a second gateway bound the same address without error (SO_REUSEPORT);
RenewLease with a huge increment returned INTERNAL (OverflowError) before authorization;
Gateway.Status was not authorized; undecodable health requests got UNKNOWN with the exception
text and an ERROR log line each; and whether a lease existed leaked through the error
("not held by the caller" vs "not held by the gateway").
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import grpc
import pytest
from google.protobuf import duration_pb2

from latchkey.v1 import gateway_pb2, gateway_pb2_grpc, secrets_pb2, secrets_pb2_grpc
from latchkey_server.devstack.seed import DEMO_ROLE
from tests.faults.conftest import GatewayFactory
from tests.gateway.helpers import eventually

pytestmark = pytest.mark.faults

INVALID = grpc.StatusCode.INVALID_ARGUMENT


def test_a_second_gateway_on_the_same_address_fails_clearly(
    gateway_process: GatewayFactory,
) -> None:
    first = gateway_process("first")
    second = gateway_process("second", start=False)
    second.port = first.port
    second.config["listen"] = first.addr
    # Readiness cannot be probed (the first gateway answers on that address): wait for exit.
    second.launch()
    assert second.wait_exit(timeout=60) != 0
    log = second.log_text()
    assert f"cannot listen on {first.addr}" in log, log
    assert "in use" in log
    assert "Traceback" not in log


async def test_huge_increment_is_invalid_before_anything_else(
    gateway_process: GatewayFactory,
) -> None:
    gw = gateway_process("renew")
    async with grpc.aio.insecure_channel(gw.addr) as channel:
        stub = secrets_pb2_grpc.SecretsStub(channel)
        for lease_id in ("database/creds/demo-readonly/x", "", "../../etc"):
            for increment in (
                duration_pb2.Duration(seconds=10**15),
                duration_pb2.Duration(seconds=-5),
                duration_pb2.Duration(seconds=1, nanos=-1),
            ):
                with pytest.raises(grpc.aio.AioRpcError) as err:
                    await stub.RenewLease(
                        secrets_pb2.RenewLeaseRequest(lease_id=lease_id, increment=increment),
                        metadata=gw.metadata(),
                    )
                assert err.value.code() == INVALID, err.value.details()
                assert "increment" in (err.value.details() or "")
    assert "OverflowError" not in gw.log_text()


def _policies(tmp_path: Path) -> Path:
    folder = tmp_path / "policies-nostatus"
    folder.mkdir()
    (folder / "reader.hcl").write_text('config "*" { capabilities = ["read"] }\n')
    (folder / "viewer.hcl").write_text('gateway "status" { capabilities = ["status"] }\n')
    (folder / "bindings.hcl").write_text(
        'binding "app" { policies = ["reader"] }\n'
        'binding "other" { policies = ["reader", "viewer"] }\n'
    )
    return folder


async def test_status_needs_the_status_capability(
    gateway_process: GatewayFactory, tmp_path: Path
) -> None:
    gw = gateway_process("status", auth={"policies_dir": str(_policies(tmp_path))})
    async with grpc.aio.insecure_channel(gw.addr) as channel:
        stub = gateway_pb2_grpc.GatewayStub(channel)
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await stub.Status(gateway_pb2.StatusRequest(), metadata=gw.metadata("app"))
        assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED
        allowed = await stub.Status(gateway_pb2.StatusRequest(), metadata=gw.metadata("other"))
        assert allowed.identity == "other"

    def denied_lines() -> list[dict[str, Any]]:
        return [
            line
            for line in gw.audit_lines()
            if line["rpc"].endswith("/Status") and line["identity"] == "app"
        ]

    # A call that returns no secret is audited just after its reply, by the writer thread.
    await eventually(lambda: bool(denied_lines()), what="the denied Status audit line")
    denied = denied_lines()
    assert [(d["kind"], d["capability"], d["decision"]) for d in denied] == [
        ("gateway", "status", "deny")
    ]


async def test_undecodable_health_requests_are_invalid_and_not_logged(
    gateway_process: GatewayFactory,
) -> None:
    gw = gateway_process("health")
    async with grpc.aio.insecure_channel(gw.addr) as channel:
        for method in ("/grpc.health.v1.Health/Check", "/grpc.health.v1.Health/Watch"):
            for garbage in (b"\xff\xff\xff", b"\x0a\x05ab"):
                if method.endswith("Check"):
                    call = channel.unary_unary(method)(garbage, timeout=5)
                    with pytest.raises(grpc.aio.AioRpcError) as err:
                        await call
                else:
                    stream = channel.unary_stream(method)(garbage, timeout=5)
                    with pytest.raises(grpc.aio.AioRpcError) as err:
                        await stream.read()
                assert err.value.code() == INVALID, (method, err.value.code())
                assert "Unexpected" not in (err.value.details() or "")
    log = gw.log_text()
    assert '"level": "ERROR"' not in log, log[-2000:]
    assert "DecodeError" not in log


async def test_one_answer_for_a_lease_you_may_not_act_on(gateway_process: GatewayFactory) -> None:
    gw = gateway_process("leases")
    async with grpc.aio.insecure_channel(gw.addr) as channel:
        stub = secrets_pb2_grpc.SecretsStub(channel)
        held = await stub.GetDatabaseCredentials(
            secrets_pb2.GetDatabaseCredentialsRequest(role=DEMO_ROLE), metadata=gw.metadata("app")
        )
        theirs = held.credential.lease_id
        missing = theirs.rsplit("/", 1)[0] + "/no-such-lease"
        answers = []
        for lease_id in (theirs, missing):
            for call in (
                stub.RenewLease(
                    secrets_pb2.RenewLeaseRequest(lease_id=lease_id), metadata=gw.metadata("other")
                ),
                stub.RevokeLease(
                    secrets_pb2.RevokeLeaseRequest(lease_id=lease_id),
                    metadata=gw.metadata("other"),
                ),
            ):
                with pytest.raises(grpc.aio.AioRpcError) as err:
                    await call
                answers.append(
                    (err.value.code(), (err.value.details() or "").replace(lease_id, "X"))
                )
        assert len(set(answers)) == 1, answers
        assert answers[0][0] == grpc.StatusCode.NOT_FOUND
