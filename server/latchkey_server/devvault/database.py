"""Database secrets engine: connections, roles, dynamic credentials and their leases (§6)."""

from __future__ import annotations

import asyncio
import fnmatch
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from latchkey_server.devvault import ids
from latchkey_server.devvault.clock import pg_expiration
from latchkey_server.devvault.coerce import (
    get_bool,
    get_comma_list,
    get_duration,
    get_str,
    get_str_list,
)
from latchkey_server.devvault.errors import BadRequest, InternalError
from latchkey_server.devvault.logical import (
    Backend,
    Operation,
    RenewResult,
    Request,
    Response,
    SecretGrant,
)
from latchkey_server.devvault.postgres_plugin import (
    DEFAULT_RENEW,
    DEFAULT_ROTATE_ROOT,
    PLUGIN_NAME,
    PluginError,
    PostgresConnection,
    generate_password,
)
from latchkey_server.devvault.ttl import calculate_ttl

if TYPE_CHECKING:
    from latchkey_server.devvault.core import Core
    from latchkey_server.devvault.leases import Lease

R, L, C, U, D = (
    Operation.READ,
    Operation.LIST,
    Operation.CREATE,
    Operation.UPDATE,
    Operation.DELETE,
)
_CONNECTION_FIELDS = (
    "connection_url",
    "username",
    "password",
    "max_open_connections",
    "max_idle_connections",
    "max_connection_lifetime",
    "username_template",
    "disable_escaping",
    "password_authentication",
)
PASSWORD_IN_URL_WARNING = (
    "Password found in connection_url, use a templated url to enable root rotation and "
    "prevent read access to password information."
)


@dataclass
class DbConfig:
    plugin_name: str
    details: dict[str, Any]
    allowed_roles: list[str] = field(default_factory=list)
    root_rotation_statements: list[str] = field(default_factory=list)
    password_policy: str = ""
    verify_connection: bool = True

    def connection(self) -> PostgresConnection:
        return PostgresConnection(
            connection_url=str(self.details.get("connection_url", "")),
            username=str(self.details.get("username", "")),
            password=str(self.details.get("password", "")),
            disable_escaping=bool(self.details.get("disable_escaping", False)),
        )

    def allows(self, role: str) -> bool:
        return any(fnmatch.fnmatchcase(role, pattern) for pattern in self.allowed_roles)


@dataclass
class DbRole:
    db_name: str
    creation_statements: list[str]
    revocation_statements: list[str]
    rollback_statements: list[str]
    renew_statements: list[str]
    default_ttl: int
    max_ttl: int
    credential_type: str = "password"


def _redacted_url(url: str) -> str:
    try:
        parts = urlsplit(url)
        password = parts.password
    except ValueError:
        return url
    if password and password != "{{password}}":
        return url.replace(f":{password}@", ":*****@", 1)
    return url


class DatabaseBackend(Backend):
    type_name = "database"

    def __init__(self, core: Core) -> None:
        super().__init__()
        self.core = core
        self.configs: dict[str, DbConfig] = {}
        self.roles: dict[str, DbRole] = {}
        self.route(r"config/?", {L: self._list_configs})
        self.route(
            r"config/(?P<n>[^/]+)",
            {
                R: self._read_config,
                C: self._write_config,
                U: self._write_config,
                D: self._del_config,
            },
            exists=self._config_exists,
        )
        self.route(r"roles/?", {L: self._list_roles})
        self.route(
            r"roles/(?P<n>[^/]+)",
            {R: self._read_role, C: self._write_role, U: self._write_role, D: self._del_role},
            exists=self._role_exists,
        )
        self.route(r"creds/(?P<n>[^/]+)", {R: self._creds})
        self.route(r"reset/(?P<n>[^/]+)", {U: self._reset})
        self.route(r"rotate-root/(?P<n>[^/]+)", {U: self._rotate_root})

    @staticmethod
    def _n(req: Request) -> str:
        return req.match.group("n") if req.match is not None else ""

    # -- connections ------------------------------------------------------------------------
    async def _config_exists(self, req: Request) -> bool:
        return self._n(req) in self.configs

    async def _list_configs(self, req: Request) -> Response | None:
        return Response(data={"keys": sorted(self.configs)})

    async def _write_config(self, req: Request) -> Response | None:
        name, data = self._n(req), req.data
        old = self.configs.get(name)
        plugin = get_str(data, "plugin_name", old.plugin_name if old else "")
        if not plugin:
            raise BadRequest("empty plugin name")
        if plugin != PLUGIN_NAME:
            raise BadRequest(
                f"error creating database object: vault-dev supports only {PLUGIN_NAME}"
            )
        details = dict(old.details) if old else {}
        for key in _CONNECTION_FIELDS:
            if data.get(key) is not None:
                details[key] = data[key]
        url = str(details.get("connection_url", ""))
        if not url:
            raise BadRequest("error creating database object: connection_url cannot be empty")
        for key in ("username", "password"):
            value = str(details.get(key, ""))
            if "{{username}}" in value or "{{password}}" in value:
                raise BadRequest(f"{key} cannot contain the template variables")
        allowed = get_comma_list(data, "allowed_roles")
        rotation = get_str_list(data, "root_rotation_statements")
        config = DbConfig(
            plugin_name=plugin,
            details=details,
            allowed_roles=allowed if allowed is not None else (old.allowed_roles if old else []),
            root_rotation_statements=(
                rotation if rotation is not None else (old.root_rotation_statements if old else [])
            ),
            password_policy=get_str(data, "password_policy", old.password_policy if old else ""),
            verify_connection=get_bool(data, "verify_connection", True),
        )
        if config.verify_connection:
            try:
                await asyncio.to_thread(config.connection().verify)
            except PluginError as exc:
                raise BadRequest(
                    f"error creating database object: error verifying connection: {exc}"
                ) from None
        self.configs[name] = config
        try:
            has_url_password = bool(urlsplit(url).password) and "{{password}}" not in url
        except ValueError:
            has_url_password = False
        if has_url_password:
            return Response(warnings=[PASSWORD_IN_URL_WARNING])
        return None

    async def _read_config(self, req: Request) -> Response | None:
        config = self.configs.get(self._n(req))
        if config is None:
            return None
        details = {k: v for k, v in config.details.items() if k not in ("password", "private_key")}
        if "connection_url" in details:
            details["connection_url"] = _redacted_url(str(details["connection_url"]))
        return Response(
            data={
                "allowed_roles": list(config.allowed_roles),
                "connection_details": details,
                "password_policy": config.password_policy,
                "plugin_name": config.plugin_name,
                "plugin_version": "",
                "root_credentials_rotate_statements": list(config.root_rotation_statements),
                "verify_connection": config.verify_connection,
            }
        )

    async def _del_config(self, req: Request) -> Response | None:
        self.configs.pop(self._n(req), None)
        return None

    async def _reset(self, req: Request) -> Response | None:
        if self._n(req) not in self.configs:
            raise BadRequest(f'no database configuration named "{self._n(req)}"')
        return None

    async def _rotate_root(self, req: Request) -> Response | None:
        name = self._n(req)
        config = self.configs.get(name)
        if config is None:
            raise BadRequest(f'no database configuration named "{name}"')
        username = str(config.details.get("username", ""))
        if not username or "{{password}}" not in str(config.details.get("connection_url", "")):
            raise BadRequest(
                "unable to rotate root credentials: no username in configuration or "
                "connection_url is not templated"
            )
        password = generate_password()
        statements = config.root_rotation_statements or [DEFAULT_ROTATE_ROOT]
        values = {"name": username, "username": username, "password": password}
        try:
            await asyncio.to_thread(config.connection().run, statements, values)
        except PluginError as exc:
            raise InternalError(f"failed to update user: {exc}") from None
        config.details["password"] = password
        return None

    # -- roles ------------------------------------------------------------------------------
    async def _role_exists(self, req: Request) -> bool:
        return self._n(req) in self.roles

    async def _list_roles(self, req: Request) -> Response | None:
        return Response(data={"keys": sorted(self.roles)})

    async def _write_role(self, req: Request) -> Response | None:
        name, data = self._n(req), req.data
        old = self.roles.get(name)

        def stmts(key: str, fallback: list[str]) -> list[str]:
            value = get_str_list(data, key)
            return [s for s in value if s.strip()] if value is not None else fallback

        db_name = get_str(data, "db_name", old.db_name if old else "")
        if not db_name:
            raise BadRequest("database name is required")
        role = DbRole(
            db_name=db_name,
            creation_statements=stmts(
                "creation_statements", old.creation_statements if old else []
            ),
            revocation_statements=stmts(
                "revocation_statements", old.revocation_statements if old else []
            ),
            rollback_statements=stmts(
                "rollback_statements", old.rollback_statements if old else []
            ),
            renew_statements=stmts("renew_statements", old.renew_statements if old else []),
            default_ttl=get_duration(data, "default_ttl", old.default_ttl if old else 0),
            max_ttl=get_duration(data, "max_ttl", old.max_ttl if old else 0),
            credential_type=get_str(data, "credential_type", old.credential_type if old else "")
            or "password",
        )
        if role.credential_type != "password":
            raise BadRequest(f"invalid credential_type {role.credential_type!r}")
        if role.max_ttl and role.default_ttl > role.max_ttl:
            raise BadRequest("ttl cannot be greater than max_ttl")
        self.roles[name] = role
        return None

    async def _read_role(self, req: Request) -> Response | None:
        role = self.roles.get(self._n(req))
        if role is None:
            return None
        return Response(
            data={
                "db_name": role.db_name,
                "creation_statements": list(role.creation_statements),
                "revocation_statements": list(role.revocation_statements),
                "rollback_statements": list(role.rollback_statements),
                "renew_statements": list(role.renew_statements),
                "default_ttl": role.default_ttl,
                "max_ttl": role.max_ttl,
                "credential_type": role.credential_type,
                "credential_config": None,
            }
        )

    async def _del_role(self, req: Request) -> Response | None:
        self.roles.pop(self._n(req), None)
        return None

    # -- credentials ------------------------------------------------------------------------
    def _config_for(self, role_name: str, db_name: str) -> DbConfig:
        config = self.configs.get(db_name)
        if config is None:
            raise InternalError(f'no database configuration named "{db_name}"')
        if not config.allows(role_name):
            raise InternalError(f'"{role_name}" is not an allowed role')
        return config

    async def _creds(self, req: Request) -> Response | None:
        name = self._n(req)
        role = self.roles.get(name)
        if role is None:
            raise BadRequest(f"unknown role: {name}")
        config = self._config_for(name, role.db_name)
        if not role.creation_statements:
            raise InternalError("empty creation statements")
        assert self.mount is not None
        assert req.token is not None
        now = self.core.clock.now()
        result = calculate_ttl(
            now=now,
            increment=0,
            backend_ttl=role.default_ttl,
            period=0,
            backend_max_ttl=role.max_ttl,
            explicit_max_ttl=0,
            start=now,
            mount=self.mount.ttls(),
        )
        username = self.username(req.token.display_name, name, now)
        password = generate_password()
        values = {
            "name": username,
            "username": username,
            "password": password,
            "expiration": pg_expiration(now + result.ttl + 5),
        }
        try:
            await asyncio.to_thread(config.connection().run, role.creation_statements, values)
        except PluginError as exc:
            raise InternalError(str(exc)) from None
        return Response(
            data={"username": username, "password": password},
            warnings=list(result.warnings),
            secret=SecretGrant(
                ttl=result.ttl,
                renewable=True,
                internal={
                    "username": username,
                    "role": name,
                    "db_name": role.db_name,
                    "revocation_statements": list(role.revocation_statements),
                },
            ),
        )

    @staticmethod
    def username(display_name: str, role_name: str, now: float) -> str:
        """Vault's default PostgreSQL username template, truncated to 63 characters."""
        return f"v-{display_name[:8]}-{role_name[:8]}-{ids.base62(20)}-{int(now)}"[:63]

    async def renew_secret(self, lease: Lease, increment: int, now: float) -> RenewResult:
        role_name = str(lease.internal.get("role", ""))
        role = self.roles.get(role_name)
        if role is None:
            raise InternalError(f"could not find role with name: {role_name}")
        assert self.mount is not None
        result = calculate_ttl(
            now=now,
            increment=increment,
            backend_ttl=role.default_ttl,
            period=0,
            backend_max_ttl=role.max_ttl,
            explicit_max_ttl=0,
            start=lease.issue_time,
            mount=self.mount.ttls(),
        )
        if result.ttl > 0:
            config = self.configs.get(str(lease.internal.get("db_name", "")))
            if config is None:
                raise InternalError("could not find the database configuration of the lease")
            username = str(lease.internal["username"])
            values = {
                "name": username,
                "username": username,
                "expiration": pg_expiration(now + result.ttl + 5),
            }
            statements = role.renew_statements or [DEFAULT_RENEW]
            try:
                await asyncio.to_thread(config.connection().run, statements, values)
            except PluginError as exc:
                raise InternalError(str(exc)) from None
        return RenewResult(ttl=result.ttl, warnings=result.warnings)

    async def revoke_secret(self, lease: Lease) -> None:
        db_name = str(lease.internal.get("db_name", ""))
        config = self.configs.get(db_name)
        if config is None:
            raise PluginError(f'no database configuration named "{db_name}"')
        username = str(lease.internal["username"])
        role = self.roles.get(str(lease.internal.get("role", "")))
        statements = (
            role.revocation_statements
            if role is not None
            else list(lease.internal.get("revocation_statements") or [])
        )
        connection = config.connection()
        if statements:
            values = {"name": username, "username": username}
            await asyncio.to_thread(connection.run, statements, values)
        else:
            await asyncio.to_thread(connection.default_revoke, username)
