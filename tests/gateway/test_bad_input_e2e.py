"""Every RPC refuses empty, oversized, traversal and non-UTF-8 input with INVALID_ARGUMENT."""

from __future__ import annotations

from typing import Any

import grpc
import pytest

from latchkey.v1 import config_pb2, discovery_pb2, gateway_pb2, secrets_pb2
from latchkey_server.devstack.seed import DEMO_ROLE
from tests.fixtures.gateway import GatewayHandle, Stubs

# (service, method, request class, the string field under test, streaming, empty allowed)
RPCS: list[tuple[str, str, Any, str, bool, bool]] = [
    ("Secrets", "GetSecret", secrets_pb2.GetSecretRequest, "path", False, False),
    ("Secrets", "GetDatabaseCredentials", secrets_pb2.GetDatabaseCredentialsRequest, "role", False, False),  # noqa: E501
    ("Secrets", "WatchDatabaseCredentials", secrets_pb2.WatchDatabaseCredentialsRequest, "role", True, False),  # noqa: E501
    ("Secrets", "AckRotation", secrets_pb2.AckRotationRequest, "watch_id", False, False),
    ("Secrets", "RenewLease", secrets_pb2.RenewLeaseRequest, "lease_id", False, False),
    ("Secrets", "RevokeLease", secrets_pb2.RevokeLeaseRequest, "lease_id", False, False),
    ("Secrets", "ListLeases", secrets_pb2.ListLeasesRequest, "role", False, True),
    ("Config", "Get", config_pb2.GetConfigRequest, "key", False, False),
    ("Config", "List", config_pb2.ListConfigRequest, "prefix", False, False),
    ("Config", "Watch", config_pb2.WatchConfigRequest, "prefix", True, False),
    ("Discovery", "GetHealthyInstances", discovery_pb2.GetHealthyInstancesRequest, "service", False, False),  # noqa: E501
    ("Discovery", "Watch", discovery_pb2.WatchServiceRequest, "service", True, False),
]  # fmt: skip

BAD_VALUES = {
    "oversized": "a" * 5000,
    "traversal": "a/../../etc/passwd",
    "double-slash": "a//b",
    "glob": "a/*",
    "percent": "a/%2e%2e/b",
}


def _valid(cls: Any, field: str) -> Any:
    """A request that is valid except for `field`."""
    defaults = {"rotation_id": "r1", "watch_id": "w1"}
    kwargs = {
        k: v for k, v in defaults.items() if k in cls.DESCRIPTOR.fields_by_name and k != field
    }
    return cls(**kwargs)


def _raw_with_invalid_utf8(cls: Any, field: str) -> bytes:
    base = _valid(cls, field).SerializeToString()
    number = cls.DESCRIPTOR.fields_by_name[field].number
    return base + bytes([(number << 3) | 2, 2]) + b"\xff\xfe"


async def _call(
    channel: grpc.aio.Channel, service: str, method: str, payload: bytes, streaming: bool,
    metadata: Any,
) -> grpc.StatusCode:  # fmt: skip
    path = f"/latchkey.v1.{service}/{method}"
    try:
        if streaming:
            call = channel.unary_stream(path)(payload, metadata=metadata)
            async for _ in call:
                break
            call.cancel()
            return grpc.StatusCode.OK
        await channel.unary_unary(path)(payload, metadata=metadata)
        return grpc.StatusCode.OK
    except grpc.aio.AioRpcError as err:
        return err.code()


@pytest.mark.parametrize(("service", "method", "cls", "field", "streaming", "empty_ok"), RPCS)
async def test_bad_input_is_invalid_argument(
    gateway: GatewayHandle, service: str, method: str, cls: Any, field: str, streaming: bool,
    empty_ok: bool,
) -> None:  # fmt: skip
    md = gateway.metadata()
    async with gateway.channel() as channel:
        payloads: dict[str, bytes] = {"non-utf8": _raw_with_invalid_utf8(cls, field)}
        if not empty_ok:
            payloads["empty"] = _valid(cls, field).SerializeToString()
        for label, value in BAD_VALUES.items():
            msg = _valid(cls, field)
            setattr(msg, field, value)
            payloads[label] = msg.SerializeToString()
        for label, payload in payloads.items():
            code = await _call(channel, service, method, payload, streaming, md)
            assert code == grpc.StatusCode.INVALID_ARGUMENT, f"{method} {field} {label}: {code}"


async def test_server_keeps_serving_after_bad_input(gateway: GatewayHandle, stubs: Stubs) -> None:
    status = await stubs.gateway.Status(gateway_pb2.StatusRequest(), metadata=gateway.metadata())
    assert status.identity == "app"
    reply = await stubs.secrets.GetDatabaseCredentials(
        secrets_pb2.GetDatabaseCredentialsRequest(role=DEMO_ROLE), metadata=gateway.metadata()
    )
    assert reply.credential.username
    await stubs.secrets.RevokeLease(
        secrets_pb2.RevokeLeaseRequest(lease_id=reply.credential.lease_id),
        metadata=gateway.metadata(),
    )
