"""AppRole auth method: roles, role IDs, secret IDs and login (reference §4)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from latchkey_server.devvault import ids
from latchkey_server.devvault.clock import rfc3339_nano
from latchkey_server.devvault.coerce import (
    get_bool,
    get_comma_list,
    get_duration,
    get_int,
    get_str,
    get_str_map,
    sanitize_policies,
)
from latchkey_server.devvault.errors import BadRequest, VaultError
from latchkey_server.devvault.logical import Backend, Operation, Request, Response
from latchkey_server.devvault.ttl import calculate_ttl

if TYPE_CHECKING:
    from latchkey_server.devvault.core import Core

R, L, C, U, D = (
    Operation.READ,
    Operation.LIST,
    Operation.CREATE,
    Operation.UPDATE,
    Operation.DELETE,
)


@dataclass
class SecretID:
    accessor: str
    metadata: dict[str, str]
    created: float
    ttl: int
    num_uses: int
    cidr_list: list[str] = field(default_factory=list)
    token_bound_cidrs: list[str] = field(default_factory=list)

    def expired(self, now: float) -> bool:
        return self.ttl > 0 and self.created + self.ttl <= now


@dataclass
class Role:
    name: str
    role_id: str
    entity_id: str
    bind_secret_id: bool = True
    secret_id_bound_cidrs: list[str] = field(default_factory=list)
    secret_id_num_uses: int = 0
    secret_id_ttl: int = 0
    local_secret_ids: bool = False
    token_ttl: int = 0
    token_max_ttl: int = 0
    token_policies: list[str] = field(default_factory=list)
    token_bound_cidrs: list[str] = field(default_factory=list)
    token_explicit_max_ttl: int = 0
    token_no_default_policy: bool = False
    token_num_uses: int = 0
    token_period: int = 0
    token_type: str = "default"
    secret_ids: dict[str, SecretID] = field(default_factory=dict)


class AppRoleBackend(Backend):
    type_name = "approle"

    def __init__(self, core: Core) -> None:
        super().__init__()
        self.core = core
        self.roles: dict[str, Role] = {}
        self.route(r"login", {U: self._login})
        self.route(r"role/?", {L: self._list_roles})
        self.route(r"role/(?P<r>[^/]+)/role-id", {R: self._read_role_id, U: self._write_role_id})
        self.route(r"role/(?P<r>[^/]+)/secret-id/?", {U: self._gen_secret_id, L: self._list_sids})
        self.route(r"role/(?P<r>[^/]+)/custom-secret-id", {U: self._custom_secret_id})
        self.route(r"role/(?P<r>[^/]+)/secret-id/lookup", {U: self._lookup_sid})
        self.route(
            r"role/(?P<r>[^/]+)/secret-id/destroy", {U: self._destroy_sid, D: self._destroy_sid}
        )
        self.route(
            r"role/(?P<r>[^/]+)",
            {R: self._read_role, C: self._write_role, U: self._write_role, D: self._delete_role},
            exists=self._role_exists,
        )

    def _role(self, req: Request, *, status: int = 404) -> Role:
        name = self._name(req)
        role = self.roles.get(name)
        if role is None:
            if status == 404:
                raise VaultError(404, [f'role "{name}" does not exist'])
            raise BadRequest(f'role "{name}" does not exist')
        return role

    @staticmethod
    def _name(req: Request) -> str:
        return req.match.group("r").lower() if req.match is not None else ""

    def token_params(self, role_name: str) -> tuple[int, int, int] | None:
        role = self.roles.get(role_name)
        if role is None:
            return None
        return role.token_ttl, role.token_max_ttl, role.token_period

    # -- roles ------------------------------------------------------------------------------
    async def _role_exists(self, req: Request) -> bool:
        return self._name(req) in self.roles

    async def _list_roles(self, req: Request) -> Response | None:
        return Response(data={"keys": sorted(self.roles)})

    async def _write_role(self, req: Request) -> Response | None:
        name, data = self._name(req), req.data
        role = self.roles.get(name)
        if role is None:
            role_id = get_str(data, "role_id") or ids.new_uuid()
            role = Role(name=name, role_id=role_id, entity_id=ids.new_uuid())
            role.local_secret_ids = get_bool(data, "local_secret_ids", False)
        elif data.get("role_id") is not None:
            role.role_id = get_str(data, "role_id")
        role.bind_secret_id = get_bool(data, "bind_secret_id", role.bind_secret_id)
        cidrs = get_comma_list(data, "secret_id_bound_cidrs")
        if cidrs is not None:
            role.secret_id_bound_cidrs = cidrs
        role.secret_id_num_uses = get_int(data, "secret_id_num_uses", role.secret_id_num_uses)
        if role.secret_id_num_uses < 0:
            raise BadRequest("secret_id_num_uses cannot be negative")
        role.secret_id_ttl = get_duration(data, "secret_id_ttl", role.secret_id_ttl)
        role.token_ttl = get_duration(data, "token_ttl", role.token_ttl)
        role.token_max_ttl = get_duration(data, "token_max_ttl", role.token_max_ttl)
        policies = get_comma_list(data, "token_policies")
        if policies is None:
            policies = get_comma_list(data, "policies")
        if policies is not None:
            role.token_policies = sanitize_policies(policies, add_default=False)
        bound = get_comma_list(data, "token_bound_cidrs")
        if bound is not None:
            role.token_bound_cidrs = bound
        role.token_explicit_max_ttl = get_duration(
            data, "token_explicit_max_ttl", role.token_explicit_max_ttl
        )
        role.token_no_default_policy = get_bool(
            data, "token_no_default_policy", role.token_no_default_policy
        )
        role.token_num_uses = get_int(data, "token_num_uses", role.token_num_uses)
        period = data.get("token_period", data.get("period"))
        if period is not None:
            role.token_period = get_duration({"p": period}, "p")
        token_type = get_str(data, "token_type", role.token_type)
        if token_type not in ("default", "service"):
            raise BadRequest(f"token type {token_type!r} is not supported by vault-dev")
        role.token_type = token_type
        if not role.bind_secret_id and not role.secret_id_bound_cidrs:
            raise BadRequest("at least one constraint should be enabled on the role")
        if role.token_max_ttl and role.token_ttl > role.token_max_ttl:
            raise BadRequest("token_ttl should not be greater than token_max_ttl")
        self.roles[name] = role
        warnings = []
        mount_max = self.mount.ttls().max_ttl if self.mount else 0
        if role.token_max_ttl > mount_max > 0:
            warnings.append(
                "token_max_ttl is greater than the backend mount's maximum TTL value; "
                "issued tokens' max TTL value will be truncated"
            )
        return Response(warnings=warnings) if warnings else None

    async def _read_role(self, req: Request) -> Response | None:
        role = self.roles.get(self._name(req))
        if role is None:
            return None
        return Response(
            data={
                "bind_secret_id": role.bind_secret_id,
                "local_secret_ids": role.local_secret_ids,
                "secret_id_bound_cidrs": list(role.secret_id_bound_cidrs),
                "secret_id_num_uses": role.secret_id_num_uses,
                "secret_id_ttl": role.secret_id_ttl,
                "token_bound_cidrs": list(role.token_bound_cidrs),
                "token_explicit_max_ttl": role.token_explicit_max_ttl,
                "token_max_ttl": role.token_max_ttl,
                "token_no_default_policy": role.token_no_default_policy,
                "token_num_uses": role.token_num_uses,
                "token_period": role.token_period,
                "token_policies": list(role.token_policies),
                "token_ttl": role.token_ttl,
                "token_type": role.token_type,
            }
        )

    async def _delete_role(self, req: Request) -> Response | None:
        self.roles.pop(self._name(req), None)
        return None

    async def _read_role_id(self, req: Request) -> Response | None:
        role = self.roles.get(self._name(req))
        if role is None:
            return None
        return Response(data={"role_id": role.role_id})

    async def _write_role_id(self, req: Request) -> Response | None:
        role = self._role(req)
        role_id = get_str(req.data, "role_id")
        if not role_id:
            raise BadRequest("missing role_id")
        role.role_id = role_id
        return None

    # -- secret IDs -------------------------------------------------------------------------
    async def _gen_secret_id(self, req: Request) -> Response | None:
        return self._issue_secret_id(req, ids.new_uuid())

    async def _custom_secret_id(self, req: Request) -> Response | None:
        secret_id = get_str(req.data, "secret_id")
        if not secret_id:
            raise BadRequest("missing secret_id")
        return self._issue_secret_id(req, secret_id)

    def _issue_secret_id(self, req: Request, secret_id: str) -> Response:
        role = self._role(req)
        if not role.bind_secret_id:
            raise BadRequest("bind_secret_id is not set on the role")
        ttl = get_duration(req.data, "ttl", role.secret_id_ttl)
        if role.secret_id_ttl and (ttl == 0 or ttl > role.secret_id_ttl):
            if req.data.get("ttl") is not None and ttl > role.secret_id_ttl:
                raise BadRequest("ttl cannot be longer than the role's secret_id_ttl")
            ttl = role.secret_id_ttl
        num_uses = get_int(req.data, "num_uses", role.secret_id_num_uses)
        if num_uses < 0:
            raise BadRequest("num_uses cannot be negative")
        if role.secret_id_num_uses and (num_uses == 0 or num_uses > role.secret_id_num_uses):
            if req.data.get("num_uses") is not None and num_uses > role.secret_id_num_uses:
                raise BadRequest("num_uses cannot be higher than the role's secret_id_num_uses")
            num_uses = role.secret_id_num_uses
        entry = SecretID(
            accessor=ids.new_uuid(),
            metadata=get_str_map(req.data, "metadata") or {},
            created=self.core.clock.now(),
            ttl=ttl,
            num_uses=num_uses,
            cidr_list=get_comma_list(req.data, "cidr_list") or [],
            token_bound_cidrs=get_comma_list(req.data, "token_bound_cidrs") or [],
        )
        role.secret_ids[secret_id] = entry
        return Response(
            data={
                "secret_id": secret_id,
                "secret_id_accessor": entry.accessor,
                "secret_id_ttl": entry.ttl,
                "secret_id_num_uses": entry.num_uses,
            }
        )

    async def _list_sids(self, req: Request) -> Response | None:
        role = self._role(req)
        return Response(data={"keys": sorted(s.accessor for s in role.secret_ids.values())})

    async def _lookup_sid(self, req: Request) -> Response | None:
        role = self._role(req)
        entry = role.secret_ids.get(get_str(req.data, "secret_id"))
        if entry is None:
            return None
        expiration = entry.created + entry.ttl if entry.ttl else 0.0
        data: dict[str, Any] = {
            "cidr_list": list(entry.cidr_list),
            "creation_time": rfc3339_nano(entry.created),
            "expiration_time": rfc3339_nano(expiration) if entry.ttl else "0001-01-01T00:00:00Z",
            "last_updated_time": rfc3339_nano(entry.created),
            "metadata": dict(entry.metadata),
            "secret_id_accessor": entry.accessor,
            "secret_id_num_uses": entry.num_uses,
            "secret_id_ttl": entry.ttl,
            "token_bound_cidrs": list(entry.token_bound_cidrs),
        }
        return Response(data=data)

    async def _destroy_sid(self, req: Request) -> Response | None:
        role = self._role(req)
        role.secret_ids.pop(get_str(req.data, "secret_id"), None)
        return None

    # -- login ------------------------------------------------------------------------------
    async def _login(self, req: Request) -> Response | None:
        role_id = get_str(req.data, "role_id")
        if not role_id:
            raise BadRequest("missing role_id")
        role = next((r for r in self.roles.values() if r.role_id == role_id), None)
        now = self.core.clock.now()
        metadata: dict[str, str] = {}
        if role is None:
            raise BadRequest("invalid role or secret ID")
        if role.bind_secret_id:
            secret_id = get_str(req.data, "secret_id")
            if not secret_id:
                raise BadRequest("missing secret_id")
            entry = role.secret_ids.get(secret_id)
            if entry is None or entry.expired(now):
                if entry is not None:
                    role.secret_ids.pop(secret_id, None)
                raise BadRequest("invalid role or secret ID")
            if entry.num_uses > 0:
                entry.num_uses -= 1
                if entry.num_uses == 0:
                    role.secret_ids.pop(secret_id, None)
            metadata.update(entry.metadata)
        metadata["role_name"] = role.name
        assert self.mount is not None
        result = calculate_ttl(
            now=now,
            increment=0,
            backend_ttl=role.token_ttl,
            period=role.token_period,
            backend_max_ttl=role.token_max_ttl,
            explicit_max_ttl=role.token_explicit_max_ttl,
            start=now,
            mount=self.mount.ttls(),
        )
        display = self.mount.path[len("auth/") :].replace("/", "-").strip("-")
        token = self.core.tokens.new_token(
            policies=sanitize_policies(
                role.token_policies, add_default=not role.token_no_default_policy
            ),
            path=self.mount.path + "login",
            display_name=display,
            creation_time=now,
            ttl=result.ttl,
            meta=metadata,
            num_uses=role.token_num_uses,
            explicit_max_ttl=role.token_explicit_max_ttl,
            period=role.token_period,
            expire_time=now + result.ttl,
            entity_id=role.entity_id,
            auth_mount=self.mount.path,
            role_name=role.name,
            max_ttl=role.token_max_ttl,
        )
        return Response(auth=token.auth_block(), warnings=result.warnings)
