"""TLS and mTLS against a small grpc.aio server with certificates made in the test; failed
connections raise errors that say what to set (`latchkey._explain`)."""

from __future__ import annotations

import datetime as dt
import ipaddress
import socket
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

import latchkey
from latchkey._settings import resolve_settings
from latchkey.v1 import gateway_pb2, gateway_pb2_grpc


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _cert(
    cn: str,
    key: ec.EllipticCurvePrivateKey,
    issuer: tuple[x509.Name, Any] | None,
    *,
    ca: bool = False,
    names: tuple[str, ...] = ("localhost",),
    ips: tuple[str, ...] = ("127.0.0.1",),
) -> x509.Certificate:
    now = dt.datetime.now(dt.UTC)
    issuer_name, issuer_key = issuer if issuer else (_name(cn), key)
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(cn))
        .issuer_name(issuer_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(hours=1))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if not ca:
        builder = builder.add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName(n) for n in names]
                + [x509.IPAddress(ipaddress.ip_address(ip)) for ip in ips]
            ),
            critical=False,
        )
    return builder.sign(issuer_key, hashes.SHA256())


def _pem(obj: Any) -> bytes:
    if isinstance(obj, x509.Certificate):
        return obj.public_bytes(serialization.Encoding.PEM)
    return obj.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


class StatusServicer(gateway_pb2_grpc.GatewayServicer):
    async def Status(self, request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
        token = dict(context.invocation_metadata() or ()).get("authorization", "")
        peer = context.auth_context().get("x509_common_name", [b""])
        identity = peer[0].decode() if peer and peer[0] else token.removeprefix("Bearer ")
        return gateway_pb2.StatusResponse(
            identity=identity, auth_method="mtls" if peer and peer[0] else "token"
        )


@pytest.fixture
async def tls_server(tmp_path: Path) -> AsyncIterator[tuple[str, Path]]:
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = _cert("test-ca", ca_key, None, ca=True)
    files: dict[str, bytes] = {"ca.pem": _pem(ca)}
    for cn in ("server", "billing"):
        key = ec.generate_private_key(ec.SECP256R1())
        files[f"{cn}.pem"] = _pem(_cert(cn, key, (ca.subject, ca_key)))
        files[f"{cn}-key.pem"] = _pem(key)
    for name, data in files.items():
        (tmp_path / name).write_bytes(data)
    server = grpc.aio.server()
    gateway_pb2_grpc.add_GatewayServicer_to_server(StatusServicer(), server)
    creds = grpc.ssl_server_credentials(
        [(files["server-key.pem"], files["server.pem"])],
        root_certificates=files["ca.pem"],
        require_client_auth=True,
    )
    port = server.add_secure_port("127.0.0.1:0", creds)
    await server.start()
    yield f"127.0.0.1:{port}", tmp_path
    await server.stop(None)


async def test_mtls_with_explicit_files(tls_server: tuple[str, Path]) -> None:
    addr, d = tls_server
    async with latchkey.AsyncClient(
        addr, cacert=d / "ca.pem", client_cert=d / "billing.pem", client_key=d / "billing-key.pem"
    ) as client:
        status = await client.status()
    assert (status.identity, status.auth_method) == ("billing", "mtls")


async def test_mtls_from_environment(
    tls_server: tuple[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    addr, d = tls_server
    monkeypatch.setenv("LATCHKEY_ADDR", f"https://{addr}")
    monkeypatch.setenv("LATCHKEY_CACERT", str(d / "ca.pem"))
    monkeypatch.setenv("LATCHKEY_CLIENT_CERT", str(d / "billing.pem"))
    monkeypatch.setenv("LATCHKEY_CLIENT_KEY", str(d / "billing-key.pem"))
    async with latchkey.AsyncClient() as client:
        assert (await client.status()).identity == "billing"


async def test_tls_refused_without_client_certificate(tls_server: tuple[str, Path]) -> None:
    addr, d = tls_server
    async with latchkey.AsyncClient(addr, cacert=d / "ca.pem", retry_deadline=0.3) as client:
        with pytest.raises(latchkey.HandshakeFailed) as missing:
            await client.status()
    assert "no client certificate was sent" in missing.value.message
    assert "LATCHKEY_CLIENT_CERT and LATCHKEY_CLIENT_KEY" in missing.value.message
    assert missing.value.retryable  # a restarting gateway closes connections the same way
    async with latchkey.AsyncClient(addr, retry_deadline=0.3) as plaintext:
        with pytest.raises(latchkey.HandshakeFailed, match="closed the plaintext connection"):
            await plaintext.status()


async def _failure(addr: str, **kwargs: Any) -> latchkey.LatchkeyError:
    async with latchkey.AsyncClient(addr, retry_deadline=30, **kwargs) as client:
        with pytest.raises(latchkey.LatchkeyError) as caught:
            await client.status()
    return caught.value


async def test_certificates_that_do_not_verify_are_named_and_not_retried(
    tls_server: tuple[str, Path], tmp_path: Path
) -> None:
    addr, _ = tls_server
    other_key = ec.generate_private_key(ec.SECP256R1())
    (tmp_path / "other-ca.pem").write_bytes(_pem(_cert("other", other_key, None, ca=True)))
    wrong_ca = await _failure(addr, cacert=tmp_path / "other-ca.pem")
    assert isinstance(wrong_ca, latchkey.HandshakeFailed)
    assert "does not verify against the CA in LATCHKEY_CACERT" in wrong_ca.message
    assert "CERTIFICATE_VERIFY_FAILED" in wrong_ca.message
    assert wrong_ca.retryable is False
    system_roots = await _failure(f"https://{addr}")
    assert "the system's trusted CAs (LATCHKEY_CACERT is not set)" in system_roots.message


async def test_a_certificate_for_another_host_is_named(tmp_path: Path) -> None:
    ca_key, key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    ca = _cert("ca", ca_key, None, ca=True)
    server_cert = _cert("server", key, (ca.subject, ca_key), names=("example.test",), ips=())
    (tmp_path / "ca.pem").write_bytes(_pem(ca))
    server = grpc.aio.server()
    gateway_pb2_grpc.add_GatewayServicer_to_server(StatusServicer(), server)
    creds = grpc.ssl_server_credentials([(_pem(key), _pem(server_cert))])
    port = server.add_secure_port("127.0.0.1:0", creds)
    await server.start()
    try:
        error = await _failure(f"127.0.0.1:{port}", cacert=tmp_path / "ca.pem")
    finally:
        await server.stop(None)
    assert isinstance(error, latchkey.HandshakeFailed)
    assert "is not issued for that host name" in error.message
    assert error.retryable is False


async def test_tls_to_a_plaintext_server_is_named() -> None:
    server = grpc.aio.server()
    gateway_pb2_grpc.add_GatewayServicer_to_server(StatusServicer(), server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        error = await _failure(f"https://127.0.0.1:{port}")
    finally:
        await server.stop(None)
    assert isinstance(error, latchkey.HandshakeFailed)
    assert (
        f"does not speak TLS: if it is a plaintext gateway, set LATCHKEY_ADDR=http://127.0.0.1:{port}"
        in error.message
    )
    assert error.retryable is False


def test_a_stopped_dev_stack_is_named_and_not_retried() -> None:
    probe = subprocess.Popen([sys.executable, "-c", "pass"])
    probe.wait()
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        addr = f"127.0.0.1:{s.getsockname()[1]}"
    env = {"LATCHKEY_DEV_PID": str(probe.pid)}
    settings = resolve_settings(addr, retry_deadline=30, environ=env)
    with (
        latchkey.Client(settings=settings) as client,
        pytest.raises(latchkey.DevStackNotRunning) as caught,
    ):
        client.status()
    message = str(caught.value)
    assert f"the dev stack is not running (LATCHKEY_DEV_PID {probe.pid} has exited" in message
    assert "run make dev, then source .latchkey/dev.env again" in message
    assert caught.value.retryable is False


async def test_a_watch_that_never_starts_raises_why(
    tls_server: tuple[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("latchkey._async._watch.FIRST_EVENT_TIMEOUT", 1.0)
    addr, d = tls_server
    statuses: list[latchkey.StreamStatus] = []

    def on_event(event: latchkey.ConfigEvent | latchkey.StreamStatus) -> None:
        if isinstance(event, latchkey.StreamStatus):
            statuses.append(event)

    async with latchkey.AsyncClient(addr, cacert=d / "ca.pem") as client:
        with pytest.raises(latchkey.HandshakeFailed, match="no client certificate was sent"):
            await client.config.watch("app/", on_event)
    assert statuses[0].kind == "unreachable"
    assert "no client certificate was sent" in statuses[0].detail
