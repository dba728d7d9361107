"""The token store: token entries, parent/child tree, expiry, and cascading revocation."""

from __future__ import annotations

import logging
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from latchkey_server.devvault import ids
from latchkey_server.devvault.clock import Clock, rfc3339_nano

log = logging.getLogger(__name__)


@dataclass
class Token:
    id: str
    accessor: str
    policies: list[str]
    path: str
    display_name: str
    creation_time: float
    ttl: int  # the TTL at creation (``creation_ttl``); 0 = never expires
    meta: dict[str, str] | None = None
    num_uses: int = 0
    explicit_max_ttl: int = 0
    period: int = 0
    parent: str = ""
    renewable: bool = True
    expire_time: float | None = None
    last_renewal: float | None = None
    entity_id: str = ""
    type: str = "service"
    has_lease: bool = True
    # For auth-method tokens: where renewal parameters come from (mount path, role name).
    auth_mount: str = ""
    role_name: str = ""
    max_ttl: int = 0  # backend max TTL at creation (e.g. approle token_max_ttl)
    children: set[str] = field(default_factory=set)

    @property
    def orphan(self) -> bool:
        return not self.parent

    def is_root(self) -> bool:
        return "root" in self.policies

    def auth_block(self) -> dict[str, Any]:
        block: dict[str, Any] = {
            "client_token": self.id,
            "accessor": self.accessor,
            "policies": list(self.policies),
            "token_policies": list(self.policies),
            "metadata": dict(self.meta) if self.meta else None,
            "lease_duration": self.current_ttl_at_issue(),
            "renewable": self.renewable and self.ttl > 0,
            "entity_id": self.entity_id,
            "token_type": self.type,
            "orphan": self.orphan,
            "mfa_requirement": None,
            "num_uses": self.num_uses,
        }
        if not self.policies:
            del block["token_policies"]
        return block

    def current_ttl_at_issue(self) -> int:
        if self.expire_time is None:
            return 0
        start = self.last_renewal if self.last_renewal is not None else self.creation_time
        return max(0, round(self.expire_time - start))

    def lookup_data(self, now: float, *, include_id: bool = True) -> dict[str, Any]:
        ttl = 0 if self.expire_time is None else max(0, int(self.expire_time - now))
        data: dict[str, Any] = {
            "accessor": self.accessor,
            "creation_time": int(self.creation_time),
            "creation_ttl": self.ttl,
            "display_name": self.display_name,
            "entity_id": self.entity_id,
            "expire_time": None if self.expire_time is None else rfc3339_nano(self.expire_time),
            "explicit_max_ttl": self.explicit_max_ttl,
            "id": self.id if include_id else "",
            "meta": dict(self.meta) if self.meta else None,
            "num_uses": self.num_uses,
            "orphan": self.orphan,
            "path": self.path,
            "policies": list(self.policies),
            "renewable": self.renewable and self.ttl > 0,
            "ttl": ttl,
            "type": self.type,
        }
        if self.has_lease:
            data["issue_time"] = rfc3339_nano(self.creation_time)
        if self.period:
            data["period"] = self.period
        if self.role_name:
            data["role"] = self.role_name
        if self.last_renewal is not None:
            data["last_renewal"] = rfc3339_nano(self.last_renewal)
            data["last_renewal_time"] = int(self.last_renewal)
        return data


_DISPLAY_SANITISE = re.compile(r"[^a-zA-Z0-9-]")

RevokeHook = Callable[[Token], Awaitable[None]]


class TokenStore:
    """All live tokens. Revoking a token revokes its children and (through the hook) its leases."""

    def __init__(self, clock: Clock) -> None:
        self._clock = clock
        self._by_id: dict[str, Token] = {}
        self._by_accessor: dict[str, str] = {}
        self.on_revoke: RevokeHook | None = None

    def __len__(self) -> int:
        return len(self._by_id)

    def add(self, token: Token) -> None:
        self._by_id[token.id] = token
        self._by_accessor[token.accessor] = token.id
        if token.parent and (parent := self._by_id.get(token.parent)) is not None:
            parent.children.add(token.id)

    def new_token(self, *, token_id: str | None = None, **fields: Any) -> Token:
        token = Token(id=token_id or ids.service_token(), accessor=ids.base62(24), **fields)
        self.add(token)
        return token

    def get(self, token_id: str) -> Token | None:
        """A live token (unknown, expired or used-up → None)."""
        token = self._by_id.get(token_id)
        if token is None:
            return None
        if token.expire_time is not None and token.expire_time <= self._clock.now():
            return None
        return token

    def get_by_accessor(self, accessor: str) -> Token | None:
        token_id = self._by_accessor.get(accessor)
        return self.get(token_id) if token_id else None

    def all(self) -> list[Token]:
        return list(self._by_id.values())

    def expired(self) -> list[Token]:
        now = self._clock.now()
        return [
            t for t in self._by_id.values() if t.expire_time is not None and t.expire_time <= now
        ]

    @staticmethod
    def display_name(requested: str) -> str:
        requested = _DISPLAY_SANITISE.sub("-", requested.strip())
        return f"token-{requested}" if requested else "token"

    async def revoke_tree(self, token_id: str) -> None:
        """Revoke a token and all its descendants; each one's leases via ``on_revoke``."""
        root = self._by_id.get(token_id)
        if root is None:
            return
        doomed: list[Token] = []
        stack = [root]
        while stack:
            token = stack.pop()
            if token.id not in self._by_id:
                continue
            doomed.append(token)
            self._forget(token)
            stack.extend(self._by_id[c] for c in token.children if c in self._by_id)
        for token in doomed:
            if self.on_revoke is not None:
                try:
                    await self.on_revoke(token)
                except Exception:
                    log.exception("revoking leases of a token (accessor %s) failed", token.accessor)

    async def revoke_orphan(self, token_id: str) -> None:
        """Revoke one token; its children become orphans."""
        token = self._by_id.get(token_id)
        if token is None:
            return
        for child_id in token.children:
            child = self._by_id.get(child_id)
            if child is not None:
                child.parent = ""
        token.children.clear()
        await self.revoke_tree(token_id)

    def _forget(self, token: Token) -> None:
        self._by_id.pop(token.id, None)
        self._by_accessor.pop(token.accessor, None)
        parent = self._by_id.get(token.parent) if token.parent else None
        if parent is not None:
            parent.children.discard(token.id)

    def use(self, token: Token) -> bool:
        """Count one use; True when the token has just been used up (revoke after the request)."""
        if token.num_uses <= 0:
            return False
        token.num_uses -= 1
        if token.num_uses == 0:
            token.num_uses = -1
            return True
        return False
