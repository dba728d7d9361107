"""TLS and mTLS against a small grpc.aio server with certificates made in the test."""

from __future__ import annotations

import datetime as dt
import ipaddress
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
from latchkey.v1 import gateway_pb2, gateway_pb2_grpc


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _cert(
    cn: str,
    key: ec.EllipticCurvePrivateKey,
    issuer: tuple[x509.Name, Any] | None,
    *,
    ca: bool = False,
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
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
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
        with pytest.raises(latchkey.Unavailable):
            await client.status()
    async with latchkey.AsyncClient(addr, retry_deadline=0.3) as plaintext:
        with pytest.raises(latchkey.Unavailable):
            await plaintext.status()
