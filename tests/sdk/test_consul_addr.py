"""`consul://AGENT/SERVICE` addresses and Consul's health answer, read without I/O.

The query itself runs against a real Consul agent and real replicas in
tests/faults/test_failover.py (SDK) and tests/faults/test_replicas.py (CLI).
"""

from __future__ import annotations

import pytest

import latchkey
from latchkey import ConfigurationError
from latchkey._consul import ConsulReplicas, parse, targets
from latchkey._settings import ENV_CONSUL_TOKEN, resolve_settings


def test_an_agent_and_a_service() -> None:
    assert parse("consul://10.0.0.5:8500/latchkey") == ConsulReplicas(
        agent="10.0.0.5:8500", service="latchkey"
    )
    assert parse("consul://consul.internal/gw").agent == "consul.internal:8500"  # default port


def test_scheme_datacenter_and_tag_come_from_the_query() -> None:
    found = parse("consul://c:8501/latchkey?scheme=https&dc=eu1&tag=blue")
    assert (found.https, found.datacenter, found.tag) == (True, "eu1", "blue")


@pytest.mark.parametrize(
    ("addr", "says"),
    [
        ("consul://127.0.0.1:8500", "consul://AGENT/SERVICE"),
        ("consul://127.0.0.1:8500/a/b", "consul://AGENT/SERVICE"),
        ("consul://tok@127.0.0.1:8500/latchkey", "LATCHKEY_CONSUL_TOKEN"),
        ("consul://127.0.0.1:8500/latchkey?token=x", "take scheme (http or https), dc and tag"),
        ("consul://127.0.0.1:8500/latchkey?scheme=ftp", "use http or https"),
    ],
)
def test_a_bad_address_says_what_to_write(addr: str, says: str) -> None:
    with pytest.raises(ConfigurationError) as raised:
        parse(addr)
    assert says in raised.value.message


def test_settings_take_the_token_from_the_environment_only() -> None:
    settings = resolve_settings(
        "consul://127.0.0.1:8500/latchkey", environ={ENV_CONSUL_TOKEN: "acl-secret"}
    )
    assert settings.endpoints == ()
    assert settings.replicas is not None
    assert settings.replicas.token == "acl-secret"
    assert "acl-secret" not in repr(settings)
    assert settings.replicas_tls is False


def test_a_consul_address_stands_alone() -> None:
    with pytest.raises(ConfigurationError) as raised:
        resolve_settings("consul://127.0.0.1:8500/latchkey,127.0.0.1:7400", environ={})
    assert "stands alone" in raised.value.message


def test_a_static_list_keeps_working() -> None:
    settings = resolve_settings("a:7400, b:7400", environ={})
    assert [e.target for e in settings.endpoints] == ["a:7400", "b:7400"]
    assert settings.replicas is None


def test_targets_use_the_service_address_else_the_node_address() -> None:
    body = [
        {"Node": {"Address": "10.0.0.1"}, "Service": {"Address": "", "Port": 7400}},
        {"Node": {"Address": "10.0.0.2"}, "Service": {"Address": "10.1.0.9", "Port": 7401}},
        {"Node": {"Address": "10.0.0.3"}, "Service": {"Address": "fd00::1", "Port": 7400}},
        {"Node": {"Address": "10.0.0.4"}, "Service": {"Address": "x", "Port": 0}},  # no port
    ]
    assert targets(body) == ["10.0.0.1:7400", "10.1.0.9:7401", "[fd00::1]:7400"]


def test_a_client_names_where_it_finds_the_gateways_and_does_no_io_until_used() -> None:
    with latchkey.Client("consul://127.0.0.1:1/latchkey", token="t") as client:
        assert repr(client) == "<Client addr='consul://127.0.0.1:1/latchkey'>"
        assert client.address == "consul://127.0.0.1:1/latchkey"
