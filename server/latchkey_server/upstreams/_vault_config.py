"""How the Vault adapter is configured: its address, limits and how it authenticates."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from latchkey_server.errors import InvalidArgument

if TYPE_CHECKING:
    from latchkey_server.config import VaultSettings


@dataclass(frozen=True, slots=True)
class TokenAuth:
    """Authenticate with a given token (renewed while it is renewable; never revoked by us)."""

    token: str = field(repr=False)


@dataclass(frozen=True, slots=True)
class AppRoleAuth:
    """Authenticate with AppRole; the adapter owns (renews, replaces, revokes) its tokens."""

    role_id: str = field(repr=False)
    secret_id: str = field(repr=False)
    mount: str = "approle"


@dataclass(frozen=True, slots=True)
class VaultAdapterConfig:
    addr: str
    """Vault address, e.g. http://127.0.0.1:8200."""
    auth: TokenAuth | AppRoleAuth = field(repr=False)
    timeout: float = 10.0
    """Per-request timeout in seconds."""
    pool_size: int = 8
    """Threads running hvac calls."""
    verify: bool | str = True
    """TLS verification: a bool or a CA bundle path."""
    retry_attempts: int = 3
    """Attempts per idempotent call on transient errors."""
    retry_base_delay: float = 0.2
    retry_max_delay: float = 2.0
    token_renew_fraction: float = 2 / 3
    """Renew a token when this fraction of its TTL has passed."""
    role_ttl_cache: float = 60.0
    """Seconds a role's max TTL stays cached."""
    revoke_tokens_on_close: bool = True
    """On close, revoke the tokens the adapter logged in for (AppRole only)."""


def config_from_settings(settings: VaultSettings) -> VaultAdapterConfig:
    """The adapter configuration for the gateway's `vault` settings."""
    auth: TokenAuth | AppRoleAuth
    if settings.approle_role_id is not None and settings.approle_secret_id is not None:
        auth = AppRoleAuth(
            settings.approle_role_id,
            settings.approle_secret_id.get_secret_value(),
            mount=settings.approle_mount,
        )
    elif settings.token is not None:
        auth = TokenAuth(settings.token.get_secret_value())
    else:
        raise InvalidArgument("set vault.token or vault.approle_role_id + vault.approle_secret_id")
    return VaultAdapterConfig(
        addr=settings.addr,
        auth=auth,
        timeout=settings.timeout,
        pool_size=settings.pool_size,
    )
