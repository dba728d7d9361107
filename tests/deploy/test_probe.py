"""`latchkey-server healthcheck`: exit 0 only for SERVING, a clear reason on stderr otherwise."""

from __future__ import annotations

from pathlib import Path

import grpc
from click.testing import CliRunner, Result

from latchkey_server.access.certs import init_ca, issue_client, issue_server
from latchkey_server.cli import main
from latchkey_server.devstack.ports import free_ports
from tests.deploy.health_server import NOT_SERVING, health_server


def _probe(*args: str) -> Result:
    return CliRunner().invoke(main, ["healthcheck", "--timeout", "5", *args], env={})


def test_serving_server_exits_0() -> None:
    with health_server() as (addr, _):
        result = _probe("--addr", addr, "--insecure")
    assert result.exit_code == 0, result.stderr
    assert result.stderr == ""


def test_not_serving_exits_1_and_says_so() -> None:
    with health_server() as (addr, servicer):
        servicer.set("", NOT_SERVING)
        result = _probe("--addr", addr)
    assert result.exit_code == 1
    assert f"{addr}: the server is NOT_SERVING" in result.stderr


def test_unknown_service_exits_1_naming_it() -> None:
    with health_server() as (addr, _):
        result = _probe("--addr", addr, "--service", "latchkey.v1.Nope")
    assert result.exit_code == 1
    assert "does not know service 'latchkey.v1.Nope' (NOT_FOUND)" in result.stderr


def test_closed_port_exits_1_with_the_connection_error() -> None:
    result = _probe("--addr", f"127.0.0.1:{free_ports(1)[0]}")
    assert result.exit_code == 1
    assert "UNAVAILABLE" in result.stderr
    assert "Traceback" not in result.output + result.stderr


def test_mtls_probe_presents_its_client_certificate(tmp_path: Path) -> None:
    ca = init_ca(tmp_path)
    server = issue_server(tmp_path)
    client = issue_client(tmp_path, identity="probe")
    credentials = grpc.ssl_server_credentials(
        [(server.key.read_bytes(), server.cert.read_bytes())],
        root_certificates=ca.cert.read_bytes(),
        require_client_auth=True,
    )
    with health_server(credentials) as (addr, _):
        tls = ("--cacert", str(ca.cert))
        ok = _probe("--addr", addr, *tls, "--cert", str(client.cert), "--key", str(client.key))
        no_client_cert = _probe("--addr", addr, *tls)
        plaintext = _probe("--addr", addr, "--insecure")
    assert ok.exit_code == 0, ok.stderr
    assert no_client_cert.exit_code == 1
    assert plaintext.exit_code == 1


def test_conflicting_tls_options_are_usage_errors(tmp_path: Path) -> None:
    pem = tmp_path / "x.pem"
    pem.write_text("")
    assert _probe("--insecure", "--cacert", str(pem)).exit_code == 2
    assert _probe("--cacert", str(pem), "--cert", str(pem)).exit_code == 2
    assert _probe("--cert", str(pem), "--key", str(pem)).exit_code == 2


def test_unreadable_ca_exits_1_naming_the_file(tmp_path: Path) -> None:
    result = _probe("--cacert", str(tmp_path / "missing.crt"))
    assert result.exit_code == 1
    assert "cannot read CA certificate" in result.stderr
