"""Development certificate tooling for mTLS: a small CA, server and client certificates.

Everything lives in one directory (`.latchkey/tls` by default in the CLI):

    ca.crt, ca.key                    the CA (`init_ca`); self-signed, EC P-256, path length 0
    server.crt, server.key            the gateway's certificate (`issue_server`)
    client-<safe>.crt/.key            one per client identity (`issue_client`)

Keys are EC P-256, unencrypted PKCS#8 PEM, written 0600 (created with that mode, then renamed
into place, so never readable by others even briefly); certificates are PEM, written 0644.
Re-issuing a server or client certificate replaces its files; replacing the CA needs `force`.

A client certificate carries its identity as a URI SAN when the identity is a URI
(`spiffe://example.org/billing`, CN `billing`), otherwise as its subject CN. `identity_from_pem`
reads it back in that order; it is what mTLS authentication turns a peer certificate into.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
import re
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from latchkey_server.errors import FailedPrecondition, InvalidArgument

CA_NAME = "ca"
DEFAULT_SERVER_NAMES = ("localhost", "127.0.0.1")
ALWAYS_SERVER_NAMES = ("localhost", "127.0.0.1", "::1")
"""Always in a server certificate, so local clients can connect however they spell loopback."""
CLOCK_SKEW = dt.timedelta(minutes=5)
"""Default `not_before` is this far in the past, so a peer whose clock lags still accepts."""

_URI = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")
_OUT_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
_CN_MAX = 64  # RFC 5280 ub-common-name


@dataclass(frozen=True, slots=True)
class CertPaths:
    """Where a certificate and its private key were written."""

    cert: Path
    key: Path


def init_ca(
    directory: Path,
    *,
    common_name: str = "latchkey dev CA",
    days: int = 365,
    force: bool = False,
) -> CertPaths:
    """Create a self-signed CA (`ca.crt`, `ca.key`) in `directory` (created 0700 if missing).

    Refuses (`InvalidArgument`) if either file exists, unless `force`: replacing the CA makes
    every certificate it issued stop verifying.
    """
    paths = _paths(directory, CA_NAME)
    existing = [p.name for p in (paths.cert, paths.key) if p.exists() or p.is_symlink()]
    if existing and not force:
        raise InvalidArgument(
            f"a CA already exists in {directory} ({', '.join(existing)}); refusing to overwrite "
            "it (use force / --force to replace it; certificates it issued will stop verifying)"
        )
    _check_cn(common_name)
    not_before, not_after = _validity(days, None, None)
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=False,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    _write(paths.key, _key_pem(key), 0o600)
    _write(paths.cert, cert.public_bytes(serialization.Encoding.PEM), 0o644)
    return paths


def issue_server(
    directory: Path,
    *,
    names: Sequence[str] = DEFAULT_SERVER_NAMES,
    days: int = 90,
    out_name: str = "server",
    not_before: dt.datetime | None = None,
    not_after: dt.datetime | None = None,
) -> CertPaths:
    """Issue a server certificate signed by the CA in `directory`.

    SANs: every name in `names` (IP addresses as IPAddress, others as DNSName) plus
    `ALWAYS_SERVER_NAMES`; the subject CN is the first of them. EKU serverAuth.
    """
    if isinstance(names, str):
        raise InvalidArgument("names must be a sequence of names, not a single string")
    sans = _server_sans([*names, *ALWAYS_SERVER_NAMES])
    return _issue(
        directory,
        out_name=out_name,
        common_name=str(sans[0].value)[:_CN_MAX],
        sans=sans,
        usage=ExtendedKeyUsageOID.SERVER_AUTH,
        validity=_validity(days, not_before, not_after),
    )


def issue_client(
    directory: Path,
    *,
    identity: str,
    days: int = 90,
    out_name: str | None = None,
    not_before: dt.datetime | None = None,
    not_after: dt.datetime | None = None,
) -> CertPaths:
    """Issue a client certificate for `identity`, signed by the CA in `directory`.

    A URI identity (`scheme://...`) goes into a URI SAN, and its last path segment (or its
    host, if the path is empty) becomes the CN; any other identity is the CN, with no SAN.
    Files default to `client-<safe>.crt/.key`, `<safe>` being a filesystem-safe identity.
    """
    identity = identity.strip()
    if not identity:
        raise InvalidArgument("a client identity must not be empty")
    if not identity.isascii() or not identity.isprintable():
        raise InvalidArgument(f"client identity {identity!r} must be printable ASCII")
    sans: list[x509.GeneralName] = []
    if is_uri_identity(identity):
        parts = urlsplit(identity)
        segment = parts.path.rstrip("/").rpartition("/")[2] or parts.hostname or identity
        common_name = segment[:_CN_MAX]
        sans.append(x509.UniformResourceIdentifier(identity))
    else:
        common_name = identity
        _check_cn(common_name, what="a non-URI client identity")
    return _issue(
        directory,
        out_name=out_name if out_name is not None else f"client-{safe_name(identity)}",
        common_name=common_name,
        sans=sans,
        usage=ExtendedKeyUsageOID.CLIENT_AUTH,
        validity=_validity(days, not_before, not_after),
    )


def check_server_material(chain: bytes, key: bytes, client_ca: bytes | None) -> str | None:
    """Why this certificate chain, key and client CA cannot be served (None: they can).

    The reason names the file setting and the problem, never any key material: a PEM that
    does not parse, a key that does not belong to the chain's first certificate, an empty CA.
    """
    try:
        certs = x509.load_pem_x509_certificates(chain)
    except ValueError:
        return "tls.cert_file holds no PEM certificate"
    try:
        private = serialization.load_pem_private_key(key, password=None)
    except (ValueError, TypeError):
        return "tls.key_file is not an unencrypted PEM private key"
    if private.public_key() != certs[0].public_key():
        return "tls.key_file does not match the certificate in tls.cert_file"
    if client_ca is not None:
        try:
            x509.load_pem_x509_certificates(client_ca)
        except ValueError:
            return "tls.client_ca_file holds no PEM certificate"
    return None


def identity_from_pem(pem: bytes) -> str | None:
    """The identity of a client certificate: its first URI SAN, else its subject CN, else None.

    Raises `InvalidArgument` if `pem` is not a PEM certificate.
    """
    try:
        cert = x509.load_pem_x509_certificate(pem)
    except ValueError as exc:
        raise InvalidArgument("not a PEM X.509 certificate") from exc
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        uris: list[str] = []
    else:
        uris = san.get_values_for_type(x509.UniformResourceIdentifier)
    if uris:
        return uris[0]
    for attribute in cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME):
        value = attribute.value
        text = value.decode("utf-8", "replace") if isinstance(value, bytes) else value
        if text:
            return text
    return None


def is_uri_identity(identity: str) -> bool:
    """Whether `identity` is a URI (`scheme://...`), carried as a URI SAN."""
    return bool(_URI.match(identity))


def safe_name(identity: str) -> str:
    """A filesystem-safe form of `identity`: `spiffe://example.org/a` → `spiffe-example.org-a`."""
    return _UNSAFE.sub("-", identity).strip("-.") or "identity"


# --- internals ---------------------------------------------------------------------------------


def _paths(directory: Path, out_name: str) -> CertPaths:
    return CertPaths(cert=directory / f"{out_name}.crt", key=directory / f"{out_name}.key")


def _check_cn(common_name: str, *, what: str = "a common name") -> None:
    if not common_name or len(common_name) > _CN_MAX:
        raise InvalidArgument(f"{what} must be 1 to {_CN_MAX} characters: {common_name!r}")


def _validity(
    days: int, not_before: dt.datetime | None, not_after: dt.datetime | None
) -> tuple[dt.datetime, dt.datetime]:
    if days < 1:
        raise InvalidArgument(f"days must be at least 1, got {days}")
    for label, value in (("not_before", not_before), ("not_after", not_after)):
        if value is not None and value.utcoffset() is None:
            raise InvalidArgument(f"{label} must be timezone-aware")
    now = dt.datetime.now(dt.UTC)
    end = not_after if not_after is not None else now + dt.timedelta(days=days)
    start = not_before if not_before is not None else min(now, end) - CLOCK_SKEW
    if not end > start:
        raise InvalidArgument(f"not_after ({end}) must be later than not_before ({start})")
    return start, end


def _server_sans(names: Sequence[str]) -> list[x509.GeneralName]:
    sans: list[x509.GeneralName] = []
    seen: set[str] = set()
    for raw in names:
        name = raw.strip().rstrip(".").lower()
        if not name:
            raise InvalidArgument("server names must not be empty")
        try:
            ip = ipaddress.ip_address(name.strip("[]"))
        except ValueError:
            if not re.fullmatch(r"(\*\.)?[a-z0-9_]([a-z0-9_-]*[a-z0-9_])?(\.[a-z0-9_-]+)*", name):
                raise InvalidArgument(
                    f"server name {raw!r} is neither an IP address nor a DNS name "
                    "(use the punycode xn-- form for international names)"
                ) from None
            key = name
            general_name: x509.GeneralName = x509.DNSName(name)
        else:
            key = str(ip)
            general_name = x509.IPAddress(ip)
        if key not in seen:
            seen.add(key)
            sans.append(general_name)
    return sans


def _issue(
    directory: Path,
    *,
    out_name: str,
    common_name: str,
    sans: list[x509.GeneralName],
    usage: x509.ObjectIdentifier,
    validity: tuple[dt.datetime, dt.datetime],
) -> CertPaths:
    if not _OUT_NAME.fullmatch(out_name) or out_name == CA_NAME:
        raise InvalidArgument(
            f"output name {out_name!r} must be a plain file name (letters, digits, '.', '_', "
            f"'-') other than {CA_NAME!r}"
        )
    ca_cert, ca_key = _load_ca(directory)
    key = ec.generate_private_key(ec.SECP256R1())
    try:
        ca_ski = ca_cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
        aki = x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ca_ski)
    except x509.ExtensionNotFound:
        aki = x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key())
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(validity[0])
        .not_valid_after(validity[1])
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(aki, critical=False)
    )
    if sans:
        builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    cert = builder.sign(ca_key, hashes.SHA256())
    paths = _paths(directory, out_name)
    _write(paths.key, _key_pem(key), 0o600)
    _write(paths.cert, cert.public_bytes(serialization.Encoding.PEM), 0o644)
    return paths


def _load_ca(directory: Path) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    paths = _paths(directory, CA_NAME)
    try:
        cert = x509.load_pem_x509_certificate(paths.cert.read_bytes())
        key = serialization.load_pem_private_key(paths.key.read_bytes(), password=None)
    except FileNotFoundError as exc:
        raise FailedPrecondition(
            f"no CA in {directory} ({exc.filename} is missing): run `latchkey-server certs init`"
        ) from exc
    except (OSError, ValueError, TypeError) as exc:
        raise InvalidArgument(
            f"the CA in {directory} cannot be loaded: {type(exc).__name__}"
        ) from exc
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise InvalidArgument(f"the CA key in {directory} is not an EC private key")
    if key.public_key() != cert.public_key():
        raise InvalidArgument(f"the CA key in {directory} does not match its certificate")
    return cert, key


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _write(path: Path, data: bytes, mode: int) -> None:
    """Write `data` to `path` atomically with exactly `mode`; the file is never wider than it."""
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(6)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, mode & 0o600)
    try:
        with os.fdopen(fd, "wb") as handle:
            os.fchmod(handle.fileno(), mode)
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
