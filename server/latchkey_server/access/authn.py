"""Authentication: turn what a caller presented into an `Identity`, or refuse."""

from __future__ import annotations

from collections.abc import Mapping

from latchkey_server.access.tokens import TokenStore
from latchkey_server.errors import Unauthenticated
from latchkey_server.models import Identity


class Authenticator:
    """Bearer-token authentication (mTLS identities are added by the access issue)."""

    def __init__(self, tokens: TokenStore) -> None:
        self._tokens = tokens

    def authenticate(self, metadata: Mapping[str, str], peer: str) -> Identity:
        header = metadata.get("authorization", "")
        scheme, _, token = header.partition(" ")
        if not header:
            raise Unauthenticated(
                "no credentials: send 'authorization: Bearer <token>' metadata (LATCHKEY_TOKEN)"
            )
        if scheme.lower() != "bearer" or not token.strip():
            raise Unauthenticated("malformed authorization metadata: expected 'Bearer <token>'")
        identity = self._tokens.identify(token.strip())
        if identity is None:
            raise Unauthenticated("unknown or revoked token")
        return Identity(name=identity, method="token", peer=peer)
