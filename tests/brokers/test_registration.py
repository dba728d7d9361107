"""The address a replica registers in Consul (pure rules; registration itself runs against a
real Consul agent in tests/faults/test_replicas.py and tests/faults/test_failover.py)."""

from __future__ import annotations

import pytest

from latchkey_server.brokers.registration import RegistrationConfig, advertised


@pytest.mark.parametrize(
    ("listen", "expected"),
    [
        ("127.0.0.1:7400", ("127.0.0.1", 7400)),
        ("10.2.3.4:0", ("10.2.3.4", 40123)),  # the port the gateway bound
        ("0.0.0.0:7400", ("", 7400)),  # a wildcard: Consul hands out the node's address
        ("[::]:7400", ("", 7400)),
        ("[fd00::5]:7400", ("fd00::5", 7400)),
    ],
)
def test_the_listen_address_unless_it_is_a_wildcard(listen: str, expected: tuple[str, int]) -> None:
    bound = int(listen.rsplit(":", 1)[1]) or 40123
    assert advertised(listen, RegistrationConfig(), bound) == expected


def test_configured_address_and_port_win() -> None:
    config = RegistrationConfig(address="10.9.9.9", port=443)
    assert advertised("0.0.0.0:7400", config, 7400) == ("10.9.9.9", 443)
