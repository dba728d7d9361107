"""Development certificate tooling: files and modes, extensions, identities, and real mTLS."""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
import stat
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest
from click.testing import CliRunner
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from latchkey_server.access.certs import (
    CertPaths,
    check_server_material,
    identity_from_pem,
    init_ca,
    issue_client,
    issue_server,
)
from latchkey_server.cli import main
from latchkey_server.errors import FailedPrecondition, InvalidArgument

SPIFFE = "spiffe://example.org/billing"


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def load(path: Path) -> x509.Certificate:
    return x509.load_pem_x509_certificate(path.read_bytes())


def ext(cert: x509.Certificate, kind: type[Any]) -> x509.Extension[Any]:
    return cert.extensions.get_extension_for_class(kind)


@pytest.fixture
def tls_dir(tmp_path: Path) -> Path:
    directory = tmp_path / "tls"
    init_ca(directory)
    return directory


# --- the CA -------------------------------------------------------------------------------------


def test_init_ca_writes_pem_files_with_modes(tmp_path: Path) -> None:
    directory = tmp_path / "new" / "tls"
    paths = init_ca(directory, common_name="test CA", days=10)
    assert paths == CertPaths(cert=directory / "ca.crt", key=directory / "ca.key")
    assert mode(paths.cert) == 0o644
    assert mode(paths.key) == 0o600
    assert mode(directory) == 0o700
    assert paths.key.read_bytes().startswith(b"-----BEGIN PRIVATE KEY-----")  # PKCS#8, clear
    assert sorted(p.name for p in directory.iterdir()) == ["ca.crt", "ca.key"]  # no temp files


def test_ca_certificate_is_a_constrained_p256_ca(tls_dir: Path) -> None:
    ca = load(tls_dir / "ca.crt")
    assert ca.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "latchkey dev CA"
    assert ca.issuer == ca.subject
    ca.verify_directly_issued_by(ca)
    public = ca.public_key()
    assert isinstance(public, ec.EllipticCurvePublicKey)
    assert isinstance(public.curve, ec.SECP256R1)
    assert isinstance(ca.signature_hash_algorithm, hashes.SHA256)
    basic = ext(ca, x509.BasicConstraints)
    assert basic.critical
    assert basic.value.ca is True
    assert basic.value.path_length == 0
    usage = ext(ca, x509.KeyUsage)
    assert usage.critical
    assert usage.value.key_cert_sign
    assert usage.value.crl_sign
    assert not usage.value.digital_signature
    ski = ext(ca, x509.SubjectKeyIdentifier).value
    assert ski == x509.SubjectKeyIdentifier.from_public_key(public)
    lifetime = ca.not_valid_after_utc - ca.not_valid_before_utc
    assert dt.timedelta(days=365) <= lifetime <= dt.timedelta(days=365, minutes=10)


def test_init_ca_refuses_to_overwrite_unless_forced(tls_dir: Path) -> None:
    before = {p.name: p.read_bytes() for p in tls_dir.iterdir()}
    with pytest.raises(InvalidArgument, match=r"already exists.*refusing to overwrite"):
        init_ca(tls_dir)
    assert {p.name: p.read_bytes() for p in tls_dir.iterdir()} == before

    (tls_dir / "ca.crt").unlink()  # half a CA still counts
    with pytest.raises(InvalidArgument, match=r"already exists.*\(ca\.key\)"):
        init_ca(tls_dir)

    paths = init_ca(tls_dir, force=True)
    assert paths.key.read_bytes() != before["ca.key"]
    assert mode(paths.key) == 0o600


def test_keys_are_created_0600_never_wider(tls_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    opened: list[tuple[str, int]] = []
    real_open = os.open

    def spy(path: Any, flags: int, mode: int = 0o777, *args: Any, **kwargs: Any) -> int:
        opened.append((os.fspath(path), mode))
        return real_open(path, flags, mode, *args, **kwargs)

    monkeypatch.setattr("latchkey_server.access.certs.os.open", spy)
    old_umask = os.umask(0)  # a permissive umask must not widen anything
    try:
        paths = issue_client(tls_dir, identity="billing")
    finally:
        os.umask(old_umask)
    mine = [created_mode for path, created_mode in opened if Path(path).parent == tls_dir]
    assert len(mine) == 2, "the key and the certificate are created with os.open"
    assert mine == [0o600, 0o600]  # 0644 for the certificate is set only after creation
    assert mode(paths.key) == 0o600
    assert mode(paths.cert) == 0o644


def test_reissuing_replaces_a_world_readable_key_with_a_0600_one(tls_dir: Path) -> None:
    stale = tls_dir / "server.key"
    stale.write_text("old")
    stale.chmod(0o644)
    paths = issue_server(tls_dir)
    assert paths.key == stale
    assert mode(stale) == 0o600
    assert stale.read_bytes().startswith(b"-----BEGIN PRIVATE KEY-----")


# --- server and client certificates ------------------------------------------------------------


def test_server_certificate_sans_usages_and_issuer(tls_dir: Path) -> None:
    paths = issue_server(tls_dir, names=["gateway.internal", "10.0.0.5", "LOCALHOST", "::1"])
    assert paths == CertPaths(cert=tls_dir / "server.crt", key=tls_dir / "server.key")
    assert mode(paths.cert) == 0o644
    assert mode(paths.key) == 0o600
    cert, ca = load(paths.cert), load(tls_dir / "ca.crt")
    cert.verify_directly_issued_by(ca)
    san = ext(cert, x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["gateway.internal", "localhost"]
    assert san.get_values_for_type(x509.IPAddress) == [
        ipaddress.ip_address("10.0.0.5"),
        ipaddress.ip_address("::1"),
        ipaddress.ip_address("127.0.0.1"),
    ]  # in the order given, then the always-included ones not yet named, without duplicates
    assert cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "gateway.internal"
    assert list(ext(cert, x509.ExtendedKeyUsage).value) == [ExtendedKeyUsageOID.SERVER_AUTH]
    usage = ext(cert, x509.KeyUsage)
    assert usage.critical
    assert usage.value.digital_signature
    assert not usage.value.key_cert_sign
    assert ext(cert, x509.BasicConstraints).value.ca is False
    aki = ext(cert, x509.AuthorityKeyIdentifier).value
    assert aki.key_identifier == ext(ca, x509.SubjectKeyIdentifier).value.digest
    lifetime = cert.not_valid_after_utc - cert.not_valid_before_utc
    assert dt.timedelta(days=90) <= lifetime <= dt.timedelta(days=90, minutes=10)


def test_server_defaults_include_every_loopback(tls_dir: Path) -> None:
    san = ext(load(issue_server(tls_dir).cert), x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["localhost"]
    assert {str(ip) for ip in san.get_values_for_type(x509.IPAddress)} == {"127.0.0.1", "::1"}


@pytest.mark.parametrize("bad", ["", "has space", "bad/name", "naïve.example"])
def test_server_rejects_names_that_are_neither_ip_nor_dns(tls_dir: Path, bad: str) -> None:
    with pytest.raises(InvalidArgument):
        issue_server(tls_dir, names=[bad])


def test_client_uri_identity_goes_in_a_uri_san(tls_dir: Path) -> None:
    paths = issue_client(tls_dir, identity=SPIFFE)
    assert paths.cert == tls_dir / "client-spiffe-example.org-billing.crt"
    assert paths.key == tls_dir / "client-spiffe-example.org-billing.key"
    assert mode(paths.key) == 0o600
    cert = load(paths.cert)
    cert.verify_directly_issued_by(load(tls_dir / "ca.crt"))
    san = ext(cert, x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.UniformResourceIdentifier) == [SPIFFE]
    assert san.get_values_for_type(x509.DNSName) == []
    assert cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "billing"
    assert list(ext(cert, x509.ExtendedKeyUsage).value) == [ExtendedKeyUsageOID.CLIENT_AUTH]
    assert ext(cert, x509.KeyUsage).value.digital_signature
    assert ext(cert, x509.AuthorityKeyIdentifier).value.key_identifier is not None
    assert identity_from_pem(paths.cert.read_bytes()) == SPIFFE


def test_client_plain_identity_is_the_cn_without_san(tls_dir: Path) -> None:
    paths = issue_client(tls_dir, identity="billing", out_name="bill")
    assert paths == CertPaths(cert=tls_dir / "bill.crt", key=tls_dir / "bill.key")
    cert = load(paths.cert)
    assert cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "billing"
    with pytest.raises(x509.ExtensionNotFound):
        ext(cert, x509.SubjectAlternativeName)
    assert identity_from_pem(paths.cert.read_bytes()) == "billing"


@pytest.mark.parametrize(
    ("identity", "cn", "file_stem"),
    [
        ("spiffe://example.org/ops/", "ops", "client-spiffe-example.org-ops"),
        ("spiffe://example.org", "example.org", "client-spiffe-example.org"),
        ("../etc/passwd", "../etc/passwd", "client-etc-passwd"),
        ("team a:b", "team a:b", "client-team-a-b"),
    ],
)
def test_client_cn_and_safe_file_names(
    tls_dir: Path, identity: str, cn: str, file_stem: str
) -> None:
    paths = issue_client(tls_dir, identity=identity)
    assert paths.cert.parent == tls_dir
    assert paths.cert.name == f"{file_stem}.crt"
    cert = load(paths.cert)
    assert cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == cn
    assert identity_from_pem(paths.cert.read_bytes()) == identity


@pytest.mark.parametrize("out_name", ["ca", "../x", "a/b", ".hidden", ""])
def test_issue_refuses_unsafe_output_names(tls_dir: Path, out_name: str) -> None:
    with pytest.raises(InvalidArgument, match="output name"):
        issue_client(tls_dir, identity="billing", out_name=out_name)
    with pytest.raises(InvalidArgument, match="output name"):
        issue_server(tls_dir, out_name=out_name)


def test_issue_without_a_ca_says_to_init(tmp_path: Path) -> None:
    with pytest.raises(FailedPrecondition, match="certs init"):
        issue_client(tmp_path, identity="billing")


def test_expired_client_certificate(tls_dir: Path) -> None:
    now = dt.datetime.now(dt.UTC)
    paths = issue_client(tls_dir, identity="old", not_after=now - dt.timedelta(days=1))
    cert = load(paths.cert)
    assert cert.not_valid_after_utc < now
    assert cert.not_valid_before_utc < cert.not_valid_after_utc
    with pytest.raises(InvalidArgument, match="later than"):
        issue_client(tls_dir, identity="x", not_before=now, not_after=now)
    with pytest.raises(InvalidArgument, match="timezone-aware"):
        issue_client(tls_dir, identity="x", not_after=dt.datetime(2030, 1, 1))


def test_identity_from_pem_without_uri_or_cn_is_none() -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "latchkey")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(now)
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("host.example")]), critical=False)
        .sign(key, hashes.SHA256())
    )
    assert identity_from_pem(cert.public_bytes(Encoding.PEM)) is None
    with pytest.raises(InvalidArgument):
        identity_from_pem(b"not a certificate")


# --- the CLI ------------------------------------------------------------------------------------


def test_cli_init_and_issue_print_the_paths(tmp_path: Path) -> None:
    runner = CliRunner()
    directory = tmp_path / "tls"
    env = {"LATCHKEY_TLS_DIR": str(directory)}
    result = runner.invoke(main, ["certs", "init"], env=env)
    assert result.exit_code == 0, result.output
    assert result.output.split() == [str(directory / "ca.crt"), str(directory / "ca.key")]

    again = runner.invoke(main, ["certs", "init"], env=env)
    assert again.exit_code == 1
    assert "refusing to overwrite" in again.output
    assert runner.invoke(main, ["certs", "init", "--force"], env=env).exit_code == 0

    server = runner.invoke(
        main, ["certs", "issue", "server", "--dir", str(directory), "--name", "gw.example"]
    )
    assert server.exit_code == 0, server.output
    assert server.output.split() == [str(directory / "server.crt"), str(directory / "server.key")]
    san = ext(load(directory / "server.crt"), x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["gw.example", "localhost"]

    client = runner.invoke(main, ["certs", "issue", "client", "--identity", SPIFFE], env=env)
    assert client.exit_code == 0, client.output
    cert_path = directory / "client-spiffe-example.org-billing.crt"
    assert client.output.split() == [str(cert_path), str(cert_path.with_suffix(".key"))]
    assert identity_from_pem(cert_path.read_bytes()) == SPIFFE


def test_cli_errors_and_help(tmp_path: Path) -> None:
    runner = CliRunner()
    missing = runner.invoke(
        main, ["certs", "issue", "client", "--identity", "x", "--dir", str(tmp_path)]
    )
    assert missing.exit_code == 1
    assert "certs init" in missing.output
    for args in (["certs"], ["certs", "init"], ["certs", "issue", "server"]):
        shown = runner.invoke(main, [*args, "--help"])
        assert shown.exit_code == 0
        assert "Example" in shown.output


# --- real mTLS handshakes ------------------------------------------------------------------------


@dataclass(frozen=True)
class MTLSServer:
    addr: str
    ca_pem: bytes
    tls_dir: Path


WHOAMI = "/latchkey.test.WhoAmI/Get"


async def _whoami(request: bytes, context: grpc.aio.ServicerContext[bytes, bytes]) -> bytes:
    """Echo the identity of the peer's verified certificate, as the authenticator will."""
    pem = next(iter(context.auth_context()["x509_pem_cert"]))
    return (identity_from_pem(pem) or "").encode()


@pytest.fixture
async def mtls_server(tls_dir: Path) -> AsyncIterator[MTLSServer]:
    server_paths = issue_server(tls_dir)
    ca_pem = (tls_dir / "ca.crt").read_bytes()
    credentials = grpc.ssl_server_credentials(
        [(server_paths.key.read_bytes(), server_paths.cert.read_bytes())],
        root_certificates=ca_pem,
        require_client_auth=True,
    )
    server = grpc.aio.server()
    health_pb2_grpc.add_HealthServicer_to_server(health.aio.HealthServicer(), server)
    server.add_generic_rpc_handlers(
        [
            grpc.method_handlers_generic_handler(
                "latchkey.test.WhoAmI", {"Get": grpc.unary_unary_rpc_method_handler(_whoami)}
            )
        ]
    )
    port = server.add_secure_port("127.0.0.1:0", credentials)
    await server.start()
    try:
        yield MTLSServer(addr=f"127.0.0.1:{port}", ca_pem=ca_pem, tls_dir=tls_dir)
    finally:
        await server.stop(None)


def _channel(srv: MTLSServer, client: CertPaths | None) -> grpc.aio.Channel:
    credentials = grpc.ssl_channel_credentials(
        root_certificates=srv.ca_pem,
        private_key=client.key.read_bytes() if client else None,
        certificate_chain=client.cert.read_bytes() if client else None,
    )
    return grpc.aio.secure_channel(srv.addr, credentials)


async def _check(srv: MTLSServer, client: CertPaths | None) -> grpc.StatusCode:
    async with _channel(srv, client) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        try:
            reply = await stub.Check(health_pb2.HealthCheckRequest(), timeout=30)
        except grpc.aio.AioRpcError as exc:
            return exc.code()
        assert reply.status == health_pb2.HealthCheckResponse.SERVING
        return grpc.StatusCode.OK


async def test_mtls_client_from_this_ca_is_served(mtls_server: MTLSServer) -> None:
    client = issue_client(mtls_server.tls_dir, identity=SPIFFE)
    assert await _check(mtls_server, client) == grpc.StatusCode.OK


async def test_mtls_client_from_another_ca_is_refused(
    mtls_server: MTLSServer, tmp_path: Path
) -> None:
    other = tmp_path / "other"
    init_ca(other)
    client = issue_client(other, identity=SPIFFE)
    assert await _check(mtls_server, client) == grpc.StatusCode.UNAVAILABLE


async def test_mtls_client_without_a_certificate_is_refused(mtls_server: MTLSServer) -> None:
    assert await _check(mtls_server, None) == grpc.StatusCode.UNAVAILABLE


async def test_mtls_expired_client_certificate_is_refused(mtls_server: MTLSServer) -> None:
    now = dt.datetime.now(dt.UTC)
    client = issue_client(
        mtls_server.tls_dir,
        identity=SPIFFE,
        out_name="expired",
        not_before=now - dt.timedelta(days=30),
        not_after=now - dt.timedelta(days=1),
    )
    assert await _check(mtls_server, client) == grpc.StatusCode.UNAVAILABLE


@pytest.mark.parametrize("identity", [SPIFFE, "billing"])
async def test_identity_from_the_peer_certificate_in_auth_context(
    mtls_server: MTLSServer, identity: str
) -> None:
    client = issue_client(mtls_server.tls_dir, identity=identity)
    async with _channel(mtls_server, client) as channel:
        whoami: Callable[..., Any] = channel.unary_unary(WHOAMI)
        assert await whoami(b"", timeout=30) == identity.encode()


def test_check_server_material_says_why_without_key_material(tmp_path: Path) -> None:
    """What a TLS reload refuses (transport/tls.py); the e2e rotation test covers the reload."""
    one, two = tmp_path / "one", tmp_path / "two"
    for folder in (one, two):
        init_ca(folder)
        issue_server(folder)
    chain, key = (one / "server.crt").read_bytes(), (one / "server.key").read_bytes()
    ca = (one / "ca.crt").read_bytes()
    assert check_server_material(chain, key, ca) is None
    assert check_server_material(chain, key, None) is None
    other_key = (two / "server.key").read_bytes()
    reasons = [
        check_server_material(chain[:60], key, ca),
        check_server_material(chain, key[:80], ca),
        check_server_material(chain, other_key, ca),
        check_server_material(chain, key, b"not a certificate"),
    ]
    assert reasons == [
        "tls.cert_file holds no PEM certificate",
        "tls.key_file is not an unencrypted PEM private key",
        "tls.key_file does not match the certificate in tls.cert_file",
        "tls.client_ca_file holds no PEM certificate",
    ]
