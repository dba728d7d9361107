"""How the Vault adapter is configured: its address, limits and how it logs in.

Four ways to authenticate. `TokenAuth` uses a token it is given (it cannot log in again). The
others log in (`AppRoleAuth`, `UserpassAuth`, `JwtAuth`): the adapter owns the tokens they
yield, renews them, logs in again before one dies and revokes them on close. A credential is
either a value or a `FileSecret`, read afresh at every login, so a rotated file (a Kubernetes
projected service-account token, a re-issued secret_id) is picked up without a restart.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar

from latchkey_server.errors import FailedPrecondition, InvalidArgument

if TYPE_CHECKING:
    from latchkey_server.config import VaultAuthSettings, VaultSettings


@dataclass(frozen=True, slots=True)
class FileSecret:
    """A credential kept in a file and read at every login (surrounding whitespace dropped)."""

    path: Path
    setting: str = "credential file"
    """The setting that names the file, for error messages (e.g. `vault.auth.jwt_file`)."""

    def read(self) -> str:
        try:
            text = self.path.read_text().strip()
        except OSError as exc:
            raise FailedPrecondition(
                f"the gateway cannot log in to Vault: {self.setting} ({self.path}) cannot be "
                f"read: {exc.strerror}"
            ) from None
        if not text:
            raise FailedPrecondition(
                f"the gateway cannot log in to Vault: {self.setting} ({self.path}) is empty"
            )
        return text


SecretValue = str | FileSecret
"""A credential given as a value or as a file to read at each login."""


def reveal(value: SecretValue) -> str:
    """The credential itself (reads the file now; call it off the event loop)."""
    return value.read() if isinstance(value, FileSecret) else value


@dataclass(frozen=True, slots=True)
class TokenAuth:
    """Authenticate with a given token (renewed while renewable; never revoked by us)."""

    method: ClassVar[str] = "token"
    logs_in: ClassVar[bool] = False
    """Whether the method logs in (and so can log in again, owning the tokens it gets)."""

    token: SecretValue = field(repr=False)


@dataclass(frozen=True, slots=True)
class AppRoleAuth:
    """Log in with AppRole (`auth/<mount>/login`, role_id + secret_id)."""

    method: ClassVar[str] = "approle"
    logs_in: ClassVar[bool] = True

    role_id: str = field(repr=False)
    secret_id: SecretValue = field(repr=False)
    mount: str = "approle"


@dataclass(frozen=True, slots=True)
class UserpassAuth:
    """Log in with userpass (`auth/<mount>/login/<username>`, password)."""

    method: ClassVar[str] = "userpass"
    logs_in: ClassVar[bool] = True

    username: str
    password: SecretValue = field(repr=False)
    mount: str = "userpass"


@dataclass(frozen=True, slots=True)
class JwtAuth:
    """Log in with a JWT (`auth/<mount>/login`, role + jwt), e.g. a Kubernetes pod's projected
    service-account token: give it as a `FileSecret`, the kubelet rotates the file."""

    method: ClassVar[str] = "jwt"
    logs_in: ClassVar[bool] = True

    role: str
    jwt: SecretValue = field(repr=False)
    mount: str = "jwt"


VaultAuth = TokenAuth | AppRoleAuth | UserpassAuth | JwtAuth
LoginAuth = AppRoleAuth | UserpassAuth | JwtAuth


@dataclass(frozen=True, slots=True)
class VaultAdapterConfig:
    addr: str
    """Vault address, e.g. http://127.0.0.1:8200."""
    auth: VaultAuth = field(repr=False)
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
    """On close, revoke the tokens the adapter logged in for (not a given token)."""


def auth_from_settings(auth: VaultAuthSettings) -> VaultAuth:
    """The adapter's way to authenticate for the gateway's `vault.auth` settings."""

    def given(name: str) -> str:
        value = getattr(auth, name, None)
        if value is None:  # the settings validator makes this unreachable
            raise InvalidArgument(f"vault.auth.method {auth.method} needs vault.auth.{name}")
        return value.get_secret_value() if hasattr(value, "get_secret_value") else str(value)

    def secret(name: str) -> SecretValue:
        path = getattr(auth, f"{name}_file", None)
        if path is not None:
            return FileSecret(Path(path), f"vault.auth.{name}_file")
        return given(name)

    if auth.method == "approle":
        return AppRoleAuth(given("role_id"), secret("secret_id"), mount=auth.mount_path)
    if auth.method == "userpass":
        return UserpassAuth(given("username"), secret("password"), mount=auth.mount_path)
    if auth.method == "jwt":
        return JwtAuth(given("role"), secret("jwt"), mount=auth.mount_path)
    return TokenAuth(secret("token"))


def config_from_settings(settings: VaultSettings) -> VaultAdapterConfig:
    """The adapter configuration for the gateway's `vault` settings."""
    return VaultAdapterConfig(
        addr=settings.addr,
        auth=auth_from_settings(settings.auth),
        timeout=settings.timeout,
        pool_size=settings.pool_size,
    )
