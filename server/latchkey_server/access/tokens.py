"""Bearer tokens from a tokens file, stored hashed, compared in constant time.

File format (YAML or JSON):

    tokens:
      - identity: billing
        sha256: 3f2a...   # hex SHA-256 of the token; the token itself is never stored

Tokens are high-entropy random strings (see `generate_token`), so a plain SHA-256 is a sound
at-rest form (as for API keys); comparison runs over every entry with `hmac.compare_digest`.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import secrets
from dataclasses import dataclass
from pathlib import Path

import yaml

from latchkey_server.errors import InvalidArgument
from latchkey_server.filewatch import signature

log = logging.getLogger("latchkey.access.tokens")

TOKEN_PREFIX = "lk_"


def generate_token() -> str:
    """A new random bearer token (256 bits)."""
    return TOKEN_PREFIX + secrets.token_urlsafe(32)


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


@dataclass(frozen=True, slots=True)
class TokenEntry:
    identity: str
    sha256: str


class TokenStore:
    """Maps presented bearer tokens to identities."""

    def __init__(self, entries: list[TokenEntry]) -> None:
        self._entries = [(bytes.fromhex(e.sha256), e.identity) for e in entries]

    @classmethod
    def load(cls, path: Path) -> TokenStore:
        try:
            raw = yaml.safe_load(path.read_text()) or {}
        except (OSError, yaml.YAMLError) as exc:
            raise InvalidArgument(
                f"tokens file {path} cannot be read: {type(exc).__name__}"
            ) from exc
        items = raw.get("tokens", []) if isinstance(raw, dict) else None
        if not isinstance(items, list):
            raise InvalidArgument(f"tokens file {path}: expected a top-level 'tokens' list")
        entries: list[TokenEntry] = []
        for n, item in enumerate(items):
            if not isinstance(item, dict) or not item.get("identity") or not item.get("sha256"):
                raise InvalidArgument(
                    f"tokens file {path}: entry {n} needs 'identity' and 'sha256'"
                )
            digest = str(item["sha256"]).lower()
            if len(digest) != 64 or any(c not in "0123456789abcdef" for c in digest):
                raise InvalidArgument(
                    f"tokens file {path}: entry {n} 'sha256' must be 64 hex chars"
                )
            entries.append(TokenEntry(identity=str(item["identity"]), sha256=digest))
        return cls(entries)

    def identify(self, token: str) -> str | None:
        """The identity bound to `token`, or None. Runs over every entry (constant time)."""
        presented = hashlib.sha256(token.encode("utf-8", "surrogateescape")).digest()
        found: str | None = None
        for digest, identity in self._entries:
            if hmac.compare_digest(presented, digest) and found is None:
                found = identity
        return found

    def __len__(self) -> int:
        return len(self._entries)


class TokenFile:
    """The tokens file, re-read when it changes (see `filewatch`): a valid new file replaces
    the tokens in force, so a token removed from it is refused from then on; an invalid one
    keeps them and logs why. Calls already authenticated (open streams) carry on."""

    def __init__(self, path: Path) -> None:
        """Load the file; raises `InvalidArgument` when it is invalid (fail at startup)."""
        self.path = path
        self._signature = signature([path])
        self.store = TokenStore.load(path)

    def identify(self, token: str) -> str | None:
        return self.store.identify(token)

    def changed(self) -> bool:
        return signature([self.path]) != self._signature

    def reload(self) -> bool:
        self._signature = signature([self.path])
        try:
            store = TokenStore.load(self.path)
        except InvalidArgument as exc:
            log.error("tokens not reloaded, keeping the %d in force: %s", len(self.store), exc)
            return False
        self.store = store
        log.info("tokens reloaded from %s: %d tokens", self.path, len(store))
        return True


def append_token(path: Path, identity: str, token: str) -> None:
    """Add a hashed token for `identity` to the tokens file (created 0600 if missing)."""
    data: dict[str, list[dict[str, str]]] = {"tokens": []}
    if path.exists():
        loaded = yaml.safe_load(path.read_text()) or {}
        if isinstance(loaded, dict) and isinstance(loaded.get("tokens"), list):
            data["tokens"] = loaded["tokens"]
    data["tokens"].append({"identity": identity, "sha256": hash_token(token)})
    path.parent.mkdir(parents=True, exist_ok=True)
    path.touch(mode=0o600, exist_ok=True)
    path.write_text(yaml.safe_dump(data, sort_keys=False))
