"""Authentication: turn what a caller presented into an `Identity`, or refuse.

Two ways, off the same interceptor: a bearer token (`authorization: Bearer <token>`) mapped to
an identity by the tokens file, or a client certificate verified by the TLS layer against the
configured client CA, whose identity is its URI SAN (e.g. `spiffe://example.org/billing`) or
else its CN. A presented bearer token takes precedence over the certificate; an invalid token is
refused even when a valid certificate is also presented.
"""

from __future__ import annotations

from collections.abc import Mapping

from latchkey_server.access.certs import identity_from_pem
from latchkey_server.access.tokens import TokenFile, TokenStore
from latchkey_server.errors import InvalidArgument, Unauthenticated
from latchkey_server.models import Identity


class Authenticator:
    def __init__(self, tokens: TokenFile | TokenStore | None) -> None:
        self._tokens = tokens

    def authenticate(
        self, metadata: Mapping[str, str], peer: str, peer_cert_pem: bytes | None = None
    ) -> Identity:
        header = metadata.get("authorization", "")
        if header:
            scheme, _, token = header.partition(" ")
            if scheme.lower() != "bearer" or not token.strip():
                raise Unauthenticated("malformed authorization metadata: expected 'Bearer <token>'")
            identity = self._tokens.identify(token.strip()) if self._tokens else None
            if identity is None:
                raise Unauthenticated("unknown or revoked token")
            return Identity(name=identity, method="token", peer=peer)
        if peer_cert_pem:
            try:
                name = identity_from_pem(peer_cert_pem)
            except InvalidArgument as exc:
                raise Unauthenticated("the client certificate could not be read") from exc
            if name:
                return Identity(name=name, method="mtls", peer=peer)
            raise Unauthenticated("the client certificate carries no URI SAN or common name")
        raise Unauthenticated(
            "no credentials: present a client certificate (LATCHKEY_CLIENT_CERT/KEY) or "
            "'authorization: Bearer <token>' metadata (LATCHKEY_TOKEN)"
        )
