"""The gateway's TLS credentials, rotated without a restart.

The server is bound with gRPC's dynamic SSL credentials: gRPC asks `ServerTls` before each new
TLS handshake whether the certificate configuration changed, so a reload serves new handshakes
with the new certificate, key and client CA while established connections (and their streams)
carry on with what they negotiated. `reload()` (run on SIGHUP, and when `changed()` sees the
files differ; `server.py` polls every `tls.reload_interval` seconds) reads the files and checks
them with `access/certs.check_server_material`: a chain that does not parse, a key that does not
match it, a client CA that is missing or not PEM keeps the previous configuration in force and
logs why (never key material). Each outcome counts in `latchkey_tls_reloads_total{result}`.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc

from latchkey_server.access.certs import check_server_material

log = logging.getLogger("latchkey.transport.tls")


@dataclass(frozen=True)
class TlsFiles:
    """Where the TLS material is read from (watched for changes)."""

    cert: Path
    key: Path
    client_ca: Path | None = None

    def signature(self) -> tuple[tuple[int, int, int] | None, ...]:
        """Inode, size and modification time of each file (None: missing), without reading."""
        out: list[tuple[int, int, int] | None] = []
        for path in (self.cert, self.key, self.client_ca):
            try:
                st = os.stat(path) if path is not None else None
            except OSError:
                st = None
            out.append((st.st_ino, st.st_size, st.st_mtime_ns) if st is not None else None)
        return tuple(out)


class ServerTls:
    """Dynamic server credentials over the current, last good TLS material."""

    def __init__(
        self,
        chain: bytes,
        key: bytes,
        client_ca: bytes | None,
        *,
        require_client_cert: bool,
        files: TlsFiles | None = None,
        reloads: Any = None,
    ) -> None:
        self._require = client_ca is not None and require_client_cert
        self._files = files
        self._signature = files.signature() if files is not None else ()
        self._reloads = reloads
        self._material = (chain, key, client_ca)
        self._pending: grpc.ServerCertificateConfiguration | None = None
        self._initial = _configuration(chain, key, client_ca)

    def credentials(self) -> grpc.ServerCredentials:
        # grpc's stub types the fetcher as never returning None; None means "no change".
        fetch: Any = self._fetch
        return grpc.dynamic_ssl_server_credentials(
            self._initial, fetch, require_client_authentication=self._require
        )

    def _fetch(self) -> grpc.ServerCertificateConfiguration | None:
        """gRPC's per-handshake question: a new configuration once after a reload, else None
        (keep the current one)."""
        pending, self._pending = self._pending, None
        return pending

    @property
    def certificate_chain(self) -> bytes:
        """The chain served to new handshakes."""
        return self._material[0]

    def changed(self) -> bool:
        return self._files is not None and self._files.signature() != self._signature

    def reload(self) -> bool:
        """Read the files again and serve them to new handshakes if they are a valid set;
        otherwise keep the previous set (logged, counted as rejected). True when reloaded."""
        files = self._files
        if files is None:
            return False
        self._signature = files.signature()
        try:
            chain = _read(files.cert, "tls.cert_file")
            key = _read(files.key, "tls.key_file")
            ca = _read(files.client_ca, "tls.client_ca_file") if files.client_ca else None
        except _Unreadable as exc:
            return self._rejected(str(exc))
        if (chain, key, ca) == self._material:
            return False
        reason = check_server_material(chain, key, ca)
        if reason is not None:
            return self._rejected(reason)
        self._pending = _configuration(chain, key, ca)
        self._material = (chain, key, ca)
        self._count("ok")
        log.info("TLS certificate reloaded: new connections use it, open ones carry on")
        return True

    def _rejected(self, reason: str) -> bool:
        self._count("rejected")
        log.warning("TLS reload refused, the previous certificate stays in use: %s", reason)
        return False

    def _count(self, result: str) -> None:
        if self._reloads is not None:
            self._reloads.labels(result).inc()


class _Unreadable(Exception):
    pass


def _read(path: Path, setting: str) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise _Unreadable(f"{setting} {path} cannot be read: {exc.strerror}") from None


def _configuration(
    chain: bytes, key: bytes, client_ca: bytes | None
) -> grpc.ServerCertificateConfiguration:
    return grpc.ssl_server_certificate_configuration([(key, chain)], root_certificates=client_ca)
