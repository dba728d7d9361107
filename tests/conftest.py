"""Suite-wide setup: a clean environment and the real-component fixtures."""

from __future__ import annotations

import os
from collections.abc import Generator

import pytest

pytest_plugins = ["tests.fixtures.components", "tests.fixtures.vault", "tests.fixtures.gateway"]

# Variables from a developer's `.latchkey/dev.env` or shell must not steer the tests; libraries
# such as python-consul2 and hvac read them and would otherwise talk to the dev stack.
_STRIP = (
    "CONSUL_HTTP_ADDR", "CONSUL_HTTP_TOKEN", "CONSUL_HTTP_SSL", "CONSUL_HTTP_SSL_VERIFY",
    "VAULT_ADDR", "VAULT_TOKEN", "LATCHKEY_ADDR", "LATCHKEY_TOKEN", "LATCHKEY_CACERT",
    "LATCHKEY_CLIENT_CERT", "LATCHKEY_CLIENT_KEY", "LATCHKEY_DEMO_DB_ROLE", "LATCHKEY_DEMO_PG_DSN",
    "LATCHKEY_DEV_PID", "BAO_ADDR", "BAO_TOKEN", "PGHOST", "PGPORT", "PGDATABASE", "PGUSER",
    "PGPASSWORD", "GRPC_VERBOSITY", "GRPC_TRACE",
)  # fmt: skip
for _name in _STRIP:
    os.environ.pop(_name, None)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    """Attach the tail of every running component's log to a failing test's report."""
    report = yield
    if report.failed:
        from tests.fixtures.components import running_components

        for name, component in running_components().items():
            report.sections.append((f"{name} log (tail)", component.log_tail(60)))
    return report
