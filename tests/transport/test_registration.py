"""Discovery.Register requests as registrations: Go durations, the peer address, defaults."""

from __future__ import annotations

import re

import pytest

from latchkey.v1 import discovery_pb2
from latchkey_server.errors import InvalidArgument
from latchkey_server.models import CheckKind
from latchkey_server.transport import validate
from latchkey_server.transport.registration import peer_host, registration


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("10s", 10.0), ("1m30s", 90.0), ("500ms", 0.5), ("1h", 3600.0), ("1.5s", 1.5), ("", 7.0)],
)
def test_go_durations(text: str, seconds: float) -> None:
    assert validate.go_duration("d", text, default=7.0, low=0.1, high=86400) == seconds


@pytest.mark.parametrize("text", ["10", "s", "10 s", "-1s", "1d", "10s5", "1e3s", "x" * 40])
def test_bad_go_durations_say_how_to_write_one(text: str) -> None:
    with pytest.raises(InvalidArgument, match=re.escape('e.g. "10s"')):
        validate.go_duration("interval", text, default=1.0, low=0.0, high=1e9)


def test_out_of_range_durations_name_the_range() -> None:
    with pytest.raises(InvalidArgument, match="between 1m and 720h"):
        validate.go_duration("d", "30s", default=60.0, low=60.0, high=30 * 86400.0)


@pytest.mark.parametrize(
    ("peer", "host"),
    [
        ("ipv4:10.0.0.5:5312", "10.0.0.5"),
        ("ipv6:%5B::1%5D:5312", "::1"),
        ("ipv6:[2001:db8::1]:80", "2001:db8::1"),
        ("unix:/tmp/sock", ""),
        ("", ""),
    ],
)
def test_peer_host(peer: str, host: str) -> None:
    assert peer_host(peer) == host


def test_defaults_and_the_stream_check() -> None:
    request = discovery_pb2.RegisterRequest(service="myapp", port=3000)
    reg = registration(request, "ipv4:10.1.2.3:4000", stream_ttl=1.5)
    assert reg.instance_id.startswith("myapp-")
    assert reg.address == "10.1.2.3"
    (check,) = reg.checks
    assert check.kind is CheckKind.TTL
    assert check.interval == 3.0, "a stream TTL is at least 3 s"
    assert check.deregister_after == 60.0
    assert check.check_id == f"service:{reg.instance_id}:stream"


def test_named_checks_with_defaults() -> None:
    request = discovery_pb2.RegisterRequest(
        service="myapp", id="myapp-a", address="app.internal", port=3000, ttl_check=True,
        checks=[
            discovery_pb2.ServiceCheck(http="http://127.0.0.1:3000/health"),
            discovery_pb2.ServiceCheck(tcp="127.0.0.1:3000", interval="2s"),
            discovery_pb2.ServiceCheck(grpc="127.0.0.1:3001/my.Service", timeout="1s"),
        ],
    )  # fmt: skip
    reg = registration(request, "ipv4:10.1.2.3:4000", stream_ttl=30.0)
    assert reg.address == "app.internal"
    kinds = [(c.kind, c.interval, c.timeout, c.check_id) for c in reg.checks]
    assert kinds == [
        (CheckKind.HTTP, 10.0, 5.0, "service:myapp-a:1"),
        (CheckKind.TCP, 2.0, 2.0, "service:myapp-a:2"),
        (CheckKind.GRPC, 10.0, 1.0, "service:myapp-a:3"),
        (CheckKind.TTL, 30.0, 30.0, "service:myapp-a:stream"),
    ]


def test_an_address_is_needed_when_the_peer_has_none() -> None:
    with pytest.raises(InvalidArgument, match="address is required"):
        registration(discovery_pb2.RegisterRequest(service="x", port=1), "unix:/s", stream_ttl=3)
