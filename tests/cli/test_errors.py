"""Each CLI error names its fix and exits with its code from the one table (`latchkey --help`).

TLS failures run the installed `latchkey` against a real TLS gateway (its own CA, requiring
client certificates), so gRPC core starts as it does for users: its own log lines must not
reach the output unless `--debug`.
"""

from __future__ import annotations

import asyncio
import json
import signal
import socket
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from latchkey_server.access.certs import init_ca, issue_client
from latchkey_server.devstack.consul import ConsulAgent
from latchkey_server.devstack.postgres import PostgresCluster
from tests.cli.helpers import GRPC_LOG_LINE, LATCHKEY, Run, clean_env, run_cli
from tests.fixtures.gateway import GatewayHandle
from tests.gateway.access_helpers import TlsGateway, start_tls_gateway
from tests.sdk.conftest import Upstreams


@pytest.fixture(scope="module")
async def tls_gateway(
    tmp_path_factory: pytest.TempPathFactory, demo_env: dict[str, Any],
    consul_agent: ConsulAgent, vault_server: Any, postgres: PostgresCluster,
) -> AsyncIterator[TlsGateway]:  # fmt: skip
    gw = await start_tls_gateway(
        tmp_path_factory.mktemp("cli-tls"), demo_env, consul_agent, vault_server, postgres
    )
    yield gw
    await gw.handle.gateway.stop()


@pytest.fixture(scope="module")
def other_ca(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A CA the gateway does not know, with a client certificate it issued."""
    directory = tmp_path_factory.mktemp("other-ca")
    init_ca(directory)
    issue_client(directory, identity="operator", out_name="rogue")
    return directory


def _env(gw: TlsGateway, **extra: str) -> dict[str, str]:
    cert = gw.client_certs["operator"]
    settings = {
        "LATCHKEY_ADDR": gw.handle.addr,
        "LATCHKEY_TOKEN": gw.handle.tokens["operator"],
        "LATCHKEY_CACERT": str(gw.tls_dir / "ca.crt"),
        "LATCHKEY_CLIENT_CERT": str(cert.cert),
        "LATCHKEY_CLIENT_KEY": str(cert.key),
    }
    return clean_env(**{**settings, **extra})


def _fails(run: Run, code: int, *needles: str) -> None:
    assert run.code == code, run
    assert run.stderr.startswith("error: "), run
    assert len(run.stderr.splitlines()) == 1, run  # one line, no traceback, no gRPC log
    for needle in needles:
        assert needle in run.stderr, run


async def test_mtls_works_and_grpc_core_stays_quiet(tls_gateway: TlsGateway) -> None:
    ok = await run_cli("status", "--field", "identity", env=_env(tls_gateway))
    assert (ok.code, ok.stdout, ok.stderr) == (0, "operator\n", "")


async def test_no_client_certificate_is_named(tls_gateway: TlsGateway) -> None:
    env = _env(tls_gateway)
    del env["LATCHKEY_CLIENT_CERT"], env["LATCHKEY_CLIENT_KEY"]
    run = await run_cli("--retry-deadline", "0.5", "status", env=env)
    _fails(run, 7, "error: HandshakeFailed:", "no client certificate was sent",
           "LATCHKEY_CLIENT_CERT", "LATCHKEY_CLIENT_KEY", "source .latchkey/dev.env")  # fmt: skip


async def test_unknown_ca_is_named_and_debug_shows_grpc_core(
    tls_gateway: TlsGateway, other_ca: Path
) -> None:
    env = _env(tls_gateway, LATCHKEY_CACERT=str(other_ca / "ca.crt"))
    run = await run_cli("status", env=env)
    _fails(run, 7, "error: HandshakeFailed:", "does not verify against the CA in LATCHKEY_CACERT",
           "CERTIFICATE_VERIFY_FAILED")  # fmt: skip
    debug = await run_cli("--debug", "status", env=env)
    assert debug.code == 7
    assert GRPC_LOG_LINE.search(debug.stderr), debug.stderr
    assert "Handshake failed" in debug.stderr


async def test_refused_client_certificate_is_named(tls_gateway: TlsGateway, other_ca: Path) -> None:
    env = _env(
        tls_gateway,
        LATCHKEY_CLIENT_CERT=str(other_ca / "rogue.crt"),
        LATCHKEY_CLIENT_KEY=str(other_ca / "rogue.key"),
    )
    run = await run_cli("--retry-deadline", "0.5", "status", env=env)
    _fails(run, 7, "did not accept the client certificate in LATCHKEY_CLIENT_CERT")


async def test_plaintext_to_tls_and_tls_to_plaintext(
    tls_gateway: TlsGateway, gateway: GatewayHandle
) -> None:
    plain = clean_env(
        LATCHKEY_ADDR=f"http://{tls_gateway.handle.addr}",
        LATCHKEY_TOKEN=tls_gateway.handle.tokens["operator"],
    )
    run = await run_cli("--retry-deadline", "0.5", "status", env=plain)
    _fails(run, 7, "closed the plaintext connection", "LATCHKEY_CACERT", "https://")
    tls = _env(tls_gateway, LATCHKEY_ADDR=gateway.addr)
    run = await run_cli("status", env=tls)
    _fails(run, 7, f"the server at {gateway.addr} does not speak TLS",
           f"LATCHKEY_ADDR=http://{gateway.addr}")  # fmt: skip


async def test_no_address_names_the_flag_the_variable_and_dev_env() -> None:
    run = await run_cli("status", env=clean_env())
    _fails(run, 7, "error: ConfigurationError: no gateway address: pass --addr or set "
           "LATCHKEY_ADDR", "source .latchkey/dev.env")  # fmt: skip
    assert "addr=" not in run.stderr


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def test_dev_env_of_a_stopped_stack(tmp_path: Path) -> None:
    addr = f"127.0.0.1:{_closed_port()}"
    # A process standing in for `latchkey-server dev` (its command line names latchkey).
    stand_in = await asyncio.create_subprocess_exec(
        sys.executable, "-c", "import sys; sys.stdin.read()", "latchkey-server", "dev",
        stdin=asyncio.subprocess.PIPE,
    )  # fmt: skip
    try:
        env = clean_env(LATCHKEY_ADDR=addr, LATCHKEY_DEV_PID=str(stand_in.pid))
        alive = await run_cli("--retry-deadline", "0.3", "status", env=env)
        _fails(alive, 5, "error: Unavailable: nothing accepts connections at " + addr)
    finally:
        assert stand_in.stdin is not None
        stand_in.stdin.close()
        await asyncio.wait_for(stand_in.wait(), 30)
    gone = await run_cli("status", env=env)
    _fails(gone, 5, "error: DevStackNotRunning: the dev stack is not running",
           f"LATCHKEY_DEV_PID {stand_in.pid} has exited", "run make dev")  # fmt: skip


async def test_unauthenticated_has_its_own_code(gateway: GatewayHandle) -> None:
    run = await run_cli("status", env=clean_env(LATCHKEY_ADDR=gateway.addr, LATCHKEY_TOKEN="no"))
    _fails(run, 6, "error: Unauthenticated: unknown or revoked token")


def _app_env(gateway: GatewayHandle) -> dict[str, str]:
    return clean_env(LATCHKEY_ADDR=gateway.addr, LATCHKEY_TOKEN=gateway.tokens["app"])


async def test_vault_style_secret_paths(gateway: GatewayHandle) -> None:
    env = _app_env(gateway)
    for path in ("secret/data/demo/app", "secret/demo/app", "demo/app"):
        run = await run_cli("secrets", "get", path, "--field", "greeting", env=env)
        assert (run.code, run.stdout) == (0, "hello from Vault\n"), (path, run)
    shown = await run_cli("secrets", "get", "demo/app", env=env)
    name = shown.stdout.splitlines()[0].split(" (version")[0]
    assert name == "secret/demo/app"
    pasted = await run_cli("secrets", "get", name, "--field", "greeting", env=env)
    assert pasted.stdout == "hello from Vault\n"
    other = await run_cli("secrets", "get", "kv/data/demo/app", env=env)
    _fails(other, 3, "error: NotFound:", "latchkey secrets get --mount kv demo/app")


async def test_unknown_service_and_all_critical(
    gateway: GatewayHandle, upstreams: Upstreams, unique: str
) -> None:
    env = _app_env(gateway)
    unknown = await run_cli("services", "list", f"nosuchservice-{unique}", env=env)
    _fails(unknown, 3, "error: NotFound: Consul knows no instance of service "
           f"'nosuchservice-{unique}'", "consul catalog services")  # fmt: skip
    name = f"critical-{unique}"
    upstreams.register(name, 1, status="critical")
    critical = await run_cli("services", "list", name, env=env)
    assert critical.code == 0, critical
    assert critical.stdout.splitlines() == ["ID  ADDRESS  PORT  HEALTH  TAGS  NODE"]
    assert "0 healthy instances" in critical.stderr
    assert "none passes its health checks" in critical.stderr


async def test_ctrl_c_of_a_watch_exits_130(
    gateway: GatewayHandle, upstreams: Upstreams, unique: str
) -> None:
    prefix = f"ctrl-c/{unique}/"
    upstreams.put(prefix + "level", "info")
    proc = await asyncio.create_subprocess_exec(
        str(LATCHKEY), "config", "watch", prefix,
        env=_app_env(gateway), stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    assert proc.stdout is not None
    assert proc.stderr is not None
    first = await asyncio.wait_for(proc.stdout.readline(), 30)
    assert b'"event": "snapshot"' in first
    proc.send_signal(signal.SIGINT)  # as Ctrl-C sends it
    code = await asyncio.wait_for(proc.wait(), 30)
    err = await proc.stderr.read()
    assert code == 130, err
    assert b"Traceback" not in err


async def test_a_watch_that_cannot_start_says_why_at_once(tls_gateway: TlsGateway) -> None:
    env = _env(tls_gateway)
    del env["LATCHKEY_CLIENT_CERT"], env["LATCHKEY_CLIENT_KEY"]
    proc = await asyncio.create_subprocess_exec(
        str(LATCHKEY), "config", "watch", "billing/",
        env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    assert proc.stdout is not None
    try:
        first = json.loads(await asyncio.wait_for(proc.stdout.readline(), 30))
    finally:
        proc.send_signal(signal.SIGINT)
        code = await asyncio.wait_for(proc.wait(), 30)
    assert first["event"] == "unreachable"
    assert "no client certificate was sent" in first["detail"]
    assert "LATCHKEY_CLIENT_CERT and LATCHKEY_CLIENT_KEY" in first["detail"]
    assert code == 130
